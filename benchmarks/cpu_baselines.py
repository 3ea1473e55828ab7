"""The classical baselines and registration on a CPU: FDK, SART, CGLS and one 8-start registration.

The case of issue 21: the Shepp–Logan head (:func:`jaxmedrf.phantoms.shepp_logan`, water
0.02 mm⁻¹) on 64³ voxels of 2 mm, 180 cone-beam views of 96² over 360° (DSD 1500 mm, DSO
1000 mm, the detector sized as ``jaxmedrf simulate`` sizes it), projections = the phantom's
exact line integrals (no method sees its own forward model). SART (20 iterations, 10 subsets)
and CGLS (20 iterations) run with the projector each picks by default on a CPU
(``method="auto"``: Joseph's, :mod:`jaxmedrf.projectors.joseph`) and, for comparison, with the
previous default (Siddon; ``--old-iters`` iterations only, timed per iteration, since 20 take
tens of minutes). Registration: a 96 × 96 × 80 synthetic CT (``benchmarks/register.py``), a
128² X-ray, 8 starts, :class:`~jaxmedrf.registration.RegistrationConfig` defaults
(``projector="auto"``: Joseph's on a CPU; the starts share the coarsest level, then the best
continues alone, as ``jaxmedrf register --starts 8`` runs) beside every start on every level
(``--register-settings auto:0``, the previous default; ``trilinear:0`` was the one before).

Reported: seconds including and excluding compilation (every call is repeated once the
programs are compiled), PSNR3D of μ (``data_range`` = the truth's max − min, no clipping), the
registration's mTRE, and the load average (the machine may be shared: compare within one run).

    python -m benchmarks.cpu_baselines              # the issue's case; about 5 minutes on 2 cores
    python -m benchmarks.cpu_baselines --small      # CI size, seconds

JSON: ``results/cpu_baselines_<device>_<date>.json``, rewritten after every row.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from benchmarks.common import environment, write_json


def _case(n: int, n_views: int, n_det: int):
    import jaxmedrf as jm
    from jaxmedrf.phantoms import analytic_projections, shepp_logan, voxelize

    d = 2.0
    extent = n * d
    r = 0.5 * math.hypot(extent, extent)
    dsd, dso = 1500.0, 1000.0
    width = 2 * dsd * r / math.sqrt(dso**2 - r**2)
    height = extent * dsd / (dso - r)
    g = jm.cone_beam(n_voxel=(n, n, n), d_voxel=d, n_detector=(n_det, n_det),
                     d_detector=(1.1 * height / n_det, 1.1 * width / n_det), DSD=dsd, DSO=dso, n_views=n_views)
    phantom = shepp_logan(radius=0.45 * extent, mu_scale=0.2)  # water 0.02 mm⁻¹
    truth = np.asarray(voxelize(phantom, g))
    proj = np.asarray(analytic_projections(phantom, g))
    return g, truth, proj


def _psnr(x, truth) -> float:
    from jaxmedrf import metrics

    return float(metrics.psnr(x, truth, data_range=float(truth.max() - truth.min())))


def _timed(fn):
    """(result, seconds with compilation, seconds without): ``fn`` called twice."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, first, time.perf_counter() - t0


def _recon_rows(g, truth, proj, iters: int, old_iters: int):
    from jaxmedrf import cgls, fdk, sart

    yield "fdk", {}, lambda: fdk(proj, g).volume, None
    for name, fn in (("sart", sart), ("cgls", cgls)):
        yield name, {"projector": "auto", "n_iters": iters}, (lambda fn=fn: fn(proj, g, n_iters=iters, progress=False).volume), iters
        if old_iters:
            yield name, {"projector": "siddon", "n_iters": old_iters}, (
                lambda fn=fn: fn(proj, g, n_iters=old_iters, method="siddon", progress=False).volume), old_iters


