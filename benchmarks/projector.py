"""Projector benchmark: Siddon and trilinear DRRs, forward and forward+backward.

Each case runs in its own process so that peak device memory and compile time are its own.
Writes ``benchmarks/results/projector_<device>_<date>.json``.

    python -m benchmarks.projector            # GPU sizes: 128³ and 256³, 256² detector
    python -m benchmarks.projector --small    # CPU smoke run
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true", help="tiny CPU sizes")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.case:
        print(json.dumps(run_case(**json.loads(a.case))))
        return {}
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
