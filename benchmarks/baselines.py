"""Benchmark FDK, OS-SART and CGLS (and mbirjax's FDK/MBIR when importable) on cone-beam data.

    python benchmarks/baselines.py            # H100: 128³ and 256³, 50 and 25 views
    python benchmarks/baselines.py --small    # tiny CPU smoke run

For each size and view count: wall time after compilation (compile time reported separately),
peak device memory (``memory_stats()["peak_bytes_in_use"]`` where the backend reports it) and
PSNR/SSIM (3D Gaussian window) against the voxelised phantom. Data: Siddon projections of the
phantom (``jaxmedrf.phantoms.shepp_logan`` when available, else nested spheres). mbirjax runs on
the same phantom in its own geometry convention (its forward projector makes its data) and is
scored against the same phantom. Output: ``benchmarks/results/baselines_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxmedrf as jm
from jaxmedrf import metrics as M
from jaxmedrf.recon import cgls, fdk, sart


def _geometry(n, n_views):
    # NAF-like: 2 mm voxels at 128³ scaled to keep the field of view, detector covers the volume
    d_vox = 256.0 / n
    return jm.cone_beam(n_voxel=(n, n, n), d_voxel=d_vox, n_detector=(n + n // 2, n + n // 2), d_detector=d_vox * 1.5 * 0.9,
                        DSD=1500.0, DSO=1000.0, n_views=n_views)


def _phantom(g):
    try:
        from jaxmedrf import phantoms

        ph = phantoms.shepp_logan(radius=0.45 * g.n_voxel[2] * float(g.d_voxel[2]), mu_scale=0.02)
        return np.asarray(phantoms.voxelize(ph, g, supersample=2), np.float32), "shepp_logan"
    except Exception:  # phantoms module not merged yet
        xs, ys, zs = (np.asarray(a) for a in jm.voxel_centers(g))
        X, Y, Z = np.meshgrid(xs, ys, zs, indexing="ij")
        r = 0.4 * g.n_voxel[0] * float(g.d_voxel[0])
        v = 0.02 * (X**2 + Y**2 + Z**2 < r**2) + 0.01 * ((X - r / 3) ** 2 + Y**2 + Z**2 < (r / 3) ** 2)
        v -= 0.005 * ((X + r / 3) ** 2 + (Y - r / 4) ** 2 + Z**2 < (r / 5) ** 2)
        return v.astype(np.float32), "spheres"


def _peak_bytes():
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        return None
    return stats.get("peak_bytes_in_use")


def _timed(fn):
    """(result, compile+first run s, steady run s): the first call compiles, the second is timed."""
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.volume if hasattr(out, "volume") else out)
    t1 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.volume if hasattr(out, "volume") else out)
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def _quality(vol, ref):
    vol = np.asarray(vol, np.float32)
    if not np.all(np.isfinite(vol)):
        return {"psnr3d": float("nan"), "ssim3d": float("nan"), "nan_in_recon": True}
    dr = float(ref.max() - ref.min())
    return {"psnr3d": float(M.psnr(vol, ref, data_range=dr)), "ssim3d": float(M.ssim3d(vol, ref, data_range=dr))}


def _operators(proj, g, ref):
    """Seconds for one forward and one backprojection of all views (the per-iteration floor)."""
    from jaxmedrf.recon.fdk import voxel_backproject

    ops = {
        "project_s": jax.jit(lambda x: jm.project(x, g)),
        "backproject_s": jax.jit(lambda y: jm.backproject(y, g)),
        "backproject_voxel_s": jax.jit(lambda y: voxel_backproject(y, g)),
        "project_pallas_s": jax.jit(lambda x: jm.project(x, g, method="trilinear", implementation="pallas")),
        "backproject_pallas_s": jax.jit(lambda y: jm.backproject(y, g, method="trilinear", implementation="pallas")),
    }
    vol = jnp.asarray(ref, jnp.float32)
    args = {"project_s": vol, "project_pallas_s": vol}
    out = {}
    for name, fn in ops.items():
        x = args.get(name, jnp.asarray(proj, jnp.float32))
        jax.block_until_ready(fn(x))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        out[name] = time.perf_counter() - t0
    return out


def _ours(proj, g, ref, n_iters):
    rows = {"operators": _operators(proj, g, ref)}
    runs = {
        "fdk": lambda: fdk(proj, g, filter="ram-lak"),
        "sart": lambda: sart(proj, g, n_iters=n_iters, n_subsets=10, progress=False),
        "sart_voxel": lambda: sart(proj, g, n_iters=n_iters, n_subsets=10, backprojector="voxel", progress=False),
        # the fused GPU projector (trilinear) forward, voxel-driven backprojection
        "sart_voxel_pallas": lambda: sart(proj, g, n_iters=n_iters, n_subsets=10, backprojector="voxel", method="trilinear",
                                          implementation="pallas", progress=False),
        "cgls_pallas": lambda: cgls(proj, g, n_iters=n_iters, method="trilinear", implementation="pallas", progress=False),
        # the fused Siddon kernel with its exact (atomic) adjoint
        "sart_pallas_siddon": lambda: sart(proj, g, n_iters=n_iters, n_subsets=10, implementation="pallas", progress=False),
        "cgls_pallas_siddon": lambda: cgls(proj, g, n_iters=n_iters, implementation="pallas", progress=False),
        "cgls": lambda: cgls(proj, g, n_iters=n_iters, progress=False),
    }
    for name, fn in runs.items():
        res, first, steady = _timed(fn)
        row = {"time_s": steady, "compile_s": max(first - steady, 0.0), "peak_bytes": _peak_bytes(), **_quality(res.volume, ref)}
        if name != "fdk":
            row["n_iters"] = n_iters
            row["time_per_iter_s"] = steady / n_iters
            row["residual"] = [float(r) for r in res.history["residual"]]
        rows[name] = row
    return rows


def _import_mbirjax():
    """mbirjax, importing its GUI dependency ``easygui`` as an empty stub where that fails.

    mbirjax imports easygui only for its interactive viewer; on a machine without a display
    stack (the GPU machines here) easygui's own import fails ("No module named 'global_state'").
    The reconstruction code never calls it, so a stub is enough and is recorded in the JSON.
    """
    import sys
    import types

    stubbed = False
    try:
        import easygui  # noqa: F401
    except Exception:  # noqa: BLE001
        sys.modules["easygui"] = types.ModuleType("easygui")
        stubbed = True
    import mbirjax

    return mbirjax, stubbed


def _mbirjax(ref, g, n_iters):
    try:
        mj, stubbed = _import_mbirjax()
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"mbirjax not importable: {type(e).__name__}: {e}"}
    out = {"version": getattr(mj, "__version__", "unknown"), "easygui_stubbed": stubbed}
    try:
        angles = np.asarray(g.angles, np.float32)
        nv, nu = g.n_detector
        model = mj.ConeBeamModel((g.n_views, nv, nu), angles, source_detector_dist=float(g.DSD), source_iso_dist=float(g.DSO))
        model.set_params(delta_det_channel=float(g.d_detector[1]), delta_det_row=float(g.d_detector[0]),
                         delta_voxel=float(g.d_voxel[0]), recon_shape=tuple(g.n_voxel))
        phantom = jnp.asarray(ref)  # mbirjax layout (rows, cols, slices); it is scored against what it projected
        t0 = time.perf_counter()
        sino = jax.block_until_ready(model.forward_project(phantom))
        t1 = time.perf_counter()
        sino = jax.block_until_ready(model.forward_project(phantom))
        out["forward_s"] = time.perf_counter() - t1
        out["forward_compile_s"] = max(t1 - t0 - out["forward_s"], 0.0)
        try:
            jax.block_until_ready(model.back_project(sino))
            t1 = time.perf_counter()
            jax.block_until_ready(model.back_project(sino))
            out["back_s"] = time.perf_counter() - t1
        except Exception as e:  # noqa: BLE001
            out["back_s_error"] = f"{type(e).__name__}: {e}"
        res, first, steady = _timed(lambda: model.fdk_recon(sino))
        out["fdk"] = {"time_s": steady, "compile_s": max(first - steady, 0.0), "peak_bytes": _peak_bytes(), **_quality(res, ref)}
        t0 = time.perf_counter()
        rec, _ = model.recon(sino, max_iterations=n_iters, print_logs=False)
        rec = jax.block_until_ready(rec)
        out["mbir"] = {"time_incl_compile_s": time.perf_counter() - t0, "n_iters": n_iters, "peak_bytes": _peak_bytes(),
                       **_quality(rec, ref)}
    except Exception as e:  # noqa: BLE001 — record the failure, keep the benchmark going
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke test")
    p.add_argument("--sizes", type=int, nargs="+", help="volume edge lengths (default 128 256; --small: 16)")
    p.add_argument("--views", type=int, nargs="+", help="view counts (default 50 25; --small: 8 4)")
    p.add_argument("--iters", type=int, help="SART/CGLS/MBIR iterations (default 20; --small: 2)")
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-mbirjax", action="store_true")
    a = p.parse_args(argv)
    sizes = a.sizes or ([16] if a.small else [128, 256])
    views = a.views or ([8, 4] if a.small else [50, 25])
    n_iters = a.iters or (2 if a.small else 20)
    dev = jax.devices()[0]
    report = {
        "device": dev.device_kind, "platform": dev.platform, "jax_version": jax.__version__,
        "python": platform.python_version(), "date": dt.datetime.now().isoformat(timespec="seconds"),
        "small": a.small, "n_iters": n_iters, "results": [],
    }
    name = re.sub(r"[^A-Za-z0-9]+", "-", dev.device_kind).strip("-").lower()
    out = Path(a.out_dir) / f"baselines_{name}_{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from jaxmedrf._files import atomic_path

    def save():  # after every step, so a run cut short keeps what it measured
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=1))

    for n in sizes:
        for nv in views:
            g = _geometry(n, nv)
            ref, phantom_name = _phantom(g)
            proj = jax.block_until_ready(jm.project(ref, g))
            entry = {"n_voxel": n, "n_views": nv, "phantom": phantom_name, "ours": _ours(proj, g, ref, n_iters)}
            report["results"].append(entry)
            save()
            entry["mbirjax"] = {"skipped": "--no-mbirjax"} if a.no_mbirjax else _mbirjax(ref, g, n_iters)
            save()
            print(json.dumps({k: entry[k] for k in ("n_voxel", "n_views")}), {k: round(v["psnr3d"], 2) for k, v in entry["ours"].items() if "psnr3d" in v},
                  file=sys.stderr)
    print(out)
    return out


if __name__ == "__main__":
    main()
