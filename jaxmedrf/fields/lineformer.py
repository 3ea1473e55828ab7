r"""Lineformer: an attenuation field with self-attention inside line segments of each ray.

After SAX-NeRF (Cai, Wang, Yuille, Zhou, Wang, "Structure-Aware Sparse-View X-ray 3D
Reconstruction", CVPR 2024, Sec. 3 "Line Segment-based Transformer"; code
``src/network/Lineformer.py`` of caiyuanhao1998/SAX-NeRF). The samples of a ray, in order, are
cut into segments of ``M`` consecutive samples; every sample's hash-grid features go through a
small network in which some layers are *line attention blocks*: multi-head self-attention
among the ``M`` samples of the sample's own segment. So μ at a sample depends on its segment:
this is a **ray field** ``points (R, S, 3) mm → μ (R, S) mm⁻¹``, not a pointwise function of
``x``, and the renderer takes it with ``ray_field=True`` (:func:`jaxmedrf.render.render_rays`).

Network (``depth`` layers; SAX-NeRF's ``num_layers=4, skips=[2]``): ``h_0 = enc(u)`` (the
hash grid of :mod:`jaxmedrf.fields.encodings` at ``u = (x − lo)/(hi − lo)``);
``h_1 = σ(W_0 h_0 + b_0)``; for ``1 ≤ i ≤ depth − 2``: ``h_{i+1} = σ(W_i [h_0, h_i] + b_i)``
where ``i ∈ skips``, else ``h_{i+1} = σ(B_i(h_i))`` with a line attention block ``B_i``;
``μ = s · out(W h_{depth-1} + b)``, σ = LeakyReLU(0.01), ``s`` = ``mu_scale``. A block
(``n_blocks`` pre-norm transformer layers) on the ``(M, C)`` features ``X`` of one segment:

.. math::
    Z = \mathrm{LN}(X),\quad Q_h = Z W^Q_h,\; K_h = Z W^K_h,\; V_h = Z W^V_h,\\
    X \leftarrow X + \big[\mathrm{softmax}(Q_h K_h^\top / \sqrt{d} + P_h)\, V_h\big]_{h=1}^{H} W^O + b^O,\\
    X \leftarrow X + W_3\, \mathrm{GELU}(W_2\, \mathrm{GELU}(W_1\, \mathrm{LN}(X)))

with ``H`` heads of width ``d``, a learned ``(M, M)`` position bias ``P_h`` per head, and a
feed-forward net of width ``ffn_mult · C`` without biases (SAX-NeRF's ``LineAttention``,
``FFN`` and ``Line_Attention_Blcok``).

Samples whose count is not a multiple of ``M`` are padded by repeating the last one (the
padding's outputs are dropped). Volume extraction (:func:`lineformer_query_grid`) by default
does what SAX-NeRF's evaluation does (``run_network`` on the flattened ``(x, y, z)`` voxel grid,
cut into consecutive groups of ``M``): each z-column of voxels is a "ray", so a segment is ``M``
consecutive voxels along z. ``query_axes=(0, 1, 2)`` averages the columns along x, y and z
instead, so that no one direction of the training rays is favoured.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf.chunking import chunked_map
from jaxmedrf.fields.encodings import HashGridConfig, hash_grid_encode, hash_grid_init
from jaxmedrf.fields.mlp import leaky_relu
from jaxmedrf.geometry import Geometry, volume_box, voxel_centers

__all__ = ["LineformerConfig", "lineformer_apply", "lineformer_init", "lineformer_query_grid", "line_attention"]

_OUT = {"softplus": jax.nn.softplus, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}
_LN_EPS = 1e-5  # torch.nn.LayerNorm's


@dataclasses.dataclass(frozen=True)
class LineformerConfig:
    """Every setting of the Lineformer field (defaults: SAX-NeRF's ``config/Lineformer/chest_50.yaml``
    network, with NAF's hash grid and softplus output of :class:`jaxmedrf.recon.NAFConfig`).

    Attributes:
      encoding: the hash grid (:class:`HashGridConfig`); 512 finest cells as NAF's here.
      width: feature width ``C`` of the hidden layers and the attention blocks.
      depth: layers (first linear, ``depth − 2`` blocks or skip layers, output linear).
      skips: hidden layers that are linear on ``[h_0, h]`` instead of an attention block.
      segment_length: ``M``, samples per line segment (SAX-NeRF's ``line_size``: 2 for chest).
      heads: attention heads ``H``.
      head_dim: width ``d`` of each head (``H · d`` is the attention's inner width).
      n_blocks: transformer layers per attention block.
      ffn_mult: the feed-forward net's hidden width is ``ffn_mult · width``.
      out_activation: ``"softplus"``, ``"sigmoid"`` or ``"relu"`` (μ ≥ 0).
      mu_scale: μ = ``mu_scale`` · out_activation(z), mm⁻¹.
      query_axes: the volume is the mean of the field queried in voxel columns along each of
        these axes (0 x, 1 y, 2 z); ``(2,)`` is SAX-NeRF's evaluation.
    """

    encoding: HashGridConfig = HashGridConfig(finest_resolution=512, implementation="auto")
    width: int = 32
    depth: int = 4
    skips: tuple[int, ...] = (2,)
    segment_length: int = 2
    heads: int = 8
    head_dim: int = 4
    n_blocks: int = 1
    ffn_mult: int = 4
    out_activation: str = "softplus"
    mu_scale: float = 1.0
    query_axes: tuple[int, ...] = (2,)

    def __post_init__(self):
        if not isinstance(self.encoding, HashGridConfig):
            raise ValueError(f"LineformerConfig.encoding must be a HashGridConfig, got {self.encoding!r}")
        for name in ("width", "segment_length", "heads", "head_dim", "n_blocks", "ffn_mult"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LineformerConfig.{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "skips", tuple(int(s) for s in self.skips))
        axes = tuple(self.query_axes)
        if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"LineformerConfig.query_axes must be distinct axes among 0, 1, 2, got {self.query_axes}")
        object.__setattr__(self, "query_axes", tuple(int(a) for a in axes))
        if not self.attention_layers:
            raise ValueError(f"LineformerConfig: depth {self.depth} with skips {self.skips} leaves no attention "
                             "block (needs a layer in [1, depth - 2] that is not a skip)")
        if any(not 1 <= s <= self.depth - 2 for s in self.skips):
            raise ValueError(f"LineformerConfig.skips: layer index must be in [1, {self.depth - 2}], got {self.skips}")
        if self.out_activation not in _OUT:
            raise ValueError(f"LineformerConfig.out_activation must be one of {sorted(_OUT)}, got {self.out_activation!r}")
        if not (math.isfinite(self.mu_scale) and self.mu_scale > 0):
            raise ValueError(f"LineformerConfig.mu_scale must be a positive number (mm^-1), got {self.mu_scale}")

    @property
    def attention_layers(self) -> tuple[int, ...]:
        """Indices of the hidden layers that are line attention blocks."""
        return tuple(i for i in range(1, self.depth - 1) if i not in self.skips)


def _linear(key, fan_in, fan_out, dtype=jnp.float32, *, bias=True):
    """PyTorch ``nn.Linear`` initialisation: ``U(±1/√fan_in)`` (SAX-NeRF leaves it at the default)."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(fan_in)
    w = jax.random.uniform(kw, (fan_in, fan_out), dtype, -bound, bound)
    return {"w": w, "b": jax.random.uniform(kb, (fan_out,), dtype, -bound, bound)} if bias else {"w": w}


def _block_init(key, config: LineformerConfig) -> dict:
    c, m, hd = config.width, config.segment_length, config.heads * config.head_dim
    k = jax.random.split(key, 7)
    f = config.ffn_mult * c
    return {
        "ln1": {"g": jnp.ones((c,)), "b": jnp.zeros((c,))},
        "q": _linear(k[0], c, hd, bias=False), "kv": _linear(k[1], c, 2 * hd, bias=False), "out": _linear(k[2], hd, c),
        # SAX-NeRF: trunc_normal_(pos_emb) with std 1 in [-2, 2]
        "pos": jax.random.truncated_normal(k[3], -2.0, 2.0, (config.heads, m, m), jnp.float32),
        "ln2": {"g": jnp.ones((c,)), "b": jnp.zeros((c,))},
        "ffn": [_linear(k[4], c, f, bias=False), _linear(k[5], f, f, bias=False), _linear(k[6], f, c, bias=False)],
    }


def lineformer_init(key: PRNGKeyArray, config: LineformerConfig) -> dict:
    """Parameters ``{"encoding": (L, T, F) table, "layers": [...]}``, float32."""
    k_enc, k_net = jax.random.split(key)
    keys = jax.random.split(k_net, config.depth)
    c, e = config.width, config.encoding.out_dim
    layers = [_linear(keys[0], e, c)]
    for i in range(1, config.depth - 1):
        if i in config.skips:
            layers.append(_linear(keys[i], c + e, c))
        else:
            layers.append({"blocks": [_block_init(k, config) for k in jax.random.split(keys[i], config.n_blocks)]})
    layers.append(_linear(keys[-1], c, 1))
    return {"encoding": hash_grid_init(k_enc, config.encoding), "layers": layers}


def _dense(p, h):
    y = h @ p["w"].astype(h.dtype)
    return y + p["b"].astype(h.dtype) if "b" in p else y


def _layer_norm(p, h):
    mean = jnp.mean(h, -1, keepdims=True)
    var = jnp.mean((h - mean) ** 2, -1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + _LN_EPS) * p["g"].astype(h.dtype) + p["b"].astype(h.dtype)


def line_attention(
    block: dict, x: Float[Array, "segments m c"], *, heads: int
) -> Float[Array, "segments m c"]:
    """One pre-norm transformer layer over the ``M`` samples of each segment (the module docstring's
    equations; SAX-NeRF's ``PreNorm(LineAttention)`` + ``PreNorm(FFN)`` with residuals)."""
    n, m, c = x.shape
    z = _layer_norm(block["ln1"], x)
    q = _dense(block["q"], z)
    k, v = jnp.split(_dense(block["kv"], z), 2, axis=-1)
    d = q.shape[-1] // heads
    q, k, v = (t.reshape(n, m, heads, d) for t in (q, k, v))
    sim = jnp.einsum("nihd,njhd->nhij", q * d**-0.5, k) + block["pos"].astype(x.dtype)
    out = jnp.einsum("nhij,njhd->nihd", jax.nn.softmax(sim, axis=-1), v).reshape(n, m, heads * d)
    x = x + _dense(block["out"], out)
    f1, f2, f3 = block["ffn"]
    gelu = partial(jax.nn.gelu, approximate=False)  # torch's F.gelu
    return x + _dense(f3, gelu(_dense(f2, gelu(_dense(f1, _layer_norm(block["ln2"], x))))))


def lineformer_apply(
    params: dict,
    x_mm: Float[ArrayLike, "rays samples 3"],
    config: LineformerConfig,
    *,
    lo: Float[ArrayLike, "3"],
    hi: Float[ArrayLike, "3"],
) -> Float[Array, "rays samples"]:
    """Attenuation μ (mm⁻¹, ≥ 0) at the ordered samples ``x_mm`` (mm) of each ray; 0 outside ``[lo, hi]``.

    Args:
      params: from :func:`lineformer_init`.
      x_mm: ``(R, S, 3)`` sample points of ``R`` rays, in order along each ray, mm. Consecutive
        groups of ``segment_length`` samples form the segments that attend to each other.
      config: the field's settings (static).
      lo, hi: the volume box corners, mm (:func:`jaxmedrf.volume_box`).

    Returns:
      ``(R, S)`` μ in mm⁻¹ (float32; float64 for float64 points).
    """
    x = jnp.asarray(x_mm)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    r, s, _ = x.shape
    m = config.segment_length
    pad = (-s) % m
    if pad:  # repeat the last sample; its outputs are dropped
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)), mode="edge")
    lo = jnp.asarray(lo, dtype)
    hi = jnp.asarray(hi, dtype)
    u = ((x - lo) / (hi - lo)).reshape(-1, 3)
    inside = jnp.all((u >= 0.0) & (u <= 1.0), axis=-1)
    h0 = hash_grid_encode(params["encoding"], u, config.encoding).astype(dtype)
    layers = params["layers"]
    h = leaky_relu(_dense(layers[0], h0))
    for i in range(1, config.depth - 1):
        if i in config.skips:
            h = leaky_relu(_dense(layers[i], jnp.concatenate([h0, h], -1)))
        else:
            seg = h.reshape(-1, m, h.shape[-1])
            for block in layers[i]["blocks"]:
                seg = line_attention(block, seg, heads=config.heads)
            h = leaky_relu(seg.reshape(h.shape))
    z = _dense(layers[-1], h)[:, 0]
    mu = jnp.where(inside, config.mu_scale * _OUT[config.out_activation](z), 0.0)
    return mu.reshape(r, s + pad)[:, :s]


