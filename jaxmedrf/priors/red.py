"""The denoising prior as a regulariser: RED steps for SART and a RED loss for NAF.

Regularisation by denoising (RED; Romano, Elad & Milanfar, "The little engine that could:
regularization by denoising (RED)", SIAM J. Imaging Sci. 10, 2017) uses the regulariser
ρ(x) = ½ xᵀ(x − D(x)), whose gradient is ∇ρ = x − D(x) under RED's conditions (Eq. 41–43
there). The denoiser ``D`` is the learned one of :mod:`jaxmedrf.priors.denoiser` applied to
the axial slices of the volume (a 2-D prior over a 3-D volume, slice by slice).

* SART (:func:`red_step`): after each SART pass over the subsets, one steepest-descent step
  on ρ alone, ``x ← x − λ (x − D_σ(x))`` (Romano et al.'s "steepest descent" RED solver with
  the data step replaced by SART's; the same alternation as plug-and-play priors,
  Venkatakrishnan, Bouman & Wohlberg, GlobalSIP 2013, with λ = 1 giving ``x ← D_σ(x)``).
* NAF (:func:`red_field_loss`): a loss term ``w · mean((x − sg[D_σ(x)])²)`` on a random
  ``patch × patch`` axial patch of the field sampled on the voxel grid (as NAF's TV term
  samples patches), ``sg`` the stop-gradient: its gradient with respect to the rendered
  patch is ``2w/N · (x − D_σ(x))``, RED's ∇ρ, flowing into the field's parameters.

σ is in the prior's normalised units (μ / ``config.mu_scale``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from jaxmedrf.priors.denoiser import DenoisingPrior, denoise

__all__ = ["red_field_loss", "red_step"]


def _check(weight, sigma, hi=None):
    if not (weight > 0 and (hi is None or weight <= hi)):
        raise ValueError(f"prior weight must be in (0, {hi}], got {weight!r}" if hi else
                         f"prior weight must be positive, got {weight!r}")
    if not sigma > 0:
        raise ValueError(f"prior sigma must be positive, got {sigma!r}")


def red_step(prior: DenoisingPrior, *, weight: float = 0.5, sigma: float = 0.02) -> Callable[[Array], Array]:
    """A jitted ``x ↦ x − weight · (x − D_σ(x))`` on a volume (nx, ny, nz), D over its axial (z) slices.

    Args:
      prior: the trained denoiser.
      weight: λ ∈ (0, 1]: the step on the RED regulariser (1: replace x by D_σ(x), plug-and-play).
      sigma: the noise level D is asked to remove, in units of ``prior.config.mu_scale``.
        Defaults λ = 0.5, σ = 0.02: the best of eight (λ, σ) pairs on the tuning block ``chest0``
        (``benchmarks/results/prior_sweep_nvidia-h200_2026-12-04.json``); σ = 0.05 removed
        detail that 25 views resolve.

    Returns:
      the step, for :func:`jaxmedrf.sart`'s ``prior_step``.
    """
    _check(weight, sigma, 1.0)

    @jax.jit
    def step(x):
        slices = jnp.moveaxis(x, 2, 0)
        d = jnp.moveaxis(denoise(prior, slices, sigma), 0, 2).astype(x.dtype)
        return x - weight * (x - d)

    return step


def red_field_loss(prior: DenoisingPrior, *, weight: float = 3.0, sigma: float = 0.01, patch: int = 32) -> Callable:
    """The RED loss of a NAF field, ``(key, field, lo, hi, d_voxel) → scalar``, for :func:`jaxmedrf.train_naf`'s
    ``regularizer``.

    ``field`` maps points (…, 3) in mm to μ (mm⁻¹); ``lo``, ``hi`` are the volume box (mm) and
    ``d_voxel`` the voxel size (mm): the patch is ``patch²`` voxel-spaced points on a random
    axial plane, at a random place in the box.

    Args:
      prior: the trained denoiser.
      weight: weight of the term against the mean squared projection error. Defaults w = 3,
        σ = 0.01: the best of three pairs on the tuning block ``chest0``
        (``benchmarks/results/prior_naf_sweep_nvidia-h200_2026-12-04.json``); at σ = 0.05 the
        term over-smoothed (−1 to −2 dB), at w = 0.1 it did nothing.
      sigma: the noise level D is asked to remove, in units of ``prior.config.mu_scale``.
      patch: side of the patch (voxels).
    """
    _check(weight, sigma)
    if int(patch) != patch or patch < 4:
        raise ValueError(f"prior patch must be an integer ≥ 4, got {patch!r}")
    scale = prior.config.mu_scale

    def loss(key, field, lo, hi, d_voxel):
        u = jax.random.uniform(key, (3,))
        size = jnp.asarray([patch, patch, 1], jnp.float32) * d_voxel
        start = lo + 0.5 * d_voxel + u * jnp.maximum(hi - lo - size, 0.0)
        ij = jnp.stack(jnp.meshgrid(jnp.arange(patch), jnp.arange(patch), indexing="ij"), -1).astype(jnp.float32)
        pts = jnp.concatenate([start[:2] + ij * d_voxel[:2], jnp.broadcast_to(start[2], (patch, patch, 1))], -1)
        x = field(pts.reshape(-1, 3)).reshape(patch, patch)
        target = jax.lax.stop_gradient(denoise(prior, x, sigma))
        return weight * jnp.mean(((x - target) / scale) ** 2)

    return loss
