"""Sparse-view CT reconstruction benchmark: NAF (ours) beside FDK and SART on the same data.

Case ``naf128_50`` is the issue's comparison setup with NAF's official code: modified
Shepp–Logan with values in [0, 1], 128³ voxels of 2 mm, 50 cone-beam views over 360°,
256×256 detector of 1.6 mm pixels, DSD 1500 mm, DSO 1000 mm, noise-free,
PSNR3D = 10·log10(1/MSE). Other cases: 25 views; Poisson noise (I0 = 1e5) on the realistic
scale (brain = water = 0.02 mm⁻¹, PSNR over the truth's range); 256³ with 1 mm voxels.
The time-to-quality curve is PSNR3D against training seconds (evaluation time excluded).

    python -m benchmarks.reconstruct [--small] [--cases naf128_50,...]
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import environment, write_json

CASES = {
    "naf128_50": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=2000),
    "naf128_25": dict(n=128, views=25, noise=None, mu_scale=1.0, iters=2000),
    "naf128_50_noisy": dict(n=128, views=50, noise=1e5, mu_scale=0.1, iters=2000),
    "naf256_50": dict(n=256, views=50, noise=None, mu_scale=1.0, iters=2000),
    # Same data as naf128_50; output as voxel means (2³ points per voxel, like the truth's
    # voxelisation) and 64 importance samples per ray, 3000 steps.
    "naf128_50_avg": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=3000, grid_supersample=2, n_importance=64),
    # Speed variants of naf128_50 (same data; FDK/SART are not repeated): 64 samples per ray
    # without and with empty-space skipping (occupancy grid of 64³), the MLP in bfloat16
    # (mixed precision), and the fused Pallas hash-grid kernel.
    "naf128_50_s64": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=2000, samples=64, baselines=False),
    "naf128_50_s64_occ": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=2000, samples=64, occupancy=64,
                              baselines=False),
    "naf128_50_mixed": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=2000, compute_dtype="bfloat16",
                            baselines=False),
    "naf128_50_pallas": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=2000, hash_implementation="pallas",
                             baselines=False, field_implementation="xla"),
    # The field as separate XLA ops (the other cases take FieldConfig's default, "auto": the
    # fused field kernel on a GPU).
    "naf128_50_xla": dict(n=128, views=50, noise=None, mu_scale=1.0, iters=2000, baselines=False,
                          field_implementation="xla"),
}


def run_case(name, n, views, noise, mu_scale, iters, *, samples=None, det=256, batch=8192, sart_iters=20, small=False,
             grid_supersample=1, n_importance=0, occupancy=0, compute_dtype="float32", hash_implementation="level_major",
             baselines=True, field_implementation="auto"):
    import jax
    import numpy as np

    import jaxmedrf as jm
    from jaxmedrf import metrics, noise as noise_mod, phantoms
    from jaxmedrf.fields import FieldConfig, HashGridConfig
    from jaxmedrf.fields.field import fused_unsupported
    from jaxmedrf.recon import fdk, sart
    from jaxmedrf.recon.naf import NAFConfig, train_naf

    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det,
                     DSD=1500.0, DSO=1000.0, n_views=views)
    ph = phantoms.shepp_logan(radius=128.0, mu_scale=mu_scale)
    truth = phantoms.voxelize(ph, g, supersample=2)
    proj = phantoms.analytic_projections(ph, g)
    if noise:
        proj = noise_mod.poisson_noise(jax.random.key(0), proj, i0=noise)
    proj = np.asarray(proj)
    data_range = float(truth.max() - truth.min()) if noise else 1.0

    def quality(v):
        return {"psnr3d": float(metrics.psnr(v, truth, data_range=data_range)),
                "ssim3d": float(metrics.ssim3d(v, truth, data_range=data_range))}

    out = {"case": name, "n_voxel": n, "views": views, "noise_i0": noise, "mu_scale": mu_scale, "detector": det,
           "psnr_data_range": data_range}
    # NAF
    enc = HashGridConfig(log2_table_size=19 if not small else 12, n_levels=16 if not small else 6,
                         finest_resolution=2048 if not small else 64, implementation=hash_implementation)
    field = FieldConfig(encoding=enc, out_activation="softplus", compute_dtype=compute_dtype,
                        implementation=field_implementation)
    out["field"] = "xla" if field_implementation == "xla" or fused_unsupported(field) else "fused"
    cfg = NAFConfig(field=field, n_iters=iters,
                    batch_rays=batch, n_samples=samples or (192 if n >= 256 else 128), grid_supersample=grid_supersample,
                    n_importance=n_importance, occupancy_resolution=occupancy if not small else min(occupancy, 8))
    t0 = time.perf_counter()
    res = train_naf(proj, g, cfg, eval_fn=quality, eval_every=max(iters // 20, 25), progress=False)
    wall = time.perf_counter() - t0
    curve = [{"train_seconds": e["train_seconds"], "step": e["step"], "psnr3d": e["psnr3d"], "ssim3d": e["ssim3d"]}
             for e in res.history["eval"]]
    out["naf"] = {"config": json.loads(cfg.to_json()), "wall_seconds_incl_compile_and_eval": wall,
                  "train_seconds": res.history["train_seconds"], "steps": iters,
                  "steps_per_s": iters / res.history["train_seconds"],
                  "rays_per_s": iters * batch / res.history["train_seconds"],
                  "final": {k: res.history[k] for k in ("psnr3d", "ssim3d")}, "curve": curve,
                  **({"occupied_fraction": res.history["occupied_fraction"]} if "occupied_fraction" in res.history else {})}
    for thr in (30.0, 32.4, 35.0):
        hit = [c["train_seconds"] for c in curve if c["psnr3d"] >= thr]
        out["naf"][f"seconds_to_{thr}dB"] = hit[0] if hit else None
    for t in (10.0, 60.0):
        before = [c["psnr3d"] for c in curve if c["train_seconds"] <= t]
        out["naf"][f"psnr3d_at_{int(t)}s"] = before[-1] if before else None
    if not baselines:
        return out
    # FDK and SART on the same projections
    for label, fn, kw in (("fdk", fdk, {}), ("sart", sart, {"n_iters": sart_iters, "progress": False})):
        t0 = time.perf_counter()
        r = fn(proj, g, **kw)
        jax.block_until_ready(r.volume)
        first = time.perf_counter() - t0
        out[label] = {"seconds_incl_compile": first, **quality(r.volume), **({"iters": sart_iters} if kw else {})}
    out["naf_minus_sart_db"] = out["naf"]["final"]["psnr3d"] - out["sart"]["psnr3d"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    payload = {"benchmark": "reconstruct", "environment": environment(), "reference_naf_h100":
               {"steps_per_s": 148, "psnr3d_at_60s": 21.4, "psnr3d_at_120s": 32.3, "plateau": 32.4}, "results": []}
    for name in a.cases.split(","):
        case = dict(CASES[name])
        if a.small:
            case.update(n=16, iters=50, samples=24)
            kw = dict(det=24, batch=256, sart_iters=3, small=True)
        else:
            kw = {}
        print("case", name, flush=True)
        try:
            res = run_case(name, **case, **kw)
        except Exception as e:  # record and go on: one failing case must not lose the others
            res = {"case": name, "error": f"{type(e).__name__}: {e}"}
        payload["results"].append(res)
        path = write_json("reconstruct" + ("_small" if a.small else ""), payload, a.out_dir)
        print(json.dumps({k: v for k, v in res.items() if k != "naf"}), flush=True)
        if "naf" in res:
            print(json.dumps({k: v for k, v in res["naf"].items() if k not in ("config", "curve")}), flush=True)
    print("wrote", path)
    return payload


if __name__ == "__main__":
    main()
