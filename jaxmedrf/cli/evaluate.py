"""``jaxmedrf evaluate``: compare reconstructions with a reference volume.

One RECON: a table of every metric, a JSON (with per-slice arrays) and a PNG figure.
Several RECONs: a comparison table (markdown on stdout, CSV with ``--out-csv``) with the best
value of each metric marked ``*``. Directories (RECON and ``--reference`` both folders of
``*.npz`` cases matched by file name): per-case metrics and mean ± std per metric; with
``--folds K`` the cases are split into K folds by volume (patient: a case ``<volume>__<rest>.npz``
belongs to ``<volume>``; :func:`jaxmedrf.crossval.kfold_volumes`), each fold's mean is
reported and the mean ± std over the folds.

LPIPS needs ImageNet weights that jaxmedrf cannot download: pass torchvision's AlexNet or VGG16
state dict with --lpips-backbone FILE (e.g. alexnet-owt-7be5be79.pth). The calibrated linear
layers are read from the installed `lpips` package (`pip install --no-deps lpips`). Without a
backbone LPIPS is reported as unavailable.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from jaxmedrf.cli._units import add_units_argument, to_attenuation

__all__ = ["add_parser", "run", "load_volume", "evaluate_volume"]

HELP = "metrics of reconstructions against a reference volume"  # one line in `jaxmedrf --help`

# metric -> True if higher is better
HIGHER_IS_BETTER = {
    "psnr": True, "ssim3d": True, "ssim_slices": True, "gmsd": False, "mae": False, "rmse": False,
    "mae_hu": False, "rmse_hu": False, "reproj_rmse": False, "reproj_mae": False, "lpips": False,
}
LPIPS_UNAVAILABLE = "unavailable (no backbone weights: pass --lpips-backbone FILE)"


def add_parser(subparsers):
    p = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recon", nargs="+", metavar="RECON", help=".npz with key 'volume' (μ, mm⁻¹), or a folder of cases")
    p.add_argument("--reference", required=True, metavar="REF", help="ground truth (.npz with 'volume'; a folder for cases)")
    p.add_argument("--out-json", metavar="F", help="write every metric and per-slice arrays as JSON")
    p.add_argument("--out-png", metavar="F", help="figure: central slices, error maps, a line profile")
    p.add_argument("--out-csv", metavar="F", help="comparison table as CSV")
    p.add_argument("--data-range", type=float, metavar="X", help="PSNR/SSIM data range (default: reference max − min)")
    p.add_argument("--mu-water", type=float, metavar="MU", help="μ of water, mm⁻¹: also report MAE/RMSE in HU")
    add_units_argument(
        p,
        help="read DICOM/NIfTI inputs (RECON and REF) as attenuation: HU (converted to μ with --mu-water, default "
             "water at 60 keV) or mu (μ in mm⁻¹); default: their values as stored. .npz inputs are μ",
    )
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="folders of cases: K folds by volume (cases '<volume>__<rest>.npz' share a volume); "
                        "per-fold means and mean ± std over folds")
    p.add_argument("--resample", action="store_true", help="resample RECON onto the reference grid when they differ")
    p.add_argument("--no-reprojection", action="store_true", help="skip the reprojection error (needs REF projections)")
    p.add_argument(
        "--lpips-backbone", metavar="FILE",
        help="torchvision alexnet/vgg16 state dict (.pth) for LPIPS; nothing is downloaded, so without it LPIPS is unavailable",
    )
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS trunk (default alex)")
    p.add_argument(
        "--lpips-slices", choices=("central", "all"), default="central",
        help="LPIPS over the three central orthogonal slices (default) or every z-slice; the mean is reported",
    )
    return p


# ------------------------------------------------------------------------------------ loading
def load_volume(path, *, units: str | None = None, mu_water: float | None = None) -> tuple[np.ndarray, dict]:
    """Reads a volume (μ, mm⁻¹) and its metadata: ``{"spacing", "geometry", "projections"}``.

    ``.npz`` files must hold ``volume``; ``geometry`` (JSON) and ``projections`` are optional.
    Other formats (DICOM series, NIfTI) go through :func:`jaxmedrf.io.load_volume`; with
    ``units`` (``"HU"`` or ``"mu"``, see :func:`jaxmedrf.io.attenuation_units`) they are read as
    attenuation (HU converted with ``mu_water``, mm⁻¹), else their values are kept as stored.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".npz":
        from jaxmedrf._files import read_npz

        z = read_npz(path, ("volume",), what="volume")
        vol = np.asarray(z["volume"])
        meta = {"geometry": None, "projections": None, "spacing": None}
        if "geometry" in z:
            from jaxmedrf.geometry import Geometry

            g = Geometry.from_json(str(z["geometry"]))
            meta["geometry"] = g
            meta["spacing"] = tuple(float(s) for s in np.asarray(g.d_voxel))
        if "projections" in z:
            meta["projections"] = np.asarray(z["projections"])
    else:
        from jaxmedrf.io import load_volume as io_load

        loaded = io_load(path)
        if units is None:
            vol = np.asarray(loaded.array)
        else:
            vol = to_attenuation(loaded, units, mu_water=mu_water)
        meta = {"geometry": None, "projections": None, "spacing": tuple(float(x) for x in loaded.spacing)}
    if vol.ndim != 3:
        raise ValueError(f"{path}: volume must be 3-D, got shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number):
        raise ValueError(f"{path}: volume must be numeric, got dtype {vol.dtype}")
    return vol.astype(np.float32), meta


def _resample(vol, shape):
    from scipy.ndimage import zoom

    return zoom(vol, [t / s for t, s in zip(shape, vol.shape)], order=1, grid_mode=True, mode="nearest").astype(np.float32)


def _match_grid(vol, meta, ref, ref_meta, name, resample):
    same_shape = vol.shape == ref.shape
    sp, rsp = meta.get("spacing"), ref_meta.get("spacing")
    same_spacing = sp is None or rsp is None or np.allclose(sp, rsp, rtol=1e-5)
    if same_shape and same_spacing:
        return vol
    if not resample:
        raise ValueError(
            f"{name} is on a different grid from the reference (shape {vol.shape} vs {ref.shape},"
            f" spacing {sp} vs {rsp} mm): pass --resample to resample it onto the reference grid"
        )
    return _resample(vol, ref.shape)


# ------------------------------------------------------------------------------------ metrics
def evaluate_volume(
    vol, ref, *, data_range=None, mu_water=None, ref_meta=None, reprojection=True, lpips=None, lpips_slices="central"
) -> dict:
    """Every metric of ``vol`` against ``ref`` as plain Python numbers and lists.

    ``lpips``: :class:`jaxmedrf.lpips.LPIPSParams` to add LPIPS (slices mapped from
    ``[min(ref), min(ref) + data range]`` to [−1, 1]), over the three central orthogonal slices
    (``lpips_slices="central"``) or every z-slice (``"all"``); the mean is ``out["lpips"]``.
    """
    from jaxmedrf import metrics as M

    M.check_finite(recon=vol, reference=ref)
    dr = data_range if data_range is not None else float(ref.max() - ref.min())
    if not dr > 0:
        raise ValueError("reference is constant (max − min = 0): give --data-range")
    out = {
        "psnr": float(M.psnr(vol, ref, data_range=dr)),
        "ssim3d": float(M.ssim3d(vol, ref, data_range=dr, filter_size=_win(ref.shape))),
        "ssim_slices": float(M.ssim_slices(vol, ref, data_range=dr, filter_size=_win(ref.shape))),
        "gmsd": float(M.gmsd(vol, ref, data_range=dr)),
        "mae": float(M.mae(vol, ref)),
        "rmse": float(M.rmse(vol, ref)),
    }
    if mu_water is not None:
        out["mae_hu"] = float(M.mae(vol, ref, mu_water=mu_water))
        out["rmse_hu"] = float(M.rmse(vol, ref, mu_water=mu_water))
    meta = ref_meta or {}
    if reprojection and meta.get("projections") is not None and meta.get("geometry") is not None:
        g = meta["geometry"]
        if tuple(g.n_voxel) == vol.shape:
            r = M.reprojection_error(vol, meta["projections"], g)
            out["reproj_rmse"], out["reproj_mae"] = float(r.rmse), float(r.mae)
            out["reproj_rmse_per_view"] = np.asarray(r.rmse_per_view).tolist()
    out["ssim_per_slice_z"] = np.asarray(M.ssim_per_slice(vol, ref, axis=2, data_range=dr, filter_size=_win(ref.shape[:2]))).tolist()
    out["psnr_per_slice_z"] = [float(M.psnr(vol[:, :, k], ref[:, :, k], data_range=dr)) for k in range(ref.shape[2])]
    if lpips is not None:
        out.update(_lpips_metrics(vol, ref, lpips, low=float(ref.min()), high=float(ref.min()) + dr, which=lpips_slices))
    out["data_range"] = dr
    return out


def _lpips_metrics(vol, ref, params, *, low, high, which):
    import jax

    from jaxmedrf import lpips as LP

    if which == "all":
        per = np.asarray(LP.lpips_slices(vol, ref, params, axis=2, low=low, high=high))
        return {"lpips": float(per.mean()), "lpips_per_slice_z": per.tolist()}
    if which != "central":
        raise ValueError(f"lpips_slices must be 'central' or 'all', got {which!r}")
    fn = jax.jit(LP.lpips)
    vals = []
    for axis in range(3):
        k = ref.shape[axis] // 2
        a, b = (LP.to_lpips_input(np.take(v, k, axis=axis), low=low, high=high) for v in (vol, ref))
        vals.append(float(fn(a, b, params)))
    return {"lpips": float(np.mean(vals)), "lpips_central_xyz": vals}


def _win(shape):
    """The largest odd SSIM window ≤ 11 that fits ``shape``."""
    w = min(11, *shape)
    return w if w % 2 else w - 1


# ------------------------------------------------------------------------------------ tables
def _scalar_names(rows):
    names = [k for k in HIGHER_IS_BETTER if all(k in r for r in rows)]
    return names


def _fmt(x):
    return "inf" if math.isinf(x) else f"{x:.4g}"


def comparison_table(rows: dict[str, dict], *, std: dict[str, dict] | None = None) -> tuple[str, str]:
    """(markdown, csv) tables: one row per method, best value per metric marked ``*``."""
    names = _scalar_names(list(rows.values()))
    best = {}
    for k in names:
        vals = [r[k] for r in rows.values()]
        best[k] = max(vals) if HIGHER_IS_BETTER[k] else min(vals)
    md = ["| recon | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recon", *names, *([f"{k}_std" for k in names] if std else []), "best"])
    for label, r in rows.items():
        cells, bests = [], []
        for k in names:
            s = _fmt(r[k]) + (f" ± {_fmt(std[label][k])}" if std else "")
            if len(rows) > 1 and r[k] == best[k]:
                s += " *"
                bests.append(k)
            cells.append(s)
        md.append(f"| {label} | " + " | ".join(cells) + " |")
        w.writerow([label, *[r[k] for k in names], *([std[label][k] for k in names] if std else []), ";".join(bests)])
    return "\n".join(md), buf.getvalue()


