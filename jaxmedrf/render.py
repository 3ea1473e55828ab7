"""Ray marching, one stage per function: near/far → samples → field → integrate.

The renderer takes a *field function* ``μ = field(points)`` mapping ``(N, 3)`` points in mm
to ``(N,)`` attenuation in mm⁻¹, so the same code renders a voxel volume (trilinear
lookup, :func:`jaxmedrf.projectors.trilinear.volume_field`) or a neural field.

The line integral is the midpoint (deterministic) or stratified Monte-Carlo (with a
``key``) quadrature of ``∫ μ(x(t)) ‖d‖ dt`` over ``[t_near, t_far]`` (NeRF, Mildenhall et al.
ECCV 2020, Eq. 2–3 with the X-ray attenuation integral of NAF, Zha et al. MICCAI 2022, Eq. 1).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxmedrf.rays import Rays, box_intersect

__all__ = ["FieldFn", "integrate", "render_rays", "sample_uniform"]

FieldFn = Callable[[Float[Array, "n 3"]], Float[Array, " n"]]


def sample_uniform(
    key: PRNGKeyArray | None,
    t_near: Float[Array, " rays"],
    t_far: Float[Array, " rays"],
    *,
    n_samples: int,
) -> tuple[Float[Array, "rays samples"], Float[Array, "rays samples"]]:
    """``n_samples`` points per ray in ``[t_near, t_far]``: bin midpoints, or jittered bins.

    Args:
      key: ``None`` for bin midpoints (deterministic), else a PRNG key for one uniform
        sample in each bin (stratified sampling).
      t_near, t_far: segment limits, ``(R,)``.
      n_samples: samples per ray (static).

    Returns:
      ``(t, dt)``, each ``(R, n_samples)``: sample parameters and bin widths.
    """
    span = (t_far - t_near)[:, None]
    i = jnp.arange(n_samples, dtype=t_near.dtype)[None, :]
    if key is None:
        u = jnp.full((t_near.shape[0], n_samples), 0.5, t_near.dtype)
    else:
        u = jax.random.uniform(key, (t_near.shape[0], n_samples), t_near.dtype)
    t = t_near[:, None] + (i + u) / n_samples * span
    dt = jnp.broadcast_to(span / n_samples, t.shape)
    return t, dt


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
    key: PRNGKeyArray | None = None,
) -> Float[Array, " rays"]:
    """Line integrals of ``field`` along ``(R, 3)`` rays, inside the box ``[lo, hi]``."""
    t_near, t_far = box_intersect(rays, lo, hi)
    t, dt = sample_uniform(key, t_near, t_far, n_samples=n_samples)
    pts = rays.origins[:, None, :] + t[..., None] * rays.directions[:, None, :]
    mu = field(pts.reshape(-1, 3)).reshape(t.shape)
    return integrate(mu, dt, rays.lengths)
