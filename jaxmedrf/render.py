"""Ray marching, one stage per function: near/far → samples → field → integrate.

The renderer takes a *field function* ``μ = field(points)`` mapping ``(N, 3)`` points in mm
to ``(N,)`` attenuation in mm⁻¹, so the same code renders a voxel volume (trilinear
lookup, :func:`jaxmedrf.projectors.trilinear.volume_field`) or a neural field.

The line integral is the midpoint (deterministic) or stratified Monte-Carlo (with a
``key``) quadrature of ``∫ μ(x(t)) ‖d‖ dt`` over ``[t_near, t_far]`` (NeRF, Mildenhall et al.
ECCV 2020, Eq. 2–3 with the X-ray attenuation integral of NAF, Zha et al. MICCAI 2022, Eq. 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxmedrf.rays import Rays, box_intersect
from jaxmedrf.samples import sample_pdf, sample_uniform

if TYPE_CHECKING:
    from jaxmedrf.occupancy import OccupancyGrid

__all__ = ["FieldFn", "cell_widths", "integrate", "render_rays", "sample_pdf", "sample_uniform"]

FieldFn = Callable[[Float[Array, "n 3"]], Float[Array, " n"]]


def cell_widths(t: Float[Array, "rays samples"], t_near: Float[Array, " rays"], t_far: Float[Array, " rays"]) -> Float[Array, "rays samples"]:
    """Widths of the cells around sorted samples ``t`` (edges half-way between neighbours,
    ``t_near``/``t_far`` at the ends): the weights of a quadrature on uneven nodes."""
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    edges = jnp.concatenate([t_near[:, None], mids, t_far[:, None]], -1)
    return edges[:, 1:] - edges[:, :-1]


def integrate(
    mu: Float[Array, "rays samples"],
    dt: Float[Array, "rays samples"],
    lengths: Float[Array, " rays"],
) -> Float[Array, " rays"]:
    """``Σ_i μ_i δ_i`` with ``δ_i = dt_i ‖d‖`` (mm): the attenuation line integral."""
    return jnp.sum(mu * dt, axis=-1) * lengths


def render_rays(
    field: FieldFn,
    rays: Rays,
    lo: Float[Array, "3"],
    hi: Float[Array, "3"],
    *,
    n_samples: int,
    n_importance: int = 0,
    key: PRNGKeyArray | None = None,
    occupancy: OccupancyGrid | None = None,
    ray_field: bool = False,
) -> Float[Array, " rays"]:
    """Line integrals of ``field`` along ``(R, 3)`` rays, inside the box ``[lo, hi]``.

    With ``n_importance > 0`` a first pass at the ``n_samples`` stratified points gives a
    density ∝ μ along each ray; ``n_importance`` more points are drawn from it
    (:func:`sample_pdf`), and the integral is taken over all points with the cell widths of
    :func:`cell_widths` (hierarchical sampling, as NAF and NeRF do; gradients flow through the
    field values, not the sample positions).

    With an ``occupancy`` grid (:class:`jaxmedrf.occupancy.OccupancyGrid`) all samples go
    into its occupied cells: both passes sample the occupied-length coordinate of
    :func:`jaxmedrf.occupancy.occupied_segments` instead of ``t`` (empty-space skipping; the
    integral stays exact for a field that is zero outside the occupied cells).

    With ``ray_field=True``, ``field`` is a *ray field*: it takes the ordered samples of every ray,
    ``(R, S, 3)`` mm, and returns ``(R, S)`` μ in mm⁻¹, so that μ at a sample may depend on the other
    samples of its ray (:mod:`jaxmedrf.fields.lineformer`); the samples are sorted along each ray.
    """
    k_uniform, k_pdf = (None, None) if key is None else jax.random.split(key)
    t_near, t_far = box_intersect(rays, lo, hi)
    to_t = lambda s: s  # noqa: E731
    if occupancy is not None:
        from jaxmedrf.occupancy import occupied_segments, segments_to_t

        seg = occupied_segments(rays, occupancy, t_near=t_near, t_far=t_far)
        t_near, t_far, to_t = jnp.zeros_like(t_near), seg.length, lambda s: segments_to_t(seg, s)  # noqa: E731
    t, dt = sample_uniform(k_uniform, t_near, t_far, n_samples=n_samples)

    def mu_at(t):
        t = to_t(t)
        pts = rays.origins[:, None, :] + t[..., None] * rays.directions[:, None, :]
        return field(pts) if ray_field else field(pts.reshape(-1, 3)).reshape(t.shape)

    if n_importance <= 0:
        return integrate(mu_at(t), dt, rays.lengths)
    t_fine = sample_pdf(k_pdf, t_near, t_far, mu_at(t), n_samples=n_importance)
    t_all = jax.lax.stop_gradient(jnp.sort(jnp.concatenate([t, t_fine], -1), -1))
    return integrate(mu_at(t_all), cell_widths(t_all, t_near, t_far), rays.lengths)
