"""The Pallas hash-grid kernel (interpret mode on CPU) equals the XLA reference encoding.

Reference: :func:`jaxmedrf.fields.hash_grid_encode` with ``implementation="level_major"``
(itself tested against a NumPy loop in test_encodings.py). Values, table gradients and
position gradients are compared for float32, bfloat16 and float16 tables.

Tolerances: the kernel and the reference do the same float32 arithmetic in a different
order (sums over 8 corners, and atomic vs segment-sum accumulation of the table gradient),
so values agree to 1e-5 relative and gradients to 1e-5 relative to their largest entry, in
every storage dtype (rows are cast to float32 after the gather in both); the table
gradient of a half table is rounded to bfloat16 / float16 at the end in both, so there
it may differ by one unit in the last place (2^-7 / 2^-10 relative).
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedrf.fields.encodings import HashGridConfig, hash_grid_encode, hash_grid_init
from jaxmedrf.kernels import hashgrid as kernel

# 3 levels: two dense (res 4, 8), one hashed (res 16 > T^(1/3)); 40 points, 2 blocks of 32
# (so the last block is masked); 6 hand-placed points on and beyond the cube's faces.
CFG = HashGridConfig(n_levels=3, features_per_level=2, log2_table_size=10, base_resolution=4,
                     finest_resolution=16, init_scale=1.0)  # fmt: skip
TUNING = kernel.Tuning(block=32, bwd_block=32, replica_rows=512)
GRAD_TOL = {"float32": 1e-5, "bfloat16": 2.0**-7, "float16": 2.0**-10}


def _points(n=40):
    x = jax.random.uniform(jax.random.key(1), (n, 3), jnp.float32)
    edge = jnp.array([[0.0, 1.0, 0.5], [-0.1, 1.2, 0.3], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0],
                      [0.25, 0.5, 0.75], [0.999, 1e-4, 0.5]], jnp.float32)  # fmt: skip
    return x.at[: len(edge)].set(edge)


def _value_and_grads(encode, table, x, r):
    @jax.jit
    def f(table, x, r):
        out, vjp = jax.vjp(encode, table, x)
        return out, *vjp(r)

    out, d_table, d_x = f(table, x, r)
    return np.asarray(out), np.asarray(d_table.astype(jnp.float32)), np.asarray(d_x), d_table.dtype


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_interpret_matches_xla(dtype):
    cfg = dataclasses.replace(CFG, table_dtype=dtype)
    assert cfg.dense_levels == (True, True, False)
    table = hash_grid_init(jax.random.key(2), cfg)
    x = _points()
    r = jax.random.normal(jax.random.key(3), (x.shape[0], cfg.out_dim), jnp.float32)
    ref_cfg = dataclasses.replace(cfg, implementation="level_major", backward="segment_sum")
    ref = _value_and_grads(lambda t, p: hash_grid_encode(t, p, ref_cfg), table, x, r)
    got = _value_and_grads(
        lambda t, p: kernel.hash_grid_encode_pallas(t, p, cfg, tuning=TUNING, interpret=True), table, x, r
    )
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5 * np.abs(ref[0]).max())
    np.testing.assert_allclose(got[1], ref[1], rtol=GRAD_TOL[dtype], atol=1e-5 * np.abs(ref[1]).max())
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-5, atol=1e-5 * np.abs(ref[2]).max())
    assert got[3] == ref[3] == cfg.dtype
    assert np.abs(ref[2]).max() > 0 and np.abs(ref[1]).max() > 0
    # edge semantics: points beyond the cube get no position gradient, points on a face half
    np.testing.assert_array_equal(got[2][1], [0.0, 0.0, ref[2][1, 2]])


def test_interpret_features_1_and_level_groups():
    """F = 1 and the level-group schedules (forward: 2 groups of 2 levels; table gradient: one
    level per program, no replicas), float32."""
    cfg = dataclasses.replace(CFG, features_per_level=1, n_levels=4)
    assert cfg.dense_levels == (True, True, False, False)
    table = hash_grid_init(jax.random.key(4), cfg)
    x = _points(24)
    r = jax.random.normal(jax.random.key(5), (x.shape[0], cfg.out_dim), jnp.float32)
    ref = _value_and_grads(lambda t, p: hash_grid_encode(t, p, cfg), table, x, r)
    tun = TUNING._replace(levels_per_program=2, bwd_levels_per_program=1)
    got = _value_and_grads(
        lambda t, p: kernel.hash_grid_encode_pallas(t, p, cfg, tuning=tun, interpret=True), table, x, r
    )
    for g, e in zip(got[:3], ref[:3]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())


def _ray_points(n_rays=3, n_samples=23):
    """Points in ray order, as a NAF step's samples (consecutive points share coarse cells)."""
    o = jax.random.uniform(jax.random.key(6), (n_rays, 1, 3), jnp.float32, -0.1, 0.3)
    d = jax.random.uniform(jax.random.key(7), (n_rays, 1, 3), jnp.float32, 0.5, 1.0)
    t = jnp.linspace(0.0, 1.2, n_samples)[None, :, None]
    return (o + t * d).reshape(-1, 3)