def _register_rows(small: bool, n_starts: int, trials: int, settings):
    """One row per trial and setting ``(projector, multi_start_levels)``: the registration of
    ``benchmarks/register.py``'s trials."""
    import jax
    import jax.numpy as jnp

    import jaxmedrf as jm
    from benchmarks.register import random_offset, synthetic_ct
    from jaxmedrf import pose as P
    from jaxmedrf import registration as R

    shape, det = ((32, 32, 24), 32) if small else ((96, 96, 80), 128)
    d = 2.0
    n = max(shape)
    s = [(n - k) // 2 for k in shape]
    vol = jnp.asarray(synthetic_ct(n, d)[s[0]: s[0] + shape[0], s[1]: s[1] + shape[1], s[2]: s[2] + shape[2]])
    g = jm.cone_beam(n_voxel=shape, d_voxel=d, n_detector=(det, det), d_detector=1.6 * 128 / det, n_views=1)
    lo, hi = jm.volume_box(g)
    pivot = np.asarray(0.5 * (lo + hi))
    landmarks = R.default_landmarks(g)
    rng = np.random.default_rng(0)
    starts = R.random_perturbations(jax.random.PRNGKey(0), n_starts, rot_range_deg=10.0, trans_range_mm=10.0)
    for trial in range(trials):
        theta = rng.uniform(0, 2 * math.pi)
        nominal = P.Pose(jnp.asarray(P._rz_np(theta), jnp.float32), jnp.zeros(3))
        truth = P.compose(random_offset(rng, 10.0, 10.0, pivot), nominal)
        target = R.drr(vol, g, truth, method="siddon")  # no projector registers against its own DRR
        init = P.compose(random_offset(rng, 10.0, 10.0, pivot), truth)
        for projector, multi in settings:
            cfg = R.RegistrationConfig(projector=projector, multi_start_levels=multi,
                                       iterations=30 if small else R.RegistrationConfig.iterations)
            t0 = time.perf_counter()
            res = R.register(vol, g, target, init, config=cfg, starts=starts)
            wall = time.perf_counter() - t0
            est = P.Pose(jnp.asarray(res.pose.rotation, jnp.float32), jnp.asarray(res.pose.translation, jnp.float32))
            yield {"trial": trial, "projector": projector, "multi_start_levels": multi, "starts": n_starts,
                   "seconds_incl_compile": wall,
                   "compile_s": res.compile_s, "seconds": res.time_s,
                   "initial_mtre_mm": float(R.mean_target_registration_error(init, truth, landmarks)),
                   "mtre_mm": float(R.mean_target_registration_error(est, truth, landmarks))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CI size: 16³, 24 views of 24², 2 iterations")
    ap.add_argument("--old-iters", type=int, default=2, help="iterations of the previous default (Siddon) pair")
    ap.add_argument("--starts", type=int, default=8, help="registration starts")
    ap.add_argument("--trials", type=int, default=1, help="registrations")
    ap.add_argument("--skip", default="", help="comma-separated: recon, register")
    ap.add_argument("--register-settings", nargs="+", default=["auto:1", "auto:0"], metavar="PROJECTOR:M",
                    help="registrations to time: projector (auto = Joseph's on a CPU, trilinear, siddon) and "
                         "multi_start_levels M (1, the default: the starts share the coarsest level; 0: every "
                         "start runs every level)")
    ap.add_argument("--tag", default="", help="suffix of the JSON's name")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    n, views, det, iters = (16, 24, 24, 2) if a.small else (64, 180, 96, 20)
    payload = {"benchmark": "cpu_baselines", "environment": environment(), "small": a.small,
               "case": {"n_voxel": n, "views": views, "detector": det, "iters": iters},
               "rows": [], "register": []}
    name = ("cpu_baselines_small" if a.small else "cpu_baselines") + (f"_{a.tag}" if a.tag else "")
    settings = [(p, int(m) or None) for p, m in (x.split(":") for x in a.register_settings)]
    skip = set(filter(None, a.skip.split(",")))
    if "recon" not in skip:
        g, truth, proj = _case(n, views, det)
        for method, opts, fn, k in _recon_rows(g, truth, proj, iters, a.old_iters):
            vol, first, again = _timed(fn)
            row = {"algorithm": method, **opts, "seconds_incl_compile": first, "seconds": again,
                   "seconds_per_iter": again / k if k else None, "psnr3d": _psnr(np.asarray(vol), truth),
                   "loadavg": os.getloadavg()}
            payload["rows"].append(row)
            print(row, flush=True)
            write_json(name, payload, a.out_dir)
    if "register" not in skip:
        for row in _register_rows(a.small, a.starts, a.trials, settings):
            row["loadavg"] = os.getloadavg()
            payload["register"].append(row)
            print(row, flush=True)
            write_json(name, payload, a.out_dir)
    path = write_json(name, payload, a.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
