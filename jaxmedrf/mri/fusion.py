"""Learned through-plane filters and locally weighted fusion of slice stacks (no network, no fit loop).

Two cheap, data-driven steps that the INR builds on (:mod:`jaxmedrf.mri.inr`, ``INRConfig.base``)
and that ``method="fusion"`` returns directly:

1. *A linear SMORE.* As in SMORE (Zhao et al., IEEE TMI 2021), a stack's own in-plane slices
   teach how to restore its through-plane axis: each in-plane slice is degraded along one of its
   axes the way the scanner degrades the slice axis (blurred by the slice profile, one pixel in
   ``r`` kept, ``r`` = slice spacing / in-plane step), and for every phase ``d = 0 … r−1`` a
   linear filter that predicts the pixel ``j·r + d`` from the ``(2·rows + 1) × 2·taps`` kept
   samples around it (``taps`` on each side along the degraded axis, ``rows`` neighbouring lines
   on each side) is fitted by ridge least squares over every line of the stack. Applied along
   the slice axis (both families of planes that contain it, averaged), it restores the stack on
   its in-plane step. A learned filter is the best linear interpolator for the image's own
   spectrum (a Wiener interpolator) and, with neighbouring lines, uses the local edge direction;
   SMORE's CNN is its non-linear counterpart (:mod:`jaxmedrf.mri.smore`).
2. *Local stack weighting.* Each stack's restoration is resampled onto the target grid; where
   the target grid passes through another stack's acquired voxels, that stack's error is seen
   directly. The squared error of stack ``s`` seen on the other stacks' voxels, smoothed
   in the target grid's planes across ``s``'s slice axis (Gaussian, ``sigma_mm``; not along the
   slice axis, so that the error keeps its dependence on the distance to the nearest slice),
   estimates its local error variance ``v_s(x)``; the fused value is ``Σ_s f_s / v_s / Σ_s 1 / v_s``
   (inverse-variance weighting, as NeSVoR weights slices by their estimated variance, Xu et al.,
   IEEE TMI 2023). Acquired voxels (point-like slices, ``thickness`` ≤ the in-plane step) keep their
   values. With one stack this is its restoration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Float

from jaxmedrf.mri.resample import _profile_kernel, axis_weights
from jaxmedrf.mri.slices import SliceStack

__all__ = ["LinearFilter", "learn_filter", "restore_stack", "fuse_stacks", "stack_ratio"]


class LinearFilter(NamedTuple):
    """Per-phase filter weights ``(r, (2·rows + 1) · 2·taps + 1)`` (the last column a bias), the
    integer ``ratio`` r, ``taps``, ``rows`` and ``copy0`` (phase 0 copies the slice: point-like slices)."""

    weights: np.ndarray
    ratio: int
    taps: int
    rows: int
    copy0: bool


def stack_ratio(stack: SliceStack) -> tuple[float, float]:
    """``(r, Δ)``: slice spacing / in-plane step and the in-plane step Δ (mean of the two in-plane steps, mm)."""
    step = stack.in_plane_step
    return stack.slice_spacing / step, step


def _windows(imgs: np.ndarray, r: int, taps: int, rows: int, lines=None):
    """The ``(2·rows + 1) · 2·taps`` views ``(n, h', m)`` whose stack (last axis) is the feature vector of
    every block of images ``(n, h, w)`` whose kept samples are columns ``0, r, 2r, …`` (``m`` of them):
    the kept samples in the window of ``2·rows + 1`` lines × ``2·taps`` columns (``taps`` kept columns at
    or before the block, ``taps`` after; edges replicated); ``lines``: only these lines (default all)."""
    kept = imgs[:, :, ::r]
    n, h, m = kept.shape
    pad = np.pad(kept, ((0, 0), (rows, rows), (taps - 1, taps)), mode="edge")
    def rows_at(a):  # views, not copies, when every line is wanted
        return pad[:, a:a + h] if lines is None else pad[:, a + np.asarray(lines)]

    return [rows_at(a)[:, :, (taps - 1) + j:(taps - 1) + j + m] for a in range(2 * rows + 1) for j in range(-taps + 1, taps + 1)]


def _features(imgs: np.ndarray, r: int, taps: int, rows: int, lines=None) -> np.ndarray:
    """:func:`_windows` stacked: ``(n, h', m, F)``."""
    return np.stack(_windows(imgs, r, taps, rows, lines), -1)


#: At most this many image lines per family of planes train a filter (evenly spaced): 19 weights
#: per phase need far fewer samples than a whole stack holds.
MAX_TRAIN_LINES = 48


def learn_filter(stack: SliceStack, *, taps: int = 3, rows: int = 1, ridge: float = 1e-3) -> LinearFilter | None:
    """Learns the per-phase through-plane filter from the stack's in-plane slices (see the module docstring).

    Args:
      stack: a thick-slice stack.
      taps: kept samples on each side along the degraded axis.
      rows: neighbouring lines on each side.
      ridge: Tikhonov weight relative to the mean diagonal of the normal equations.

    Returns:
      The filter, or ``None`` where the ratio r is not an integer ≥ 2 (within 10⁻³) or the slices
      are too small to learn from (then the stack is restored by cubic interpolation).
    """

    ratio, step = stack_ratio(stack)
    r = int(round(ratio))
    if r < 2 or abs(ratio - r) > 1e-3:
        return None
    v = np.moveaxis(stack.values, stack.axis, 0).astype(np.float32)  # (slices, n1, n2)
    if min(v.shape[1:]) < 2 * r + 1:
        return None
    copy0 = stack.point_like
    ker = _profile_kernel(stack.thickness / step, stack.profile) if not copy0 else None
    from scipy import ndimage

    n_feat = (2 * rows + 1) * 2 * taps + 1
    ata = np.zeros((r, n_feat, n_feat))
    aty = np.zeros((r, n_feat))
    for imgs in (v, np.swapaxes(v, 1, 2)):  # degrade the last axis of each image, then the other
        deg = imgs if copy0 else ndimage.convolve1d(imgs, ker[::-1], axis=2, mode="nearest")
        w = imgs.shape[2]
        lines = np.unique(np.linspace(0, imgs.shape[1] - 1, min(imgs.shape[1], MAX_TRAIN_LINES)).round().astype(int))
        for ph in range(r):  # the kept samples start at phase ph: every training pixel offset d
            f = _features(deg[:, :, ph:], r, taps, rows, lines)  # (n, lines, m, F−1)
            for d in range(r):
                pos = ph + np.arange(f.shape[2]) * r + d
                ok = pos < w
                x = f[:, :, ok].reshape(-1, n_feat - 1)
                x = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1).astype(np.float64)
                y = imgs[:, lines][:, :, pos[ok]].reshape(-1).astype(np.float64)
                ata[d] += x.T @ x
                aty[d] += x.T @ y
    wts = np.stack([np.linalg.solve(ata[d] + ridge * np.trace(ata[d]) / n_feat * np.eye(n_feat), aty[d])
                    for d in range(r)])
    return LinearFilter(wts.astype(np.float32), r, int(taps), int(rows), bool(copy0))


def restore_stack(stack: SliceStack, filt: LinearFilter | None = None) -> tuple[Float[np.ndarray, "n0 n1 n2"], np.ndarray]:
    """The stack restored on its in-plane step along the slice axis: ``(volume, affine)``.

    With a :class:`LinearFilter` (from :func:`learn_filter`), both families of planes that contain
    the slice axis are filtered and averaged; without one (or for a non-integer ratio), cubic
    B-spline interpolation to the integer ``ceil`` of the ratio.
    """

    ax = stack.axis
    n = stack.shape[ax]
    ratio, _ = stack_ratio(stack)
    aff = stack.affine.copy()
    if filt is None:
        r = max(1, int(math.ceil(ratio - 1e-3)))
        m = n * r
        w = axis_weights(n, np.arange(m) / r, 3)
        out = np.tensordot(np.moveaxis(stack.values, ax, -1), w.T, axes=1)
        aff[:3, ax] /= r
        return np.moveaxis(out, -1, ax).astype(np.float32), aff
    r = filt.ratio
    m = n * r  # the last block extrapolates (as in training) up to half a slice step past the last slice
    v = np.moveaxis(stack.values, ax, -1)  # (n1, n2, n): slice axis last
    out = np.zeros(v.shape[:2] + (m,), np.float64)
    for fam in (0, 1):
        planes = v if fam == 0 else np.swapaxes(v, 0, 1)  # rows = the other in-plane axis
        up = np.zeros((planes.shape[0], planes.shape[1], n * r), np.float64)
        up[:, :, ::r] = planes  # the kept samples in the strided layout; every phase is predicted below
        views = _windows(up, r, filt.taps, filt.rows)  # F−1 views (p, h, n), not stacked (memory)
        for d in range(r):
            if d == 0 and filt.copy0:
                up[:, :, 0:n * r:r] = planes
                continue
            acc = np.full(views[0].shape, filt.weights[d, -1], np.float64)
            for v_f, w_f in zip(views, filt.weights[d, :-1]):
                acc += w_f * v_f
            up[:, :, d:n * r:r] = acc
        res = up[:, :, :m]
        out += res if fam == 0 else np.swapaxes(res, 0, 1)
    aff[:3, ax] /= r
    return np.moveaxis(out / 2, -1, ax).astype(np.float32), aff


def _on_grid(vol, vol_aff, shape, affine, order: int = 1, margin=0.5):
    """``vol`` (voxel → mm ``vol_aff``) sampled on the target grid (trilinear, or nearest for ``order``
    0; edges replicated; NaN farther than ``margin`` voxels (scalar or per axis) outside), and the
    mask of target voxels whose centres are voxel centres of ``vol``. Axis-aligned grids (the usual
    case) are resampled one axis at a time."""
    m = np.linalg.solve(vol_aff, np.asarray(affine, np.float64))
    mg = np.broadcast_to(np.asarray(margin, np.float64), (3,)) + 1e-6
    lin = m[:3, :3]
    if np.allclose(lin, np.diag(np.diag(lin)), rtol=0.0, atol=1e-9):
        out = np.asarray(vol, np.float32)
        inside = np.ones(shape, bool)
        on_voxel = np.ones(shape, bool)
        for d in range(3):
            n = vol.shape[d]
            c = lin[d, d] * np.arange(shape[d]) + m[d, 3]
            bshape = [1, 1, 1]
            bshape[d] = shape[d]
            inside &= ((c >= -mg[d]) & (c <= n - 1 + mg[d])).reshape(bshape)
            on_voxel &= (np.abs(c - np.round(c)) < 1e-3).reshape(bshape)
            cc = np.clip(c, 0.0, n - 1.0)
            if order == 0:
                out = np.take(out, np.round(cc).astype(np.int64), axis=d)
            else:
                i0 = np.minimum(np.floor(cc).astype(np.int64), max(n - 2, 0))
                t = (cc - i0).astype(np.float32).reshape(bshape)
                out = np.take(out, i0, axis=d) * (1 - t) + np.take(out, np.minimum(i0 + 1, n - 1), axis=d) * t
        return np.where(inside, out, np.nan), on_voxel
    from scipy import ndimage

    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), 0).reshape(3, -1)
    c = lin @ idx + m[:3, 3:4]
    out = ndimage.map_coordinates(vol, c, order=order, mode="nearest")
    inside = np.all((c >= -mg[:, None]) & (c <= np.asarray(vol.shape)[:, None] - 1 + mg[:, None]), 0)
    on_voxel = np.all(np.abs(c - np.round(c)) < 1e-3, 0)
    return np.where(inside, out, np.nan).reshape(shape), on_voxel.reshape(shape)


