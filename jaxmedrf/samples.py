"""Samples along rays: the stage between near/far and the field.

Stratified (NeRF, Mildenhall et al. ECCV 2020, Eq. 2) or midpoint samples of a segment, and
inverse-CDF samples of a piecewise-constant density (hierarchical sampling, NeRF Sec. 5.2).
:mod:`jaxmedrf.render` and :mod:`jaxmedrf.occupancy` both draw their samples here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["sample_pdf", "sample_uniform"]


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


def sample_pdf(
    key: PRNGKeyArray | None,
    t_near: Float[Array, " rays"],
    t_far: Float[Array, " rays"],
    weights: Float[Array, "rays bins"],
    *,
    n_samples: int,
) -> Float[Array, "rays samples"]:
    """Parameters drawn from the piecewise-constant density ``weights`` over equal bins of
    ``[t_near, t_far]`` by inverse transform sampling (NeRF's hierarchical sampling, Mildenhall
    et al. 2020, Sec. 5.2). Deterministic quantiles without ``key``; no gradient flows."""
    weights = jax.lax.stop_gradient(weights) + 1e-5 * jnp.max(jax.lax.stop_gradient(weights), -1, keepdims=True) + 1e-12
    n_bins = weights.shape[-1]
    cdf = jnp.cumsum(weights, -1) / jnp.sum(weights, -1, keepdims=True)
    cdf = jnp.concatenate([jnp.zeros_like(cdf[:, :1]), cdf], -1)  # (R, bins + 1)
    if key is None:
        u = jnp.broadcast_to((jnp.arange(n_samples, dtype=cdf.dtype) + 0.5) / n_samples, (cdf.shape[0], n_samples))
    else:
        u = (jnp.arange(n_samples, dtype=cdf.dtype) + jax.random.uniform(key, (cdf.shape[0], n_samples), cdf.dtype)) / n_samples
    idx = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(cdf, u)
    idx = jnp.clip(idx - 1, 0, n_bins - 1)
    c0 = jnp.take_along_axis(cdf, idx, -1)
    c1 = jnp.take_along_axis(cdf, idx + 1, -1)
    frac = jnp.where(c1 > c0, (u - c0) / jnp.where(c1 > c0, c1 - c0, 1.0), 0.5)
    return t_near[:, None] + (idx + frac) / n_bins * (t_far - t_near)[:, None]
