"""Exact line integrals through a piecewise-constant voxel volume (Siddon / Jacobs).

Each voxel holds a constant μ (mm⁻¹) over its cube. A ray crosses the planes
``x = lo_x + i·dx`` (and likewise in y, z) at parameters ``α``; between two consecutive
crossings it lies in one voxel, so the line integral is exactly

.. math:: \\int μ\\,ds = \\|d\\| \\sum_k (α_{k+1} - α_k)\\; μ[\\text{voxel}((α_k + α_{k+1})/2)].

Siddon, "Fast calculation of the exact radiological path for a three-dimensional CT array",
Med. Phys. 12(2), 1985, Eqs. (3)–(5); Jacobs et al., "A fast algorithm to calculate the
exact radiological path through a pixel or voxel space", J. Comput. Inf. Technol. 1998.
This version sorts all plane crossings of a ray at once (one ``sort`` per ray), which keeps
it vectorised for ``vmap``; it is differentiable in the volume and, almost everywhere, in
the ray (the crossing parameters move smoothly with the pose).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxmedrf.rays import Rays, box_intersect

__all__ = ["siddon_integrals"]


def siddon_integrals(
    volume: Float[Array, "nx ny nz"],
    rays: Rays,
    lo: Float[Array, "3"],
    d_voxel: Float[Array, "3"],
) -> Float[Array, " rays"]:
    """Exact line integrals of ``volume`` along a flat batch of rays.

    Args:
      volume: μ per voxel, mm⁻¹, indexed (x, y, z).
      rays: segments with ``origins``/``directions`` of shape ``(R, 3)``, mm.
      lo: lower corner of the volume box, mm.
      d_voxel: voxel size, mm.

    Returns:
      ``(R,)`` line integrals (dimensionless).
    """
    n = volume.shape
    dtype = volume.dtype
    o = rays.origins.astype(dtype)
    d = rays.directions.astype(dtype)
    lo = jnp.asarray(lo, dtype)
    d_voxel = jnp.asarray(d_voxel, dtype)
    hi = lo + jnp.asarray(n, dtype) * d_voxel
    t_near, t_far = box_intersect(Rays(o, d), lo, hi)

    alphas = [t_near[:, None]]
    for a in range(3):
        planes = lo[a] + jnp.arange(n[a] + 1, dtype=dtype) * d_voxel[a]
        da = d[:, a : a + 1]
        moving = jnp.abs(da) > jnp.finfo(dtype).tiny
        alpha = (planes[None, :] - o[:, a : a + 1]) / jnp.where(moving, da, 1.0)
        alpha = jnp.where(moving, alpha, t_far[:, None])
        alphas.append(jnp.clip(alpha, t_near[:, None], t_far[:, None]))
    alpha = jnp.sort(jnp.concatenate(alphas, axis=1), axis=1)
    seg = alpha[:, 1:] - alpha[:, :-1]
    mid = 0.5 * (alpha[:, 1:] + alpha[:, :-1])
    pos = o[:, None, :] + mid[..., None] * d[:, None, :]
    idx = jnp.floor((pos - lo) / d_voxel).astype(jnp.int32)
    idx = jnp.clip(idx, 0, jnp.asarray(n, jnp.int32) - 1)
    vals = volume[idx[..., 0], idx[..., 1], idx[..., 2]]
    return jnp.sum(vals * seg, axis=1) * Rays(o, d).lengths