def fuse_stacks(
    stacks: SliceStack | Sequence[SliceStack],
    shape,
    affine,
    *,
    sigma_mm: float = 2.0,
    learned: bool = True,
    taps: int = 3,
    rows: int = 1,
) -> Float[np.ndarray, "n0 n1 n2"]:
    """Restores every stack (:func:`restore_stack`) and fuses them on the target grid with local
    inverse-variance weights (see the module docstring).

    Args:
      stacks: one or more stacks; each is in the units of the first after a global scale
        (the least-squares ratio of the stacks on the target grid where both are defined).
      shape, affine: the target grid (voxel → LPS mm).
      sigma_mm: Gaussian width (mm) of the local error-variance estimate.
      learned: learn each stack's through-plane filter (:func:`learn_filter`); ``False``: cubic.
      taps, rows: the filter's support.

    Returns:
      The fused volume on the target grid (0 outside every stack).
    """
    from scipy import ndimage

    if isinstance(stacks, SliceStack):
        stacks = [stacks]
    stacks = list(stacks)
    if not sigma_mm > 0:
        raise ValueError(f"sigma_mm must be positive, got {sigma_mm}")
    shape = tuple(int(s) for s in shape)
    affine = np.asarray(affine, np.float64)
    vals, acquired = [], []
    for s in stacks:
        filt = learn_filter(s, taps=taps, rows=rows) if learned else None
        vol, aff = restore_stack(s, filt)
        margin = np.full(3, 0.5)
        margin[s.axis] = 0.5 * vol.shape[s.axis] / s.shape[s.axis]  # half a slice step before the first slice
        on, _ = _on_grid(vol, aff, shape, affine, margin=margin)
        raw, on_voxel = _on_grid(s.values, s.affine, shape, affine, order=0)
        acq = on_voxel & np.isfinite(on) & np.isfinite(raw) if s.point_like else np.zeros(shape, bool)
        vals.append(on)
        acquired.append((acq, np.where(acq, raw, 0.0)))
    for i in range(1, len(vals)):  # the first stack sets the units
        both = np.isfinite(vals[0]) & np.isfinite(vals[i])
        den = float(np.sum(vals[i][both] ** 2))
        scale = float(np.sum(vals[0][both] * vals[i][both])) / den if den > 0 else 1.0
        vals[i] = vals[i] * scale
        acquired[i] = (acquired[i][0], acquired[i][1] * scale)
    if len(vals) == 1:
        return np.nan_to_num(vals[0]).astype(np.float32)
    steps = np.linalg.norm(affine[:3, :3], axis=0)
    num = np.zeros(shape)
    den = np.zeros(shape)
    for i, (s, f) in enumerate(zip(stacks, vals)):
        seen = np.zeros(shape, bool)
        err = np.zeros(shape)
        for j, (acq, a) in enumerate(acquired):
            if j != i:
                ok = acq & np.isfinite(f) & ~seen
                err[ok] = (f[ok] - a[ok]) ** 2
                seen |= ok
        ax = int(np.argmax(np.abs(np.linalg.solve(s.affine[:3, :3], affine[:3, :3]))[s.axis]))  # target axis ≈ slice axis
        sig = sigma_mm / steps
        sig[ax] = 0.0
        n_seen = ndimage.gaussian_filter(seen.astype(np.float64), sig, mode="constant")
        var = ndimage.gaussian_filter(err, sig, mode="constant") / np.maximum(n_seen, 1e-12)
        fallback = float(np.mean(err[seen])) if seen.any() else 1.0
        var = np.where(n_seen > 1e-3, var, fallback) + 1e-6 * (fallback or 1.0)
        w = np.where(np.isfinite(f), 1.0 / var, 0.0)
        num += w * np.nan_to_num(f)
        den += w
    out = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    cnt = sum(a[0].astype(np.float64) for a in acquired)
    tot = sum(a[1] for a in acquired)
    out = np.where(cnt > 0, tot / np.maximum(cnt, 1), out)
    return out.astype(np.float32)
