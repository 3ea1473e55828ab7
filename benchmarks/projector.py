"""Projector benchmark: Siddon and trilinear DRRs, forward and forward+backward.

Each case runs in its own process so that peak device memory and compile time are its own.
Writes ``benchmarks/results/projector_<device>_<date>.json``.

    python -m benchmarks.projector            # GPU sizes: 128³ and 256³, 256² detector
    python -m benchmarks.projector --small    # CPU smoke run
    python -m benchmarks.projector --kernels  # fused Pallas kernel vs XLA trilinear, one process a size

``--kernels`` times the fused Pallas trilinear projector (:mod:`jaxmedrf.kernels.projector`)
beside the XLA trilinear projector in the same process: 128³ and 256³ volumes (float32, and
bfloat16/float16 storage for the kernel), 256² detector, 512 samples per ray, 8 views a
batch; forward, forward+backward w.r.t. the volume, and forward+backward w.r.t. the pose
(per-view rotation and translation, as a registration step needs). It also records the
kernel's deviation from XLA (values and both gradients) at each size. Writes
``benchmarks/results/projector_kernels_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import environment, peak_bytes, timeit, write_json


def run_case(n: int, det: int, views: int, method: str, chunk: int | None, grad: bool, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxmedrf as jm
    from jaxmedrf import phantoms

    g = jm.cone_beam(n_voxel=(n, n, n), d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det,
                     DSD=1500.0, DSO=1000.0, n_views=views)
    vol = phantoms.voxelize(phantoms.shepp_logan(radius=128.0), g, supersample=1)
    vol.block_until_ready()
    fwd = jax.jit(lambda v: jm.project(v, g, method=method, chunk_size=chunk))
    t0 = time.perf_counter()
    fwd(vol).block_until_ready()
    compile_s = time.perf_counter() - t0
    out = {"n_voxel": n, "detector": det, "views": views, "method": method, "chunk_size": chunk,
           "compile_and_first_s": compile_s}
    t = timeit(lambda: fwd(vol).block_until_ready(), repeats=repeats)
    rays = views * det * det
    out.update(forward=t, forward_rays_per_s=rays / t["median_s"], forward_ms_per_drr=1e3 * t["median_s"] / views)
    if grad:
        target = fwd(vol) * 1.01
        loss = jax.jit(jax.grad(lambda v: jnp.sum((jm.project(v, g, method=method, chunk_size=chunk) - target) ** 2)))
        loss(vol).block_until_ready()
        tb = timeit(lambda: loss(vol).block_until_ready(), repeats=repeats)
        out.update(forward_backward=tb, forward_backward_ms_per_drr=1e3 * tb["median_s"] / views,
                   forward_backward_rays_per_s=rays / tb["median_s"])
    out["peak_bytes"] = peak_bytes()
    return out


def _samples_step(n_voxel, n_samples: int) -> float:
    """The ``step`` (voxels) for which :func:`jaxmedrf.project` takes exactly ``n_samples`` samples."""
    import math

    return math.sqrt(sum(n * n for n in n_voxel)) / (n_samples - 0.5)


def run_kernel_case(n: int, det: int, views: int, n_samples: int, configs: list, repeats: int,
                    check: bool = True, grads: tuple = ("volume", "pose")) -> dict:
    """XLA trilinear and fused-kernel rows for one size, in this process.

    ``configs``: dicts with ``implementation`` ("xla" or "pallas"), ``dtype`` and, for the
    kernel, ``block_rays``, ``num_warps``, ``unroll``.
    """
    import jax
    import jax.numpy as jnp

    import jaxmedrf as jm
    from jaxmedrf import phantoms
    from jaxmedrf.projectors.pallas import project_pallas

    g = jm.cone_beam(n_voxel=(n, n, n), d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det,
                     DSD=1500.0, DSO=1000.0, n_views=views)
    g = g.replace(rotation=jnp.broadcast_to(jnp.eye(3), (views, 3, 3)), translation=jnp.zeros((views, 3)))
    vol32 = phantoms.voxelize(phantoms.shepp_logan(radius=128.0), g, supersample=1).astype(jnp.float32)
    step = _samples_step(g.n_voxel, n_samples)

    def projector(c):
        method = c.get("method", "trilinear")
        if c["implementation"] == "xla":
            return lambda v, geo: jm.project(v, geo, method=method, step=step, chunk_size=c.get("chunk"))
        kw = {k: c[k] for k in ("block_rays", "tile", "lanes", "num_warps", "unroll", "pack", "adjoint", "interpret")
              if k in c}
        return lambda v, geo: project_pallas(v, geo, method=method, n_samples=n_samples, **kw)

    target = jax.jit(projector({"implementation": "xla"}))(vol32, g) * 1.01
    rays = views * det * det
    rows = []
    fns = {}
    for c in configs:
        proj = projector(c)
        vol = vol32.astype(c.get("dtype", "float32"))
        row = {**c, "n_voxel": n, "detector": det, "views": views, "n_samples": n_samples}
        try:
            fwd = jax.jit(proj)
            loss_v = jax.jit(jax.grad(lambda v: jnp.sum((proj(v, g).astype(jnp.float32) - target) ** 2)))
            pose = lambda rt: g.replace(rotation=rt[0], translation=rt[1])  # noqa: E731
            loss_p = jax.jit(jax.grad(lambda rt, v: jnp.sum((proj(v, pose(rt)) - target) ** 2)))
            rt = (g.rotation, g.translation)
            timed = {"forward": lambda: fwd(vol, g).block_until_ready(),
                     "forward_backward_volume": lambda: loss_v(vol).block_until_ready(),
                     "forward_backward_pose": lambda: jax.block_until_ready(loss_p(rt, vol))}
            for name, fn in timed.items():
                if name != "forward" and name.split("_")[-1] not in grads:
                    continue
                t0 = time.perf_counter()
                fn()
                row[f"{name}_compile_s"] = time.perf_counter() - t0
                t = timeit(fn, repeats=repeats)
                row[f"{name}_ms_per_drr"] = 1e3 * t["median_s"] / views
                row[f"{name}_rays_per_s"] = rays / t["median_s"]
            fns[id(row)] = (fwd, loss_v, loss_p, vol, rt)
        except Exception as e:  # noqa: BLE001 - a failing config is recorded, not fatal
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    if check:
        for r in rows:
            method = r.get("method", "trilinear")
            ref = next((x for x in rows if x["implementation"] == "xla" and x.get("method", "trilinear") == method
                        and id(x) in fns), None)
            if r["implementation"] != "xla" and id(r) in fns and ref is not None:
                xfwd, xloss_v, xloss_p, _, _ = fns[id(ref)]
                fwd, loss_v, loss_p, vol, rt = fns[id(r)]
                v_ref = vol.astype(jnp.float32)  # the same (rounded) volume, in float32, through XLA
                want = (xfwd(v_ref, g), xloss_v(v_ref), xloss_p(rt, v_ref))
                got = (fwd(vol, g), loss_v(vol), loss_p(rt, vol))
                rel = lambda a, b: float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - b)) / jnp.max(jnp.abs(b)))  # noqa: E731
                r["max_rel_error_vs_xla"] = {"values": rel(got[0], want[0]), "volume_grad": rel(got[1], want[1]),
                                             "rotation_grad": rel(got[2][0], want[2][0]),
                                             "translation_grad": rel(got[2][1], want[2][1])}
    return {"n_voxel": n, "rows": rows, "peak_bytes": peak_bytes()}


KERNEL_CONFIGS = [
    {"implementation": "xla", "dtype": "float32"},
    {"implementation": "pallas", "dtype": "float32"},
    {"implementation": "pallas", "dtype": "bfloat16"},
    {"implementation": "pallas", "dtype": "float16"},
    {"implementation": "pallas", "dtype": "bfloat16", "pack": "z"},
    {"implementation": "pallas", "dtype": "float32", "adjoint": "quads"},
    {"implementation": "pallas", "dtype": "bfloat16", "pack": "z", "adjoint": "quads"},
    {"implementation": "pallas", "dtype": "float32", "pack": "z"},
    {"implementation": "pallas", "dtype": "float32", "pack": "yz"},
    {"implementation": "pallas", "dtype": "bfloat16", "pack": "yz"},
    {"implementation": "xla", "dtype": "float32", "method": "siddon"},
    {"implementation": "pallas", "dtype": "float32", "method": "siddon"},
    {"implementation": "pallas", "dtype": "bfloat16", "method": "siddon"},
]


# Tuning rows (float32, 256³): rays per program, Triton warps, detector tile (rows × columns),
# lanes along detector rows ("u") or columns ("v").
TUNE_CONFIGS = [dict(block_rays=b, num_warps=w, tile=t, lanes=ln, unroll=2) for b, w, t, ln in (
    (32, 1, (4, 8), "u"), (64, 2, (8, 8), "u"), (128, 2, (8, 16), "u"), (32, 1, (32, 1), "v"), (64, 2, (32, 2), "v"),
    (128, 2, (32, 4), "v"), (128, 4, (32, 4), "v"), (64, 1, (8, 8), "u"), (256, 4, (32, 8), "v"), (32, 1, (8, 4), "v"))]


def _subprocess_case(case: dict) -> dict:
    res = subprocess.run([sys.executable, "-m", "benchmarks.projector", "--kernel-case", json.dumps(case)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return {"n_voxel": case["n"], "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def kernels_main(a) -> dict:
    sizes = (16,) if a.small else tuple(a.sizes)
    det, views, n_samples, repeats = (8, 2, 32, 2) if a.small else (256, 8, 512, 10)
    best, tuning = {}, None
    if not a.small and not a.no_tune:
        # Pick the kernel configuration by forward + forward-backward (pose) time at 256³.
        cfgs = [{"implementation": "pallas", "dtype": "float32", **c} for c in TUNE_CONFIGS]
        tuning = _subprocess_case(dict(n=256, det=det, views=views, n_samples=n_samples, configs=cfgs, repeats=5,
                                       check=False))
        ok = [r for r in tuning.get("rows", []) if "forward_backward_pose_ms_per_drr" in r]
        if ok:
            top = min(ok, key=lambda r: r["forward_ms_per_drr"] + r["forward_backward_pose_ms_per_drr"])
            best = {k: top[k] for k in ("block_rays", "num_warps", "tile", "unroll")}
        print("tuned", json.dumps(best), flush=True)
    results = []
    for n in sizes:
        configs = []
        for c in json.loads(a.configs) if a.configs else KERNEL_CONFIGS:
            if c["implementation"] == "pallas":
                c = {**c, **best, **({"interpret": True} if a.small else {})}
            configs.append(c)
        print("case", n, flush=True)
        results.append(_subprocess_case(dict(n=n, det=det, views=views, n_samples=n_samples, configs=configs,
                                             repeats=repeats)))
        print(json.dumps(results[-1]), flush=True)
    payload = {"benchmark": "projector_kernels", "environment": environment(),
               "geometry": "cone beam, DSD 1500 mm, DSO 1000 mm, 256 mm field of view, detector 409.6 mm",
               "phantom": "Shepp-Logan", "samples_per_ray": n_samples, "views_per_batch": views,
               "kernel_config": best or "defaults", "tuning": tuning,
               "note": "per DRR = batch time / views; fwd+bwd pose = gradient w.r.t. per-view rotation and "
                       "translation; fwd+bwd volume = gradient w.r.t. the volume. Siddon pose gradients differ from XLA's "
                       "where rays cross two planes at once (this symmetric set-up's diagonal pixels): the integral "
                       "has no derivative there", "results": results}
    path = write_json("projector_kernels" + ("_small" if a.small else ""), payload, a.out_dir)
    print(f"{'case':34s} {'fwd':>8s} {'f+b vol':>8s} {'f+b pose':>8s}  ms per DRR")
    for res in results:
        for r in res.get("rows", []):
            name = (f"{r['implementation']} {r.get('method', 'trilinear')} {r['dtype']} {r.get('pack') or ''} "
                    f"{r.get('adjoint', '')} {r['n_voxel']}³")
            f = lambda k: f"{r[k]:8.3f}" if k in r else f"{'-':>8s}"  # noqa: E731
            print(f"{name:34s} {f('forward_ms_per_drr')} {f('forward_backward_volume_ms_per_drr')} "
                  f"{f('forward_backward_pose_ms_per_drr')} {r.get('error', '')}")
    print("wrote", path)
    return payload


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true", help="tiny CPU sizes")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--kernels", action="store_true", help="fused Pallas kernel vs XLA trilinear")
    ap.add_argument("--no-tune", action="store_true", help="--kernels: skip the kernel configuration sweep")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="--kernels: volume sizes (n³)")
    ap.add_argument("--configs", default=None, help="--kernels: a JSON list of configurations (default KERNEL_CONFIGS)")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--kernel-case", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.case:
        print(json.dumps(run_case(**json.loads(a.case))))
        return {}
    if a.kernel_case:
        print(json.dumps(run_kernel_case(**json.loads(a.kernel_case))))
        return {}
    if a.kernels:
        return kernels_main(a)
    if a.small:
        cases = [dict(n=16, det=16, views=4, method=m, chunk=None, grad=True, repeats=2) for m in ("siddon", "trilinear")]
    else:
        cases = []
        for n in (128, 256):
            for m in ("siddon", "trilinear"):
                cases.append(dict(n=n, det=256, views=64, method=m, chunk=None, grad=True, repeats=5))
        # The docstring's memory figure: 256³ → 360 views of 256², default chunks.
        for m in ("siddon", "trilinear"):
            cases.append(dict(n=256, det=256, views=360, method=m, chunk=None, grad=False, repeats=2))
        # Chunk-size sweep for the defaults.
        for m, chunks in (("siddon", (1 << 13, 1 << 15, 1 << 16)), ("trilinear", (1 << 14, 1 << 16, 1 << 17))):
            for c in chunks:
                cases.append(dict(n=256, det=256, views=64, method=m, chunk=c, grad=False, repeats=5))
    results = []
    for case in cases:
        print("case", case, flush=True)
        res = subprocess.run([sys.executable, "-m", "benchmarks.projector", "--case", json.dumps(case)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            results.append({**case, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"})
        else:
            results.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    payload = {"benchmark": "projector", "environment": environment(), "geometry": "cone beam, DSD 1500 mm, DSO 1000 mm, "
               "256 mm field of view, detector 409.6 mm", "phantom": "Shepp-Logan", "results": results}
    path = write_json("projector" + ("_small" if a.small else ""), payload, a.out_dir)
    print(f"{'case':40s} {'fwd ms/DRR':>11s} {'f+b ms/DRR':>11s} {'Grays/s':>8s} {'peak GB':>8s}")
    for r in results:
        if "error" in r:
            print(f"{r['method']} {r['n']}³ {r['views']}v: ERROR {r['error']}")
            continue
        name = f"{r['method']} {r['n_voxel']}³ {r['views']}v chunk={r['chunk_size']}"
        fb = r.get("forward_backward_ms_per_drr")
        pk = r.get("peak_bytes")
        print(f"{name:40s} {r['forward_ms_per_drr']:11.3f} {fb if fb is None else f'{fb:11.3f}'!s:>11s} "
              f"{r['forward_rays_per_s'] / 1e9:8.3f} {pk / 1e9 if pk else float('nan'):8.2f}")
    print("wrote", path)
    return payload


if __name__ == "__main__":
    main()
