"""Resampling along the slice axis: spline weights, slice-axis interpolation, slice profiles.

Classical building blocks shared by the baselines (:mod:`jaxmedrf.mri.interpolate`), the
stack fusion (:mod:`jaxmedrf.mri.fusion`) and SMORE's degradation model
(:mod:`jaxmedrf.mri.smore`). NumPy / SciPy only.
"""

from __future__ import annotations

import math

import numpy as np

from jaxmedrf.mri.slices import FWHM_TO_SIGMA, SliceStack

__all__ = ["axis_weights", "interpolate_along_axis"]

_ORDER = {"nearest": 0, "linear": 1, "cubic": 3}


def interpolate_along_axis(stack: SliceStack, shape, affine, method: str) -> np.ndarray:
    """nearest/linear/cubic interpolation of ``stack`` onto a grid that shares its in-plane grid."""
    a = np.asarray(affine, np.float64)
    m = np.linalg.solve(stack.affine, a)  # target index → stack index
    ax = stack.axis
    expect = np.eye(4)
    expect[:, ax] = m[:, ax]
    if not np.allclose(m, expect, atol=1e-4) or tuple(np.delete(shape, ax)) != tuple(np.delete(stack.shape, ax)):
        raise ValueError(f"method {method!r} interpolates along the slice axis only: the target grid must share "
                         "the stack's in-plane grid (use method='inr' for any other grid)")
    t = m[ax, ax] * np.arange(shape[ax]) + m[ax, 3]  # stack slice coordinate of each target slice
    w = axis_weights(stack.shape[ax], t, _ORDER[method])
    out = np.tensordot(np.moveaxis(stack.values, ax, -1), w.T, axes=1)  # (.., m)
    return np.moveaxis(out, -1, ax).astype(np.float32)


def axis_weights(n: int, t, order: int) -> np.ndarray:
    """The ``(len(t), n)`` matrix that interpolates ``n`` samples at positions ``t`` (sample
    index units) with scipy.ndimage's spline of ``order`` (prefiltered, boundary ``"nearest"``)."""
    from scipy import ndimage

    t = np.asarray(t, np.float64)
    eye = np.eye(n)
    return np.stack([ndimage.map_coordinates(eye[i], t[None], order=order, mode="nearest") for i in range(n)], 1)


def _profile_kernel(width: float, profile: str) -> np.ndarray:
    """Through-plane slice profile sampled on pixels (width in pixels, centred, sums to 1)."""
    if profile == "gaussian":
        sigma = max(width * FWHM_TO_SIGMA, 1e-6)
        h = int(math.ceil(3 * sigma))
        o = np.arange(-h, h + 1)
        w = np.exp(-0.5 * (o / sigma) ** 2)
    else:  # box: overlap of each pixel [o − ½, o + ½] with [−w/2, w/2]
        h = int(math.ceil(width / 2))
        o = np.arange(-h, h + 1)
        w = np.clip(np.minimum(o + 0.5, width / 2) - np.maximum(o - 0.5, -width / 2), 0, None)
    return w / w.sum()
