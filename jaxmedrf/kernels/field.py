"""Fused attenuation field: hash encoding + MLP + output activation in one Pallas kernel per pass.

A NAF step spends its time in the field, about half in the encoding and half in the MLP
(``benchmarks/naf_profile.py``; figures in ``benchmarks/README.md``). Most of the MLP's
time is memory traffic, not arithmetic: each ``(N, 32)`` float32 activation is 128 MB, written
and read again by every unfused XLA op of the forward and the backward pass. Here, after
tiny-cuda-nn's fully fused MLP (Müller et al., "Real-time Neural Radiance Caching for Path
Tracing", SIGGRAPH 2021) and Instant-NGP's encoding (Müller et al., SIGGRAPH 2022, Sec. 3), the
features and hidden states of a block of points stay on chip:

* **forward** (one program per ``block`` points): the ``L`` levels' trilinear features are
  gathered from the table (the loop of :mod:`jaxmedrf.kernels.hashgrid`) into a
  ``(block, L·F)`` register tile ``E``; every layer is a ``jnp.dot`` on the tile (tensor
  cores); only μ, one float per point, is written.
* **backward**: for training, the forward also writes the feature tile (``(N, L·F)`` float32,
  128 MB per 1M points at NAF's 32 features: cheaper than gathering the 128 corners again).
  One kernel (one program per ``bwd_block`` points) reloads the tile, recomputes the layers
  and back-propagates through them on chip (tile products again); the weight and bias
  gradients of a program are written once as a row of a ``(programs, P)`` partial-sum array
  that XLA sums (``P`` = number of MLP parameters), the feature gradient as ``(N, L·F)``.
  The hash grid's table-gradient kernel (:mod:`jaxmedrf.kernels.hashgrid`: atomic adds,
  dense-level replicas) scatters that into the table. A first version recomputed the
  gathers and scattered inside the same kernel: it compiled for minutes and was slower than
  the XLA ops (``benchmarks/results/field_nvidia-h200_2026-12-03_v1_recompute.json``).

The field computed is exactly :func:`jaxmedrf.fields.field_apply` on normalised points
``u ∈ [0, 1]³``: ``μ = mu_scale · out_act(MLP(hash(u)))``, 0 where ``u`` leaves the cube, the
encoding concatenated to the hidden state before each ``skips`` layer (NAF's skip at layer 2).
Only the position gradient is not here: callers get it from the XLA path (it is not needed
to train a field, and XLA removes it then).

Supported (:func:`fused_supported`): a hash-grid encoding with ``F`` in 1, 2, 4, 8; hidden
width a power of two ≥ 16 (``jnp.dot`` tiles); at least one hidden layer; skips before hidden
layers only; float32 positions.

On CPU the kernels run in Pallas' interpret mode (``interpret=True``), which the tests use.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jaxtyping import Array, Float

from jaxmedrf.kernels.hash_config import HashGridConfig
from jaxmedrf.kernels.hashgrid import (
    SUPPORTED_FEATURES,
    Tuning,
    _axis_weights,
    _cell,
    _corner_rows,
    _Level,
    _levels,
    _load_points,
    _select,
    _params,
    _table_grad,
    _table_offsets,
)

__all__ = ["FusedMLP", "FusedTuning", "DEFAULT_FUSED_TUNING", "fused_field_backward", "fused_field_forward",
           "fused_supported"]

LEAKY_SLOPE = 0.01  # NAF's hidden LeakyReLU (PyTorch's default), as jaxmedrf.fields.mlp.leaky_relu


class FusedMLP(NamedTuple):
    """The static description of the field's MLP (:class:`jaxmedrf.fields.FieldConfig`)."""

    sizes: tuple[int, ...]  # layer widths, encoding first, 1 last
    skips: tuple[int, ...]
    activation: str  # relu | leaky_relu | softplus
    out_activation: str  # sigmoid | softplus | relu
    mu_scale: float
    dot_dtype: str = "float32"  # float32 (TF32 tensor cores as XLA's default dot; exact at "highest") | bfloat16 | float16


