"""Fused multiresolution hash-grid encoding as Pallas kernels (Triton lowering on GPUs).

Same values and gradients as the XLA reference :func:`jaxmedrf.fields.hash_grid_encode`
(Instant-NGP, Müller et al., SIGGRAPH 2022, Sec. 3; conventions in
:mod:`jaxmedrf.fields.encodings`), in three kernels under one ``jax.custom_vjp``:

* **forward**: one program per block of points, a static loop over all ``L`` levels; for
  each level the 8 corner rows are gathered by computed indices (pointer loads straight from
  the table in its storage dtype, cast to float32), trilinearly weighted, and the level's
  ``F`` features written into the ``(N, L·F)`` output (float32). Nothing else touches
  memory: no ``(N, L, 8)`` index or weight arrays as in the XLA version.
* **table gradient**: the same loop, each weighted cotangent row added to a float32
  gradient table with atomic adds (relaxed ordering: see :mod:`jaxmedrf.kernels._atomics`). The
  dense coarse levels (a few thousand rows hit by every point) are the contended ones: each
  gets ``R_l`` replicas behind the table in the same buffer (program ``p`` adds into
  replica ``p mod R_l``) that XLA sums afterwards, so same-address atomics drop
  ``R_l``-fold without a sort. The result is cast to the table's dtype.
* **position gradient**: gathers the rows again and applies the derivative of the
  trilinear weights (the clamp onto the unit cube passes half the gradient at exactly
  0 and 1, as ``jnp.clip``'s does). It is its own kernel so that XLA removes it when the
  positions are not differentiated (the common case: training a field).

Schedules (:class:`Tuning`): ``levels_per_program = G`` (``bwd_levels_per_program`` for the
table gradient, by default the same); ``G = L`` (default) is the loop over all levels above;
``G < L`` launches a grid over ``(point blocks, L / G level groups)``, groups slowest, so at
any time only ``G`` levels' tables (4 MB each at ``2^19 × 2`` float32) are the working set in
L2 for the gathers and the atomics, at the price of ``L / G`` reads of the positions and
``G·F``-wide partial writes of each output row (``G = 1``: one level per program).

Where the time goes (at L = 16, F = 2, T = 2^19): not the compulsory traffic (positions in,
features out), but the 128 corner gathers per point (a float32 table of 11 hashed 4 MB levels
competes for L2 with the streamed inputs and outputs; half tables take half the space) and, in
the backward, the float32 atomic adds (one float2 reduction, ``REDG.E.ADD.F32x2``, per corner
in the sm_90 SASS read by ``benchmarks/kernel_asm.py``). ``benchmarks/hashgrid.py`` times the
kernel against the XLA paths and torch-ngp's CUDA kernel (``--pallas-sweep``: the schedules);
the figures are in ``benchmarks/README.md``, regenerated from ``benchmarks/results/``.

On CPU the kernels run only in Pallas' interpret mode (``interpret=True``), which the tests
use; in interpret mode the atomic adds are replaced by an equivalent ``.at[].add`` (Pallas'
interpreter applies duplicate indices of one atomic call only once).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jaxtyping import Array, Float

from jaxmedrf.kernels.hash_config import HASH_PRIMES, HashGridConfig
from jaxmedrf.kernels._atomics import scatter_add

__all__ = ["DEFAULT_TUNING", "SUPPORTED_FEATURES", "Tuning", "hash_grid_encode_pallas", "pallas_supported"]

#: Feature widths the kernels handle (Triton tensors must have power-of-two sizes).
SUPPORTED_FEATURES = (1, 2, 4, 8)

# The hash primes as wrapping int32 constants (same bits as tiny-cuda-nn's uint32 products).
_P1 = int(np.array(HASH_PRIMES[1], np.uint32).view(np.int32))
_P2 = int(np.array(HASH_PRIMES[2], np.uint32).view(np.int32))


class Tuning(NamedTuple):
    """Launch parameters (static); every setting gives the same result."""

    block: int = 128  # points per program, forward and position-gradient kernels
    num_warps: int = 4
    bwd_block: int = 128  # points per program, table-gradient kernel
    bwd_num_warps: int = 4
    levels_per_program: int = 0  # G: levels per program (0 or >= L: all, one pass)
    bwd_levels_per_program: int = -1  # G of the table-gradient kernel (-1: levels_per_program)
    replica_rows: int = 1 << 18  # dense level l gets R_l = 2^k replicas with R_l n_l <= this
    max_replicas: int = 64
    relaxed_atomics: bool = True  # red.relaxed instead of atom.acq_rel (same sums)
    bwd_run: int = 1  # table gradient: consecutive points per lane, equal rows summed before one add


DEFAULT_TUNING = Tuning()


# ----------------------------------------------------------------------------------------
# Support checks


def pallas_supported(config: HashGridConfig, x_dtype=jnp.float32) -> str | None:
    """``None`` if the fused kernel handles ``config`` on this backend, else the reason why not."""
    if config.features_per_level not in SUPPORTED_FEATURES:
        return f"features_per_level={config.features_per_level} is not one of {SUPPORTED_FEATURES}"
    if jnp.dtype(x_dtype) != jnp.float32:
        return f"positions of dtype {jnp.dtype(x_dtype).name} (the kernel computes in float32)"
    if jax.default_backend() != "gpu":
        return f"backend {jax.default_backend()!r} (the Triton kernel needs a GPU)"
    return None


_WARNED: set[str] = set()


def warn_fallback(reason: str) -> None:
    """One warning per distinct reason, then silence."""
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"hash_grid_encode: pallas kernel unavailable ({reason}); using the XLA path", stacklevel=3)


# ----------------------------------------------------------------------------------------
# Per-level geometry inside a kernel


class _Level(NamedTuple):
    res: object  # int (static) or int32 scalar (traced, level-parallel schedule)
    dense: object  # bool or bool scalar
    index: object  # level number: int or int32 scalar


def _select(level, values, dtype):
    """``values[level]`` for a traced scalar ``level`` (a chain of selects)."""
    out = jnp.asarray(values[0], dtype)
    for i, v in enumerate(values[1:], start=1):
        out = jnp.where(level == i, jnp.asarray(v, dtype), out)
    return out


def _group_size(config: HashGridConfig, tuning: Tuning) -> int:
    """Levels per program: the largest divisor of ``L`` not above the requested ``G``."""
    n = config.n_levels
    g = min(tuning.levels_per_program or n, n)
    while n % g:
        g -= 1
    return g


def _levels(config: HashGridConfig, tuning: Tuning, level_axis: int):
    g = _group_size(config, tuning)
    if g == config.n_levels:
        return [_Level(r, d, i) for i, (r, d) in enumerate(zip(config.resolutions, config.dense_levels))]
    first = pl.program_id(level_axis) * g
    out = []
    for j in range(g):
        lv = first + j
        out.append(_Level(_select(lv, config.resolutions, jnp.int32), _select(lv, config.dense_levels, jnp.bool_), lv))
    return out


def _cell(xs, res):
    """Per axis: int32 lower corner, fraction in [0, 1], d(pos)/dx (``res · clip'``)."""
    res_f = res.astype(jnp.float32) if isinstance(res, jax.Array) else float(res)
    lows, fracs, dpos = [], [], []
    for xd in xs:
        pos = jnp.minimum(jnp.maximum(xd, 0.0), 1.0) * res_f
        low = jnp.minimum(jnp.maximum(jnp.floor(pos), 0.0), res_f - 1.0)
        lows.append(low.astype(jnp.int32))
        fracs.append(pos - low)
        # jnp.clip = min(max(x, 0), 1): max/min pass half the gradient on ties.
        inside = jnp.where((xd > 0.0) & (xd < 1.0), 1.0, jnp.where((xd == 0.0) | (xd == 1.0), 0.5, 0.0))
        dpos.append(inside * res_f)
    return lows, fracs, dpos


def _corner_rows(lows, level: _Level, mask: int):
    """Table row (within the level) of each of the 8 corners, as int32 ``(B,)`` arrays."""
    s = level.res + 1
    rows = []
    for c in range(8):
        i, j, k = (lows[d] + ((c >> d) & 1) for d in range(3))
        hashed = i ^ (j * _P1) ^ (k * _P2)
        if isinstance(level.dense, bool):
            idx = (i + j * s + k * (s * s)) if level.dense else hashed
        else:
            idx = jnp.where(level.dense, i + j * s + k * (s * s), hashed)
        rows.append(idx & mask)
    return rows


def _axis_weights(fracs, c):
    return [fracs[d] if (c >> d) & 1 else 1.0 - fracs[d] for d in range(3)]


def _load_points(x_ref, n: int, block: int):
    """The block's point numbers, validity mask and the 3 coordinates (0 past the end)."""
    p = pl.program_id(0) * block + jnp.arange(block, dtype=jnp.int32)
    valid = p < n
    xs = [plgpu.load(x_ref.at[p * 3 + d], mask=valid, other=0.0) for d in range(3)]
    return p, valid, xs


def _feature_cols(p, level_index, out_dim: int, f: int):
    """Flat offsets ``(B, F)`` of level ``level_index``'s features in an ``(N, L·F)`` array."""
    return p[:, None] * out_dim + (level_index * f + jnp.arange(f, dtype=jnp.int32))[None, :]


def _table_offsets(rows, level_index, t: int, f: int):
    return (level_index * t + rows)[:, None] * f + jnp.arange(f, dtype=jnp.int32)[None, :]


# ----------------------------------------------------------------------------------------
# Kernels


def _forward_kernel(x_ref, table_ref, out_ref, *, config, tuning, n):
    t, f, out_dim = config.table_size, config.features_per_level, config.out_dim
    p, valid, xs = _load_points(x_ref, n, tuning.block)
    for level in _levels(config, tuning, 1):
        lows, fracs, _ = _cell(xs, level.res)
        acc = jnp.zeros((tuning.block, f), jnp.float32)
        for c, rows in enumerate(_corner_rows(lows, level, t - 1)):
            wx, wy, wz = _axis_weights(fracs, c)
            vals = table_ref[_table_offsets(rows, level.index, t, f)].astype(jnp.float32)
            acc = acc + ((wx * wy) * wz)[:, None] * vals
        plgpu.store(out_ref.at[_feature_cols(p, level.index, out_dim, f)], acc, mask=valid[:, None])


def _replicas(config: HashGridConfig, tuning: Tuning):
    """Per level: (replicas R_l, rows n_l, float offset in the replica area) or None."""
    out, offset = [], 0
    for res, dense in zip(config.resolutions, config.dense_levels):
        n_rows = (res + 1) ** 3
        r = 1
        if dense:
            while r * 2 <= tuning.max_replicas and r * 2 * n_rows <= tuning.replica_rows:
                r *= 2
        if r > 1:
            out.append((r, n_rows, offset))
            offset += r * n_rows * config.features_per_level
        else:
            out.append(None)
    return out, offset


def _grad_offsets(rows, level: _Level, replicas, config: HashGridConfig):
    """Offsets ``(B, F)`` of a level's rows in the gradient buffer: the ``(L, T, F)`` table,
    followed by the replica area (replica ``program mod R_l`` for replicated levels)."""
    t, f = config.table_size, config.features_per_level
    base = config.n_levels * t * f
    cols = jnp.arange(f, dtype=jnp.int32)[None, :]
    if isinstance(level.index, int):  # static level: static choice
        rep = replicas[level.index]
        if rep is None:
            return _table_offsets(rows, level.index, t, f)
        r, n_rows, off = rep
        return base + off + (pl.program_id(0) % r * n_rows + rows)[:, None] * f + cols
    infos = [rep or (1, 0, 0) for rep in replicas]
    r, n_rows, off = (_select(level.index, [i[k] for i in infos], jnp.int32) for k in range(3))
    replicated = base + off + (pl.program_id(0) % r * n_rows + rows)[:, None] * f + cols
    return jnp.where(r > 1, replicated, _table_offsets(rows, level.index, t, f))


def _table_grad_kernel(x_ref, g_ref, _zeros, grad_ref, *, config, tuning, n, interpret):
    f, out_dim = config.features_per_level, config.out_dim
    block = tuning.bwd_block
    p, valid, xs = _load_points(x_ref, n, block)
    replicas, _ = _replicas(config, tuning)
    mask2 = jnp.broadcast_to(valid[:, None], (block, f))
    for level in _levels(config, tuning, 1):
        lows, fracs, _ = _cell(xs, level.res)
        g = plgpu.load(g_ref.at[_feature_cols(p, level.index, out_dim, f)], mask=mask2, other=0.0)
        for c, rows in enumerate(_corner_rows(lows, level, config.table_size - 1)):
            wx, wy, wz = _axis_weights(fracs, c)
            vals = ((wx * wy) * wz)[:, None] * g
            offs = _grad_offsets(rows, level, replicas, config)
            scatter_add(grad_ref, offs, vals, mask2, interpret, tuning.relaxed_atomics)


def _table_grad_runs_kernel(x_ref, g_ref, _zeros, grad_ref, *, config, tuning, n, interpret):
    """The table gradient with ``W = bwd_run`` consecutive points per lane, in order: a corner's
    weighted cotangent is summed in registers while its row stays the same and added to the
    table (one atomic) when the row changes. Points in ray order (a NAF step's samples) repeat
    the coarse levels' rows (``benchmarks/naf_profile.py`` counts ``W = 8`` removing a third of
    the adds); the sums are the same."""
    f, out_dim, w, block = config.features_per_level, config.out_dim, tuning.bwd_run, tuning.bwd_block
    lane = pl.program_id(0) * block + jnp.arange(block, dtype=jnp.int32)
    replicas, _ = _replicas(config, tuning)
    for level in _levels(config, tuning, 1):
        cur = [jnp.full((block,), -1, jnp.int32) for _ in range(8)]  # -1: nothing held
        acc = [jnp.zeros((block, f), jnp.float32) for _ in range(8)]

        def flush(c, mask, level=level):
            scatter_add(grad_ref, _grad_offsets(cur[c], level, replicas, config), acc[c],
                        jnp.broadcast_to(mask[:, None], (block, f)), interpret, tuning.relaxed_atomics)

        for k in range(w):
            p = lane * w + k
            valid = p < n
            xs = [plgpu.load(x_ref.at[p * 3 + d], mask=valid, other=0.0) for d in range(3)]
            lows, fracs, _ = _cell(xs, level.res)
            g = plgpu.load(g_ref.at[_feature_cols(p, level.index, out_dim, f)],
                           mask=jnp.broadcast_to(valid[:, None], (block, f)), other=0.0)
            for c, rows in enumerate(_corner_rows(lows, level, config.table_size - 1)):
                rows = jnp.where(valid, rows, cur[c])  # past the end: g = 0, the run goes on
                wx, wy, wz = _axis_weights(fracs, c)
                vals = ((wx * wy) * wz)[:, None] * g
                changed = rows != cur[c]
                flush(c, changed & (cur[c] >= 0))
                acc[c] = jnp.where(changed[:, None], vals, acc[c] + vals)
                cur[c] = rows
        for c in range(8):
            flush(c, cur[c] >= 0)


def _position_grad_kernel(x_ref, table_ref, g_ref, dx_ref, *, config, tuning, n):
    t, f, out_dim = config.table_size, config.features_per_level, config.out_dim
    p, valid, xs = _load_points(x_ref, n, tuning.block)
    dx = [jnp.zeros((tuning.block,), jnp.float32) for _ in range(3)]
    for level in _levels(config, tuning, 1):
        lows, fracs, dpos = _cell(xs, level.res)
        g = plgpu.load(g_ref.at[_feature_cols(p, level.index, out_dim, f)], mask=valid[:, None], other=0.0)
        dfrac = [jnp.zeros((tuning.block,), jnp.float32) for _ in range(3)]
        for c, rows in enumerate(_corner_rows(lows, level, t - 1)):
            w = _axis_weights(fracs, c)
            vals = table_ref[_table_offsets(rows, level.index, t, f)].astype(jnp.float32)
            gv = jnp.sum(g * vals, axis=1)
            for d in range(3):
                other = w[(d + 1) % 3] * w[(d + 2) % 3]
                dfrac[d] = dfrac[d] + (other * gv if (c >> d) & 1 else -(other * gv))
        dx = [dx[d] + dpos[d] * dfrac[d] for d in range(3)]
    for d in range(3):
        if _group_size(config, tuning) < config.n_levels:  # level groups in separate programs (GPU only)
            scatter_add(dx_ref, p * 3 + d, dx[d], valid, False, tuning.relaxed_atomics)
        else:
            plgpu.store(dx_ref.at[p * 3 + d], dx[d], mask=valid)


# ----------------------------------------------------------------------------------------
# pallas_call wrappers


def _grid(n: int, block: int, config: HashGridConfig, tuning: Tuning):
    nb = pl.cdiv(n, block)
    g = _group_size(config, tuning)
    return (nb, config.n_levels // g) if g < config.n_levels else (nb,)


def _params(num_warps: int, interpret: bool):
    if interpret:
        return {}
    return {"compiler_params": plgpu.CompilerParams(num_warps=num_warps, num_stages=1)}


def _forward(table, x, config, tuning, interpret):
    n = x.shape[0]
    kernel = partial(_forward_kernel, config=config, tuning=tuning, n=n)
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((n * config.out_dim,), jnp.float32),
        grid=_grid(n, tuning.block, config, tuning),
        interpret=interpret,
        name="hash_grid_forward",
        **_params(tuning.num_warps, interpret),
    )(x.reshape(-1), table.reshape(-1))
    return out.reshape(n, config.out_dim)


def table_grad_tuning(tuning: Tuning) -> Tuning:
    """The settings the table-gradient kernel runs with: ``levels_per_program`` replaced by
    ``bwd_levels_per_program`` where that is set (>= 0)."""
    if tuning.bwd_levels_per_program < 0:
        return tuning
    return tuning._replace(levels_per_program=tuning.bwd_levels_per_program)


def _table_grad(x, g, config, tuning, interpret, table_dtype):
    n = x.shape[0]
    tuning = table_grad_tuning(tuning)
    L, t, f = config.n_levels, config.table_size, config.features_per_level
    replicas, rep_size = _replicas(config, tuning)
    size = L * t * f + rep_size
    run = max(tuning.bwd_run, 1)
    kernel = partial(_table_grad_runs_kernel if run > 1 else _table_grad_kernel, config=config, tuning=tuning, n=n,
                     interpret=interpret)
    buf = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((size,), jnp.float32),
        grid=_grid(n, tuning.bwd_block * run, config, tuning),
        input_output_aliases={2: 0},
        interpret=interpret,
        name="hash_grid_table_grad",
        **_params(tuning.bwd_num_warps, interpret),
    )(x.reshape(-1), g.reshape(-1), jnp.zeros((size,), jnp.float32))
    grad = buf[: L * t * f].reshape(L, t, f)
    for level, info in enumerate(replicas):
        if info is not None:
            r, n_rows, off = info
            start = L * t * f + off
            part = buf[start : start + r * n_rows * f].reshape(r, n_rows, f).sum(axis=0)
            grad = grad.at[level, :n_rows].add(part)
    return grad.astype(table_dtype)


