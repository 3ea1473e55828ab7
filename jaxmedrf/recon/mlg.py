"""Masked local-global (MLG) ray sampling: the detector pixels of one training step.

After SAX-NeRF (Cai et al., "Structure-Aware Sparse-View X-ray 3D Reconstruction", CVPR 2024,
Sec. 3 "Masked Local-Global Ray Sampling"; code ``src/dataset/tigre_mlg.py`` of
caiyuanhao1998/SAX-NeRF). A step's rays come from ``views_per_step`` random views; in each:

* **local**: whole ``window × window`` patches of the detector (the projection cut into a grid
  of windows), drawn without replacement among the windows that lie entirely inside the
  projection's mask (``projs_window_valid_indx`` in SAX-NeRF, which computes that set; its
  released code then draws among all windows), so neighbouring rays train together;
* **global**: single pixels drawn without replacement inside the mask, outside the chosen
  windows (SAX-NeRF: ``projs > 0`` in the other windows).

The mask is ``projection > threshold · max(projection)`` (the object's shadow; SAX-NeRF's
threshold is 0, a small fraction keeps photon noise in the air out of it). Where the mask
has fewer windows or pixels than asked for, the rest are drawn again (with replacement)
among those it has; a view without any is sampled as if all of it were inside.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Integer, PRNGKeyArray

from jaxmedrf._checks import check_numbers

__all__ = ["MLGConfig", "mlg_counts", "mlg_indices"]


@dataclasses.dataclass(frozen=True)
class MLGConfig:
    """Settings of MLG ray sampling (defaults: SAX-NeRF's chest: 8 × 8 windows, half of the rays
    local: 16 windows and 1024 global rays of 2048; one view per step).

    Attributes:
      window: side of a detector window, pixels.
      local_fraction: share of a step's rays that come in whole windows (rounded to windows).
      threshold: the mask is ``projection > threshold · max(projection)``, in [0, 1).
      views_per_step: views the step's rays are split over (each gets its windows and pixels).
    """

    window: int = 8
    local_fraction: float = 0.5
    threshold: float = 0.01
    views_per_step: int = 1

    def __post_init__(self):
        check_numbers(self, positive_ints=("window", "views_per_step"))
        if not 0.0 <= self.local_fraction <= 1.0:
            raise ValueError(f"MLGConfig.local_fraction must be in [0, 1], got {self.local_fraction!r}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"MLGConfig.threshold must be in [0, 1), got {self.threshold!r}")


def mlg_counts(config: MLGConfig, n_rays: int, detector: tuple[int, int]) -> tuple[int, int]:
    """``(windows, global rays)`` per view for ``n_rays`` rays a step on a ``(nv, nu)`` detector."""
    if n_rays % config.views_per_step:
        raise ValueError(f"MLG: {n_rays} rays a step do not divide over views_per_step={config.views_per_step}")
    per_view = n_rays // config.views_per_step
    w = config.window
    n_windows_total = (detector[0] // w) * (detector[1] // w)
    n_win = min(int(round(per_view * config.local_fraction / w**2)), n_windows_total)
    return n_win, per_view - n_win * w * w


def _choose(key, eligible, k: int):
    """``k`` indices of ``eligible`` (1-D bool) without replacement (Gumbel top-k), topped up with
    replacement where it has fewer than ``k``; uniform over all if none is eligible."""
    eligible = eligible | ~jnp.any(eligible)
    k1, k2 = jax.random.split(key)
    logits = jnp.where(eligible, 0.0, -jnp.inf)
    score, idx = jax.lax.top_k(logits + jax.random.gumbel(k1, eligible.shape), k)
    again = jax.random.categorical(k2, logits, shape=(k,))
    return jnp.where(jnp.isfinite(score), idx, again)


def mlg_indices(
    key: PRNGKeyArray, mask: Bool[Array, "views nv nu"], *, n_rays: int, config: MLGConfig = MLGConfig()
) -> Integer[Array, " n_rays"]:
    """Flat pixel indices ``view · nv · nu + row · nu + col`` of one step's ``n_rays`` rays.

    Args:
      key: PRNG key.
      mask: the projections' masks (``projection > threshold · max``), one per view.
      n_rays: rays a step (a multiple of ``config.views_per_step``).
      config: :class:`MLGConfig`.

    Returns:
      ``(n_rays,)`` int32: per view, its windows' pixels (row-major within each window) then its
      global pixels.
    """
    n_views, nv, nu = mask.shape
    w = config.window
    n_win, n_glob = mlg_counts(config, n_rays, (nv, nu))
    gv, gu = nv // w, nu // w
    k_view, k_each = jax.random.split(key)
    n_pick = config.views_per_step
    views = jax.random.choice(k_view, n_views, (n_pick,), replace=n_pick > n_views)
    offs = np.stack(np.meshgrid(np.arange(w), np.arange(w), indexing="ij"), -1).reshape(-1, 2)  # (w², 2)

    def one(key, v):
        k_win, k_pix = jax.random.split(key)
        m = mask[v]
        win_of = np.full((nv, nu), -1, np.int64)  # each pixel's window (-1: past the last whole window)
        win_of[: gv * w, : gu * w] = (np.arange(gv)[:, None] * gu + np.arange(gu)[None, :]).repeat(w, 0).repeat(w, 1)
        win_of = jnp.asarray(win_of.reshape(-1), jnp.int32)
        parts = []
        taken = jnp.zeros((nv * nu,), bool)
        if n_win:
            full = m[: gv * w, : gu * w].reshape(gv, w, gu, w).all(axis=(1, 3)).reshape(-1)
            chosen = _choose(k_win, full, n_win)
            rows = (chosen // gu)[:, None] * w + offs[None, :, 0]
            cols = (chosen % gu)[:, None] * w + offs[None, :, 1]
            parts.append((rows * nu + cols).reshape(-1))
            picked = jnp.zeros((gv * gu,), bool).at[chosen].set(True)
            taken = (win_of >= 0) & picked[jnp.maximum(win_of, 0)]
        if n_glob:
            parts.append(_choose(k_pix, m.reshape(-1) & ~taken, n_glob))
        return v * (nv * nu) + jnp.concatenate(parts).astype(jnp.int32)

    return jax.vmap(one)(jax.random.split(k_each, n_pick), views).reshape(-1)