class FusedTuning(NamedTuple):
    """Launch parameters (static); every setting gives the same result."""

    block: int = 128  # points per program, forward
    num_warps: int = 4
    bwd_block: int = 64  # points per program, MLP backward
    bwd_num_warps: int = 4
    table_block: int = 128  # points per program, table gradient (hashgrid.Tuning.bwd_block)
    table_levels: int = 1  # levels per program of the table gradient (hashgrid.Tuning; 0: all)
    unroll_levels: bool = False  # forward: levels unrolled (static) or in a loop (small kernel)
    replica_rows: int = 1 << 18  # dense-level replicas of the table gradient (as hashgrid.Tuning)
    max_replicas: int = 64
    relaxed_atomics: bool = True
    # consecutive points per lane of the table gradient (hashgrid.Tuning.bwd_run): a NAF step's samples
    # come in ray order, so the coarse levels repeat rows (naf_profile_nvidia-h200_2026-12-04_v3_runs.json:
    # 4 took the step from 3.27 to 2.95 ms, 8 to 3.05 ms)
    table_run: int = 4

    def hash_tuning(self) -> Tuning:
        """The settings of the hash grid's table-gradient kernel."""
        return Tuning(bwd_block=self.table_block, bwd_levels_per_program=self.table_levels,
                      replica_rows=self.replica_rows, max_replicas=self.max_replicas,
                      relaxed_atomics=self.relaxed_atomics, bwd_run=self.table_run)


DEFAULT_FUSED_TUNING = FusedTuning()


def _pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _padded(n: int) -> int:
    """The encoding width rounded up to a power of two >= 16 (a ``jnp.dot`` tile side)."""
    p = 16
    while p < n:
        p *= 2
    return p


def fused_supported(enc: HashGridConfig, mlp: FusedMLP, x_dtype=jnp.float32) -> str | None:
    """``None`` if the fused kernel computes this field on this backend, else the reason why not."""
    depth = len(mlp.sizes) - 1
    width = mlp.sizes[1] if depth > 1 else 0
    if enc.features_per_level not in SUPPORTED_FEATURES:
        return f"features_per_level={enc.features_per_level} is not one of {SUPPORTED_FEATURES}"
    if depth < 2:
        return "an MLP without a hidden layer"
    if not (_pow2(width) and 16 <= width <= 128):
        return f"hidden width {width} (the kernel needs a power of two in [16, 128])"
    if mlp.sizes[-1] != 1:
        return f"output width {mlp.sizes[-1]} (the kernel computes one attenuation per point)"
    if depth - 1 in mlp.skips:
        return "a skip into the output layer"
    if jnp.dtype(x_dtype) != jnp.float32:
        return f"positions of dtype {jnp.dtype(x_dtype).name}"
    if jax.default_backend() != "gpu":
        return f"backend {jax.default_backend()!r} (the Triton kernel needs a GPU)"
    return None


# ----------------------------------------------------------------------------------------
# Parameter layout: every W (row-major) and b, one flat float32 vector.


def _layout(mlp: FusedMLP) -> list[tuple[int, int, int, int]]:
    """Per layer ``(fan_in, fan_out, offset of W, offset of b)`` in the flat vector."""
    enc = mlp.sizes[0]
    out, off = [], 0
    for i, (fi, fo) in enumerate(zip(mlp.sizes[:-1], mlp.sizes[1:])):
        fan_in = fi + (enc if i in mlp.skips else 0)
        out.append((fan_in, fo, off, off + fan_in * fo))
        off += fan_in * fo + fo
    return out


def n_params(mlp: FusedMLP) -> int:
    fan_in, fo, _, b = _layout(mlp)[-1]
    return b + fo


def _part_layout(mlp: FusedMLP) -> tuple[list[tuple[int | None, int | None, int]], int]:
    """Where the backward kernel writes a program's parameter gradients: per layer the offsets
    of the encoding rows padded to :func:`_padded` rows (or ``None``), of the hidden rows (or
    ``None``) and of the bias; and the row length. Padding the encoding rows to the tile keeps
    every store unmasked."""
    width_e = _padded(mlp.sizes[0])
    out, off = [], 0
    for i, (fi, fo) in enumerate(zip(mlp.sizes[:-1], mlp.sizes[1:])):
        e = h = None
        if i == 0 or i in mlp.skips:
            e, off = off, off + width_e * fo
        if i > 0:
            h, off = off, off + fi * fo
        out.append((e, h, off))
        off += fo
    return out, off