# ------------------------------------------------------------------------------------ figure
def _figure(path, ref, recons: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxmedrf._files import atomic_path

    n = len(recons)
    fig, ax = plt.subplots(n + 1, 3, figsize=(10, 3.2 * (n + 1)), squeeze=False)
    cz = ref.shape[2] // 2
    vmin, vmax = float(ref.min()), float(ref.max())
    ax[0, 0].imshow(ref[:, :, cz].T, cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
    ax[0, 0].set_title(f"reference z={cz}")
    ax[0, 1].imshow(ref[ref.shape[0] // 2].T, cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
    ax[0, 1].set_title("reference x-slice")
    cy = ref.shape[1] // 2
    ax[0, 2].plot(ref[:, cy, cz], "k-", label="reference")
    err_max = max(float(np.max(np.abs(v - ref))) for v in recons.values()) or 1.0
    for i, (label, v) in enumerate(recons.items(), start=1):
        ax[i, 0].imshow(v[:, :, cz].T, cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
        ax[i, 0].set_title(label)
        im = ax[i, 1].imshow((v - ref)[:, :, cz].T, cmap="RdBu_r", vmin=-err_max, vmax=err_max, origin="lower")
        ax[i, 1].set_title("error (mm⁻¹)")
        fig.colorbar(im, ax=ax[i, 1])
        ax[0, 2].plot(v[:, cy, cz], label=label)
        ax[i, 2].axis("off")
    ax[0, 2].set_title("line profile (x, centre)")
    ax[0, 2].legend(fontsize=7)
    for a in ax.flat:
        a.tick_params(labelsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------------ run
def _write_json(path, obj):
    from jaxmedrf._files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))


def _cases(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.glob("*.npz"))}


def run(args) -> int:
    ref_path = Path(args.reference)
    recon_paths = [Path(r) for r in args.recon]
    opts = dict(data_range=args.data_range, mu_water=args.mu_water, reprojection=not args.no_reprojection)
    if args.lpips_backbone:
        from jaxmedrf.lpips import load_lpips

        opts.update(lpips=load_lpips(args.lpips_backbone, net=args.lpips_net), lpips_slices=args.lpips_slices)
    if args.data_range is not None and not args.data_range > 0:
        raise ValueError(f"--data-range must be positive, got {args.data_range}")
    if args.mu_water is not None and not args.mu_water > 0:
        raise ValueError(f"--mu-water must be positive (mm⁻¹), got {args.mu_water}")
    labels = _labels(recon_paths)

    if ref_path.is_dir() or any(p.is_dir() for p in recon_paths):
        if not (ref_path.is_dir() and all(p.is_dir() for p in recon_paths)):
            raise ValueError("folders of cases: RECON and --reference must all be folders")
        ref_cases = _cases(ref_path)
        if not ref_cases:
            raise ValueError(f"no .npz cases in {ref_path}")
        report, means, stds = {}, {}, {}
        for label, folder in zip(labels, recon_paths):
            cases = _cases(folder)
            missing = sorted(set(ref_cases) - set(cases))
            if missing:
                raise ValueError(f"{folder} lacks cases {missing} present in {ref_path}")
            per_case = {}
            for name, rp in ref_cases.items():
                ref, ref_meta = load_volume(rp)
                vol, meta = load_volume(cases[name])
                vol = _match_grid(vol, meta, ref, ref_meta, cases[name], args.resample)
                per_case[name] = evaluate_volume(vol, ref, ref_meta=ref_meta, **opts)
            names = _scalar_names(list(per_case.values()))
            means[label] = {k: float(np.mean([c[k] for c in per_case.values()])) for k in names}
            stds[label] = {k: float(np.std([c[k] for c in per_case.values()], ddof=1 if len(per_case) > 1 else 0)) for k in names}
            report[label] = {"cases": per_case, "mean": means[label], "std": stds[label]}
        if args.folds is not None:
            fold_report, means, stds = _fold_summary(report, list(ref_cases), args.folds)
            for label in report:
                report[label]["folds"] = fold_report[label]
            print(_fold_lines(fold_report))
            md, csv_text = comparison_table(means, std=stds)
            print(f"{len(ref_cases)} cases in {args.folds} folds by volume; mean ± std over the folds' means")
        else:
            md, csv_text = comparison_table(means, std=stds)
            print(f"{len(ref_cases)} cases; mean ± std (sample std over cases)")
    else:
        if args.folds is not None:
            raise ValueError("--folds needs folders of cases (RECON and --reference folders)")
        units = dict(units=args.units, mu_water=args.mu_water)
        ref, ref_meta = load_volume(ref_path, **units)
        report, recons = {}, {}
        for label, p in zip(labels, recon_paths):
            vol, meta = load_volume(p, **units)
            vol = _match_grid(vol, meta, ref, ref_meta, p, args.resample)
            recons[label] = vol
            report[label] = evaluate_volume(vol, ref, ref_meta=ref_meta, **opts)
        md, csv_text = comparison_table(report)
        if args.out_png:
            _figure(args.out_png, ref, recons)
    print(md)
    lpips_note = f"{args.lpips_net}, {args.lpips_slices} slices" if args.lpips_backbone else LPIPS_UNAVAILABLE
    if not args.lpips_backbone:
        print(f"LPIPS: {lpips_note}")
    if args.out_csv:
        from jaxmedrf._files import atomic_path

        with atomic_path(args.out_csv) as tmp:
            tmp.write_text(csv_text)
    if args.out_json:
        _write_json(args.out_json, {"reference": str(ref_path), "lpips": lpips_note, "results": report})
    return 0


def _fold_summary(report: dict, case_files: list[str], k: int):
    """Per label: each fold's test cases and mean metrics; then the mean and sample std over the folds."""
    from jaxmedrf.crossval import group_of, kfold_volumes

    stem = {c: c[: -len(".npz")] for c in case_files}
    folds = kfold_volumes(None, [group_of(stem[c]) for c in case_files], k)
    out, means, stds = {}, {}, {}
    for label, rep in report.items():
        names = _scalar_names(list(rep["cases"].values()))
        rows = []
        for i, f in enumerate(folds):
            cases = [c for c in case_files if group_of(stem[c]) in f.test]
            rows.append({"fold": i, "test_volumes": list(f.test), "cases": cases,
                         "mean": {n: float(np.mean([rep["cases"][c][n] for c in cases])) for n in names}})
        means[label] = {n: float(np.mean([r["mean"][n] for r in rows])) for n in names}
        stds[label] = {n: float(np.std([r["mean"][n] for r in rows], ddof=1)) for n in names}
        out[label] = {"per_fold": rows, "mean": means[label], "std": stds[label]}
    return out, means, stds


def _fold_lines(fold_report: dict) -> str:
    lines = []
    for label, rep in fold_report.items():
        for r in rep["per_fold"]:
            m = r["mean"]
            lines.append(f"{label} fold {r['fold']} (test {', '.join(r['test_volumes'])}; {len(r['cases'])} cases): "
                         + ", ".join(f"{n} {_fmt(v)}" for n, v in m.items() if n in ("psnr", "ssim3d", "rmse")))
    return "\n".join(lines)


def _labels(paths: list[Path]) -> list[str]:
    stems = [p.stem if p.is_file() else p.name for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p) for p in paths]
