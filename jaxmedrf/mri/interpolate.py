"""Slice interpolation with one API for every method: ``nearest``, ``linear``, ``cubic``, ``inr``
and ``smore``.

The baselines interpolate along the slice axis only (scipy.ndimage: order 0, 1 and 3 — cubic
is the B-spline of order 3 with its prefilter, boundary mode ``"nearest"``), so the target
grid must share the stack's in-plane grid; ``"inr"`` fits :func:`jaxmedrf.mri.inr.fit_inr`
to all the stacks and evaluates it on any target grid; ``"fusion"`` restores each stack with a
filter learned from its own in-plane slices and fuses them with local error weights
(:mod:`jaxmedrf.mri.fusion`, any target grid); ``"smore"`` trains the self-supervised
through-plane network of :mod:`jaxmedrf.mri.smore` on the first stack's in-plane slices and
restores that stack along its slice axis (same target-grid rule as the baselines).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxmedrf.mri.inr import INRConfig, fit_inr, query_inr
from jaxmedrf.mri.resample import interpolate_along_axis
from jaxmedrf.mri.slices import SliceStack

__all__ = ["METHODS", "interpolate", "target_grid", "interpolate_along_axis"]

METHODS = ("nearest", "linear", "cubic", "fusion", "inr", "smore")


def target_grid(stack: SliceStack, *, target_spacing: float | None = None, factor: float | None = None):
    """``(shape, affine)`` of the stack's grid refined along its slice axis.

    The first target slice is the stack's first slice; the last lies at or before its last.
    Give either ``target_spacing`` (mm) or ``factor`` (spacing / factor).
    """
    if (target_spacing is None) == (factor is None):
        raise ValueError("give exactly one of target_spacing (mm) or factor")
    ds = stack.slice_spacing
    sp = float(target_spacing) if target_spacing is not None else ds / float(factor)
    if not (np.isfinite(sp) and sp > 0):
        raise ValueError(f"target spacing must be positive (mm), got {sp}")
    n = stack.shape[stack.axis]
    m = int(np.floor((n - 1) * ds / sp + 1e-6)) + 1
    shape = list(stack.shape)
    shape[stack.axis] = m
    a = stack.affine.copy()
    a[:3, stack.axis] *= sp / ds
    return tuple(shape), a


def interpolate(
    stacks: SliceStack | Sequence[SliceStack],
    method: str = "cubic",
    *,
    target_spacing: float | None = None,
    factor: float | None = None,
    shape=None,
    affine=None,
    inr_config: INRConfig = INRConfig(),
    smore_config=None,
    key=None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructs a finer volume from slice stacks: ``(volume, affine)``.

    Args:
      stacks: one stack or several (``"inr"`` and ``"fusion"`` use them all; the others use the first).
      method: ``"nearest"``, ``"linear"``, ``"cubic"``, ``"fusion"``, ``"inr"`` or ``"smore"``.
      target_spacing, factor: the new slice spacing of the first stack (mm), or its
        refinement factor; or give the target grid itself (``shape`` and ``affine``).
      inr_config: settings of the INR fit.
      smore_config: a :class:`jaxmedrf.mri.smore.SMOREConfig` for ``"smore"`` and for the INR's
        SMORE base when ``inr_config.smore`` is ``None`` (default settings if ``None``).
      key: PRNG key of the SMORE training (default ``jax.random.key(0)``); the INR takes
        its seed from ``inr_config.seed``.
      progress: progress bar while fitting.
    """
    if isinstance(stacks, SliceStack):
        stacks = [stacks]
    stacks = list(stacks)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if shape is None:
        shape, affine = target_grid(stacks[0], target_spacing=target_spacing, factor=factor)
    elif affine is None:
        raise ValueError("give affine with shape")
    if method == "inr":
        if inr_config.smore is None and smore_config is not None:  # the settings of a SMORE base
            inr_config = dataclasses.replace(inr_config, smore=smore_config)
        res = fit_inr(stacks, inr_config, progress=progress)
        return query_inr(res, shape, affine), np.asarray(affine)
    if method == "fusion":
        from jaxmedrf.mri.fusion import fuse_stacks

        return fuse_stacks(stacks, shape, affine), np.asarray(affine)
    if method == "smore":
        import jax

        from jaxmedrf.mri.smore import SMOREConfig, apply_smore, fit_smore

        res = fit_smore(jax.random.key(0) if key is None else key, stacks[0], smore_config or SMOREConfig(),
                        progress=progress)
        return apply_smore(res, stacks[0], shape, affine), np.asarray(affine)
    return interpolate_along_axis(stacks[0], shape, affine, method), np.asarray(affine)