def _unpad(parts, mlp: FusedMLP):
    """A gradient row of :func:`_part_layout` → the :func:`pack` layout."""
    enc = mlp.sizes[0]
    pieces = []
    for (e, h, b), fi, fo in zip(_part_layout(mlp)[0], mlp.sizes[:-1], mlp.sizes[1:]):
        if e is not None:
            pieces.append(parts[e : e + enc * fo])
        if h is not None:
            pieces.append(parts[h : h + fi * fo])
        pieces.append(parts[b : b + fo])
    return jnp.concatenate(pieces)


def pack(params) -> Float[Array, " p"]:
    """``[(W, b), …]`` → the flat float32 vector of :func:`_layout` (differentiable)."""
    return jnp.concatenate([a.astype(jnp.float32).reshape(-1) for wb in params for a in wb])


def unpack(flat, mlp: FusedMLP):
    """The inverse of :func:`pack`."""
    return [(flat[w : w + fi * fo].reshape(fi, fo), flat[b : b + fo]) for fi, fo, w, b in _layout(mlp)]


# ----------------------------------------------------------------------------------------
# In-kernel pieces


def _act(name, x):
    if name == "relu":
        return jnp.maximum(x, 0.0)
    if name == "leaky_relu":
        return jnp.where(x >= 0.0, x, LEAKY_SLOPE * x)
    if name == "softplus":
        return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))
    if name == "sigmoid":
        return 1.0 / (1.0 + jnp.exp(-x))
    raise ValueError(name)


def _act_grad(name, x):
    """d act / dx at x, with JAX's conventions at the kinks (relu'(0) = 0, leaky'(0) = 1)."""
    if name == "relu":
        return jnp.where(x > 0.0, 1.0, 0.0)
    if name == "leaky_relu":
        return jnp.where(x >= 0.0, 1.0, LEAKY_SLOPE)
    if name in ("softplus", "sigmoid"):
        s = 1.0 / (1.0 + jnp.exp(-x))
        return s if name == "softplus" else s * (1.0 - s)
    raise ValueError(name)


def _f32_precision():
    """The float32 dots' precision: XLA's dots follow ``jax_default_matmul_precision`` (TF32 tensor
    cores by default on GPU, exact float32 at ``"highest"``/``"float32"``), but Pallas-Triton reads
    only a dot's own ``precision`` (``None``: TF32), so the kernel passes the setting on."""
    setting = jax.config.jax_default_matmul_precision
    return jax.lax.Precision.HIGHEST if setting in ("highest", "float32", "HIGHEST") else None


def _dot(a, b, mlp: FusedMLP):
    return _dot_general(a, b, (((1,), (0,)), ((), ())), mlp)


def _dot_tn(a, b, mlp: FusedMLP):
    """``a.T @ b`` (contracting the rows, i.e. the block's points)."""
    return _dot_general(a, b, (((0,), (0,)), ((), ())), mlp)


def _dot_general(a, b, dims, mlp: FusedMLP):
    if mlp.dot_dtype == "float32":
        return jax.lax.dot_general(a, b, dims, precision=_f32_precision(), preferred_element_type=jnp.float32)
    dt = jnp.dtype(mlp.dot_dtype)
    return jax.lax.dot_general(a.astype(dt), b.astype(dt), dims, preferred_element_type=jnp.float32)


def _tile(w_ref, off: int, rows: int, cols: int, *, valid_rows: int | None = None, transpose: bool = False):
    """The ``(rows, cols)`` tile of a row-major matrix at ``off`` (``valid_rows`` real rows, zeros
    below), or its transpose ``(cols, rows)``."""
    shape = (cols, rows) if transpose else (rows, cols)
    r = jnp.arange(rows, dtype=jnp.int32)[None, :] if transpose else jnp.arange(rows, dtype=jnp.int32)[:, None]
    c = jnp.arange(cols, dtype=jnp.int32)[:, None] if transpose else jnp.arange(cols, dtype=jnp.int32)[None, :]
    idx = off + r * cols + c
    if valid_rows is None or valid_rows >= rows:
        return w_ref[jnp.broadcast_to(idx, shape)]
    keep = jnp.broadcast_to(r < valid_rows, shape)
    return plgpu.load(w_ref.at[jnp.where(keep, idx, off)], mask=keep, other=0.0)


