"""Photon noise on line-integral projections.

Beer–Lambert: a detector pixel behind line integral ``p`` counts on average
``I = I0 · exp(−p)`` photons. We draw ``N ~ Poisson(I)`` (plus optional Gaussian electronic
noise of standard deviation ``sigma_e`` counts), clip to at least ``floor`` counts so the log
stays finite, and return ``−log(N / I0)``. (E.g. Elbakri & Fessler, IEEE TMI 21(2) 2002, Eq. 1.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = ["poisson_noise"]


def poisson_noise(
    key: PRNGKeyArray,
    projections: Float[ArrayLike, "*shape"],
    *,
    i0: float,
    sigma_e: float = 0.0,
    floor: float = 1.0,
) -> Float[Array, "*shape"]:
    """Noisy line integrals for an incident count ``i0`` photons per pixel.

    Args:
      key: PRNG key.
      projections: noise-free line integrals (dimensionless, ≥ 0).
      i0: incident photons per pixel (> 0), e.g. 1e5.
      sigma_e: standard deviation of additive electronic noise, in counts (≥ 0).
      floor: smallest count kept before the log (> 0).

    Returns:
      Noisy line integrals, same shape and dtype as ``projections``.
    """
    for name, val, ok in (("i0", i0, i0 > 0), ("sigma_e", sigma_e, sigma_e >= 0), ("floor", floor, floor > 0)):
        if not (jnp.isfinite(val) and ok):
            raise ValueError(f"{name} must be {'non-negative' if name == 'sigma_e' else 'positive'} and finite, got {val!r}")
    k1, k2 = jax.random.split(key)
    p = jnp.asarray(projections)
    mean = i0 * jnp.exp(-p.astype(jnp.float32))
    counts = jax.random.poisson(k1, mean, p.shape).astype(jnp.float32)
    if sigma_e > 0:
        counts = counts + sigma_e * jax.random.normal(k2, p.shape, jnp.float32)
    counts = jnp.maximum(counts, floor)
    return (-jnp.log(counts / i0)).astype(p.dtype)
