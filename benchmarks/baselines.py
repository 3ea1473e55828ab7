"""Benchmark FDK, OS-SART and CGLS (and mbirjax's FDK/MBIR when importable) on cone-beam data.

    python benchmarks/baselines.py            # H100: 128³ and 256³, 50 and 25 views
    python benchmarks/baselines.py --memory   # peak memory of each method, each in a fresh process
    python benchmarks/baselines.py --small    # tiny CPU smoke run

For each size and view count: wall time after compilation (median of ``--repeats`` calls;
compile time reported separately), SART/CGLS time per iteration, the operators' times (one
projection and one backprojection of all views) and PSNR/SSIM (3D Gaussian window) against the voxelised phantom. Data: Siddon projections of the
phantom (``jaxmedrf.phantoms.shepp_logan`` when available, else nested spheres). mbirjax runs on
the same phantom in its own geometry convention (its forward projector makes its data) and is
scored against the same phantom. Peak device memory (``memory_stats()["peak_bytes_in_use"]``)
needs a fresh process per method (``--memory``). Output:
``benchmarks/results/baselines[_memory]_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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


def _block(out):
    jax.block_until_ready(out.volume if hasattr(out, "volume") else out)
    return out


def _timed(fn, repeats=3):
    """(result, compile s, steady s): the first call compiles; steady is the median of
    ``repeats`` further calls (single timings of a few ms drift by 2× between runs)."""
    t0 = time.perf_counter()
    _block(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = _block(fn())
        times.append(time.perf_counter() - t0)
    steady = float(np.median(times))
    return out, max(first - steady, 0.0), steady


def _quality(vol, ref):
    vol = np.asarray(vol, np.float32)
    if not np.all(np.isfinite(vol)):
        return {"psnr3d": float("nan"), "ssim3d": float("nan"), "nan_in_recon": True}
    dr = float(ref.max() - ref.min())
    return {"psnr3d": float(M.psnr(vol, ref, data_range=dr)), "ssim3d": float(M.ssim3d(vol, ref, data_range=dr))}


def _operators(proj, g, ref, repeats):
    """Seconds (median of ``repeats``) for one forward and one backprojection of all views
    (the per-iteration floor of SART/CGLS)."""
    from jaxmedrf.recon.fdk import voxel_backproject

    ops = {
        "project_s": jax.jit(lambda x: jm.project(x, g)),
        "backproject_s": jax.jit(lambda y: jm.backproject(y, g)),
        "backproject_voxel_s": jax.jit(lambda y: voxel_backproject(y, g)),
        "project_pallas_siddon_s": jax.jit(lambda x: jm.project(x, g, implementation="pallas")),
        "backproject_pallas_siddon_s": jax.jit(lambda y: jm.backproject(y, g, implementation="pallas")),
        "project_pallas_s": jax.jit(lambda x: jm.project(x, g, method="trilinear", implementation="pallas")),
        "backproject_pallas_s": jax.jit(lambda y: jm.backproject(y, g, method="trilinear", implementation="pallas")),
    }
    if jax.devices()[0].platform != "gpu":
        ops = {k: v for k, v in ops.items() if "pallas" not in k}
    vol = jnp.asarray(ref, jnp.float32)
    y = jnp.asarray(proj, jnp.float32)
    return {name: _timed(lambda: fn(vol if name.startswith("project") else y), repeats)[2] for name, fn in ops.items()}


# Per variant: the sart/cgls keyword arguments. "_running" variants record SART's free running
# residual instead of an extra projection of all views per iteration (sart(residual="running")).
_PALLAS_SIDDON = dict(implementation="pallas")
_PALLAS_TRILINEAR = dict(method="trilinear", implementation="pallas")
_XLA = dict(implementation="xla")
VARIANTS = {
    "sart": (sart, _XLA),
    "sart_voxel": (sart, dict(_XLA, backprojector="voxel")),
    "sart_pallas_siddon": (sart, _PALLAS_SIDDON),
    "sart_pallas_siddon_running": (sart, dict(_PALLAS_SIDDON, residual="running")),
    "sart_voxel_pallas_siddon": (sart, dict(_PALLAS_SIDDON, backprojector="voxel")),
    "sart_voxel_pallas_siddon_running": (sart, dict(_PALLAS_SIDDON, backprojector="voxel", residual="running")),
    "sart_voxel_pallas": (sart, dict(_PALLAS_TRILINEAR, backprojector="voxel")),
    "cgls": (cgls, _XLA),
    "cgls_pallas_siddon": (cgls, _PALLAS_SIDDON),
    "cgls_pallas": (cgls, _PALLAS_TRILINEAR),
}
# the XLA projector pair is ~10× slower than the kernels: its variants run at 128³ only by default
SLOW = ("sart", "sart_voxel", "cgls", "cgls_pallas")


def _ours(proj, g, ref, n_iters, variants, repeats):
    rows = {"operators": _operators(proj, g, ref, max(repeats, 10))}
    res, compile_s, steady = _timed(lambda: fdk(proj, g, filter="ram-lak"), max(repeats, 10))
    rows["fdk"] = {"time_s": steady, "compile_s": compile_s, "process_peak_bytes": _peak_bytes(), **_quality(res.volume, ref)}
    for name in variants:
        algo, kw = VARIANTS[name]
        if algo is sart:
            kw = dict(n_subsets=10, **kw)
        res, compile_s, steady = _timed(lambda: algo(proj, g, n_iters=n_iters, progress=False, **kw), repeats)
        rows[name] = {"time_s": steady, "compile_s": compile_s, "process_peak_bytes": _peak_bytes(), **_quality(res.volume, ref),
                      "n_iters": n_iters, "time_per_iter_s": steady / n_iters,
                      "residual": [float(r) for r in res.history["residual"]]}
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


def _mbirjax(ref, g, n_iters, repeats):
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
        sino, out["forward_compile_s"], out["forward_s"] = _timed(lambda: model.forward_project(phantom), max(repeats, 10))
        try:
            _, _, out["back_s"] = _timed(lambda: model.back_project(sino), max(repeats, 10))
        except Exception as e:  # noqa: BLE001
            out["back_s_error"] = f"{type(e).__name__}: {e}"
        res, compile_s, steady = _timed(lambda: model.fdk_recon(sino), max(repeats, 10))
        out["fdk"] = {"time_s": steady, "compile_s": compile_s, "process_peak_bytes": _peak_bytes(), **_quality(res, ref)}
        t0 = time.perf_counter()
        rec, _ = model.recon(sino, max_iterations=n_iters, print_logs=False)
        rec = jax.block_until_ready(rec)
        out["mbir"] = {"time_incl_compile_s": time.perf_counter() - t0, "n_iters": n_iters, "process_peak_bytes": _peak_bytes(),
                       **_quality(rec, ref)}
    except Exception as e:  # noqa: BLE001 — record the failure, keep the benchmark going
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def _peak_of(name, n, n_views, n_iters):
    """Peak device bytes of one step (``name``: ``fdk``, ``mbirjax_fdk``, a variant, or ``quality``:
    the PSNR and SSIM3D that score every row) in this fresh process: the allocator's peak cannot
    be reset, so every figure needs its own process (within one process it only ever grows)."""
    g = _geometry(n, n_views)
    ref, _ = _phantom(g)
    proj = jax.block_until_ready(jm.project(ref, g, implementation=_fast_impl()))
    before = _peak_bytes()
    if name == "fdk":
        _block(fdk(proj, g, filter="ram-lak"))
    elif name == "quality":  # ref is a host (NumPy) array: scored as the benchmark scores a reconstruction
        _quality(0.9 * ref, ref)
    elif name == "mbirjax_fdk":
        mj, _ = _import_mbirjax()
        nv, nu = g.n_detector
        model = mj.ConeBeamModel((g.n_views, nv, nu), np.asarray(g.angles, np.float32), source_detector_dist=float(g.DSD),
                                 source_iso_dist=float(g.DSO))
        model.set_params(delta_det_channel=float(g.d_detector[1]), delta_det_row=float(g.d_detector[0]),
                         delta_voxel=float(g.d_voxel[0]), recon_shape=tuple(g.n_voxel))
        _block(model.fdk_recon(jnp.asarray(proj)))
    else:
        algo, kw = VARIANTS[name]
        kw = dict(n_subsets=10, **kw) if algo is sart else kw
        _block(algo(proj, g, n_iters=n_iters, progress=False, **kw))
    return {"variant": name, "peak_bytes": _peak_bytes(), "peak_bytes_before": before}


def _fast_impl():
    return "pallas" if jax.devices()[0].platform == "gpu" else "xla"


def _memory(n, n_views, names, n_iters):
    """``{name: peak bytes}``, each from its own subprocess (:func:`_peak_of`)."""
    import subprocess

    out = {}
    for name in names:
        cmd = [sys.executable, __file__, "--peak-of", name, "--sizes", str(n), "--views", str(n_views),
               "--iters", str(n_iters)]
        # no up-front reservation: every child (and this parent) takes only what it uses
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        out[name] = json.loads(lines[-1]) if r.returncode == 0 and lines else {"error": r.stderr[-500:]}
    return out


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke test")
    p.add_argument("--sizes", type=int, nargs="+", help="volume edge lengths (default 128 256; --small: 16)")
    p.add_argument("--views", type=int, nargs="+", help="view counts (default 50 25; --small: 8 4)")
    p.add_argument("--iters", type=int, help="SART/CGLS/MBIR iterations (default 10; --small: 2)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                   help="SART/CGLS variants (default: all at 128³ and below, the fused-kernel ones above)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant after the compiling one "
                   "(median; FDK and the operators use at least 10)")
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-mbirjax", action="store_true")
    p.add_argument("--memory", action="store_true",
                   help="only the peak device memory of the quality scores, FDK, mbirjax's FDK and each variant, "
                        "each in a fresh process")
    p.add_argument("--peak-of", help=argparse.SUPPRESS)  # internal: one --memory measurement
    a = p.parse_args(argv)
    if a.memory:  # before JAX starts its backend: a parent holding 75 % of the GPU starves the children's cuBLAS
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if a.peak_of:
        print(json.dumps(_peak_of(a.peak_of, a.sizes[0], a.views[0], a.iters or 2)))
        return None
    sizes = a.sizes or ([16] if a.small else [128, 256])
    views = a.views or ([8, 4] if a.small else [50, 25])
    n_iters = a.iters or (2 if a.small else 10)
    dev = jax.devices()[0]
    report = {
        "device": dev.device_kind, "platform": dev.platform, "jax_version": jax.__version__,
        "python": platform.python_version(), "date": dt.datetime.now().isoformat(timespec="seconds"),
        "small": a.small, "n_iters": n_iters, "repeats": a.repeats,
        "timing": "compile_s = first call − steady; steady = median of the further calls",
        "memory": "process_peak_bytes: the allocator's peak so far in this process (it only grows: it includes "
                  "earlier rows and their SSIM3D); --memory measures each method in a fresh process", "results": [],
    }
    name = re.sub(r"[^A-Za-z0-9]+", "-", dev.device_kind).strip("-").lower()
    kind = "baselines_memory" if a.memory else "baselines"
    out = Path(a.out_dir) / f"{kind}_{name}_{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from jaxmedrf._files import atomic_path

    def save():  # after every step, so a run cut short keeps what it measured
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=1))

    for n in sizes:
        for nv in views:
            if a.memory:
                names = ["quality", "fdk", *([] if a.no_mbirjax else ["mbirjax_fdk"]), *(a.variants or VARIANTS)]
                report["results"].append({"n_voxel": n, "n_views": nv, "n_iters": n_iters,
                                          "peak_bytes_fresh_process": _memory(n, nv, names, n_iters)})
                save()
                continue
            g = _geometry(n, nv)
            ref, phantom_name = _phantom(g)
            proj = jax.block_until_ready(jm.project(ref, g))
            variants = a.variants or [v for v in VARIANTS if n <= 128 or v not in SLOW]
            if jax.devices()[0].platform != "gpu":  # the fused kernels are GPU-only (interpret mode is far too slow)
                variants = [v for v in variants if "pallas" not in v]
            entry = {"n_voxel": n, "n_views": nv, "phantom": phantom_name,
                     "ours": _ours(proj, g, ref, n_iters, variants, a.repeats)}
            report["results"].append(entry)
            save()
            entry["mbirjax"] = {"skipped": "--no-mbirjax"} if a.no_mbirjax else _mbirjax(ref, g, n_iters, a.repeats)
            save()
            print(json.dumps({k: entry[k] for k in ("n_voxel", "n_views")}), {k: round(v["psnr3d"], 2) for k, v in entry["ours"].items() if "psnr3d" in v},
                  file=sys.stderr)
    print(out)
    return out


if __name__ == "__main__":
    main()