@pytest.mark.parametrize("levels_per_program", [0, 1])
def test_table_grad_runs_match_xla(levels_per_program):
    """``bwd_run = W``: W consecutive points per lane, equal rows summed before one add. Same
    table gradient as the XLA path on points in ray order (runs of equal rows at every level,
    a masked last lane, replicated dense levels, points beyond the cube)."""
    x = _ray_points()
    assert x.shape[0] % (8 * 4) != 0
    table = hash_grid_init(jax.random.key(2), CFG)
    r = jax.random.normal(jax.random.key(3), (x.shape[0], CFG.out_dim), jnp.float32)
    ref = _value_and_grads(lambda t, p: hash_grid_encode(t, p, CFG), table, x, r)
    tun = TUNING._replace(bwd_block=8, bwd_run=4, bwd_levels_per_program=levels_per_program)
    got = _value_and_grads(lambda t, p: kernel.hash_grid_encode_pallas(t, p, CFG, tuning=tun, interpret=True),
                           table, x, r)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-5 * np.abs(ref[1]).max())
    # the points do repeat rows: consecutive points in one cell of the coarsest level
    cells = np.floor(np.clip(np.asarray(x), 0, 1) * CFG.resolutions[0])
    assert np.mean(np.all(cells[1:] == cells[:-1], axis=1)) > 0.5


def test_replicas_cover_dense_levels_only():
    reps, size = kernel._replicas(CFG, TUNING)  # at most 512 rows of replicas per level
    assert reps == [(4, 125, 0), None, None]  # 729 rows: 1 copy; hashed level: never
    assert size == 4 * 125 * 2
    assert kernel._replicas(CFG, TUNING._replace(replica_rows=1)) == ([None] * 3, 0)
    sizes = [kernel._group_size(CFG, TUNING._replace(levels_per_program=g)) for g in (0, 1, 2, 3, 9)]
    assert sizes == [3, 1, 1, 3, 3]  # largest divisor of L = 3 not above the request


def test_fallback_warns_once_for_unsupported_features(monkeypatch):
    """F = 3: one warning, then the XLA path's exact values (same on CPU for any reason)."""
    monkeypatch.setattr(kernel, "_WARNED", set())
    cfg = dataclasses.replace(CFG, features_per_level=3, implementation="pallas")
    table = hash_grid_init(jax.random.key(6), cfg)
    x = _points(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = hash_grid_encode(table, x, cfg)
        out2 = hash_grid_encode(table, x, cfg)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "features_per_level=3" in msgs[0], msgs
    ref = hash_grid_encode(table, x, dataclasses.replace(cfg, implementation="level_major"))
    np.testing.assert_array_equal(out1, ref)
    np.testing.assert_array_equal(out2, ref)
    assert kernel.pallas_supported(cfg) is not None
    assert "features_per_level" in kernel.pallas_supported(cfg)


def test_cpu_public_path_falls_back_with_gradients(monkeypatch):
    monkeypatch.setattr(kernel, "_WARNED", set())
    cfg = dataclasses.replace(CFG, implementation="pallas")
    table = hash_grid_init(jax.random.key(7), cfg)
    x = _points(8)
    with pytest.warns(UserWarning, match="XLA path"):
        g = jax.grad(lambda t: jnp.sum(hash_grid_encode(t, x, cfg) ** 2))(table)
    ref = jax.grad(lambda t: jnp.sum(hash_grid_encode(t, x, dataclasses.replace(cfg, implementation="level_major")) ** 2))(table)
    np.testing.assert_array_equal(g, ref)


def test_kernel_rejects_bad_input(unchecked):
    table = hash_grid_init(jax.random.key(8), CFG)
    with pytest.raises(ValueError, match="params"):
        kernel.hash_grid_encode_pallas(table[:2], jnp.zeros((4, 3)), CFG, interpret=True)
    with pytest.raises(ValueError, match="x must have shape"):
        kernel.hash_grid_encode_pallas(table, jnp.zeros((4, 2)), CFG, interpret=True)
    assert kernel.hash_grid_encode_pallas(table, jnp.zeros((0, 3)), CFG, interpret=True).shape == (0, 6)


def test_interpret_under_vmap():
    """A batch axis over point sets (Pallas' batching rule), forward values."""
    table = hash_grid_init(jax.random.key(9), CFG)
    xs = jax.random.uniform(jax.random.key(10), (2, 16, 3), jnp.float32)
    got = jax.jit(jax.vmap(lambda p: kernel.hash_grid_encode_pallas(table, p, CFG, tuning=TUNING, interpret=True)))(xs)
    ref = jax.vmap(lambda p: hash_grid_encode(table, p, CFG))(xs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
