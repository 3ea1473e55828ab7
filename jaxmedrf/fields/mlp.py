"""Small multilayer perceptrons as plain pytrees: a list of ``(W, b)`` pairs.

``W`` is ``(fan_in, fan_out)``, ``b`` is ``(fan_out,)``; parameters are float32. Optional
skip connections concatenate the network input to a hidden layer's input, as NeRF and NAF
(Zha et al., MICCAI 2022, ``DensityNetwork``: skip at layer 2) do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["MLPParams", "leaky_relu", "mlp_apply", "mlp_init"]

MLPParams = list[tuple[Float[Array, "_fan_in _fan_out"], Float[Array, " _fan_out"]]]  # sizes differ per layer


def leaky_relu(x: Array) -> Array:
    """LeakyReLU with slope 0.01 (PyTorch's default, used by NAF's hidden layers)."""
    return jax.nn.leaky_relu(x, 0.01)


def _fan_ins(sizes: Sequence[int], skips: Sequence[int]) -> list[int]:
    return [sizes[i] + (sizes[0] if i in skips else 0) for i in range(len(sizes) - 1)]


def mlp_init(key: PRNGKeyArray, sizes: Sequence[int], *, skips: Sequence[int] = ()) -> MLPParams:
    """Layers ``sizes[0] → sizes[1] → … → sizes[-1]``, PyTorch ``nn.Linear`` initialisation.

    ``W`` and ``b`` are uniform in ``±1/√fan_in`` (PyTorch's default, which NAF uses).

    Args:
      key: PRNG key.
      sizes: layer widths, input first, output last (at least two entries).
      skips: indices ``i ≥ 1`` of layers whose input is ``[h_in, h]`` (the network input
        concatenated before the hidden activation), so their fan-in is ``sizes[i] + sizes[0]``.

    Returns:
      ``[(W_0, b_0), …]`` float32.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp_init: sizes must have >= 2 positive entries, got {sizes}")
    for s in skips:
        if not 1 <= s < len(sizes) - 1:
            raise ValueError(f"mlp_init: skip layer index must be in [1, {len(sizes) - 2}], got {s}")
    params = []
    for fan_in, fan_out, k in zip(_fan_ins(sizes, skips), sizes[1:], jax.random.split(key, len(sizes) - 1)):
        kw, kb = jax.random.split(k)
        bound = 1.0 / math.sqrt(fan_in)
        params.append(
            (
                jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
            )
        )
    return params


def mlp_apply(
    params: MLPParams,
    h: Float[Array, "n d_in"],
    *,
    activation: Callable[[Array], Array] = jax.nn.relu,
    out_activation: Callable[[Array], Array] | None = None,
    skips: Sequence[int] = (),
    compute_dtype=None,
) -> Float[Array, "n d_out"]:
    """Applies the MLP: ``h ← act(h W_i + b_i)`` on hidden layers, ``out_act`` on the last.

    Args:
      params: from :func:`mlp_init` (with the same ``skips``).
      h: ``(N, sizes[0])`` input.
      activation: hidden-layer nonlinearity.
      out_activation: output nonlinearity, ``None`` for linear.
      skips: as in :func:`mlp_init`.
      compute_dtype: ``None`` for float32 matmuls, or e.g. ``jnp.bfloat16``: inputs and
        weights are cast to it for each matmul, which accumulates in float32
        (``preferred_element_type``); biases and activations stay float32.

    Returns:
      ``(N, sizes[-1])`` float32.
    """
    h = h.astype(jnp.float32)
    h_in = h
    n = len(params)
    for i, (w, b) in enumerate(params):
        if i in skips:
            h = jnp.concatenate([h_in, h], axis=-1)
        if h.shape[-1] != w.shape[0]:
            raise ValueError(f"mlp_apply: layer {i} expects {w.shape[0]} inputs, got {h.shape[-1]}")
        if compute_dtype is None:
            h = jnp.dot(h, w) + b
        else:
            h = jnp.dot(h.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=jnp.float32) + b
        if i < n - 1:
            h = activation(h)
        elif out_activation is not None:
            h = out_activation(h)
    return h
