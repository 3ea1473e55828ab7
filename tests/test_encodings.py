"""Hash-grid and frequency encodings against slow NumPy references.

Tolerances: values and table gradients are compared with a float64 NumPy loop that uses the
same (storage-rounded) table entries and float32 cell positions, so every table dtype is held
to float32 round-off: rtol 1e-5, atol 1e-6 × the table scale (1). Gradients w.r.t. x are
checked by finite differences in float64 (x64) away from cell boundaries.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from jaxmedrf.fields.encodings import (
    HASH_PRIMES,
    FrequencyConfig,
    HashGridConfig,
    frequency_encode,
    hash_grid_encode,
    hash_grid_init,
)
from jaxmedrf.fields.encodings import _corner_index, _level_groups

# 6 levels, T = 2^12: resolutions 4, 6, 10, 16, 26, 42; dense while (N+1)^3 <= 4096 (N <= 15).
SMALL = dict(n_levels=6, features_per_level=2, log2_table_size=12, base_resolution=4, finest_resolution=42)
IMPLS = ("fused", "level_major", "per_level")
BACKWARDS = ("scatter", "segment_sum", "sorted", "autodiff")
DTYPES = ("float32", "bfloat16", "float16")


def _corners_np(x, config):
    """Per level: list of (rows (N,8), weights (N,8)) computed with Python/NumPy integers."""
    T = config.table_size
    out = []
    for res, dense in zip(config.resolutions, config.dense_levels):
        assert dense == ((res + 1) ** 3 <= T)
        pos = np.clip(x.astype(np.float32), 0, 1) * np.float32(res)
        lower = np.clip(np.floor(pos), 0, res - 1)
        frac = (pos - lower).astype(np.float64)
        lower = lower.astype(np.int64)
        rows = np.zeros((x.shape[0], 8), np.int64)
        w = np.ones((x.shape[0], 8))
        for c in range(8):
            bits = [(c >> d) & 1 for d in range(3)]
            i, j, k = (lower[:, d] + bits[d] for d in range(3))
            if dense:
                rows[:, c] = i + j * (res + 1) + k * (res + 1) ** 2
            else:
                h = np.zeros_like(i)
                for coord, prime in zip((i, j, k), HASH_PRIMES):
                    h ^= (coord * prime) % 2**32
                rows[:, c] = h % T
            for d in range(3):
                w[:, c] *= frac[:, d] if bits[d] else 1.0 - frac[:, d]
        out.append((rows, w))
    return out


def _encode_np(table, x, config):
    table = np.asarray(table.astype(jnp.float32), np.float64)
    feats = [np.einsum("nc,ncf->nf", w, table[level][rows]) for level, (rows, w) in enumerate(_corners_np(x, config))]
    return np.concatenate(feats, axis=1)


def _table_grad_np(table, x, cot, config):
    """d/dtable of Σ encode(table, x) · cot: a scatter-add of weight × cotangent."""
    F = config.features_per_level
    grad = np.zeros(table.shape, np.float64)
    for level, (rows, w) in enumerate(_corners_np(x, config)):
        g = cot[:, level * F : (level + 1) * F]
        for c in range(8):
            np.add.at(grad[level], rows[:, c], w[:, c : c + 1] * g)
    return grad


def _points(rng, n):
    """Random interior points, plus the cube's corners/faces/centre and points outside."""
    special = np.array(
        [[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [0.5, 0.5, 0.5], [-0.2, 0.3, 1.4], [1.5, -1, 0.25]], np.float32
    )
    return np.concatenate([rng.uniform(0, 1, (n, 3)).astype(np.float32), special])


def test_resolutions_follow_eq3():
    c = HashGridConfig()
    b = np.exp((np.log(2048) - np.log(16)) / 15)
    assert c.resolutions == tuple(int(np.floor(16 * b**level + 1e-6)) for level in range(16))
    assert c.resolutions[0] == 16 and c.resolutions[-1] == 2048
    # (N+1)^3 <= 2^19 holds up to N = 79: the first five levels (16 … 58) are dense.
    assert c.dense_levels == (True,) * 5 + (False,) * 11
    assert HashGridConfig(per_level_scale=2.0, n_levels=4).resolutions == (16, 32, 64, 128)
    assert c.out_dim == 32


def test_hash_uses_uint32_wraparound():
    """A level whose corners have coordinates large enough that j·p1 and k·p2 overflow 2^32."""
    c = HashGridConfig(
        n_levels=1, log2_table_size=16, base_resolution=100000, finest_resolution=100000, features_per_level=1, init_scale=1.0
    )
    table = hash_grid_init(jax.random.key(0), c)
    x = np.array([[0.99, 0.7, 0.9]], np.float32)
    rows, _ = _corners_np(x, c)[0]
    assert (rows[:, 0] >= 0).all() and (rows < 2**16).all()
    got = jax.jit(hash_grid_encode, static_argnums=2)(table, jnp.asarray(x), c)
    np.testing.assert_allclose(got, _encode_np(table, x, c), rtol=1e-5, atol=1e-6)


def test_corner_index_is_the_three_term_formula():
    """The row index is one reduction over the vertex's coordinates (which XLA:CPU keeps in
    memory instead of recomputing its producers in every consumer); its integers are those of
    ``i + j s + k s²`` and ``i ⊕ j p1 ⊕ k p2`` in wrapping uint32, overflowing products included."""
    c = np.random.default_rng(0).integers(0, 2**31, (500, 3))
    c[:100] %= 40
    u = c.astype(np.uint64)
    mask = 2**15 - 1
    s = 2**16 + 1  # s² wraps
    dense = u[:, 0] + u[:, 1] * s + u[:, 2] * s * s
    hashed = u[:, 0] ^ (u[:, 1] * HASH_PRIMES[1]) % 2**32 ^ (u[:, 2] * HASH_PRIMES[2]) % 2**32
    for is_dense, want in ((True, dense), (False, hashed)):
        got = _corner_index(jnp.asarray(c, jnp.int32), jnp.int32(s - 1), dense=is_dense, mask=mask)
        np.testing.assert_array_equal(np.asarray(got), (want % 2**32) & mask)


def test_levels_are_looked_up_in_runs_of_one_indexing():
    c = HashGridConfig(**SMALL)
    assert c.dense_levels == (True,) * 3 + (False,) * 3
    for impl in ("level_major", "fused"):
        assert _level_groups(dataclasses.replace(c, implementation=impl)) == [(0, 3, True), (3, 6, False)]
    assert _level_groups(dataclasses.replace(c, implementation="per_level")) == [(i, i + 1, i < 3) for i in range(6)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("table_dtype", DTYPES)
def test_values_match_numpy(rng, impl, table_dtype):
    c = HashGridConfig(**SMALL, table_dtype=table_dtype, implementation=impl, init_scale=1.0)
    assert any(c.dense_levels) and not all(c.dense_levels)
    table = hash_grid_init(jax.random.key(int(rng.integers(2**31))), c)
    assert table.dtype == c.dtype and table.shape == (6, 4096, 2)
    for _ in range(3):
        x = _points(rng, 200)
        got = jax.jit(hash_grid_encode, static_argnums=2)(table, jnp.asarray(x), c)
        assert got.dtype == jnp.float32 and got.shape == (x.shape[0], c.out_dim)
        np.testing.assert_allclose(got, _encode_np(table, x, c), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("table_dtype", ("float32", "bfloat16"))
def test_table_gradient_matches_scatter_add(rng, impl, backward, table_dtype):
    c = HashGridConfig(**SMALL, table_dtype=table_dtype, implementation=impl, backward=backward, init_scale=1.0)
    table = hash_grid_init(jax.random.key(1), c)
    x = _points(rng, 300)
    cot = rng.normal(size=(x.shape[0], c.out_dim)).astype(np.float32)
    grad = jax.jit(jax.grad(lambda t: jnp.sum(hash_grid_encode(t, jnp.asarray(x), c) * cot)))(table)
    assert grad.dtype == table.dtype
    want = _table_grad_np(table, x, cot, c)
    if table_dtype == "float32":
        np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)
    else:  # float32 accumulation, one final rounding to bf16 (8 bits of mantissa)
        np.testing.assert_allclose(np.asarray(grad, np.float64), want, rtol=2**-8, atol=1e-6)


def test_auto_is_per_level_on_the_cpu(rng):
    auto, per_level = (HashGridConfig(**SMALL, implementation=i, init_scale=1.0) for i in ("auto", "per_level"))
    table = hash_grid_init(jax.random.key(4), auto)
    x = jnp.asarray(_points(rng, 100))
    cot = jnp.asarray(rng.normal(size=(x.shape[0], auto.out_dim)).astype(np.float32))
    value_and_grad = jax.jit(jax.value_and_grad(lambda t, c: jnp.sum(hash_grid_encode(t, x, c) * cot)), static_argnums=1)
    chex.assert_trees_all_equal(value_and_grad(table, auto), value_and_grad(table, per_level))


def test_gradient_wrt_x(rng, x64):
    c = HashGridConfig(**SMALL, init_scale=1.0)
    table = hash_grid_init(jax.random.key(2), c)
    res = np.asarray(c.resolutions, np.float64)
    x = rng.uniform(0.05, 0.95, (400, 3))
    frac = (x[:, None, :] * res[None, :, None]) % 1.0  # (N, L, 3)
    x = x[np.all((frac > 0.02) & (frac < 0.98), axis=(1, 2))][:8]
    assert len(x) >= 3
    # jitted: the finite differences evaluate it many times (eagerly, each operation dispatched on its own)
    check_grads(jax.jit(lambda p: hash_grid_encode(table, p, c)), (jnp.asarray(x),), order=1, modes=("rev",), eps=1e-6)


def test_jit_and_vmap(rng):
    c = HashGridConfig(**SMALL, init_scale=1.0)
    tables = jnp.stack([hash_grid_init(k, c) for k in jax.random.split(jax.random.key(3), 3)])
    x = jnp.asarray(rng.uniform(0, 1, (2, 50, 3)).astype(np.float32))
    enc = jax.jit(hash_grid_encode, static_argnums=2)
    per_case = jax.vmap(enc, in_axes=(0, None, None))(tables, x[0], c)  # K cases (vmapped params)
    per_batch = jax.vmap(enc, in_axes=(None, 0, None))(tables[0], x, c)
    chex.assert_trees_all_close(  # against separate (jitted) calls, one per case and one per point batch
        (per_case, per_batch),
        (jnp.stack([enc(t, x[0], c) for t in tables]), jnp.stack([enc(tables[0], p, c) for p in x])),
        rtol=1e-6, atol=1e-7,
    )
    grad = jax.grad(lambda t, p: jnp.sum(hash_grid_encode(t, p, c) ** 2))
    g = jax.jit(jax.vmap(grad, in_axes=(0, None)))(tables, x[0])
    g0 = jax.jit(grad)(tables[0], x[0])
    chex.assert_trees_all_close(g[0], g0, rtol=1e-5, atol=1e-6)


def test_bad_config_and_input(unchecked):
    with pytest.raises(ValueError, match="table_dtype"):
        HashGridConfig(table_dtype="int8")
    with pytest.raises(ValueError, match="implementation"):
        HashGridConfig(implementation="cuda")
    with pytest.raises(ValueError, match="finest_resolution"):
        HashGridConfig(base_resolution=64, finest_resolution=32)
    with pytest.raises(ValueError, match="log2_table_size"):
        HashGridConfig(log2_table_size=40)
    c = HashGridConfig(**SMALL)
    with pytest.raises(ValueError, match="shape"):
        hash_grid_encode(jnp.zeros((6, 10, 2)), jnp.zeros((4, 3)), c)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        hash_grid_encode(hash_grid_init(jax.random.key(0), c), jnp.zeros((4, 2)), c)


class FrequencyEncodingTest(chex.TestCase):
    @pytest.fixture(autouse=True)
    def _rng(self, rng):
        self.rng = rng

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("_with_input", True), ("_without_input", False))
    def test_matches_numpy_and_vmap(self, include_input):
        c = FrequencyConfig(n_frequencies=4, include_input=include_input)
        x = self.rng.uniform(-1, 1, (20, 3)).astype(np.float32)
        parts = [x] if include_input else []
        for k in range(4):
            parts += [np.sin(2.0**k * np.pi * x), np.cos(2.0**k * np.pi * x)]
        encode = self.variant(frequency_encode, static_argnums=1)
        got = encode(jnp.asarray(x), c)
        chex.assert_shape(got, (20, c.out_dim(3)))
        chex.assert_trees_all_close(got, np.concatenate(parts, axis=1), rtol=1e-5, atol=1e-5)
        vm = jax.vmap(encode, in_axes=(0, None))(jnp.asarray(x).reshape(4, 5, 3), c)
        chex.assert_trees_all_close(vm.reshape(20, -1), got, rtol=1e-6, atol=1e-6)

    def test_bad_config(self):
        with pytest.raises(ValueError, match="n_frequencies"):
            FrequencyConfig(n_frequencies=-1)


def test_default_config_matches_numpy(rng):
    """The NAF / issue-8 configuration itself (16 levels, 2^19 rows, 16 → 2048), float32."""
    c = HashGridConfig(init_scale=1.0)
    table = hash_grid_init(jax.random.key(5), c)
    x = _points(rng, 64)
    got = jax.jit(hash_grid_encode, static_argnums=2)(table, jnp.asarray(x), c)
    np.testing.assert_allclose(got, _encode_np(table, x, c), rtol=1e-5, atol=1e-6)
