"""Empty-space skipping: samples per ray needed for a given line-integral error, with and
without an occupancy grid, on Shepp–Logan phantoms that fill a smaller or larger part of the box.

    python -m benchmarks.occupancy [--small] [--grid 32] [--out-dir DIR]   # results/occupancy_<device>_<date>.json

The truth is the phantom's exact line integrals (:func:`jaxmedrf.phantoms.line_integrals`);
the marched field is the phantom itself (point evaluation, piecewise constant), so the error
is the quadrature error alone. The grid is built from the field (``occupancy_update``:
4 points per cell, threshold 0, one cell of dilation).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmedrf as jm
from benchmarks.common import environment, write_json
from jaxmedrf import phantoms
from jaxmedrf.occupancy import occupancy_init, occupancy_update, occupied_fraction
from jaxmedrf.rays import geometry_rays
from jaxmedrf.render import render_rays


def phantom_field(ph):
    values = jnp.asarray(ph.values)

    def field(p):
        q = phantoms._to_unit(ph, p)
        return jnp.sum(jnp.where(jnp.sum(q * q, -1) <= 1.0, values, 0.0), -1)

    return field


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="fewer rays and sample counts")
    ap.add_argument("--grid", type=int, default=32, help="occupancy grid cells per axis")
    ap.add_argument("--out-dir", default=None, help="default benchmarks/results")
    a = ap.parse_args(argv)
    det = 32 if a.small else 64
    g = jm.cone_beam(n_voxel=(64,) * 3, d_voxel=4.0, n_detector=(det, det), d_detector=800.0 / det, n_views=4)
    rays = jax.tree_util.tree_map(lambda x: x.reshape(-1, 3), geometry_rays(g))
    lo, hi = jm.volume_box(g)
    counts = [8, 16, 32, 64, 128, 256] + ([] if a.small else [512, 1024])
    out = {"benchmark": "occupancy", "environment": environment(), "small": a.small, "rays": int(rays.origins.shape[0]),
           "grid": a.grid, "phantoms": []}
    for radius in (120.0, 60.0):
        ph = phantoms.shepp_logan(radius=radius, mu_scale=1.0)
        field = phantom_field(ph)
        truth = np.asarray(phantoms.line_integrals(ph, rays))
        scale = float(np.sqrt(np.mean(truth**2)))
        grid = occupancy_update(jax.random.key(0), occupancy_init(lo, hi, resolution=a.grid), field,
                                decay=0.0, threshold=0.0, points_per_cell=4, dilate=1)
        row = {"radius_mm": radius, "box_mm": 256.0, "occupied_fraction": float(occupied_fraction(grid)),
               "support_fraction": float(np.mean(np.asarray(jm.voxelize(ph, g, supersample=1)) > 0)),
               "rel_rmse": {"dense": {}, "occupancy": {}}, "ms_per_call": {"dense": {}, "occupancy": {}}}
        for name, occ in (("dense", None), ("occupancy", grid)):
            for n in counts:
                f = jax.jit(lambda r, o, n=n: render_rays(field, r, lo, hi, n_samples=n, occupancy=o))
                got = np.asarray(f(rays, occ))
                t = time.perf_counter()
                f(rays, occ).block_until_ready()
                row["ms_per_call"][name][n] = round((time.perf_counter() - t) * 1e3, 2)
                row["rel_rmse"][name][n] = float(np.sqrt(np.mean((got - truth) ** 2)) / scale)
        for tol in (0.01, 0.003):
            row[f"samples_for_{tol}"] = {
                k: next((n for n in counts if v[n] <= tol), None) for k, v in row["rel_rmse"].items()}
        out["phantoms"].append(row)
        print(json.dumps(row), flush=True)
    print("wrote", write_json(f"occupancy_grid{a.grid}" + ("_small" if a.small else ""), out, a.out_dir))
    return out


if __name__ == "__main__":
    main()
