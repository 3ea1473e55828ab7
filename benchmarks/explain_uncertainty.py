"""Does the ensemble's spread point at the errors? NAF ensembles on the protocol's chest block.

The case is ``benchmarks/ct_protocol.py``'s held-out ``chest1`` block (projections from a volume
twice as fine, truth = its 2³ means). ``--ensemble`` NAF fields are trained from different keys
(:func:`jaxmedrf.explain.train_ensemble`); the uncertainty map is their per-voxel std and the
error the ensemble mean's |μ − truth|. Reported: Pearson and Spearman correlation of |error|
with std over all voxels, over the voxels inside the body (truth ≥ 0.25 × water), and for a
single member's error instead of the mean's; PSNR3D of the mean and of each member.

    python -m benchmarks.explain_uncertainty --small          # CPU: 16³, few steps
    python -m benchmarks.explain_uncertainty                  # GPU: 128³, NAF defaults, 4 members

JSON: ``results/explain_uncertainty[_small]_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.common import environment, write_json


def correlations(err: np.ndarray, std: np.ndarray) -> dict:
    from jaxmedrf.cli.explain import error_std_correlation

    return error_std_correlation(err, std)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU smoke run: 16³ voxels, 24² detector, 100 steps")
    ap.add_argument("--case", default="chest1")
    ap.add_argument("--views", type=int, default=50)
    ap.add_argument("--ensemble", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=None, help="voxels per side (default 128; --small 16)")
    ap.add_argument("--detector", type=int, default=None, help="detector pixels per side (default 256; --small 24)")
    ap.add_argument("--iters", type=int, default=None, help="NAF steps (default: NAF's; --small 100)")
    ap.add_argument("--tag", default="", help="suffix of the JSON name")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)

    import jax

    from benchmarks.ct_protocol import MU_WATER, _scores, make_case
    from jaxmedrf import explain as E
    from jaxmedrf.fields import HashGridConfig
    from jaxmedrf.recon.naf import NAFConfig

    n, det = (16, 24) if a.small else (128, 256)
    n, det = a.n or n, a.detector or det
    proj, g, truth = make_case(a.case, a.views, None, n=n, det=det)
    cfg = NAFConfig(seed=a.seed)
    if a.small:  # the protocol's CPU smoke settings, a few more steps
        enc = dataclasses.replace(cfg.field.encoding, log2_table_size=12, n_levels=6, finest_resolution=64)
        cfg = dataclasses.replace(cfg, field=dataclasses.replace(cfg.field, encoding=enc), n_iters=100,
                                  batch_rays=256, n_samples=24)
    if a.iters:
        cfg = dataclasses.replace(cfg, n_iters=a.iters)
    assert isinstance(cfg.field.encoding, HashGridConfig)
    t0 = time.perf_counter()
    res = E.train_ensemble(jax.random.key(a.seed), proj, g, cfg, n_members=a.ensemble, progress=False)
    members = np.asarray(res.volume)
    seconds = time.perf_counter() - t0
    mean = members.mean(0)
    std = np.asarray(E.ensemble_std(members))
    err = np.abs(mean - truth)
    body = truth >= 0.25 * MU_WATER
    payload = {
        "benchmark": "explain_uncertainty", "environment": environment(), "case": a.case, "views": a.views,
        "n_voxel": n, "detector": det, "members": a.ensemble, "steps": cfg.for_geometry(g).n_iters,
        "train_seconds": res.history["train_seconds"], "seconds": seconds,
        "psnr3d_mean": _scores(mean, truth)["psnr3d"],
        "psnr3d_members": [_scores(m, truth)["psnr3d"] for m in members],
        "std_mean": float(std.mean()), "abs_error_mean": float(err.mean()),
        "correlation_all_voxels": correlations(err, std),
        "correlation_body_voxels": correlations(err[body], std[body]),
        "correlation_single_member_error": correlations(np.abs(members[0] - truth), std),
    }
    name = "explain_uncertainty" + ("_small" if a.small else "") + (f"_{a.tag}" if a.tag else "")
    path = write_json(name, payload, a.out_dir)
    c, b = payload["correlation_all_voxels"], payload["correlation_body_voxels"]
    print(f"{a.case} {n}³, {a.ensemble} members: PSNR3D of the mean {payload['psnr3d_mean']:.2f} dB; "
          f"|error| vs std: Spearman {c['spearman']:.3f}, Pearson {c['pearson']:.3f} (all voxels); "
          f"Spearman {b['spearman']:.3f}, Pearson {b['pearson']:.3f} (body) -> {path}")
    return payload


if __name__ == "__main__":
    main()
