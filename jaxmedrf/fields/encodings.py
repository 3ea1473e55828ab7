"""Input encodings for neural fields: multiresolution hash grid and frequency encoding.

Hash grid: Instant-NGP (Müller, Evans, Schied, Keller, "Instant Neural Graphics Primitives
with a Multiresolution Hash Encoding", SIGGRAPH 2022), Section 3. Frequency encoding: NeRF
(Mildenhall et al., ECCV 2020), Eq. 4.

Both are pure functions of ``(params, x, config)`` with ``x`` in the unit cube ``[0, 1]^3``;
the field (:mod:`jaxmedrf.fields.field`) maps world millimetres into that cube.

Hash-grid conventions (those of the paper; tiny-cuda-nn's hash):

* Level ``l`` (``0 ≤ l < L``) has resolution ``N_l = ⌊N_min · b^l⌋`` with the growth factor
  ``b = exp((ln N_max − ln N_min) / (L − 1))`` (Eq. 2–3), or ``b = per_level_scale`` if given.
* A point ``x ∈ [0, 1]^3`` is scaled to ``x · N_l``; its cell's 8 corners are the integer
  vertices ``⌊x N_l⌋ + {0, 1}^3`` of a grid with ``N_l + 1`` vertices per axis. Points outside
  the cube are clamped onto it.
* A corner ``(i, j, k)`` is stored at row ``i + j (N_l+1) + k (N_l+1)^2`` (dense, one-to-one)
  when ``(N_l+1)^3 ≤ T``, else at the spatial hash (Eq. 4)
  ``(i·1 ⊕ j·2654435761 ⊕ k·805459861) mod T`` computed in wrapping uint32 arithmetic
  exactly as tiny-cuda-nn does (``T`` is a power of two, so ``mod T`` keeps the low bits).
* The feature is the trilinear interpolation of the 8 corner vectors (``F`` per level); the
  ``L`` level features are concatenated, level-major: ``out[:, l*F:(l+1)*F]``.

The table is one ``(L, T, F)`` array (dense levels use their first ``(N_l+1)^3`` rows; the
rest is unused padding). It may be stored in float32, bfloat16 or float16; rows are cast to
float32 right after the gather, so interpolation and the table gradient (a scatter-add) are
accumulated in float32 and only the final gradient is cast back to the storage dtype.

Differences from torch-ngp (the encoder in NAF's repository): torch-ngp offsets positions by
half a cell (``x·(N−1)+0.5``, tiny-cuda-nn style), sizes dense levels by ``N^3`` and defaults
to ``per_level_scale = 2`` (NAF's chest_50 thus reaches ``16·2^15`` at the finest level);
set ``per_level_scale=2.0`` to reproduce NAF's resolutions.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Integer, PRNGKeyArray

__all__ = [
    "HASH_PRIMES",
    "FrequencyConfig",
    "HashGridConfig",
    "frequency_encode",
    "hash_grid_encode",
    "hash_grid_init",
]

from jaxmedrf.kernels.hash_config import _BACKWARDS, _DTYPES, HASH_IMPLEMENTATIONS, HASH_PRIMES, HashGridConfig  # noqa: F401

def hash_grid_init(key: PRNGKeyArray, config: HashGridConfig) -> Float[Array, "levels table features"]:
    """The ``(L, T, F)`` table, uniform in ``[-init_scale, init_scale]``, in ``config.dtype``."""
    shape = (config.n_levels, config.table_size, config.features_per_level)
    table = jax.random.uniform(key, shape, jnp.float32, -config.init_scale, config.init_scale)
    return table.astype(config.dtype)


# ----------------------------------------------------------------------------------------
# Index computation


_CORNERS = np.array([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], np.int32)  # (8, 3)


def _cell(x: Float[Array, "... 3"], res: Array):
    """Lower cell corner (int32) and fractional position for ``x ∈ [0,1]^3`` at resolution ``res``.

    ``res`` broadcasts against ``x[..., 0]``. Clamping the corner to ``res − 1`` puts
    ``x = 1`` on the upper face of the last cell (fraction 1) instead of out of the grid.
    """
    res_f = res.astype(x.dtype)[..., None]
    pos = jnp.clip(x, 0.0, 1.0) * res_f
    lower = jnp.clip(jnp.floor(pos), 0.0, res_f - 1.0)
    return lower.astype(jnp.int32), pos - lower


def _corner_index(corner: Integer[Array, "... 3"], res: Array, *, dense: bool, mask: int):
    """Table row of integer vertices: dense ``i + j s + k s²`` (``s = N+1``) or the hash (Eq. 4).

    ``dense`` is static (a level's indexing is known when tracing). Either index is one
    reduction over the vertex's 3 coordinates (a sum of ``c · (1, s, s²)`` or an xor of
    ``c · primes``, in wrapping uint32 arithmetic: the same integers as the three-term
    expression, whose operations are associative). XLA:CPU keeps a reduction's result in
    memory, whereas three slices combined elementwise are fused into every consumer of the
    index (the gather, once per feature, and the table gradient's scatter), which then
    recomputes the whole chain ray → sample → cell → index for each: most of a NAF step on
    CPU (``benchmarks/naf_cpu_profile.py``).
    """
    c = corner.astype(jnp.uint32)
    if dense:
        s = jnp.asarray(res + 1).astype(jnp.uint32)
        coef, op = jnp.stack([jnp.ones_like(s), s, s * s], axis=-1), jax.lax.add
    else:
        coef, op = jnp.asarray(HASH_PRIMES, jnp.uint32), jax.lax.bitwise_xor
    idx = jax.lax.reduce(c * coef, jnp.uint32(0), op, (c.ndim - 1,))
    return (idx & jnp.uint32(mask)).astype(jnp.int32)


def _corners_and_weights(x: Float[Array, "... 3"], res: Array, *, dense: bool, mask: int):
    """Row indices ``(..., 8)`` and trilinear weights ``(..., 8)`` of the 8 cell corners."""
    lower, frac = _cell(x, res)
    corners = lower[..., None, :] + _CORNERS  # (..., 8, 3)
    idx = _corner_index(corners, res[..., None], dense=dense, mask=mask)
    w = jnp.where(_CORNERS == 1, frac[..., None, :], 1.0 - frac[..., None, :])  # (..., 8, 3)
    return idx, jnp.prod(w, axis=-1)


def _level_groups(config: HashGridConfig) -> list[tuple[int, int, bool]]:
    """Levels ``[start, stop)`` looked up together, with their (shared) ``dense`` flag: each
    maximal run of dense or of hashed levels, or (``"per_level"``) each level alone."""
    groups = []
    for level, dense in enumerate(config.dense_levels):
        if config.implementation != "per_level" and groups and groups[-1][2] == dense:
            groups[-1] = (groups[-1][0], level + 1, dense)
        else:
            groups.append((level, level + 1, dense))
    return groups


# ----------------------------------------------------------------------------------------
# Row gather with a float32 scatter-add backward


def _accumulate(g: Float[Array, "m f"], idx: Integer[Array, " m"], n_rows: int, backward: str):
    """``out[r] = Σ_{m: idx[m]=r} g[m]`` in float32, by the selected method."""
    if backward == "segment_sum":
        return jax.ops.segment_sum(g, idx, num_segments=n_rows)
    if backward == "sorted":
        order = jnp.argsort(idx)
        return jax.ops.segment_sum(g[order], idx[order], num_segments=n_rows, indices_are_sorted=True)
    return jnp.zeros((n_rows, g.shape[-1]), g.dtype).at[idx].add(g)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _gather_rows(table: Float[Array, "rows f"], idx: Integer[Array, "..."], backward: str, dtype):
    """``table[idx]`` cast to ``dtype``; the table gradient is accumulated in ``dtype``."""
    return table[idx].astype(dtype)


def _gather_rows_fwd(table, idx, backward, dtype):
    # A zero-width array carries the table's row count and dtype without its memory.
    return _gather_rows(table, idx, backward, dtype), (idx, jnp.zeros((table.shape[0], 0), table.dtype))


def _gather_rows_bwd(backward, dtype, res, g):
    idx, probe = res
    f = g.shape[-1]
    grad = _accumulate(g.reshape(-1, f), idx.reshape(-1), probe.shape[0], backward)
    return grad.astype(probe.dtype), None


_gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


def _gather(table, idx, backward: str, dtype):
    if backward == "autodiff":  # cast the whole table first, so the transpose adds in `dtype`
        return table.astype(dtype)[idx]
    return _gather_rows(table, idx, backward, dtype)


# ----------------------------------------------------------------------------------------
# Public encoders


def hash_grid_encode(
    params: Float[ArrayLike, "levels table features"],
    x: Float[ArrayLike, "n 3"],
    config: HashGridConfig,
) -> Float[Array, "n out"]:
    """Multiresolution hash encoding of points ``x`` in the unit cube (Instant-NGP, Sec. 3).

    Args:
      params: the ``(L, T, F)`` table from :func:`hash_grid_init` (any storage dtype).
      x: ``(N, 3)`` points in ``[0, 1]^3`` (dimensionless); points outside are clamped onto
        the cube.
      config: the encoding's settings (static).

    Returns:
      ``(N, L·F)`` float32 features (float64 for float64 ``x``), level-major: ``out[:, l·F + f]``.
    """
    L, T, F = config.n_levels, config.table_size, config.features_per_level
    if params.shape != (L, T, F):
        raise ValueError(f"hash grid params: expected shape {(L, T, F)}, got {params.shape}")
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"hash_grid_encode: x must have shape (N, 3), got {x.shape}")
    # float32 arithmetic (float64 when x is float64 under jax_enable_x64, for gradient checks).
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    if config.implementation == "auto":
        impl = "per_level" if jax.default_backend() == "cpu" else "level_major"
        config = dataclasses.replace(config, implementation=impl)
    if config.implementation == "pallas":
        from jaxmedrf.kernels import hashgrid as _kernel  # lazy: Pallas loads only when asked for

        reason = _kernel.pallas_supported(config, dtype)
        if reason is None:
            return _kernel.hash_grid_encode_pallas(params, x, config)
        _kernel.warn_fallback(reason)
        config = dataclasses.replace(config, implementation="level_major")
    x = x.astype(dtype)
    n = x.shape[0]
    res_np = np.asarray(config.resolutions, np.int32)
    point_major = config.implementation == "fused"
    feats = []
    for start, stop, dense in _level_groups(config):
        k = stop - start
        res = jnp.asarray(res_np[start:stop])
        offsets = jnp.asarray(np.arange(k, dtype=np.int32) * T)  # rows of level start + l begin at l·T
        if point_major:  # (N, k, 8)
            xs, res, offsets = jnp.broadcast_to(x[:, None], (n, k, 3)), res[None], offsets[None, :, None]
        else:  # (k, N, 8)
            xs, res, offsets = jnp.broadcast_to(x[None], (k, n, 3)), res[:, None], offsets[:, None, None]
        idx, w = _corners_and_weights(xs, res, dense=dense, mask=T - 1)
        rows = _gather(params[start:stop].reshape(k * T, F), idx + offsets, config.backward, dtype)
        feats.append(jnp.einsum("nlc,nlcf->nlf" if point_major else "lnc,lncf->nlf", w, rows))
    return jnp.concatenate(feats, axis=1).reshape(n, L * F)


@dataclasses.dataclass(frozen=True)
class FrequencyConfig:
    """NeRF positional encoding (Mildenhall et al. 2020, Eq. 4).

    Attributes:
      n_frequencies: number of octaves ``K``; frequencies ``2^k π`` for ``k < K``.
      include_input: prepend the raw input to the features.
    """

    n_frequencies: int = 6
    include_input: bool = True

    def __post_init__(self):
        if self.n_frequencies < 0:
            raise ValueError(f"FrequencyConfig.n_frequencies must be >= 0, got {self.n_frequencies}")

    def out_dim(self, in_dim: int = 3) -> int:
        """Encoding width for ``in_dim`` input coordinates."""
        return in_dim * (2 * self.n_frequencies + int(self.include_input))


def frequency_encode(x: Float[ArrayLike, "n d"], config: FrequencyConfig) -> Float[Array, "n out"]:
    r"""Positional encoding :math:`\gamma(x) = (x, \sin(2^0\pi x), \cos(2^0\pi x), …,
    \sin(2^{K-1}\pi x), \cos(2^{K-1}\pi x))` (NeRF Eq. 4), applied per coordinate.

    Args:
      x: ``(N, D)`` points, typically in ``[0, 1]^D`` or ``[-1, 1]^D`` (dimensionless).
      config: the encoding's settings.

    Returns:
      ``(N, D (2K + include_input))``: blocks ``[x, sin(f_0 x), cos(f_0 x), sin(f_1 x), …]``,
      each block ``D`` wide.
    """
    parts = [x] if config.include_input else []
    for k in range(config.n_frequencies):
        arg = (2.0**k * math.pi) * x
        parts += [jnp.sin(arg), jnp.cos(arg)]
    if not parts:
        return jnp.zeros(x.shape[:-1] + (0,), x.dtype)
    return jnp.concatenate(parts, axis=-1)