def _vector(w_ref, off: int, n: int):
    return w_ref[off + jnp.arange(n, dtype=jnp.int32)]


def _encode_tile(xs, table_ref, enc: HashGridConfig, block: int, unroll: bool):
    """The ``(block, E)`` feature tile (``E`` = :func:`_padded` ``(L·F)``, zero columns past ``L·F``).

    ``unroll``: every level written out (static resolutions); else one ``fori_loop`` over the
    dense levels and one over the hashed ones (the resolution selected per iteration), which
    makes a kernel a fraction of the size, so that it compiles in seconds.
    """
    t, f = enc.table_size, enc.features_per_level
    width = _padded(enc.out_dim)
    col = jnp.arange(width, dtype=jnp.int32)[None, :]
    fcol = jnp.arange(f, dtype=jnp.int32)[None, :]

    def add_level(level, tile):
        lows, fracs, _ = _cell(xs, level.res)
        acc = jnp.zeros((block, f), jnp.float32)
        for c, rows in enumerate(_corner_rows(lows, level, t - 1)):
            wx, wy, wz = _axis_weights(fracs, c)
            vals = table_ref[_table_offsets(rows, level.index, t, f)].astype(jnp.float32)
            acc = acc + ((wx * wy) * wz)[:, None] * vals
        for j in range(f):
            v = jnp.sum(jnp.where(fcol == j, acc, 0.0), axis=1)
            tile = jnp.where(col == level.index * f + j, v[:, None], tile)
        return tile

    tile = jnp.zeros((block, width), jnp.float32)
    if unroll:
        for level in _levels(enc, Tuning(), 1):
            tile = add_level(level, tile)
        return tile
    n_dense = sum(enc.dense_levels)  # dense levels come first (resolutions grow)
    for start, stop, dense in ((0, n_dense, True), (n_dense, enc.n_levels, False)):
        if stop > start:
            def body(i, tile, dense=dense):
                return add_level(_Level(_select(i, enc.resolutions, jnp.int32), dense, i), tile)

            tile = jax.lax.fori_loop(start, stop, body, tile)
    return tile


def _forward_mlp(tile, w_ref, mlp: FusedMLP, enc_dim: int, block: int):
    """Pre-activations of the hidden layers and the output ``z`` ``(block,)``."""
    layout = _layout(mlp)
    width_e = tile.shape[1]
    pres, h = [], None
    for i, (fan_in, fo, w_off, b_off) in enumerate(layout[:-1]):
        pre = jnp.broadcast_to(_vector(w_ref, b_off, fo)[None, :], (block, fo))
        hidden_off = w_off
        if i == 0 or i in mlp.skips:  # encoding rows come first
            pre = pre + _dot(tile, _tile(w_ref, w_off, width_e, fo, valid_rows=enc_dim), mlp)
            hidden_off = w_off + enc_dim * fo
        if i > 0:
            pre = pre + _dot(h, _tile(w_ref, hidden_off, fo, fo), mlp)
        pres.append(pre)
        h = _act(mlp.activation, pre)
    fan_in, _, w_off, b_off = layout[-1]
    w_last = _vector(w_ref, w_off, fan_in)
    b_last = w_ref[jnp.full((block,), b_off, jnp.int32)]
    z = jnp.sum(h * w_last[None, :], axis=1) + b_last
    return pres, z


def _inside(xs):
    ok = None
    for xd in xs:
        o = (xd >= 0.0) & (xd <= 1.0)
        ok = o if ok is None else ok & o
    return ok


# ----------------------------------------------------------------------------------------
# Kernels


def _tile_offsets(p, width: int):
    return p[:, None] * width + jnp.arange(width, dtype=jnp.int32)[None, :]


