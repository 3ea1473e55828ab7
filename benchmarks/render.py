"""Rendering speed: DRRs per second of a trained NAF field and of a CT volume along an orbit.

The field is trained briefly on the 128³ Shepp–Logan from 50 views (default NAF settings);
its DRRs are timed through :func:`jaxmedrf.render_projections` (the field integrated along
every pixel ray with the training's sampling) and the voxel volume's through
:func:`jaxmedrf.project`, both along the `jaxmedrf render` orbit (36 frames over 360°).
The issue's target: ≥ 30 DRRs/s at 256² from a trained field on one H100.

    python -m benchmarks.render                  # GPU sizes
    python -m benchmarks.render --small          # CPU smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import numpy as np

import jaxmedrf as jm
from benchmarks.common import environment, timeit, write_json
from jaxmedrf.cli.render import orbit_geometry


def run(*, n: int, views: int, det: int, size: int, frames: int, iters: int, chunk_rays: int, samples: int | None,
        small_field: bool = False) -> dict:
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det, n_views=views)
    ph = jm.shepp_logan(radius=128.0, mu_scale=1.0)
    vol = jm.voxelize(ph, g, supersample=2)
    proj = jm.analytic_projections(ph, g)
    cfg = jm.NAFConfig(n_iters=iters)
    if small_field:  # CPU smoke run: a tiny hash grid
        enc = jm.HashGridConfig(n_levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)
        cfg = dataclasses.replace(cfg, field=dataclasses.replace(cfg.field, encoding=enc, width=16), n_samples=16, batch_rays=256,
                                  steps_per_call=25)
    res = jm.train_naf(proj, g, cfg, progress=False)
    cfg = dataclasses.replace(cfg.for_geometry(g), field=dataclasses.replace(cfg.field, mu_scale=res.history["mu_scale"]),
                              auto_mu_scale=False)
    orbit = orbit_geometry(g.n_voxel, g.d_voxel, n_frames=frames, size=size)
    out = {"n_voxel": n, "train_views": views, "train_steps": iters, "frames": frames, "size": size}
    rows = []
    for n_samples in sorted({cfg.n_samples, samples or cfg.n_samples}):
        c = dataclasses.replace(cfg, n_samples=n_samples)
        fn = jax.jit(lambda p, c=c: jm.render_projections(p, c, g, orbit, chunk_rays=chunk_rays))
        t = timeit(lambda: jax.block_until_ready(fn(res.params)), repeats=3)
        drr = np.asarray(fn(res.params))
        ref = np.asarray(jm.project(res.volume, orbit))
        rows.append({"source": "field", "n_samples": n_samples, "n_importance": c.n_importance, **t,
                     "frames_per_s": frames / t["median_s"],
                     "rel_diff_vs_voxel_drr": float(np.linalg.norm(drr - ref) / np.linalg.norm(ref))})
    for method in ("trilinear", "siddon"):
        fn = jax.jit(lambda v, m=method: jm.project(v, orbit, method=m))
        t = timeit(lambda: jax.block_until_ready(fn(vol)), repeats=3)
        rows.append({"source": "volume", "method": method, **t, "frames_per_s": frames / t["median_s"]})
    out["rows"] = rows
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny CPU smoke run")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    if a.small:
        kw = dict(n=16, views=8, det=24, size=16, frames=4, iters=25, chunk_rays=512, samples=8, small_field=True)
    else:
        kw = dict(n=128, views=50, det=192, size=256, frames=36, iters=1000, chunk_rays=1 << 16, samples=64)
    payload = {"benchmark": "render", "environment": environment(), "target_frames_per_s": 30, "small": a.small,
               "results": [run(**kw)]}
    for r in payload["results"][0]["rows"]:
        print(json.dumps(r), flush=True)
    path = write_json("render" + ("_small" if a.small else ""), payload, a.out_dir)
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
