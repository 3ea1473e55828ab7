"""The multiresolution hash grid's settings (Instant-NGP, Müller et al., SIGGRAPH 2022, Sec. 3).

A leaf module: the XLA encoding (:mod:`jaxmedrf.fields.encodings`, which documents the
conventions and re-exports these names) and the Pallas kernels (:mod:`jaxmedrf.kernels`)
both read it, and it imports nothing of jaxmedrf.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

__all__ = ["HASH_IMPLEMENTATIONS", "HASH_PRIMES", "HashGridConfig"]

#: The spatial-hash primes of Instant-NGP (Eq. 4); the first is 1 for cache coherence.
HASH_PRIMES = (1, 2654435761, 805459861)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
HASH_IMPLEMENTATIONS = ("fused", "level_major", "per_level", "pallas", "auto")
_BACKWARDS = ("scatter", "segment_sum", "sorted", "autodiff")


@dataclasses.dataclass(frozen=True)
class HashGridConfig:
    """Every setting of the multiresolution hash encoding (defaults: Instant-NGP / NAF).

    Attributes:
      n_levels: ``L``, number of resolution levels.
      features_per_level: ``F``, feature dimension stored per table row.
      log2_table_size: ``log2 T``; ``T`` rows per level.
      base_resolution: ``N_min``, coarsest grid resolution (cells per axis).
      finest_resolution: ``N_max``, finest resolution; ignored if ``per_level_scale`` is set.
      per_level_scale: growth factor ``b`` between levels; ``None`` derives it from
        ``finest_resolution`` (Eq. 3). NAF's torch-ngp encoder uses 2.0.
      table_dtype: storage dtype of the table: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
      init_scale: table entries start uniform in ``[-init_scale, init_scale]`` (1e-4 as in
        the paper).
      implementation: XLA formulation of the lookup (all give the same values; a level's
        dense or hashed indexing is always chosen statically):
        ``"fused"``: one gather of the ``(N, L', 8)`` corner rows of each run of ``L'``
        consecutive dense (or hashed) levels, from those levels' flattened tables (two
        gathers: the dense levels come first);
        ``"level_major"``: the same gathers ordered ``(L', N, 8)`` (consecutive lookups hit
        one level's table: better cache locality on GPUs);
        ``"per_level"``: one gather per level;
        ``"pallas"``: the fused GPU kernel of :mod:`jaxmedrf.kernels.hashgrid` (all levels
        in one pass, atomic-add backward; same values and gradients). Where it cannot run
        (no GPU, ``features_per_level`` not 1, 2, 4 or 8, non-float32 positions) it warns
        once and uses ``"level_major"``; ``backward`` is then the XLA path's, and ignored
        by the kernel.
        ``"auto"``: ``"per_level"`` on the CPU (one level's table at a time stays in the
        cache; ``benchmarks/naf_cpu_profile.py`` times it against the others), ``"level_major"``
        on other backends.
        Default ``"level_major"``: one fused gather per run (few kernels) whose working set at any
        moment is one level's table (4 MB at 2^19 × 2 float32), which fits a GPU's L2 cache,
        for the forward gather and the backward atomics alike; ``benchmarks/hashgrid.py``
        times all three.
      backward: how the table gradient is accumulated: ``"scatter"`` (``.at[].add``),
        ``"segment_sum"`` (``jax.ops.segment_sum``), ``"sorted"`` (indices argsorted, then a
        sorted segment sum), or ``"autodiff"`` (the table is cast to float32 before the
        gather and JAX transposes the gather itself). All accumulate in float32; the first
        three gather rows in the storage dtype (half the bytes for half tables).
    """

    n_levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048
    per_level_scale: float | None = None
    table_dtype: str = "float32"
    init_scale: float = 1e-4
    implementation: str = "level_major"
    backward: str = "segment_sum"

    def __post_init__(self):
        for name in ("n_levels", "features_per_level", "base_resolution"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"HashGridConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.log2_table_size <= 30:
            raise ValueError(f"HashGridConfig.log2_table_size must be in [1, 30], got {self.log2_table_size}")
        if self.n_levels * (1 << self.log2_table_size) >= 2**31:
            raise ValueError(
                f"HashGridConfig: n_levels * 2**log2_table_size = {self.n_levels << self.log2_table_size} "
                "rows overflow int32 indexing"
            )
        if self.per_level_scale is None and self.finest_resolution < self.base_resolution:
            raise ValueError(
                f"HashGridConfig.finest_resolution ({self.finest_resolution}) must be >= "
                f"base_resolution ({self.base_resolution})"
            )
        if self.per_level_scale is not None and not self.per_level_scale >= 1.0:
            raise ValueError(f"HashGridConfig.per_level_scale must be >= 1, got {self.per_level_scale}")
        if self.table_dtype not in _DTYPES:
            raise ValueError(f"HashGridConfig.table_dtype must be one of {sorted(_DTYPES)}, got {self.table_dtype!r}")
        if self.implementation not in HASH_IMPLEMENTATIONS:
            raise ValueError(
                f"HashGridConfig.implementation must be one of {HASH_IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        if self.backward not in _BACKWARDS:
            raise ValueError(f"HashGridConfig.backward must be one of {_BACKWARDS}, got {self.backward!r}")
        if not self.init_scale >= 0:
            raise ValueError(f"HashGridConfig.init_scale must be >= 0, got {self.init_scale}")

    @property
    def table_size(self) -> int:
        """``T``, rows per level."""
        return 1 << self.log2_table_size

    @property
    def growth_factor(self) -> float:
        """``b`` of Eq. 3."""
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.finest_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    @property
    def resolutions(self) -> tuple[int, ...]:
        """``N_l = ⌊N_min b^l⌋`` per level (a 1e-6 guard absorbs rounding of ``b^l``)."""
        b = self.growth_factor
        return tuple(int(math.floor(self.base_resolution * b**level + 1e-6)) for level in range(self.n_levels))

    @property
    def dense_levels(self) -> tuple[bool, ...]:
        """Whether level ``l`` fits one-to-one in the table: ``(N_l + 1)^3 ≤ T``."""
        return tuple((n + 1) ** 3 <= self.table_size for n in self.resolutions)

    @property
    def out_dim(self) -> int:
        """Encoding width ``L · F``."""
        return self.n_levels * self.features_per_level

    @property
    def dtype(self):
        """The table's storage dtype as a JAX dtype."""
        return _DTYPES[self.table_dtype]
