"""The slice-interpolation evaluation protocol: keep every k-th slice, restore, score the removed ones.

As in the slice-interpolation literature (e.g. Iddrisu et al., brain MRI on BRATS): from a
volume with fine slices keep slices ``0, k, 2k, …`` along ``axis``, reconstruct the full grid,
and report PSNR and SSIM on the **removed slices only** and, separately, on the whole volume,
as mean ± std over slices (slices whose reference is constant are left out of the per-slice
statistics, and so are identical slices — infinite PSNR — which are counted; the pooled PSNR over all of them is reported too). ``data_range`` is the
reference volume's range (max − min) for every slice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxmedrf.mri.inr import INRConfig
from jaxmedrf.mri.interpolate import METHODS, interpolate
from jaxmedrf.mri.slices import check_volume, make_stack

__all__ = ["evaluate_interpolation", "slice_metrics", "format_table", "format_summary", "save_report",
           "save_slice_report", "per_slice_scores", "summarize_volumes"]


def slice_metrics(image, reference, slices, *, axis: int = 2, data_range: float) -> dict:
    """PSNR/SSIM of ``image`` vs ``reference`` on the given slice indices along ``axis``.

    PSNR per slice ``10 log10(R² / MSE)`` (float64), SSIM per slice by
    :func:`jaxmedrf.metrics.ssim_per_slice` (all slices in one vectorised call), ``R`` =
    ``data_range``; ``psnr_pooled`` is the PSNR of all the chosen slices' voxels together.
    """
    from jaxmedrf.metrics import ssim_per_slice

    img = np.moveaxis(np.asarray(image, np.float32), axis, 0)[list(slices)]
    ref = np.moveaxis(np.asarray(reference, np.float32), axis, 0)[list(slices)]
    keep = [i for i in range(len(ref)) if np.ptp(ref[i]) > 0]
    err = (img.astype(np.float64) - ref) ** 2
    with np.errstate(divide="ignore"):
        p = [float(10.0 * np.log10(data_range**2 / np.mean(err[i]))) for i in keep]
        pooled = float(10.0 * np.log10(data_range**2 / np.mean(err))) if err.size else float("nan")
    s = [float(x) for x in np.asarray(ssim_per_slice(img[keep], ref[keep], axis=0, data_range=data_range))] if keep else []
    n_exact = sum(not np.isfinite(x) for x in p)  # identical slices (kept ones): PSNR = inf
    p = [x for x in p if np.isfinite(x)]
    return {"n_exact": n_exact, "psnr_mean": float(np.mean(p)) if p else float("nan"),
            "psnr_std": float(np.std(p)) if p else float("nan"),
            "ssim_mean": float(np.mean(s)) if s else float("nan"), "ssim_std": float(np.std(s)) if s else float("nan"),
            "psnr_pooled": pooled, "n_slices": len(keep)}


def evaluate_interpolation(
    volume,
    affine,
    k: int,
    methods: Sequence[str] = ("inr", "cubic", "linear"),
    *,
    axis: int = 2,
    stack_axes: Sequence[int] | None = None,
    inr_config: INRConfig = INRConfig(),
    smore_config=None,
    key=None,
    progress: bool = False,
) -> dict:
    """Runs the protocol on one volume.

    Args:
      volume: the fine reference volume ``(n0, n1, n2)``.
      affine: its voxel → LPS mm affine.
      k: keep every ``k``-th slice along ``axis`` (k ≥ 2).
      methods: any of ``nearest``, ``linear``, ``cubic``, ``inr``, ``smore``.
      axis: the slice axis: slices are removed and scored along it.
      stack_axes: the axes of the acquired stacks (each keeps every ``k``-th slice along its
        axis), ``axis`` first; default ``(axis,)``. Several orthogonal stacks feed the INR;
        the other methods use the stack along ``axis`` only.
      inr_config: settings of the INR fit.
      smore_config, key: settings and PRNG key of ``smore`` (see :func:`interpolate`).

    Returns:
      ``{"k", "axis", "removed": [...], "methods": {m: {"removed": metrics, "whole": metrics,
      "time_s"}}, "volumes": {m: array}}`` (``volumes`` is not JSON; :func:`save_report` drops it).
    """
    import time

    v = check_volume(volume)
    if int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {m!r}")
    stack_axes = (axis,) if stack_axes is None else tuple(int(a) for a in stack_axes)
    if not stack_axes or stack_axes[0] != axis or len(set(stack_axes)) != len(stack_axes) or \
            not set(stack_axes) <= {0, 1, 2}:
        raise ValueError(f"stack_axes must be distinct axes in 0..2 starting with axis={axis}, got {stack_axes}")
    stacks = [make_stack(v, affine, a, int(k)) for a in stack_axes]
    n = v.shape[axis]
    removed = [i for i in range(n) if i % k]
    dr = float(np.ptp(v)) or 1.0
    out = {"k": int(k), "axis": axis, "stack_axes": list(stack_axes), "shape": list(v.shape), "removed": removed,
           "data_range": dr,
           "methods": {}, "volumes": {}}
    for m in methods:
        t = time.perf_counter()
        rec, _ = interpolate(stacks, m, shape=v.shape, affine=affine, inr_config=inr_config,
                             smore_config=smore_config, key=key, progress=progress)
        dt = time.perf_counter() - t
        out["methods"][m] = {"removed": slice_metrics(rec, v, removed, axis=axis, data_range=dr),
                             "whole": slice_metrics(rec, v, range(n), axis=axis, data_range=dr), "time_s": dt}
        out["volumes"][m] = rec
    return out


def summarize_volumes(results: Sequence[dict]) -> dict:
    """Mean ± std over volumes (cross-validation style: one value per volume) of each method's
    pooled PSNR and mean SSIM, on the removed slices and on the whole volume.

    Args:
      results: :func:`evaluate_interpolation` results, one per volume, with the same ``k``.

    Returns:
      ``{"k", "n_volumes", "methods": {m: {stat: {"mean", "std", "values"}}}}`` for the methods
      present in every result; ``std`` is the population standard deviation (0 for one volume).
    """
    if not results:
        raise ValueError("summarize_volumes: no results")
    ks = {r["k"] for r in results}
    if len(ks) != 1:
        raise ValueError(f"summarize_volumes: results have different k {sorted(ks)}")
    methods = [m for m in results[0]["methods"] if all(m in r["methods"] for r in results)]
    stats = {"psnr_removed": ("removed", "psnr_pooled"), "ssim_removed": ("removed", "ssim_mean"),
             "psnr_whole": ("whole", "psnr_pooled"), "ssim_whole": ("whole", "ssim_mean")}
    out = {"k": ks.pop(), "n_volumes": len(results), "methods": {}}
    for m in methods:
        out["methods"][m] = {}
        for name, (part, key) in stats.items():
            vals = np.array([r["methods"][m][part][key] for r in results], np.float64)
            out["methods"][m][name] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals.tolist()}
    return out


def format_table(result: dict) -> str:
    """A plain-text table of the protocol's results."""
    rows = [f"k = {result['k']} (axis {result['axis']}), {len(result['removed'])} removed slices",
            f"{'method':8s} {'PSNR removed (dB)':>20s} {'SSIM removed':>16s} {'PSNR whole (dB)':>18s} "
            f"{'SSIM whole':>14s} {'time (s)':>9s}"]
    for m, r in result["methods"].items():
        a, b = r["removed"], r["whole"]
        rows.append(f"{m:8s} {a['psnr_mean']:11.2f} ± {a['psnr_std']:5.2f} {a['ssim_mean']:9.3f} ± {a['ssim_std']:5.3f}"
                    f" {b['psnr_mean']:9.2f} ± {b['psnr_std']:5.2f} {b['ssim_mean']:7.3f} ± {b['ssim_std']:5.3f}"
                    f" {r['time_s']:9.1f}")
    return "\n".join(rows)


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`summarize_volumes`."""
    rows = [f"k = {summary['k']}, mean ± std over {summary['n_volumes']} volumes (PSNR pooled per volume)",
            f"{'method':8s} {'PSNR removed (dB)':>18s} {'SSIM removed':>15s} {'PSNR whole (dB)':>16s} {'SSIM whole':>14s}"]
    widths = {"psnr_removed": 18, "ssim_removed": 15, "psnr_whole": 16, "ssim_whole": 14}
    for m, st in summary["methods"].items():
        cells = []
        for k, w in widths.items():
            d = 3 if k.startswith("ssim") else 2
            cells.append(f"{st[k]['mean']:.{d}f} ± {st[k]['std']:.{d}f}".rjust(w))
        rows.append(f"{m:8s} " + " ".join(cells))
    return "\n".join(rows)


def per_slice_scores(result: dict, reference) -> dict:
    """``{method: (psnr (n,), ssim (n,))}`` on each removed slice of :func:`evaluate_interpolation`'s
    ``result`` (float64; ``inf`` PSNR for an exact slice, NaN for a constant reference slice), data
    range as in the protocol."""
    from jaxmedrf.metrics import ssim_per_slice

    ax, removed, dr = result["axis"], list(result["removed"]), float(result["data_range"])
    ref = np.moveaxis(np.asarray(reference, np.float32), ax, 0)[removed]
    flat = np.array([np.ptp(r) == 0 for r in ref])
    out = {}
    for m, vol in result["volumes"].items():
        img = np.moveaxis(np.asarray(vol, np.float32), ax, 0)[removed]
        mse = np.mean((img.astype(np.float64) - ref) ** 2, axis=(1, 2))
        with np.errstate(divide="ignore"):
            psnr = 10.0 * np.log10(dr**2 / mse)
        ssim = np.asarray(ssim_per_slice(img, ref, axis=0, data_range=dr), np.float64)
        out[m] = (np.where(flat, np.nan, psnr), np.where(flat, np.nan, ssim))
    return out


def save_slice_report(result: dict, reference, out_dir, *, name: str = "interpolation",
                      method: str | None = None) -> tuple[Path, Path]:
    """The per-slice report: ``<name>_slices.csv`` (PSNR and SSIM of every method on every removed
    slice) and ``<name>_slices.png``: on the worst and on the median removed slice of ``method``
    (by its PSNR; default the first method in ``result``), the truth, cubic and ``method`` side by
    side, each with its absolute error map on one colour scale, titled with the slice's scores.

    Raises:
      ValueError: ``result`` has no removed slice with structure, or ``method`` was not run.
    """
    from matplotlib.figure import Figure  # not pyplot: the user's backend and open figures stay as they are

    from jaxmedrf._files import atomic_path

    ms = list(result["volumes"])
    method = ms[0] if method is None else method
    if method not in ms:
        raise ValueError(f"method {method!r} was not run (have {', '.join(ms)})")
    scores = per_slice_scores(result, reference)
    removed = list(result["removed"])
    p = scores[method][0]
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        raise ValueError("no removed slice with structure to report on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / f"{name}_slices.csv"
    lines = ["slice," + ",".join(f"psnr_{m}_db,ssim_{m}" for m in ms)]
    for i, sl in enumerate(removed):
        lines.append(f"{sl}," + ",".join(f"{scores[m][0][i]:.4f},{scores[m][1][i]:.5f}" for m in ms))
    with atomic_path(csv) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    order = ok[np.argsort(p[ok])]
    picks = [("worst", order[0]), ("median", order[len(order) // 2])]
    shown = list(dict.fromkeys(["cubic", method])) if "cubic" in ms else [method]
    ax = result["axis"]
    ref = np.moveaxis(np.asarray(reference, np.float32), ax, 0)
    vmax = float(ref.max()) or 1.0
    fig = Figure(figsize=(3.2 * (len(shown) + 1), 6.4 * len(picks)))
    axs = fig.subplots(2 * len(picks), len(shown) + 1, squeeze=False)
    for r, (label, i) in enumerate(picks):
        sl = removed[i]
        truth = ref[sl]
        imgs = {m: np.moveaxis(np.asarray(result["volumes"][m], np.float32), ax, 0)[sl] for m in shown}
        emax = max(float(np.abs(im - truth).max()) for im in imgs.values()) or 1.0
        axs[2 * r, 0].imshow(truth.T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
        axs[2 * r, 0].set_title(f"truth: {label} slice {sl}\n(by {method} PSNR)", fontsize=9)
        axs[2 * r + 1, 0].axis("off")
        for j, m in enumerate(shown, 1):
            axs[2 * r, j].imshow(imgs[m].T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
            axs[2 * r, j].set_title(f"{m}: {scores[m][0][i]:.2f} dB, SSIM {scores[m][1][i]:.3f}", fontsize=9)
            im = axs[2 * r + 1, j].imshow(np.abs(imgs[m] - truth).T, cmap="magma", origin="lower", vmin=0, vmax=emax)
            axs[2 * r + 1, j].set_title(f"|{m} − truth| (max {emax:.3g})", fontsize=9)
        fig.colorbar(im, ax=axs[2 * r + 1, 1:].tolist(), fraction=0.04)
    for a_ in axs.ravel():
        a_.set_xticks([])
        a_.set_yticks([])
    png = out_dir / f"{name}_slices.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return csv, png


def save_report(result: dict, reference, out_dir, *, name: str = "interpolation") -> tuple[Path, Path]:
    """Writes ``<name>.json`` and ``<name>.png`` (a removed slice: truth, each method, error maps);
    see :func:`save_slice_report` for the per-slice CSV and the worst/median-slice figure."""
    from matplotlib.figure import Figure  # not pyplot: the user's backend and open figures stay as they are

    from jaxmedrf._files import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{name}.json"
    with atomic_path(js) as tmp:
        tmp.write_text(json.dumps({k: v for k, v in result.items() if k != "volumes"}, indent=2))
    ax = result["axis"]
    ref = np.moveaxis(np.asarray(reference), ax, 0)
    removed = result["removed"]
    i = removed[len(removed) // 2] if removed else 0
    truth = ref[i]
    ms = list(result["volumes"])
    fig = Figure(figsize=(3 * (len(ms) + 1), 6))
    axs = fig.subplots(2, len(ms) + 1, squeeze=False)
    axs[0, 0].imshow(truth.T, cmap="gray", origin="lower", vmin=0, vmax=ref.max())
    axs[0, 0].set_title(f"truth (removed slice {i})")
    axs[1, 0].axis("off")
    err_max = max(float(np.abs(np.moveaxis(result["volumes"][m], ax, 0)[i] - truth).max()) for m in ms) or 1.0
    for j, m in enumerate(ms, 1):
        sl = np.moveaxis(result["volumes"][m], ax, 0)[i]
        axs[0, j].imshow(sl.T, cmap="gray", origin="lower", vmin=0, vmax=ref.max())
        r = result["methods"][m]["removed"]
        axs[0, j].set_title(f"{m}: {r['psnr_mean']:.2f} dB / {r['ssim_mean']:.3f}")
        axs[1, j].imshow(np.abs(sl - truth).T, cmap="magma", origin="lower", vmin=0, vmax=err_max)
        axs[1, j].set_title(f"|{m} − truth|")
    for a_ in axs.ravel():
        a_.set_xticks([])
        a_.set_yticks([])
    fig.tight_layout()
    png = out_dir / f"{name}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
    return js, png
