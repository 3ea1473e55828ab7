"""``jaxmedrf explain``: provenance, uncertainty and attribution maps of a reconstruction.

Three actions over :mod:`jaxmedrf.explain`, each writing into the folder ``--out``: NIfTI maps
(``*.nii.gz``, on the scan's voxel grid), a PNG of the three mid slices with the maps overlaid
and a JSON summary.

* ``provenance SCAN.npz [--recon R]``: how much each view sector and detector tile constrains
  each voxel (fractions of ``Aᵀ 1``), the coverage ``Aᵀ 1`` (mm) and the effective number of
  views. ``--recon`` a volume: drawn underneath; a NAF checkpoint folder: the field's own
  provenance through its Jacobian.
* ``uncertainty SCAN.npz --ensemble K``: K NAF fields from different keys, their mean and
  per-voxel std; with a ground truth in the scan, the correlation of |error| with the std.
* ``attribute VOLUME.npz --target T --method ig|gradcam|gxi``: which voxels a scalar function
  of the volume responds to.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "load_user_function", "run"]

HELP = "explain a reconstruction: provenance, ensemble uncertainty and attribution maps"

TARGETS = ("region-mean", "reprojection", "registration")
METHODS = ("ig", "gradcam", "gxi")


def add_parser(sub) -> argparse.ArgumentParser:
    from jaxmedrf.cli.reconstruct import naf_args
    from jaxmedrf.explain import IG_RULES
    from jaxmedrf.registration.losses import LOSSES

    p = sub.add_parser("explain", help=HELP, description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    acts.required = True
    fmt = argparse.ArgumentDefaultsHelpFormatter

    pv = acts.add_parser("provenance", help="per-voxel share of each view sector and detector tile (Aᵀ1 split)",
                         formatter_class=fmt)
    pv.add_argument("scan", help=".npz with projections and geometry (simulate)")
    pv.add_argument("--recon", default=None,
                    help="the reconstruction: a volume .npz (drawn under the maps) or a NAF checkpoint folder "
                         "(reconstruct --checkpoint-dir): the field's provenance through its Jacobian")
    pv.add_argument("--view-sectors", type=int, default=4, help="groups of consecutive views")
    pv.add_argument("--detector-grid", type=int, nargs=2, default=(2, 2), metavar=("ROWS", "COLS"),
                    help="detector tiles")
    pv.add_argument("--field-parameters", default="encoding", choices=("encoding", "all"),
                    help="NAF --recon: the tangent kernel through the hash table only (local) or through all "
                         "parameters (the shared MLP weights make it nearly uniform)")
    pv.add_argument("--method", default="siddon", choices=("siddon", "trilinear"), help="projector (volume recon)")
    pv.add_argument("--out", required=True, help="output folder")

    un = acts.add_parser("uncertainty", help="ensemble of NAF fields: mean and per-voxel std", formatter_class=fmt)
    un.add_argument("scan", help=".npz with projections and geometry (volume optional: the truth)")
    un.add_argument("--ensemble", type=int, default=4, help="members (fields trained from different keys)")
    un.add_argument("--out", required=True, help="output folder")
    un.add_argument("--no-progress", action="store_true", help="no progress bar")
    naf_args().add_to(un)

    at = acts.add_parser("attribute", help="attribution of a scalar function of the volume (IG, Grad-CAM)",
                         formatter_class=fmt)
    at.add_argument("input", help=".npz with volume and geometry (simulate, reconstruct); projections for "
                                  "--target reprojection/registration come from it or from --scan")
    at.add_argument("--target", default=None,
                    help=f"scalar function: one of {', '.join(TARGETS)}, or module:function (a JAX function "
                         "volume → scalar; the module is imported, from the current folder too); not with "
                         "--features/--head")
    at.add_argument("--box", type=int, nargs=6, default=None, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                    help="region-mean: voxel index box [X0, X1) × [Y0, Y1) × [Z0, Z1) (default: the central half)")
    at.add_argument("--scan", default=None, help="reprojection/registration: .npz with the projections")
    at.add_argument("--view", type=int, default=0, help="registration: the view whose projection is the target")
    at.add_argument("--loss", default="ncc", choices=sorted(LOSSES), help="registration: similarity loss")
    at.add_argument("--method", default="ig", choices=METHODS,
                    help="ig = Integrated Gradients; gradcam = Grad-CAM with --features/--head, else volume "
                         "Grad-CAM of the target; gxi = gradient × input")
    at.add_argument("--steps", type=int, default=64, help="ig: quadrature points")
    at.add_argument("--rule", default="gauss-legendre", choices=IG_RULES, help="ig: quadrature rule")
    at.add_argument("--baseline", default="zero", choices=("zero", "mean"),
                    help="ig/gxi: zero (air) or the volume's mean everywhere (a scale-invariant loss such as ncc "
                         "is constant along the path from zero: use mean)")
    at.add_argument("--features", default=None, help="gradcam: module:function, volume → (*spatial, channels)")
    at.add_argument("--head", default=None, help="gradcam: module:function, features → scalar")
    at.add_argument("--block", type=int, default=4, help="volume Grad-CAM: block side in voxels")
    at.add_argument("--out", required=True, help="output folder")
    return p


# ------------------------------------------------------------------------------ inputs
def load_user_function(spec: str):
    """``module:function`` → the function (the module imported, the current folder searched too)."""
    mod, sep, name = spec.partition(":")
    if not sep or not mod or not name:
        raise ValueError(f"{spec!r}: a user function is given as module:function")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise ValueError(f"{spec!r}: cannot import {mod} ({e})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{spec!r}: {mod} has no function {name}")
    return fn


def _volume_npz(path: Path, *, what: str):
    """``(volume, geometry)`` of a .npz written by simulate/reconstruct."""
    from jaxmedrf._files import read_npz
    from jaxmedrf.geometry import Geometry

    z = read_npz(path, ("volume", "geometry"), what=what)
    g = Geometry.from_json(str(z["geometry"]))
    vol = np.asarray(z["volume"], np.float32)
    g.check_volume(vol, f"{path}: volume")
    if not np.all(np.isfinite(vol)):
        raise ValueError(f"{path}: volume contains NaN or infinite values")
    return vol, g


# ------------------------------------------------------------------------------ outputs
def _affine(g) -> np.ndarray:
    d = np.asarray(g.d_voxel, np.float64)
    a = np.diag([*d, 1.0])
    a[:3, 3] = np.asarray(g.off_origin, np.float64) - (np.asarray(g.n_voxel) - 1) / 2 * d
    return a


def _write(out: Path, maps: dict, g, background, *, title: str, summary: dict, signed: bool = False) -> list[str]:
    """NIfTI per map, one PNG (rows: maps; columns: axial, coronal, sagittal mid slices over the
    background) and ``summary.json``, into ``out`` (written atomically as a folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxmedrf import io
    from jaxmedrf._files import atomic_dir

    written = []
    with atomic_dir(out) as tmp:
        for name, m in maps.items():
            io.save_volume(np.asarray(m, np.float32), tmp / f"{name}.nii.gz", affine=_affine(g), modality="OT",
                           unit="", overwrite=True)
            written.append(f"{name}.nii.gz")
        fig, axes = plt.subplots(len(maps), 3, figsize=(10, 3.2 * len(maps)), squeeze=False)
        nx, ny, nz = g.n_voxel
        cut = lambda v: [v[:, :, nz // 2].T, v[:, ny // 2, :].T, v[nx // 2].T]  # noqa: E731
        bg = cut(np.asarray(background, np.float32))
        for r, (name, m) in enumerate(maps.items()):
            m = np.asarray(m, np.float32)
            lim = float(np.abs(m).max()) or 1.0
            two = signed and m.min() < 0
            for c, (img, b, plane) in enumerate(zip(cut(m), bg, ("axial", "coronal", "sagittal"))):
                ax = axes[r][c]
                ax.imshow(b, cmap="gray", origin="lower")
                im = ax.imshow(np.ma.masked_where(img == 0, img), cmap="RdBu_r" if two else "inferno", alpha=0.6, origin="lower",
                               vmin=-lim if two else float(m.min()), vmax=lim if two else float(m.max()))
                ax.set_title(f"{name}: {plane}", fontsize=9)
                ax.axis("off")
            fig.colorbar(im, ax=list(axes[r]), fraction=0.02)
        fig.suptitle(title)
        fig.savefig(tmp / f"{out.name or 'explain'}.png", dpi=80)
        plt.close(fig)
        written.append(f"{out.name or 'explain'}.png")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        written.append("summary.json")
    return written


def _stats(m) -> dict:
    m = np.asarray(m, np.float64)
    return {"min": float(m.min()), "mean": float(m.mean()), "max": float(m.max())}


# ------------------------------------------------------------------------------ actions
def _provenance(a) -> tuple:
    import jax

    from jaxmedrf import explain as E
    from jaxmedrf.cli.reconstruct import load_scan

    proj, g, truth = load_scan(a.scan)
    sectors = E.view_sectors(g.n_views, a.view_sectors)
    tiles = E.detector_tiles(g.n_detector, tuple(a.detector_grid))
    recon = Path(a.recon) if a.recon else None
    kind = "voxel (A^T 1 by the exact adjoint)"
    if recon is not None and recon.is_dir():
        from jaxmedrf.recon.naf_io import load_field

        params, cfg, g_field = load_field(recon)
        if g_field.to_json() != g.to_json():
            raise ValueError(f"{recon}: the field was trained on another geometry than {a.scan}'s")
        fn = jax.jit(lambda p: E.naf_provenance(p, cfg, g, view_groups=sectors, regions=tiles,
                                                parameters=a.field_parameters))
        t0 = time.perf_counter()
        pr = jax.block_until_ready(fn(params))
        from jaxmedrf.recon.naf import field_volume

        background = np.asarray(field_volume(params, cfg.for_geometry(g), g))
        kind = f"NAF field (J_mu J_R^T 1, tangent kernel through {a.field_parameters} parameters)"
    else:
        background = _volume_npz(recon, what="--recon")[0] if recon is not None else truth
        if background is not None and background.shape != g.n_voxel:
            raise ValueError(f"{recon}: volume has shape {background.shape}, the scan's n_voxel is {g.n_voxel}")
        t0 = time.perf_counter()
        pr = jax.block_until_ready(E.provenance(g, view_groups=sectors, regions=tiles, method=a.method))
    seconds = time.perf_counter() - t0
    if background is None:
        background = np.zeros(g.n_voxel, np.float32)
    views, regions = np.asarray(E.provenance_fractions(pr.views)), np.asarray(E.provenance_fractions(pr.regions))
    maps = {"coverage": pr.total, "effective_views": pr.effective_views,
            **{f"view_sector_{k}": v for k, v in enumerate(views)},
            **{f"detector_tile_{k}": v for k, v in enumerate(regions)}}
    total = np.asarray(pr.total, np.float64)
    scale = float(np.abs(total).max()) or 1.0
    gap = lambda parts: float(np.abs(np.asarray(parts, np.float64).sum(0) - total).max() / scale)  # noqa: E731
    summary = {"action": "provenance", "scan": str(a.scan), "recon": str(recon) if recon else None, "kind": kind,
               "seconds": seconds, "n_views": g.n_views, "view_sectors": sectors.tolist(),
               "detector_grid": list(a.detector_grid),
               "sum_check": {"views_vs_total_max_rel": gap(pr.views), "regions_vs_total_max_rel": gap(pr.regions)},
               "maps": {k: _stats(v) for k, v in maps.items()}}
    unit = "kernel units" if recon is not None and recon.is_dir() else "mm"
    title = f"provenance ({kind}): fractions per voxel; coverage in {unit}"
    return maps, g, background, title, summary, False


def _uncertainty(a) -> tuple:
    import jax

    from jaxmedrf import explain as E
    from jaxmedrf.cli.reconstruct import load_scan

    if a.ensemble < 2:
        raise ValueError(f"--ensemble must be >= 2 (a spread needs two members), got {a.ensemble}")
    proj, g, truth = load_scan(a.scan)
    t0 = time.perf_counter()
    res = E.train_ensemble(jax.random.key(a.naf_config.seed), proj, g, a.naf_config, n_members=a.ensemble,
                           progress=not a.no_progress)
    seconds = time.perf_counter() - t0
    members = np.asarray(res.volume)
    mean, std = members.mean(0), np.asarray(E.ensemble_std(members))
    maps = {"mean": mean, "std": std}
    summary = {"action": "uncertainty", "scan": str(a.scan), "members": a.ensemble, "seed": a.naf_config.seed,
               "seconds": seconds, "std": _stats(std)}
    if truth is not None:
        err = np.abs(mean - truth)
        maps["abs_error"] = err
        summary["abs_error"] = _stats(err)
        summary["correlation_abs_error_vs_std"] = error_std_correlation(err, std)
    return maps, g, mean, f"ensemble of {a.ensemble} NAF fields: mean, std (mm⁻¹)", summary, False


def error_std_correlation(err, std) -> dict:
    """Pearson and Spearman correlation of |error| with the std over voxels."""
    from scipy import stats

    e, s = np.ravel(err).astype(np.float64), np.ravel(std).astype(np.float64)
    if np.ptp(e) == 0 or np.ptp(s) == 0:
        return {"pearson": None, "spearman": None, "n_voxels": int(e.size)}
    return {"pearson": float(stats.pearsonr(e, s)[0]), "spearman": float(stats.spearmanr(e, s)[0]),
            "n_voxels": int(e.size)}


def _target(a, vol, g):
    """The scalar function and its description."""
    from jaxmedrf import explain as E

    if a.target == "region-mean":
        n = np.array(g.n_voxel)
        lo, hi = (a.box[:3], a.box[3:]) if a.box else ((n // 4).tolist(), (n - n // 4).tolist())
        lo, hi = tuple(int(i) for i in lo), tuple(int(i) for i in hi)
        return E.region_mean(E.box_mask(g.n_voxel, lo, hi)), f"mean of voxels [{lo}, {hi})"
    if a.target in ("reprojection", "registration"):
        from jaxmedrf.cli.reconstruct import load_scan

        proj, gs, _ = load_scan(a.scan or a.input)
        if gs.n_voxel != g.n_voxel:
            raise ValueError(f"{a.scan or a.input}: the scan's voxel grid {gs.n_voxel} differs from the volume's {g.n_voxel}")
        if a.target == "reprojection":
            return E.reprojection_loss(proj, gs), "mean squared reprojection residual"
        if not 0 <= a.view < gs.n_views:
            raise ValueError(f"--view must be in [0, {gs.n_views}), got {a.view}")
        gv = E.single_view(gs, a.view)
        return E.registration_loss(proj[a.view], gv, loss=a.loss), f"{a.loss} loss of view {a.view}'s DRR vs its projection"
    if ":" in a.target:
        return load_user_function(a.target), f"user function {a.target}"
    raise ValueError(f"--target must be one of {', '.join(TARGETS)} or module:function, got {a.target!r}")


def _attribute(a) -> tuple:
    import jax
    import jax.numpy as jnp

    from jaxmedrf import explain as E

    if a.steps < 1 or a.block < 1:
        raise ValueError(f"--steps and --block must be >= 1, got {a.steps}, {a.block}")
    if (a.features is None) != (a.head is None):
        raise ValueError("--features and --head go together (the user's model split at a layer)")
    if a.features is not None and a.method != "gradcam":
        raise ValueError("--features/--head are for --method gradcam")
    if (a.target is None) == (a.features is None):
        raise ValueError("give either --target or --features/--head (the function to explain)")
    vol, g = _volume_npz(Path(a.input), what="input")
    x = jnp.asarray(vol)
    base = jnp.zeros_like(x) if a.baseline == "zero" else jnp.full_like(x, float(vol.mean()))
    if a.features is not None:
        feat, head = load_user_function(a.features), load_user_function(a.head)
        f, what = (lambda v: head(feat(v))), f"user model {a.features} → {a.head}"
    else:
        f, what = _target(a, vol, g)
    try:
        jax.eval_shape(f, x)
    except (TypeError, AttributeError) as e:
        raise ValueError(f"the target function fails on a volume of shape {x.shape}: {e}") from None
    t0 = time.perf_counter()
    if a.method == "ig":
        attr = E.integrated_gradients(f, x, baseline=base, n_steps=a.steps, rule=a.rule)
        name = f"Integrated Gradients ({a.steps} {a.rule} steps, {a.baseline} baseline)"
    elif a.method == "gxi":
        attr, name = E.gradient_x_input(f, x, baseline=base), f"gradient × input ({a.baseline} baseline)"
    elif a.features is not None:
        attr, name = E.grad_cam(feat, head, x), "Grad-CAM"
    else:
        attr, name = E.volume_grad_cam(f, x, block=a.block), f"volume Grad-CAM ({a.block}³ blocks)"
    attr = np.asarray(jax.block_until_ready(attr))
    seconds = time.perf_counter() - t0
    fx, fb = float(f(x)), float(f(base))
    summary = {"action": "attribute", "input": str(a.input), "target": what, "method": name, "seconds": seconds,
               "f_input": fx, "attribution": _stats(attr), "sum_attribution": float(attr.astype(np.float64).sum())}
    if a.method in ("ig", "gxi"):
        summary.update(f_baseline=fb, completeness_gap=summary["sum_attribution"] - (fx - fb))
    return {"attribution": attr}, g, vol, f"{name} of {what}", summary, True


def run(a) -> int:
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out must be a folder, and a file of that name exists")
    action = {"provenance": _provenance, "uncertainty": _uncertainty, "attribute": _attribute}[a.action]
    maps, g, background, title, summary, signed = action(a)
    written = _write(out, maps, g, background, title=title, summary=summary, signed=signed)
    print(f"explain {a.action}: {title}; " + ", ".join(
        f"{k} {v:.4g}" for k, v in _headline(summary).items()) + f" -> {out}/ ({', '.join(written)})")
    return 0


def _headline(summary: dict) -> dict:
    if summary["action"] == "provenance":
        return {"seconds": summary["seconds"],
                "max relative sum error": summary["sum_check"]["views_vs_total_max_rel"]}
    if summary["action"] == "uncertainty":
        c = summary.get("correlation_abs_error_vs_std", {})
        rho = {"Spearman(|error|, std)": c["spearman"]} if c.get("spearman") is not None else {}
        return {"mean std": summary["std"]["mean"], **rho}
    out = {"f(x)": summary["f_input"], "sum": summary["sum_attribution"]}
    if "completeness_gap" in summary:
        out["completeness gap"] = summary["completeness_gap"]
    return out