def _position_grad(table, x, g, config, tuning, interpret):
    n = x.shape[0]
    kernel = partial(_position_grad_kernel, config=config, tuning=tuning, n=n)
    args = (x.reshape(-1), table.reshape(-1), g.reshape(-1))
    kw = {}
    if _group_size(config, tuning) < config.n_levels:
        args = args + (jnp.zeros((n * 3,), jnp.float32),)
        kw["input_output_aliases"] = {3: 0}
        kernel = _drop_arg(kernel, 3)
    dx = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((n * 3,), jnp.float32),
        grid=_grid(n, tuning.block, config, tuning),
        interpret=interpret,
        name="hash_grid_position_grad",
        **kw,
        **_params(tuning.num_warps, interpret),
    )(*args)
    return dx.reshape(n, 3)


def _drop_arg(kernel, i):
    def wrapped(*refs):
        return kernel(*refs[:i], *refs[i + 1 :])

    return wrapped


# ----------------------------------------------------------------------------------------
# custom_vjp


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _encode(table, x, config, tuning, interpret):
    return _forward(table, x, config, tuning, interpret)


def _encode_fwd(table, x, config, tuning, interpret):
    return _forward(table, x, config, tuning, interpret), (table, x)


def _encode_bwd(config, tuning, interpret, res, g):
    table, x = res
    g = g.astype(jnp.float32)
    d_table = _table_grad(x, g, config, tuning, interpret, table.dtype)
    # Positions: level groups accumulate dx with atomics, which the interpreter does not
    # express; it uses the one-pass schedule (same values).
    tx = tuning._replace(levels_per_program=0) if interpret else tuning
    d_x = _position_grad(table, x, g, config, tx, interpret)
    return d_table, d_x