def _forward_kernel(x_ref, table_ref, w_ref, out_ref, *feat_ref, enc, mlp, block, n, unroll):
    p, valid, xs = _load_points(x_ref, n, block)
    tile = _encode_tile(xs, table_ref, enc, block, unroll)
    if feat_ref:  # training: keep the features for the backward pass
        plgpu.store(feat_ref[0].at[_tile_offsets(p, tile.shape[1])], tile, mask=valid[:, None])
    _, z = _forward_mlp(tile, w_ref, mlp, enc.out_dim, block)
    mu = mlp.mu_scale * _act(mlp.out_activation, z)
    plgpu.store(out_ref.at[p], jnp.where(_inside(xs), mu, 0.0), mask=valid)


def _backward_kernel(x_ref, feat_ref, w_ref, g_ref, dfeat_ref, part_ref, *, mlp, block, n):
    """The MLP's backward pass on a block: the feature gradient ``(block, E)`` and one row of
    parameter-gradient partial sums."""
    p, valid, xs = _load_points(x_ref, n, block)
    width_e = _padded(mlp.sizes[0])
    enc_dim = mlp.sizes[0]
    offs = _tile_offsets(p, width_e)
    tile = plgpu.load(feat_ref.at[offs], mask=valid[:, None], other=0.0)
    pres, z = _forward_mlp(tile, w_ref, mlp, enc_dim, block)
    layout = _layout(mlp)
    g = plgpu.load(g_ref.at[p], mask=valid, other=0.0)
    dz = jnp.where(_inside(xs) & valid, g * (mlp.mu_scale * _act_grad(mlp.out_activation, z)), 0.0)

    part_layout, part_size = _part_layout(mlp)
    row = pl.program_id(0) * part_size

    def put(off, m):
        idx = row + off + jnp.arange(m.shape[-1], dtype=jnp.int32)
        if m.ndim == 2:
            idx = idx[None, :] + m.shape[1] * jnp.arange(m.shape[0], dtype=jnp.int32)[:, None]
        plgpu.store(part_ref.at[idx], m)

    # output layer (a bias of width 1: every lane stores the same sum)
    (_, h_off, b_off), (fan_in, _, w_off, _) = part_layout[-1], layout[-1]
    h = _act(mlp.activation, pres[-1])
    put(h_off, jnp.sum(h * dz[:, None], axis=0))
    plgpu.store(part_ref.at[jnp.full((block,), row + b_off, jnp.int32)], jnp.broadcast_to(jnp.sum(dz), (block,)))
    dh = dz[:, None] * _vector(w_ref, w_off, fan_in)[None, :]
    d_tile = jnp.zeros((block, width_e), jnp.float32)
    for i in range(len(layout) - 2, -1, -1):
        (_, fo, w_off, _), (e_off, h_off, b_off) = layout[i], part_layout[i]
        dpre = dh * _act_grad(mlp.activation, pres[i])
        put(b_off, jnp.sum(dpre, axis=0))
        hidden_off = w_off
        if e_off is not None:
            put(e_off, _dot_tn(tile, dpre, mlp))
            d_tile = d_tile + _dot(dpre, _tile(w_ref, w_off, width_e, fo, valid_rows=enc_dim, transpose=True), mlp)
            hidden_off = w_off + enc_dim * fo
        if h_off is not None:
            put(h_off, _dot_tn(_act(mlp.activation, pres[i - 1]), dpre, mlp))
            dh = _dot(dpre, _tile(w_ref, hidden_off, fo, fo, transpose=True), mlp)
    plgpu.store(dfeat_ref.at[offs], d_tile, mask=valid[:, None])


# ----------------------------------------------------------------------------------------
# pallas_call wrappers


def _check(table, u, enc: HashGridConfig, mlp: FusedMLP):
    L, T, F = enc.n_levels, enc.table_size, enc.features_per_level
    if table.shape != (L, T, F):
        raise ValueError(f"hash grid params: expected shape {(L, T, F)}, got {table.shape}")
    if u.ndim != 2 or u.shape[-1] != 3:
        raise ValueError(f"fused field: points must have shape (N, 3), got {u.shape}")
    if mlp.sizes[0] != enc.out_dim:
        raise ValueError(f"fused field: MLP input width {mlp.sizes[0]} != encoding width {enc.out_dim}")


