"""Neural attenuation field: encoding → small MLP → non-negative μ(x) in mm⁻¹.

The field lives on the geometry's volume box ``[lo, hi]`` (mm, :func:`jaxmedrf.volume_box`):
a world point ``x`` is mapped to ``u = (x − lo) / (hi − lo) ∈ [0, 1]^3``, encoded, and fed to
the MLP; points outside the box have ``μ = 0``. The defaults reproduce NAF's ``chest_50``
network (Zha et al., "NAF: Neural Attenuation Fields for Sparse-View CBCT Reconstruction",
MICCAI 2022; ``config/chest_50.yaml`` and ``src/network/network.py`` of Ruyi-Zha/naf_cbct):
hash grid 16 levels × 2 features, 2^19 rows, base resolution 16; four linear layers of
width 32 with LeakyReLU, the encoding re-injected before the third (``skips=(2,)``), and a
sigmoid output. NAF's sigmoid bounds μ by 1 in its normalised units; here
``μ = mu_scale · sigmoid(z)`` with ``mu_scale`` in mm⁻¹ (set it at or above the largest
attenuation expected, e.g. 1.0 for a phantom with values in [0, 1] mm⁻¹). ``"softplus"``
(unbounded, ``μ = mu_scale · softplus(z)``) and ``"relu"`` are available.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf.chunking import chunked_map
from jaxmedrf.fields.encodings import (
    FrequencyConfig,
    HashGridConfig,
    frequency_encode,
    hash_grid_encode,
    hash_grid_init,
)
from jaxmedrf.fields.mlp import leaky_relu, mlp_apply, mlp_init
from jaxmedrf.geometry import Geometry, volume_box, voxel_centers

__all__ = ["FIELD_IMPLEMENTATIONS", "FieldConfig", "field_apply", "field_init", "make_field_fn", "query_grid"]

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": leaky_relu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
}
_COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
FIELD_IMPLEMENTATIONS = ("auto", "fused", "xla")


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    """Every setting of the attenuation field (defaults: NAF chest_50).

    Attributes:
      encoding: a :class:`HashGridConfig` or :class:`FrequencyConfig`.
      width: hidden width of the MLP.
      depth: number of linear layers (``depth − 1`` hidden layers of ``width``).
      skips: layers whose input is the encoding concatenated with the hidden state.
      activation: hidden nonlinearity: ``"leaky_relu"`` (NAF) or ``"relu"``, ``"softplus"``.
      out_activation: ``"sigmoid"`` (NAF), ``"softplus"`` or ``"relu"``; all give μ ≥ 0.
      mu_scale: μ = ``mu_scale`` · out_activation(z), mm⁻¹ (the bound of μ for a sigmoid).
      compute_dtype: MLP matmul dtype (``"float32"`` or ``"bfloat16"``/``"float16"`` with
        float32 accumulation).
      implementation: ``"xla"`` (the encoding, then :func:`jaxmedrf.fields.mlp_apply`, as
        separate XLA ops), ``"fused"`` (one Pallas kernel for encoding + MLP + output, forward
        and backward: :mod:`jaxmedrf.kernels.field`; where it cannot run it warns once and uses
        ``"xla"``), or ``"auto"``: ``"fused"`` where the kernel runs (a GPU, a hash-grid
        encoding, a hidden width that is a power of two in [16, 128]), else ``"xla"``, silently.
        Both compute the same field (same values and gradients up to float32 rounding).
    """

    encoding: HashGridConfig | FrequencyConfig = HashGridConfig()
    width: int = 32
    depth: int = 4
    skips: tuple[int, ...] = (2,)
    activation: str = "leaky_relu"
    out_activation: str = "sigmoid"
    mu_scale: float = 1.0
    compute_dtype: str = "float32"
    implementation: str = "auto"

    def __post_init__(self):
        if not isinstance(self.encoding, (HashGridConfig, FrequencyConfig)):
            raise ValueError(f"FieldConfig.encoding must be a HashGridConfig or FrequencyConfig, got {self.encoding!r}")
        if self.width < 1:
            raise ValueError(f"FieldConfig.width must be >= 1, got {self.width}")
        if self.depth < 1:
            raise ValueError(f"FieldConfig.depth must be >= 1, got {self.depth}")
        object.__setattr__(self, "skips", tuple(int(s) for s in self.skips))
        for s in self.skips:
            if not 1 <= s < self.depth:
                raise ValueError(f"FieldConfig.skips: layer index must be in [1, {self.depth - 1}], got {s}")
        if self.activation not in ("relu", "leaky_relu", "softplus"):
            raise ValueError(f"FieldConfig.activation must be relu, leaky_relu or softplus, got {self.activation!r}")
        if self.out_activation not in ("sigmoid", "softplus", "relu"):
            raise ValueError(
                f"FieldConfig.out_activation must be sigmoid, softplus or relu, got {self.out_activation!r}"
            )
        if not (math.isfinite(self.mu_scale) and self.mu_scale > 0):
            raise ValueError(f"FieldConfig.mu_scale must be a positive number (mm^-1), got {self.mu_scale}")
        if self.compute_dtype not in _COMPUTE_DTYPES:
            raise ValueError(f"FieldConfig.compute_dtype must be one of {sorted(_COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        if self.implementation not in FIELD_IMPLEMENTATIONS:
            raise ValueError(f"FieldConfig.implementation must be one of {FIELD_IMPLEMENTATIONS}, got {self.implementation!r}")

    @property
    def encoding_dim(self) -> int:
        """Width of the encoded input."""
        if isinstance(self.encoding, HashGridConfig):
            return self.encoding.out_dim
        return self.encoding.out_dim(3)

    @property
    def sizes(self) -> tuple[int, ...]:
        """MLP layer widths, input to output."""
        return (self.encoding_dim,) + (self.width,) * (self.depth - 1) + (1,)


def field_init(key: PRNGKeyArray, config: FieldConfig) -> dict:
    """Parameters ``{"encoding": table or (), "mlp": [(W, b), …]}``.

    The volume box is not a parameter: pass it to :func:`field_apply` (``lo``, ``hi``), so
    an optimiser never updates it.
    """
    k_enc, k_mlp = jax.random.split(key)
    enc = hash_grid_init(k_enc, config.encoding) if isinstance(config.encoding, HashGridConfig) else ()
    return {"encoding": enc, "mlp": mlp_init(k_mlp, config.sizes, skips=config.skips)}


def field_apply(
    params: dict,
    x_mm: Float[ArrayLike, "n 3"],
    config: FieldConfig,
    *,
    lo: Float[ArrayLike, "3"],
    hi: Float[ArrayLike, "3"],
) -> Float[Array, " n"]:
    """Attenuation μ (mm⁻¹, ≥ 0) at world points ``x_mm`` (mm); 0 outside ``[lo, hi]``.

    Args:
      params: from :func:`field_init`.
      x_mm: ``(N, 3)`` points, mm.
      config: the field's settings (static).
      lo, hi: the volume box corners, mm (:func:`jaxmedrf.volume_box`).

    Returns:
      ``(N,)`` float32 μ in mm⁻¹.
    """
    x = x_mm.astype(jnp.float32)
    lo = jnp.asarray(lo, jnp.float32)
    hi = jnp.asarray(hi, jnp.float32)
    u = (x - lo) / (hi - lo)
    if _use_fused(config):
        return _fused_mu(params["encoding"], params["mlp"], u, config, False, None)
    return _xla_mu(params, u, config)


def _xla_mu(params: dict, u: Float[Array, "n 3"], config: FieldConfig) -> Float[Array, " n"]:
    """μ at normalised points ``u`` (0 outside the unit cube), as separate XLA ops."""
    inside = jnp.all((u >= 0.0) & (u <= 1.0), axis=-1)
    if isinstance(config.encoding, HashGridConfig):
        h = hash_grid_encode(params["encoding"], u, config.encoding)
    else:
        h = frequency_encode(u, config.encoding)
    z = mlp_apply(
        params["mlp"],
        h,
        activation=_ACTIVATIONS[config.activation],
        skips=config.skips,
        compute_dtype=_COMPUTE_DTYPES[config.compute_dtype],
    )[:, 0]
    mu = config.mu_scale * _ACTIVATIONS[config.out_activation](z)
    return jnp.where(inside, mu, 0.0)


# ----------------------------------------------------------------------------------------
# The fused kernel (jaxmedrf.kernels.field) under a custom_vjp


def _mlp_spec(config: FieldConfig):
    from jaxmedrf.kernels.field import FusedMLP

    return FusedMLP(sizes=config.sizes, skips=config.skips, activation=config.activation,
                    out_activation=config.out_activation, mu_scale=float(config.mu_scale),
                    dot_dtype=config.compute_dtype)


def fused_unsupported(config: FieldConfig) -> str | None:
    """``None`` if the fused kernel computes this field here, else why not."""
    if not isinstance(config.encoding, HashGridConfig):
        return "a frequency encoding (the kernel encodes hash grids)"
    from jaxmedrf.kernels.field import fused_supported

    return fused_supported(config.encoding, _mlp_spec(config))


_WARNED: set[str] = set()


def resolved_implementation(config: FieldConfig) -> str:
    """``"fused"`` or ``"xla"``: what :func:`field_apply` runs for ``config`` on this backend."""
    if config.implementation == "xla":
        return "xla"
    return "fused" if fused_unsupported(config) is None else "xla"


def _use_fused(config: FieldConfig) -> bool:
    """:func:`resolved_implementation` is ``"fused"``; a requested ``"fused"`` that cannot run warns once."""
    if resolved_implementation(config) == "fused":
        return True
    reason = fused_unsupported(config) if config.implementation == "fused" else None
    if reason is not None and reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"field_apply: fused kernel unavailable ({reason}); using the XLA path", stacklevel=3)
    return False


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused_mu(table, mlp, u, config: FieldConfig, interpret: bool, tuning):
    """μ at normalised points ``u`` by the fused kernel (``tuning``: a
    :class:`jaxmedrf.kernels.field.FusedTuning`, ``None`` for the default)."""
    from jaxmedrf.kernels import field as K

    return K.fused_field_forward(table, K.pack(mlp), u, config.encoding, _mlp_spec(config), interpret=interpret,
                                 tuning=tuning or K.DEFAULT_FUSED_TUNING)


def _fused_mu_fwd(table, mlp, u, config, interpret, tuning):
    from jaxmedrf.kernels import field as K

    mu, feats = K.fused_field_forward(table, K.pack(mlp), u, config.encoding, _mlp_spec(config), save_features=True,
                                      interpret=interpret, tuning=tuning or K.DEFAULT_FUSED_TUNING)
    return mu, (table, mlp, u, feats)


def _fused_mu_bwd(config, interpret, tuning, res, g):
    from jaxmedrf.kernels import field as K

    table, mlp, u, feats = res
    spec = _mlp_spec(config)
    d_table, d_w = K.fused_field_backward(table, K.pack(mlp), u, feats, g, config.encoding, spec, interpret=interpret,
                                          tuning=tuning or K.DEFAULT_FUSED_TUNING)
    d_mlp = [(dw.astype(w.dtype), db.astype(b.dtype)) for (dw, db), (w, b) in zip(K.unpack(d_w, spec), mlp)]
    # The position gradient (not needed to train a field; XLA drops it then) from the XLA path.
    _, vjp_u = jax.vjp(lambda u: _xla_mu({"encoding": table, "mlp": mlp}, u, config), u)
    return d_table, d_mlp, vjp_u(g)[0]


_fused_mu.defvjp(_fused_mu_fwd, _fused_mu_bwd)


def make_field_fn(
    params: dict, config: FieldConfig, lo: Float[ArrayLike, "3"], hi: Float[ArrayLike, "3"]
) -> Callable[[Float[Array, "n 3"]], Float[Array, " n"]]:
    """A field function ``points (N, 3) mm → μ (N,) mm⁻¹`` for :func:`jaxmedrf.render.render_rays`."""

    def field_fn(points):
        return field_apply(params, points, config, lo=lo, hi=hi)

    return field_fn


def query_grid(
    params: dict, config: FieldConfig, geometry: Geometry, *, chunk: int = 65536, offset=(0.0, 0.0, 0.0)
) -> Float[Array, "nx ny nz"]:
    """The field at the geometry's voxel centres (+ ``offset`` mm), ``(nx, ny, nz)`` float32 mm⁻¹.

    The field's box stays the geometry's whatever the offset. Evaluated ``chunk`` points at a time under ``lax.map`` (points generated inside each
    chunk), so peak memory is bounded by one chunk's activations plus the output.
    """
    if chunk < 1:
        raise ValueError(f"query_grid: chunk must be >= 1, got {chunk}")
    return _query_grid(params, geometry, jnp.asarray(offset, jnp.float32), config=config, chunk=int(chunk))


@partial(jax.jit, static_argnames=("config", "chunk"))
def _query_grid(params, geometry, offset, *, config, chunk):
    nx, ny, nz = geometry.n_voxel
    lo, hi = volume_box(geometry)
    xs, ys, zs = voxel_centers(geometry)

    def one(flat):
        i, j, k = flat // (ny * nz), (flat // nz) % ny, flat % nz
        pts = jnp.stack([xs[i], ys[j], zs[k]], axis=-1) + offset
        return field_apply(params, pts, config, lo=lo, hi=hi)

    return chunked_map(one, nx * ny * nz, chunk).reshape(nx, ny, nz)
