"""Rays of a scan and their entry/exit of the volume box.

A :class:`Rays` is a batch of line segments ``x(t) = origin + t · direction`` for
``t ∈ [0, 1]``. Cone beam: from the source (t = 0) to the pixel centre (t = 1), so the
integral stops at the detector as TIGRE's does. Parallel beam: a segment through the pixel
centre, along the beam, long enough to cross the whole volume. The line integral of μ along
a ray is ``∫₀¹ μ(x(t)) ‖direction‖ dt``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jaxmedrf.geometry import Geometry, detector_per_view, view_frames, volume_box

__all__ = ["Rays", "box_intersect", "geometry_rays", "pixel_rays"]


class Rays(NamedTuple):
    """Segments ``origin + t · direction``, ``t ∈ [0, 1]``; shapes ``(..., 3)``, mm."""

    origins: Float[Array, "*batch 3"]
    directions: Float[Array, "*batch 3"]

    @property
    def lengths(self) -> Float[Array, "*batch"]:
        """‖direction‖, mm: converts a step in t to a length."""
        return _safe_norm(self.directions)


def _safe_norm(x: Array) -> Array:
    sq = jnp.sum(x * x, axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def pixel_rays(
    geometry: Geometry,
    view: Int[ArrayLike, "*#batch"],
    row: Int[ArrayLike, "*#batch"],
    col: Int[ArrayLike, "*#batch"],
) -> Rays:
    """Rays through pixel ``(row, col)`` of view ``view`` (integer arrays, broadcast together).

    Flat or cylindrical detector (``geometry.detector``; equations in :mod:`jaxmedrf.geometry`);
    ``DSD`` and ``off_detector`` given per view are read at ``view``.
    """
    frames = view_frames(geometry)
    nv, nu = geometry.n_detector
    dv, du = jnp.asarray(geometry.d_detector)[0], jnp.asarray(geometry.d_detector)[1]
    det = detector_per_view(geometry)  # one (v, u) offset and DSD per view, given once or per view
    off_v, off_u = det.off_detector[view, 0], det.off_detector[view, 1]
    a = (col - (nu - 1) / 2) * du + off_u
    b = (row - (nv - 1) / 2) * dv + off_v
    if geometry.detector == "cylindrical":  # columns on a cylinder of radius DSD around the source
        dsd = det.DSD[view]
        src = frames.source[view]
        gamma = (a / dsd)[..., None]
        radial = frames.center[view] - src  # DSD · n̂
        pix = src + radial * jnp.cos(gamma) + (dsd[..., None] * jnp.sin(gamma)) * frames.u[view] + frames.v[view] * b[..., None]
        return Rays(src, pix - src)
    pix = frames.center[view] + frames.u[view] * a[..., None] + frames.v[view] * b[..., None]
    if geometry.beam == "cone":
        src = frames.source[view]
        return Rays(src, pix - src)
    lo, hi = volume_box(geometry)
    centre = 0.5 * (lo + hi)
    # Half-length: enough to cross the volume box from any point of the detector plane.
    half = _safe_norm(pix - centre) + 0.5 * _safe_norm(hi - lo) + 1.0
    d = frames.direction[view]
    return Rays(pix - d * half[..., None], 2.0 * d * half[..., None])


def geometry_rays(geometry: Geometry) -> Rays:
    """All rays of a scan, shapes ``(n_views, nv, nu, 3)``."""
    nviews, nv, nu = geometry.projection_shape
    view, row, col = jnp.meshgrid(jnp.arange(nviews), jnp.arange(nv), jnp.arange(nu), indexing="ij")
    return pixel_rays(geometry, view, row, col)


def box_intersect(
    rays: Rays, lo: Float[Array, "3"], hi: Float[Array, "3"]
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Entry and exit parameters of each segment in the box ``[lo, hi]`` (slab method).

    Returns ``(t_near, t_far)`` clipped to ``[0, 1]``; a segment that misses the box gets
    ``t_near == t_far``. Axis-parallel rays are handled without NaN in value or gradient.

    Kay & Kajiya, "Ray tracing complex scenes", SIGGRAPH 1986.
    """
    o, d = rays.origins, rays.directions
    tiny = jnp.finfo(d.dtype).tiny
    nonzero = jnp.abs(d) > tiny
    d_safe = jnp.where(nonzero, d, 1.0)
    t0 = (lo - o) / d_safe
    t1 = (hi - o) / d_safe
    inside = (o >= lo) & (o <= hi)
    big = jnp.asarray(1e30, d.dtype)
    tmin = jnp.where(nonzero, jnp.minimum(t0, t1), jnp.where(inside, -big, big))
    tmax = jnp.where(nonzero, jnp.maximum(t0, t1), jnp.where(inside, big, -big))
    t_near = jnp.clip(jnp.max(tmin, axis=-1), 0.0, 1.0)
    t_far = jnp.clip(jnp.min(tmax, axis=-1), 0.0, 1.0)
    return t_near, jnp.maximum(t_far, t_near)