def fused_field_forward(
    table: Float[Array, "levels table features"],
    w: Float[Array, " p"],
    u: Float[Array, "n 3"],
    enc: HashGridConfig,
    mlp: FusedMLP,
    *,
    save_features: bool = False,
    tuning: FusedTuning = DEFAULT_FUSED_TUNING,
    interpret: bool = False,
):
    """μ (mm⁻¹) at normalised points ``u`` (``(N, 3)`` in ``[0, 1]³``; 0 outside): one kernel.

    Args:
      table: ``(L, T, F)`` hash table (float32, bfloat16 or float16).
      w: the MLP's parameters packed by :func:`pack`.
      u: float32 points in the field's unit cube.
      enc, mlp: the field's static description.
      save_features: also return the ``(N, E)`` float32 feature tiles (``E`` = ``L·F``
        rounded up to a power of two ≥ 16, zero columns past ``L·F``) for
        :func:`fused_field_backward`.
      tuning: launch parameters.
      interpret: run in Pallas' interpreter (any backend; slow, for tests).

    Returns:
      ``(N,)`` μ, and the features with ``save_features``.
    """
    _check(table, u, enc, mlp)
    n, width_e = u.shape[0], _padded(enc.out_dim)
    shapes = [jax.ShapeDtypeStruct((n,), jnp.float32)]
    if save_features:
        shapes.append(jax.ShapeDtypeStruct((n * width_e,), jnp.float32))
    if n == 0:
        outs = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    else:
        kernel = partial(_forward_kernel, enc=enc, mlp=mlp, block=tuning.block, n=n, unroll=tuning.unroll_levels)
        outs = pl.pallas_call(
            kernel,
            out_shape=tuple(shapes),
            grid=(pl.cdiv(n, tuning.block),),
            interpret=interpret,
            name="fused_field_forward",
            **_params(tuning.num_warps, interpret),
        )(u.astype(jnp.float32).reshape(-1), table.reshape(-1), w.astype(jnp.float32))
    if save_features:
        return outs[0], outs[1].reshape(n, width_e)
    return outs[0]


def fused_field_backward(
    table: Float[Array, "levels table features"],
    w: Float[Array, " p"],
    u: Float[Array, "n 3"],
    features: Float[Array, "n e"],
    g: Float[Array, " n"],
    enc: HashGridConfig,
    mlp: FusedMLP,
    *,
    tuning: FusedTuning = DEFAULT_FUSED_TUNING,
    interpret: bool = False,
) -> tuple[Float[Array, "levels table features"], Float[Array, " p"]]:
    """Gradients of ``Σ g · μ(u)`` w.r.t. the table (in its dtype) and the packed MLP parameters.

    Two kernels: the MLP's backward pass on the saved ``features`` (from
    :func:`fused_field_forward` with ``save_features``; no gathers), which writes the feature
    gradient, then the hash grid's table-gradient kernel (atomic adds, dense-level replicas:
    :mod:`jaxmedrf.kernels.hashgrid`) on it.
    """
    _check(table, u, enc, mlp)
    n = u.shape[0]
    if n == 0:
        return jnp.zeros_like(table), jnp.zeros_like(w)
    block, width_e = tuning.bwd_block, _padded(enc.out_dim)
    programs = pl.cdiv(n, block)
    part_size = _part_layout(mlp)[1]
    kernel = partial(_backward_kernel, mlp=mlp, block=block, n=n)
    x = u.astype(jnp.float32).reshape(-1)
    d_feat, parts = pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((n * width_e,), jnp.float32),
                   jax.ShapeDtypeStruct((programs * part_size,), jnp.float32)),
        grid=(programs,),
        interpret=interpret,
        name="fused_field_backward",
        **_params(tuning.bwd_num_warps, interpret),
    )(x, features.reshape(-1), w.astype(jnp.float32), g.astype(jnp.float32))
    d_feat = d_feat.reshape(n, width_e)[:, : enc.out_dim]
    d_table = _table_grad(x.reshape(n, 3), d_feat, enc, tuning.hash_tuning(), interpret, table.dtype)
    return d_table, _unpad(parts.reshape(programs, -1).sum(axis=0), mlp)
