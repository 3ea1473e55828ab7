"""``jaxmedrf reconstruct``: a volume from projections (``.npz`` from ``simulate``).

``--method naf`` trains a neural attenuation field (:mod:`jaxmedrf.recon.naf`); the
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

REQUIRED = ("projections", "geometry")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct a volume from projections (NAF, FDK, SART, CGLS)",
        description="Reconstruct μ (mm⁻¹) on the scan's voxel grid from the projections of one or more "
                    ".npz files written by `jaxmedrf simulate` (keys: projections, geometry; volume optional, "
                    "used as ground truth for PSNR3D/SSIM3D).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="input .npz file(s) of one geometry")
    p.add_argument("--out", required=True,
                   help="output for one input: .npz, .nii/.nii.gz (μ in mm⁻¹) or a folder name (DICOM CT series "
                        "in HU); several inputs: a folder of .npz files")
    p.add_argument("--method", default="naf", help="naf | fdk | sart | cgls")
    p.add_argument("--iters", type=int, default=None,
                   help="iterations (default: SART/CGLS 20; NAF steps 1500 up to 128³ voxels, 1500 × N / 128 above, "
                        "N the grid's largest side)")
    p.add_argument("--backprojector", default="auto", choices=("auto", "matched", "voxel"),
                   help="SART: exact adjoint of the projector (matched), the voxel-driven one (voxel: unmatched, "
                        "interpolating, robust where the detector samples the volume more coarsely than its voxels), "
                        "or auto: voxel where the detector pixel at the isocentre is larger than a voxel, else matched")
    p.add_argument("--implementation", default="auto", choices=("auto", "xla", "pallas"),
                   help="SART/CGLS: projector implementation; pallas = the fused GPU Siddon kernel "
                        "(falls back to XLA with a warning on CPU); auto = pallas on a GPU, xla elsewhere")
    p.add_argument("--batch-rays", type=int, default=8192, help="NAF: rays per step (split over devices)")
    p.add_argument("--n-samples", type=int, default=None,
                   help="NAF: samples per ray (default: N, one per voxel along the grid's largest side)")
    p.add_argument("--n-importance", type=int, default=0,
                   help="NAF: extra samples per ray drawn where attenuation is (hierarchical sampling; 0 = off)")
    p.add_argument("--occupancy-resolution", type=int, default=0,
                   help="NAF: empty-space skipping with an occupancy grid of N³ cells, refreshed during training "
                        "(samples go only where the field has attenuation; 0 = off)")
    p.add_argument("--occupancy-update-every", type=int, default=16, help="NAF: steps between occupancy-grid refreshes")
    p.add_argument("--occupancy-threshold", type=float, default=0.01,
                   help="NAF: a cell is empty below this fraction of the largest μ in the grid")
    p.add_argument("--grid-supersample", type=int, default=2,
                   help="NAF: output voxel = mean of the field at N³ points in the voxel (1: value at the centre)")
    p.add_argument("--lr", type=float, default=1e-2, help="NAF: peak learning rate")
    p.add_argument("--tv", type=float, default=0.0, help="NAF: total-variation weight")
    p.add_argument("--log2-table-size", type=int, default=19, help="NAF: hash table size T = 2^this per level")
    p.add_argument("--hash-levels", type=int, default=16, help="NAF: hash-grid resolution levels")
    p.add_argument("--hash-base-resolution", type=int, default=16, help="NAF: cells across the box at the coarsest level")
    p.add_argument("--hash-finest-resolution", type=int, default=512,
                   help="NAF: cells across the box at the finest level (512: 4 per voxel at 128³)")
    p.add_argument("--hash-implementation", default="auto", choices=("auto", "level_major", "per_level", "fused", "pallas"),
                   help="NAF: hash-grid implementation (pallas = the fused GPU kernel; XLA with a warning elsewhere)")
    p.add_argument("--field-implementation", default="auto", choices=("auto", "fused", "xla"),
                   help="NAF: fused = encoding + MLP in one GPU kernel per pass (auto: where it runs, i.e. one "
                        "GPU; xla = separate XLA ops; --hash-implementation applies to xla only)")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed"),
                   help="NAF: mixed = the MLP's matmuls in bfloat16 on the tensor cores (float32 accumulation, "
                        "float32 parameters, hash table and loss)")
    p.add_argument("--checkpoint-dir", default=None, help="NAF: orbax checkpoints go here")
    p.add_argument("--checkpoint-every", type=int, default=500, help="NAF: steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="NAF: continue from the newest checkpoint")
    p.add_argument("--devices", type=int, default=None, help="NAF: devices to split rays over (default: all)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: jax.distributed.initialize from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID (every process runs the same command; the mesh spans all hosts' devices)")
    p.add_argument("--distributed-timeout", type=int, default=60,
                   help="--distributed: seconds to wait for the coordinator and every process (then exit 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-png", action="store_true", help="do not write the slice PNG")
    return p


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


def save_recon(path: Path, volume: np.ndarray, geometry, *, metrics: dict | None = None, truth=None, png=True):
    """Writes the reconstruction and, beside it, a metrics JSON and a slice PNG, atomically.

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
    base = _stem(path)
    if metrics is not None:
        with atomic_path(base.with_name(base.name + ".json")) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2, default=float))
    if png:
        _slices_png(base.with_name(base.name + ".png"), volume, truth)


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