def lineformer_query_grid(
    params: dict, config: LineformerConfig, geometry: Geometry, *, chunk: int = 65536, offset=(0.0, 0.0, 0.0)
) -> Float[Array, "nx ny nz"]:
    """The field at the geometry's voxel centres (+ ``offset`` mm), ``(nx, ny, nz)`` mm⁻¹.

    Each column of voxels along an axis of ``config.query_axes`` is one ray of the field, so its
    segments are ``segment_length`` consecutive voxels along that axis (SAX-NeRF's evaluation is
    ``query_axes=(2,)``, z-columns); with several axes the result is their mean. ``chunk`` voxels
    (whole columns) are evaluated at a time under ``lax.map``.
    """
    if chunk < 1:
        raise ValueError(f"lineformer_query_grid: chunk must be >= 1, got {chunk}")
    offset = jnp.asarray(offset, jnp.float32)
    vols = [_query_grid(params, geometry, offset, config=config, chunk=int(chunk), axis=a) for a in config.query_axes]
    return sum(vols[1:], vols[0]) / len(vols)


@partial(jax.jit, static_argnames=("config", "chunk", "axis"))
def _query_grid(params, geometry, offset, *, config, chunk, axis):
    lo, hi = volume_box(geometry)
    centres = voxel_centers(geometry)
    order = [a for a in range(3) if a != axis] + [axis]  # the column's axis last
    n_a, n_b, n_c = (geometry.n_voxel[a] for a in order)

    def columns(ids):
        coords = [None] * 3
        coords[order[0]] = centres[order[0]][ids // n_b][:, None]
        coords[order[1]] = centres[order[1]][ids % n_b][:, None]
        coords[order[2]] = centres[order[2]][None, :]
        pts = jnp.stack(jnp.broadcast_arrays(*coords), -1) + offset
        return lineformer_apply(params, pts, config, lo=lo, hi=hi)

    out = chunked_map(columns, n_a * n_b, max(chunk // n_c, 1)).reshape(n_a, n_b, n_c)
    return jnp.moveaxis(out, -1, axis)
