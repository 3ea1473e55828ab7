"""Line integrals through a trilinearly interpolated volume (ray marching).

The volume is read as a continuous field: trilinear interpolation between voxel centres,
clamped to the edge voxels inside the volume box and zero outside it. The ray is sampled at
``n_samples`` bin midpoints between its box entry and exit (:mod:`jaxmedrf.render`), so the
step is at most ``box diagonal / n_samples``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxmedrf.render import FieldFn, render_rays
from jaxmedrf.rays import Rays

__all__ = ["interpolate_trilinear", "n_samples_for_step", "trilinear_integrals", "volume_field"]


def n_samples_for_step(n_voxel: tuple[int, int, int], step: float) -> int:
    """Samples per ray so that no step exceeds ``step`` voxels along the longest chord."""
    if not step > 0:
        raise ValueError(f"step must be positive (in voxels), got {step!r}")
    return max(2, math.ceil(math.sqrt(sum(n * n for n in n_voxel)) / step))


def interpolate_trilinear(
    volume: Float[Array, "nx ny nz"],
    points: Float[Array, "n 3"],
    lo: Float[Array, "3"],
    d_voxel: Float[Array, "3"],
) -> Float[Array, " n"]:
    """μ at ``points`` (mm) by trilinear interpolation; zero outside the volume box."""
    n = jnp.asarray(volume.shape, points.dtype)
    g = (points - lo) / d_voxel  # in voxel units, 0 at the lower box face
    inside = jnp.all((g >= 0) & (g <= n), axis=-1)
    c = jnp.clip(g - 0.5, 0.0, n - 1)  # voxel-centre coordinates, clamped to the edge voxels
    i0 = jnp.clip(jnp.floor(c), 0, n - 2).astype(jnp.int32)
    i0 = jnp.where(jnp.asarray(volume.shape) > 1, i0, 0)
    f = c - i0
    i1 = jnp.minimum(i0 + 1, jnp.asarray(volume.shape, jnp.int32) - 1)
    out = 0.0
    for dx in (0, 1):
        ix = i1[:, 0] if dx else i0[:, 0]
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            iy = i1[:, 1] if dy else i0[:, 1]
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                iz = i1[:, 2] if dz else i0[:, 2]
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out = out + volume[ix, iy, iz] * (wx * wy * wz)
    return jnp.where(inside, out, 0.0)


def volume_field(volume: Float[Array, "nx ny nz"], lo: Float[Array, "3"], d_voxel: Float[Array, "3"]) -> FieldFn:
    """A field function (points → μ) reading ``volume`` by trilinear interpolation."""
    lo = jnp.asarray(lo, volume.dtype)
    d_voxel = jnp.asarray(d_voxel, volume.dtype)
    return lambda pts: interpolate_trilinear(volume, pts.astype(volume.dtype), lo, d_voxel)


def trilinear_integrals(
    volume: Float[Array, "nx ny nz"],
    rays: Rays,
    lo: Float[Array, "3"],
    d_voxel: Float[Array, "3"],
    *,
    n_samples: int,
) -> Float[Array, " rays"]:
    """Line integrals of the trilinear field along ``(R, 3)`` rays (midpoint rule)."""
    lo = jnp.asarray(lo, volume.dtype)
    d_voxel = jnp.asarray(d_voxel, volume.dtype)
    hi = lo + jnp.asarray(volume.shape, volume.dtype) * d_voxel
    rays = Rays(rays.origins.astype(volume.dtype), rays.directions.astype(volume.dtype))
    return render_rays(volume_field(volume, lo, d_voxel), rays, lo, hi, n_samples=n_samples)