def _classical(method, proj, geometry, a):
    from jaxmedrf.recon import METHODS

    fn = METHODS.get(method)
    if fn is None:
        raise ValueError(f"--method must be one of naf, {', '.join(sorted(METHODS))}; got {method!r}")
    kw = {} if method == "fdk" else {"n_iters": a.iters or 20, "progress": not a.no_progress}
    if method == "sart":
        kw["backprojector"] = a.backprojector
    if method != "fdk":
        kw["implementation"] = a.implementation
    return np.asarray(fn(proj, geometry, **kw).volume)


def run(a) -> int:
    if a.distributed:
        from jaxmedrf.distributed import initialize_from_env

        try:
            initialize_from_env(timeout_s=a.distributed_timeout)
        except RuntimeError as e:
            raise ValueError(str(e)) from e
    from jaxmedrf.recon.naf import NAFConfig, train_naf

    scans = [load_scan(p) for p in a.inputs]
    geometry = scans[0][1]
    for p, (_, g, _) in zip(a.inputs[1:], scans[1:]):
        if g.to_json() != geometry.to_json():
            raise ValueError(f"{p}: its geometry differs from {a.inputs[0]}'s; several inputs must share one geometry")
    out = Path(a.out)
    many = len(scans) > 1
    if a.iters is not None and a.iters <= 0:
        raise ValueError(f"--iters must be positive, got {a.iters}")
    proj = np.stack([s[0] for s in scans])
    truths = [s[2] for s in scans]
    t0 = time.perf_counter()
    if a.method == "naf":
        import jax

        from jaxmedrf.parallel import make_mesh

        n_dev = a.devices or len(jax.devices())
        mesh = make_mesh(n_devices=n_dev) if n_dev > 1 else None
        if mesh is not None and a.batch_rays % n_dev:
            raise ValueError(f"--batch-rays {a.batch_rays} does not divide over {n_dev} devices; use a multiple of {n_dev}")
        if not 10 <= a.log2_table_size <= 24:
            raise ValueError(f"--log2-table-size must be between 10 and 24, got {a.log2_table_size}")
        cfg = NAFConfig(
            field=dataclasses.replace(
                NAFConfig.field, compute_dtype="bfloat16" if a.precision == "mixed" else "float32",
                implementation=a.field_implementation,
                encoding=dataclasses.replace(NAFConfig.field.encoding, log2_table_size=a.log2_table_size,
                                             implementation=a.hash_implementation, n_levels=a.hash_levels,
                                             base_resolution=a.hash_base_resolution,
                                             finest_resolution=a.hash_finest_resolution)),
            n_iters=a.iters, batch_rays=a.batch_rays, n_samples=a.n_samples, n_importance=a.n_importance, grid_supersample=a.grid_supersample, lr=a.lr, lr_final=a.lr / 10,
            tv_weight=a.tv, seed=a.seed, occupancy_resolution=a.occupancy_resolution,
            occupancy_update_every=a.occupancy_update_every, occupancy_threshold=a.occupancy_threshold,
        )
        try:
            res = train_naf(proj, geometry, cfg, mesh=mesh, checkpoint_dir=a.checkpoint_dir,
                            checkpoint_every=a.checkpoint_every if a.checkpoint_dir else 0, resume=a.resume,
                            progress=not a.no_progress)
        except FloatingPointError as e:
            raise ValueError(str(e)) from e
        volumes = np.asarray(res.volume)
        resolved = cfg.for_geometry(geometry)
        extra = {"steps": resolved.n_iters, "n_samples": resolved.n_samples, "train_seconds": res.history["train_seconds"],
                 "mlp_compute_dtype": cfg.field.compute_dtype,
                 "field_implementation": res.history["field_implementation"],
                 **({"occupied_fraction": res.history["occupied_fraction"]} if "occupied_fraction" in res.history else {}),
                 "final_loss": res.history["loss"][-1] if res.history["loss"] else None}
    else:
        volumes = np.stack([_classical(a.method, p, geometry, a) for p in proj])
        extra = {"iters": a.iters}
    wall = time.perf_counter() - t0
    stems = [Path(p).stem for p in a.inputs]
    names = [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]  # inputs may share a stem
    for i, (vol, truth) in enumerate(zip(volumes, truths)):
        metrics = {"method": a.method, "input": str(a.inputs[i]), "wall_seconds": wall, **extra}
        if truth is not None:
            metrics.update(quality(vol, truth))
        path = out / f"{names[i]}_recon.npz" if many else out
        save_recon(path, vol, geometry, metrics=metrics, truth=truth, png=not a.no_png)
        q = f", PSNR3D {metrics['psnr3d']:.2f} dB, SSIM3D {metrics['ssim3d']:.4f}" if truth is not None else ""
        print(f"{a.method}: {a.inputs[i]} -> {path} in {wall:.1f} s{q}")
    return 0