_encode.defvjp(_encode_fwd, _encode_bwd)


def hash_grid_encode_pallas(
    params: Float[Array, "levels table features"],
    x: Float[Array, "n 3"],
    config: HashGridConfig,
    *,
    tuning: Tuning = DEFAULT_TUNING,
    interpret: bool = False,
) -> Float[Array, "n out"]:
    """Fused-kernel hash encoding; same contract as :func:`jaxmedrf.fields.hash_grid_encode`.

    No fallback here: callers check :func:`pallas_supported` first (``hash_grid_encode``
    with ``implementation="pallas"`` does). ``interpret=True`` runs the kernels in Pallas'
    interpreter (any backend; slow, for tests).

    Args:
      params: ``(L, T, F)`` table, float32, bfloat16 or float16.
      x: ``(N, 3)`` float32 points in ``[0, 1]^3`` (clamped onto the cube).
      config: the encoding settings; ``features_per_level`` in 1, 2, 4, 8.
      tuning: launch parameters (block sizes, schedule); results do not depend on them.
      interpret: run in Pallas' interpreter.

    Returns:
      ``(N, L·F)`` float32 features, level-major.
    """
    L, T, F = config.n_levels, config.table_size, config.features_per_level
    if params.shape != (L, T, F):
        raise ValueError(f"hash grid params: expected shape {(L, T, F)}, got {params.shape}")
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"hash_grid_encode: x must have shape (N, 3), got {x.shape}")
    if F not in SUPPORTED_FEATURES:
        raise ValueError(f"HashGridConfig.features_per_level must be in {SUPPORTED_FEATURES} for the kernel, got {F}")
    if x.shape[0] == 0:
        return jnp.zeros((0, L * F), jnp.float32)
    return _encode(params, x.astype(jnp.float32), config, tuning, interpret)
