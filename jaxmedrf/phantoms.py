"""Analytic phantoms made of ellipsoids, with exact line integrals.

A :class:`Phantom` is a sum of homogeneous ellipsoids: ellipsoid ``e`` adds ``value[e]``
(mm⁻¹) inside ``{p : ‖A⁻¹ Rᵀ (p − c)‖ ≤ 1}`` where ``c`` is its centre (mm), ``A`` the
diagonal of its semi-axes (mm) and ``R`` a rotation by ``phi`` (rad) about z.

The line integral of an ellipsoid along ``x(t) = o + t d`` is exact: with
``q(t) = A⁻¹Rᵀ(o − c) + t A⁻¹Rᵀ d = q₀ + t w``, the chord is where ``‖q(t)‖² ≤ 1``, i.e.
``t ∈ [(-b − √D)/a, (-b + √D)/a]`` with ``a = w·w``, ``b = q₀·w``, ``D = b² − a(q₀·q₀ − 1)``;
its length in mm is that interval (clipped to the segment) times ``‖d‖``.

Attenuation scale: :func:`shepp_logan` returns the modified (Yu–Ye–Wang) contrast, whose
values lie in [0, 1] (skull 1.0, brain 0.2, ventricles 0), multiplied by ``mu_scale``
(mm⁻¹). :func:`spheres` uses ``mu_scale`` the same way (1 → water 0.02 mm⁻¹). The default ``mu_scale = 0.1`` mm⁻¹ makes the brain-like region (0.2) equal to water
at about 70 keV, ``MU_WATER = 0.02`` mm⁻¹, and the skull 0.1 mm⁻¹ (dense bone). Use
``mu_scale=1`` for the unit-scale phantom that NAF and most papers report PSNR on.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxmedrf.geometry import Geometry, voxel_centers
from jaxmedrf.rays import Rays, pixel_rays

__all__ = [
    "MU_WATER",
    "PHANTOMS",
    "Phantom",
    "analytic_projections",
    "get_phantom",
    "line_integrals",
    "shepp_logan",
    "spheres",
    "voxelize",
]

MU_WATER = 0.02
"""Round value of water's linear attenuation used to scale the phantoms, mm⁻¹ (water is
0.0206 at 60 keV and 0.0193 at 70 keV by NIST XCOM; :data:`jaxmedrf.io.MU_WATER` is the
reference the HU conversions use)."""

# Kak & Slaney (1988), "Principles of Computerized Tomographic Imaging", p. 102, 3-D head
# phantom geometry; contrast of Yu, Ye & Wang (2004), "Katsevich-type algorithms for variable
# radius spiral cone-beam CT", Proc. SPIE 5535 — the 'modified' 3-D Shepp–Logan. Columns:
# semi-axes a, b, c; centre x0, y0, z0 (in units of the radius); phi (degrees about z); value.
_SHEPP_LOGAN = np.array(
    [
        [0.6900, 0.920, 0.900, 0.000, 0.000, 0.000, 0.0, 1.0],
        [0.6624, 0.874, 0.880, 0.000, 0.000, 0.000, 0.0, -0.8],
        [0.4100, 0.160, 0.210, -0.220, 0.000, -0.250, 108.0, -0.2],
        [0.3100, 0.110, 0.220, 0.220, 0.000, -0.250, 72.0, -0.2],
        [0.2100, 0.250, 0.500, 0.000, 0.350, -0.250, 0.0, 0.2],
        [0.0460, 0.046, 0.046, 0.000, 0.100, -0.250, 0.0, 0.2],
        [0.0460, 0.023, 0.020, -0.080, -0.650, -0.250, 0.0, 0.1],
        [0.0460, 0.023, 0.020, 0.060, -0.650, -0.250, 90.0, 0.1],
        [0.0560, 0.040, 0.100, 0.060, -0.105, 0.625, 90.0, 0.2],
        [0.0560, 0.056, 0.100, 0.000, 0.100, 0.625, 0.0, -0.2],
    ]
)


class Phantom(NamedTuple):
    """Ellipsoids: ``centers`` (E, 3) mm, ``semi_axes`` (E, 3) mm, ``phi`` (E,) rad about z,
    ``values`` (E,) mm⁻¹ added inside each."""

    centers: Float[Array, "e 3"]
    semi_axes: Float[Array, "e 3"]
    phi: Float[Array, " e"]
    values: Float[Array, " e"]


def shepp_logan(*, radius: float = 128.0, mu_scale: float = 0.1) -> Phantom:
    """The 3-D modified Shepp–Logan head phantom.

    Args:
      radius: mm represented by 1 in the table (the head's half-height is 0.92·radius).
      mu_scale: mm⁻¹ per unit of the [0, 1] table contrast (module doc).
    """
    t = _SHEPP_LOGAN
    return Phantom(
        centers=t[:, 3:6] * radius,
        semi_axes=t[:, 0:3] * radius,
        phi=np.deg2rad(t[:, 6]),
        values=t[:, 7] * mu_scale,
    )


def spheres(*, radius: float = 100.0, mu_scale: float = 1.0) -> Phantom:
    """A water sphere with three inserts: a simple phantom for checks by eye.

    A sphere of ``radius`` mm and μ = 0.02·``mu_scale`` mm⁻¹ (water) holding a bone-like
    sphere (+0.03), an air-like sphere (−0.02, i.e. μ = 0) and a small dense bead (+0.06).
    """
    r = radius
    c = np.array([[0, 0, 0], [0.4 * r, 0, 0], [-0.35 * r, 0.2 * r, 0.1 * r], [0.0, -0.45 * r, -0.3 * r]])
    a = np.array([[r] * 3, [0.3 * r] * 3, [0.25 * r] * 3, [0.08 * r] * 3])
    v = np.array([MU_WATER, 0.03, -MU_WATER, 0.06]) * mu_scale
    return Phantom(centers=c, semi_axes=a, phi=np.zeros(4), values=v)


PHANTOMS = {"shepp-logan": shepp_logan, "spheres": spheres}


def get_phantom(name: str, *, radius: float, mu_scale: float = 0.1) -> Phantom:
    """A phantom by name (``PHANTOMS``); ``ValueError`` names the unknown one."""
    if name not in PHANTOMS:
        raise ValueError(f"phantom must be one of {sorted(PHANTOMS)}, got {name!r}")
    return PHANTOMS[name](radius=radius, mu_scale=mu_scale)


def _to_unit(phantom: Phantom, p: Array) -> Array:
    """Coordinates of points ``p`` (…, 3) in each ellipsoid's unit-sphere frame: (…, E, 3)."""
    c, s = jnp.cos(phantom.phi), jnp.sin(phantom.phi)
    rel = p[..., None, :] - jnp.asarray(phantom.centers)
    x = c * rel[..., 0] + s * rel[..., 1]
    y = -s * rel[..., 0] + c * rel[..., 1]
    q = jnp.stack([x, y, rel[..., 2]], axis=-1)
    return q / jnp.asarray(phantom.semi_axes)


def _dir_to_unit(phantom: Phantom, d: Array) -> Array:
    c, s = jnp.cos(phantom.phi), jnp.sin(phantom.phi)
    x = c * d[..., None, 0] + s * d[..., None, 1]
    y = -s * d[..., None, 0] + c * d[..., None, 1]
    w = jnp.stack([x, y, jnp.broadcast_to(d[..., None, 2], x.shape)], axis=-1)
    return w / jnp.asarray(phantom.semi_axes)


def line_integrals(phantom: Phantom, rays: Rays) -> Float[Array, "*batch"]:
    """Exact line integrals of ``phantom`` along segments ``t ∈ [0, 1]`` (module doc)."""
    q0 = _to_unit(phantom, rays.origins)
    w = _dir_to_unit(phantom, rays.directions)
    a = jnp.sum(w * w, -1)
    b = jnp.sum(q0 * w, -1)
    disc = b * b - a * (jnp.sum(q0 * q0, -1) - 1.0)
    hit = (disc > 0) & (a > 0)
    root = jnp.sqrt(jnp.where(hit, disc, 0.0))
    a_safe = jnp.where(hit, a, 1.0)
    t0 = jnp.clip((-b - root) / a_safe, 0.0, 1.0)
    t1 = jnp.clip((-b + root) / a_safe, 0.0, 1.0)
    chord = jnp.where(hit, t1 - t0, 0.0)
    return jnp.sum(chord * jnp.asarray(phantom.values), -1) * rays.lengths


def analytic_projections(phantom: Phantom, geometry: Geometry) -> Float[Array, "views nv nu"]:
    """Exact projections of ``phantom`` for every pixel of ``geometry`` (float32)."""
    nv, nu = geometry.n_detector
    row, col = jnp.meshgrid(jnp.arange(nv), jnp.arange(nu), indexing="ij")
    # One view at a time (rays made inside the loop) keeps memory at (nv·nu·E) floats.
    one_view = lambda i: line_integrals(phantom, pixel_rays(geometry, i, row, col))  # noqa: E731
    return jax.lax.map(one_view, jnp.arange(geometry.n_views)).astype(jnp.float32)


def voxelize(phantom: Phantom, geometry: Geometry, *, supersample: int = 2) -> Float[Array, "nx ny nz"]:
    """Mean of ``phantom`` over each voxel of ``geometry``'s grid, from ``supersample``³
    evenly placed points per voxel (float32, mm⁻¹)."""
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    xs, ys, zs = voxel_centers(geometry)
    d = jnp.asarray(geometry.d_voxel)
    offs = (jnp.arange(s) + 0.5) / s - 0.5
    values = jnp.asarray(phantom.values)

    @jax.jit
    def slab(x):  # one x-plane of voxels: (ny, nz)
        def at(o):
            p = jnp.stack(jnp.broadcast_arrays(x + o[0] * d[0], ys[:, None] + o[1] * d[1], zs[None, :] + o[2] * d[2]), -1)
            q = _to_unit(phantom, p)
            return jnp.sum(jnp.where(jnp.sum(q * q, -1) <= 1.0, values, 0.0), -1)

        grid = jnp.stack(jnp.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
        return jax.lax.map(at, grid).mean(0)

    return jax.lax.map(slab, xs).astype(jnp.float32)

