"""``jaxmedrf reconstruct``: a volume from projections (``.npz`` from ``simulate``).

``--method naf`` trains a neural attenuation field (:mod:`jaxmedrf.recon.naf`), an MLP or
(``--field lineformer``) SAX-NeRF's line-segment attention field with masked local-global ray
sampling (:mod:`jaxmedrf.fields.lineformer`, :mod:`jaxmedrf.recon.mlg`); the
classical baselines (``fdk``, ``sart``, ``cgls``) run through the same command and write the
same output. Several input files (same geometry) train together, one field per file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "load_scan", "run", "save_recon"]

HELP = "reconstruct a volume from projections (NAF, FDK, SART, CGLS)"  # one line in `jaxmedrf --help`

REQUIRED = ("projections", "geometry")


def add_parser(sub) -> argparse.ArgumentParser:
    from jaxmedrf.cli._config_args import param_default
    from jaxmedrf.projectors import IMPLEMENTATIONS
    from jaxmedrf.recon import METHODS, cgls, sart
    from jaxmedrf.recon.iterative import PROJECTORS

    p = sub.add_parser(
        "reconstruct",
        help=HELP,
        description="Reconstruct μ (mm⁻¹) on the scan's voxel grid from the projections of one or more "
                    ".npz files written by `jaxmedrf simulate` (keys: projections, geometry; volume optional, "
                    "used as ground truth for PSNR3D/SSIM3D).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="input .npz file(s) of one geometry")
    p.add_argument("--out", required=True,
                   help="output for one input: .npz, .nii/.nii.gz (μ in mm⁻¹) or a folder name (DICOM CT series "
                        "in HU); several inputs: a folder of .npz files")
    p.add_argument("--method", default="naf", choices=("naf", *METHODS), help="reconstruction method")
    p.add_argument("--backprojector", default=param_default(sart, "backprojector"), choices=("auto", "matched", "voxel"),
                   help="SART: exact adjoint of the projector (matched), the voxel-driven one (voxel: unmatched, "
                        "interpolating, robust where the detector samples the volume more coarsely than its voxels), "
                        "or auto: voxel where the detector pixel at the isocentre is larger than a voxel, else matched")
    p.add_argument("--projector", default=param_default(sart, "method"), choices=PROJECTORS,
                   help="SART/CGLS: projector pair; auto = Joseph's on a CPU (plane by plane, many times faster there), "
                        "Siddon elsewhere")
    p.add_argument("--implementation", default=param_default(cgls, "implementation"), choices=("auto", *IMPLEMENTATIONS),
                   help="SART/CGLS: projector implementation; pallas = the fused GPU Siddon kernel "
                        "(falls back to XLA with a warning on CPU); auto = pallas on a GPU, xla elsewhere")
    _prior_args(p)
    naf = naf_args().add_to(p)
    naf.add_argument("--checkpoint-dir", default=None, help="NAF: orbax checkpoints go here")
    # CLI default on purpose: train_naf's checkpoint_every=0 means "none"; here checkpoints are
    # asked for by --checkpoint-dir, and this is their interval.
    naf.add_argument("--checkpoint-every", type=int, default=500, help="NAF: steps between checkpoints")
    naf.add_argument("--resume", action="store_true", help="NAF: continue from the newest checkpoint")
    naf.add_argument("--devices", type=int, default=None, help="NAF: devices to split rays over (default: all)")
    _add_lineformer_args(naf)
    p.add_argument("--bh-correction", default="none", choices=("none", "water"),
                   help="water: beam-hardening correction of the projections before reconstruction (Herman's "
                        "polynomial water precorrection to μ at 60 keV); the spectrum comes from the input's "
                        "physics (simulate --kvp/--spectrum) or from --spectrum/--kvp here")
    from jaxmedrf.cli._physics_args import add_physics_arguments

    add_physics_arguments(p, simulate=False)
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: jax.distributed.initialize from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID (every process runs the same command; the mesh spans all hosts' devices)")
    p.add_argument("--distributed-timeout", type=int, default=60,
                   help="--distributed: seconds to wait for the coordinator and every process (then exit 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-png", action="store_true", help="do not write the slice PNG")
    return p


def _add_lineformer_args(group) -> None:
    """``--field`` and the flags of the Lineformer field and MLG sampling (defaults: the configs')."""
    from jaxmedrf.cli._config_args import field_default
    from jaxmedrf.fields.lineformer import LineformerConfig
    from jaxmedrf.recon.mlg import MLGConfig

    group.add_argument("--field", default="mlp", choices=("mlp", "lineformer"),
                       help="NAF: the field: mlp (NAF) or lineformer (SAX-NeRF: self-attention among the samples of "
                            "each line segment of a ray; the hash-grid flags apply to it)")
    for flag, name, text in (("--segment-length", "segment_length", "samples per line segment (M)"),
                             ("--attention-heads", "heads", "attention heads"),
                             ("--head-dim", "head_dim", "width of each attention head"),
                             ("--attention-blocks", "n_blocks", "transformer layers per attention block")):
        group.add_argument(flag, type=int, default=field_default(LineformerConfig, name), help=f"lineformer: {text}")
    axes = "".join("xyz"[i] for i in field_default(LineformerConfig, "query_axes"))
    group.add_argument("--query-axes", default=axes, choices=("z", "xyz"),
                       help="lineformer: the volume from voxel columns along z (SAX-NeRF's) or the mean over x, y and z "
                            f"columns (default {axes})")
    group.add_argument("--ray-sampling", default="uniform", choices=("uniform", "mlg"),
                       help="NAF: rays of a step uniform over all pixels, or SAX-NeRF's masked local-global sampling "
                            "(mlg: detector windows + pixels inside the projection's mask)")
    for flag, name, typ, text in (("--mlg-window", "window", int, "side of a detector window, pixels"),
                                  ("--mlg-local-fraction", "local_fraction", float, "share of the rays in whole windows"),
                                  ("--mlg-threshold", "threshold", float, "mask: projection > this × its maximum"),
                                  ("--mlg-views", "views_per_step", int, "views a step's rays come from")):
        group.add_argument(flag, type=typ, default=field_default(MLGConfig, name), help=f"mlg: {text}")


def _naf_config(a):
    """``a.naf_config`` with the field and ray sampling that ``--field`` / ``--ray-sampling`` ask for."""
    from jaxmedrf.fields.lineformer import LineformerConfig
    from jaxmedrf.recon.mlg import MLGConfig

    cfg = a.naf_config
    if a.field == "lineformer":
        f = cfg.field
        cfg = dataclasses.replace(cfg, field=LineformerConfig(
            encoding=f.encoding, width=f.width, depth=f.depth, skips=f.skips, out_activation=f.out_activation,
            mu_scale=f.mu_scale, segment_length=a.segment_length, heads=a.attention_heads, head_dim=a.head_dim,
            n_blocks=a.attention_blocks, query_axes=tuple("xyz".index(c) for c in a.query_axes)))
    if a.ray_sampling == "mlg":
        cfg = dataclasses.replace(cfg, ray_sampling=MLGConfig(
            window=a.mlg_window, local_fraction=a.mlg_local_fraction, threshold=a.mlg_threshold,
            views_per_step=a.mlg_views))
    return cfg


def _prior_args(p) -> None:
    """``--prior FILE`` and its two knobs; their defaults are the library's (per method)."""
    from jaxmedrf.cli._config_args import param_default
    from jaxmedrf.priors import red_field_loss, red_step

    g = p.add_argument_group("learned prior (jaxmedrf.priors; SART and NAF)")
    g.add_argument("--prior", metavar="FILE", default=None,
                   help="a denoising prior from `jaxmedrf train-prior`: a RED step after each SART pass, or a RED "
                        "loss on random axial patches of the NAF field")
    g.add_argument("--prior-weight", type=float, default=None,
                   help=f"SART: step λ in (0, 1] (default {param_default(red_step, 'weight')}); NAF: loss weight "
                        f"(default {param_default(red_field_loss, 'weight')})")
    g.add_argument("--prior-sigma", type=float, default=None,
                   help=f"noise level asked of the denoiser, in units of the prior's μ scale (default "
                        f"SART {param_default(red_step, 'sigma')}, NAF {param_default(red_field_loss, 'sigma')})")


def _prior_hook(a):
    """The SART ``prior_step`` or NAF ``regularizer`` of ``--prior`` (None without it)."""
    if a.prior is None:
        if a.prior_weight is not None or a.prior_sigma is not None:
            raise ValueError("--prior-weight/--prior-sigma need --prior FILE")
        return None
    if a.method not in ("sart", "naf"):
        raise ValueError(f"--prior works with --method sart or naf, not {a.method}")
    from jaxmedrf.priors import load_prior, red_field_loss, red_step

    prior = load_prior(a.prior)
    kw = {k: v for k, v in (("weight", a.prior_weight), ("sigma", a.prior_sigma)) if v is not None}
    return red_step(prior, **kw) if a.method == "sart" else red_field_loss(prior, **kw)


def naf_args():
    """The flags of :class:`~jaxmedrf.recon.naf.NAFConfig` fields: defaults, types, choices and
    ranges are the config's (``args.naf_config`` receives the config they build)."""
    from jaxmedrf.cli._config_args import ConfigArgs, Flag, param_default
    from jaxmedrf.fields.field import FIELD_IMPLEMENTATIONS
    from jaxmedrf.kernels.hash_config import HASH_IMPLEMENTATIONS
    from jaxmedrf.recon import sart
    from jaxmedrf.recon.naf import NAFConfig

    flags = [
        Flag("n_iters", "--iters",
             f"iterations (default: SART/CGLS {param_default(sart, 'n_iters')}; NAF steps 1500 up to 128³ voxels, "
             "1500 × N / 128 above, N the grid's largest side)"),
        Flag("batch_rays", "--batch-rays", "NAF: rays per step (split over devices)"),
        Flag("n_samples", "--n-samples", "NAF: samples per ray (default: N, one per voxel along the grid's largest side)"),
        Flag("n_importance", "--n-importance",
             "NAF: extra samples per ray drawn where attenuation is (hierarchical sampling; 0 = off)"),
        Flag("occupancy_resolution", "--occupancy-resolution",
             "NAF: empty-space skipping with an occupancy grid of N³ cells, refreshed during training "
             "(samples go only where the field has attenuation; 0 = off)"),
        Flag("occupancy_update_every", "--occupancy-update-every", "NAF: steps between occupancy-grid refreshes"),
        Flag("occupancy_threshold", "--occupancy-threshold",
             "NAF: a cell is empty below this fraction of the largest μ in the grid"),
        Flag("grid_supersample", "--grid-supersample",
             "NAF: output voxel = mean of the field at N³ points in the voxel (1: value at the centre)"),
        Flag("lr", "--lr", "NAF: peak learning rate (the final one is a tenth of it)"),
        Flag("tv_weight", "--tv", "NAF: total-variation weight"),
        Flag("field.encoding.log2_table_size", "--log2-table-size", "NAF: hash table size T = 2^this per level"),
        Flag("field.encoding.n_levels", "--hash-levels", "NAF: hash-grid resolution levels"),
        Flag("field.encoding.base_resolution", "--hash-base-resolution", "NAF: cells across the box at the coarsest level"),
        Flag("field.encoding.finest_resolution", "--hash-finest-resolution",
             "NAF: cells across the box at the finest level (512: 4 per voxel at 128³)"),
        Flag("field.encoding.implementation", "--hash-implementation",
             "NAF: hash-grid implementation (pallas = the fused GPU kernel; XLA with a warning elsewhere)",
             choices=HASH_IMPLEMENTATIONS),
        Flag("field.implementation", "--field-implementation",
             "NAF: fused = encoding + MLP in one GPU kernel per pass (auto: where it runs, i.e. one "
             "GPU; xla = separate XLA ops; --hash-implementation applies to xla only)", choices=FIELD_IMPLEMENTATIONS),
        Flag("field.compute_dtype", "--precision",
             "NAF: mixed = the MLP's matmuls in bfloat16 on the tensor cores (float32 accumulation, "
             "float32 parameters, hash table and loss)", cli_values={"float32": "float32", "mixed": "bfloat16"}),
        Flag("seed", "--seed", "PRNG seed"),
    ]
    # The one CLI rule beside NAFConfig's defaults: lr_final follows --lr at the library
    # defaults' ratio (NAFConfig: lr 1e-2, lr_final 1e-3), so that the default is NAFConfig().
    return ConfigArgs("naf_config", NAFConfig(), flags, title="NAF (jaxmedrf.recon.NAFConfig, train_naf)",
                      finish=lambda c: dataclasses.replace(c, lr_final=c.lr / 10))


def load_scan(path: str | Path):
    """Projections (float32) , Geometry and optional ground-truth volume of a ``.npz``."""
    from jaxmedrf._files import read_npz
    from jaxmedrf.geometry import Geometry
    from jaxmedrf.recon.naf import check_projection_values

    path = Path(path)
    z = read_npz(path, REQUIRED, what="input")
    geometry = Geometry.from_json(str(z["geometry"]))
    proj = np.asarray(z["projections"], np.float32)
    volume = np.asarray(z["volume"], np.float32) if "volume" in z else None
    if proj.shape != geometry.projection_shape:
        raise ValueError(f"{path}: projections have shape {proj.shape}, geometry expects {geometry.projection_shape}")
    if volume is not None and volume.shape != geometry.n_voxel:
        raise ValueError(f"{path}: volume has shape {volume.shape}, geometry's n_voxel is {geometry.n_voxel}")
    check_projection_values(proj, f"{path}: projections")
    return proj, geometry, volume


def _stem(path: Path) -> Path:
    """``path`` without its volume suffix (``.npz``, ``.nii``, ``.nii.gz``): the JSON/PNG name base."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".npz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path


def save_recon(path: Path, volume: np.ndarray, geometry, *, metrics: dict | None = None, truth=None,
               png=True) -> list[Path]:
    """Writes the reconstruction and, beside it, a metrics JSON and a slice PNG, atomically;
    returns the paths written (the volume first).

    The format follows ``path``: ``.npz`` (``volume`` + ``geometry``), ``.nii``/``.nii.gz``
    (μ in mm⁻¹) or any other name: a DICOM CT series folder (μ converted to HU with
    :data:`jaxmedrf.io.MU_WATER`, de-identified, new UIDs). NIfTI and DICOM get the geometry's
    voxel grid, with (x, y, z) written as patient LPS axes.
    """
    from jaxmedrf._files import atomic_path

    volume = np.asarray(volume, np.float32)
    if path.suffix == ".npz":
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, volume=volume, geometry=np.asarray(geometry.to_json()))
    else:
        from jaxmedrf import io

        d = np.asarray(geometry.d_voxel, np.float64)
        affine = np.diag([*d, 1.0])
        affine[:3, 3] = np.asarray(geometry.off_origin, np.float64) - (np.asarray(geometry.n_voxel) - 1) / 2 * d
        if path.name.endswith((".nii", ".nii.gz")):
            io.save_volume(volume, path, affine=affine, modality="CT", unit="mm^-1", overwrite=True)
        else:
            hu = io.mu_to_hu(volume)
            io.save_volume(np.asarray(hu, np.float32), path, affine=affine, modality="CT", unit="HU", overwrite=True)
    written = [path]
    base = _stem(path)
    if metrics is not None:
        written.append(base.with_name(base.name + ".json"))
        with atomic_path(written[-1]) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2, default=float))
    if png:
        written.append(base.with_name(base.name + ".png"))
        _slices_png(written[-1], volume, truth)
    return written


def _slices_png(path: Path, volume, truth) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxmedrf._files import atomic_path

    rows = [("reconstruction", volume)]
    if truth is not None:
        rows = [("ground truth", truth), ("reconstruction", volume), ("error", volume - truth)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.3 * len(rows)), squeeze=False)
    vmax = float(np.max(truth if truth is not None else volume))
    nx, ny, nz = volume.shape
    for r, (name, v) in enumerate(rows):
        err = name == "error"
        lim = float(np.abs(v).max()) or 1.0
        for c, (img, plane) in enumerate([(v[:, :, nz // 2].T, "axial"), (v[:, ny // 2, :].T, "coronal"), (v[nx // 2].T, "sagittal")]):
            ax = axes[r][c]
            im = ax.imshow(img, cmap="RdBu_r" if err else "gray", origin="lower",
                           vmin=-lim if err else 0, vmax=lim if err else vmax)
            ax.set_title(f"{name}: {plane}")
            ax.axis("off")
        fig.colorbar(im, ax=list(axes[r]), fraction=0.02, label="μ (mm⁻¹)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def quality(volume, truth) -> dict:
    """PSNR3D (data range of the truth) and SSIM3D of a volume against the truth."""
    from jaxmedrf import metrics

    return {"psnr3d": float(metrics.psnr(volume, truth)), "ssim3d": float(metrics.ssim3d(volume, truth))}


def _bh_correct(a, path, proj):
    """``proj`` after ``--bh-correction`` (unchanged for ``none``); the spectrum from the flags,
    else from the input's ``physics``; ``ValueError`` when neither has one."""
    from jaxmedrf.cli._physics_args import spectrum_of

    spectrum = spectrum_of(a)
    if a.bh_correction == "none":
        if spectrum is not None:
            raise ValueError("--spectrum/--kvp are for --bh-correction water")
        return proj, None
    detector = a.response
    if spectrum is None:
        from jaxmedrf.io.scan import load_physics

        with np.load(path, allow_pickle=False) as z:
            settings = load_physics({"physics": z["physics"]} if "physics" in z.files else {}, what=str(path))
        spectrum = (settings or {}).get("spectrum")
        if spectrum is None:
            raise ValueError(f"--bh-correction water needs the spectrum: {path} records none (simulate it with "
                             "--kvp/--spectrum, or give --kvp/--spectrum here)")
        detector = settings.get("detector", detector)
    from jaxmedrf import physics

    out = physics.water_correction(proj, spectrum["energy_kev"], spectrum["fluence"], detector=detector)
    return np.asarray(out, np.float32), spectrum.get("source")


def _classical(method, proj, geometry, a, prior_step=None):
    from jaxmedrf.recon import METHODS

    fn = METHODS[method]  # --method has the choices
    kw = {} if method == "fdk" else {"progress": not a.no_progress}
    if method != "fdk" and a.iters is not None:  # else the method's own default
        kw["n_iters"] = a.iters
    if method == "sart":
        kw["backprojector"] = a.backprojector
        if prior_step is not None:
            kw["prior_step"] = prior_step
    if method != "fdk":
        kw["implementation"] = a.implementation
        kw["method"] = a.projector
    return np.asarray(fn(proj, geometry, **kw).volume)


def run(a) -> int:
    if a.distributed:
        from jaxmedrf.distributed import initialize_from_env

        try:
            initialize_from_env(timeout_s=a.distributed_timeout)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"--distributed: {e}") from e
    from jaxmedrf.recon.naf import train_naf

    cfg = _naf_config(a) if a.method == "naf" else None  # a refused setting exits before any input is read
    scans = [load_scan(p) for p in a.inputs]
    hook = _prior_hook(a)
    geometry = scans[0][1]
    for p, (_, g, _) in zip(a.inputs[1:], scans[1:]):
        if g.to_json() != geometry.to_json():
            raise ValueError(f"{p}: its geometry differs from {a.inputs[0]}'s; several inputs must share one geometry")
    out = Path(a.out)
    many = len(scans) > 1
    corrected = [_bh_correct(a, p, s[0]) for p, s in zip(a.inputs, scans)]
    proj = np.stack([c[0] for c in corrected])
    truths = [s[2] for s in scans]
    t0 = time.perf_counter()
    if a.method == "naf":
        import jax

        from jaxmedrf.parallel import make_mesh

        n_dev = a.devices or len(jax.devices())
        mesh = make_mesh(n_devices=n_dev) if n_dev > 1 else None
        if mesh is not None and a.batch_rays % n_dev:
            raise ValueError(f"--batch-rays {a.batch_rays} does not divide over {n_dev} devices; use a multiple of {n_dev}")
        try:
            res = train_naf(proj, geometry, cfg, mesh=mesh, checkpoint_dir=a.checkpoint_dir,
                            checkpoint_every=a.checkpoint_every if a.checkpoint_dir else 0, resume=a.resume,
                            progress=not a.no_progress, regularizer=hook)
        except FloatingPointError as e:
            raise ValueError(str(e)) from e
        volumes = np.asarray(res.volume)
        resolved = cfg.for_geometry(geometry)
        extra = {"field": a.field, "ray_sampling": "uniform" if cfg.ray_sampling is None else "mlg",
                 "steps": resolved.n_iters, "n_samples": resolved.n_samples, "train_seconds": res.history["train_seconds"],
                 "mlp_compute_dtype": getattr(cfg.field, "compute_dtype", "float32"),
                 "field_implementation": res.history["field_implementation"],
                 **({"occupied_fraction": res.history["occupied_fraction"]} if "occupied_fraction" in res.history else {}),
                 "final_loss": res.history["loss"][-1] if res.history["loss"] else None}
    else:
        volumes = np.stack([_classical(a.method, p, geometry, a, hook) for p in proj])
        extra = {"iters": a.iters}
    if hook is not None:
        extra["prior"] = str(a.prior)
    wall = time.perf_counter() - t0
    stems = [Path(p).stem for p in a.inputs]
    names = [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]  # inputs may share a stem
    for i, (vol, truth) in enumerate(zip(volumes, truths)):
        metrics = {"method": a.method, "input": str(a.inputs[i]), "wall_seconds": wall, **extra}
        if a.bh_correction != "none":
            metrics.update(bh_correction=a.bh_correction, spectrum=corrected[i][1])
        if truth is not None:
            metrics.update(quality(vol, truth))
        path = out / f"{names[i]}_recon.npz" if many else out
        written = save_recon(path, vol, geometry, metrics=metrics, truth=truth, png=not a.no_png)
        q = f", PSNR3D {metrics['psnr3d']:.2f} dB, SSIM3D {metrics['ssim3d']:.4f}" if truth is not None else ""
        print(f"{a.method}: {a.inputs[i]} in {wall:.1f} s{q} -> {', '.join(map(str, written))}")
    if a.method == "naf" and a.checkpoint_dir:
        print(f"checkpoints: {a.checkpoint_dir}")
    return 0
