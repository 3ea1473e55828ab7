"""MLP against NumPy; the attenuation field's box, sign, transformations and grid query.

Tolerances: float32 MLP vs a float64 NumPy forward, rtol/atol 1e-5; bfloat16 matmuls (float32
accumulation) rtol/atol 2e-2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf.fields import (
    FieldConfig,
    FrequencyConfig,
    HashGridConfig,
    field_apply,
    field_init,
    make_field_fn,
    mlp_apply,
    mlp_init,
    query_grid,
)
from jaxmedrf.render import render_rays

SMALL_GRID = HashGridConfig(n_levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32, init_scale=0.5)


def _geometry():
    return jm.cone_beam(
        n_voxel=(12, 10, 8), d_voxel=2.0, n_detector=(8, 8), d_detector=4.0, DSD=300.0, DSO=200.0,
        n_views=3, arc=2 * np.pi, off_detector=(0, 0), off_origin=(1.0, -2.0, 0.5),
    )  # fmt: skip


def _mlp_np(params, h, skips, act, out_act):
    h = h.astype(np.float64)
    h_in = h
    for i, (w, b) in enumerate(params):
        if i in skips:
            h = np.concatenate([h_in, h], axis=-1)
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        h = act(h) if i < len(params) - 1 else out_act(h)
    return h


@pytest.mark.parametrize("compute_dtype", (None, jnp.bfloat16))
def test_mlp_matches_numpy(rng, compute_dtype):
    sizes, skips = (7, 16, 16, 16, 2), (2,)
    params = mlp_init(jax.random.key(0), sizes, skips=skips)
    assert [w.shape for w, _ in params] == [(7, 16), (16, 16), (23, 16), (16, 2)]
    h = rng.normal(size=(33, 7)).astype(np.float32)
    got = jax.jit(
        lambda p, x: mlp_apply(
            p, x, activation=jax.nn.relu, out_activation=jax.nn.softplus, skips=skips, compute_dtype=compute_dtype
        )
    )(params, jnp.asarray(h))
    want = _mlp_np(params, h, skips, lambda v: np.maximum(v, 0), lambda v: np.log1p(np.exp(v)))
    tol = 1e-5 if compute_dtype is None else 2e-2
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # no output activation, leaky default check, vmap over a batch axis
    lin = mlp_apply(params, jnp.asarray(h), skips=skips)
    vm = jax.vmap(lambda x: mlp_apply(params, x, skips=skips))(jnp.asarray(h).reshape(3, 11, 7))
    np.testing.assert_allclose(vm.reshape(33, 2), lin, rtol=1e-6, atol=1e-6)


def test_mlp_bad_input():
    with pytest.raises(ValueError, match="sizes"):
        mlp_init(jax.random.key(0), (4,))
    with pytest.raises(ValueError, match="skip"):
        mlp_init(jax.random.key(0), (4, 8, 1), skips=(2,))
    params = mlp_init(jax.random.key(0), (4, 8, 1))
    with pytest.raises(ValueError, match="expects 4 inputs"):
        mlp_apply(params, jnp.zeros((2, 5)))


@pytest.mark.parametrize(
    "config",
    [
        FieldConfig(encoding=SMALL_GRID),
        FieldConfig(encoding=SMALL_GRID, out_activation="softplus", mu_scale=0.02, compute_dtype="bfloat16"),
        FieldConfig(encoding=FrequencyConfig(n_frequencies=3), activation="relu", skips=(), mu_scale=0.5),
    ],
)
def test_field_box_sign_jit(rng, config):
    g = _geometry()
    lo, hi = jm.volume_box(g)
    params = field_init(jax.random.key(1), config)
    lo_np, hi_np = np.asarray(lo), np.asarray(hi)
    inside = rng.uniform(lo_np, hi_np, (64, 3)).astype(np.float32)
    outside = inside.copy()
    outside[:32, 0] = hi_np[0] + rng.uniform(0.1, 50, 32)
    outside[32:, 2] = lo_np[2] - rng.uniform(0.1, 50, 32)
    f = jax.jit(lambda p, x: field_apply(p, x, config, lo=lo, hi=hi))
    mu_in, mu_out = f(params, jnp.asarray(inside)), f(params, jnp.asarray(outside))
    assert mu_in.shape == (64,) and mu_in.dtype == jnp.float32
    assert np.all(np.asarray(mu_in) > 0)
    if config.out_activation == "sigmoid":
        assert np.all(np.asarray(mu_in) <= config.mu_scale)
    np.testing.assert_array_equal(mu_out, 0.0)
    np.testing.assert_allclose(mu_in, field_apply(params, jnp.asarray(inside), config, lo=lo, hi=hi), rtol=1e-6)
    # gradients w.r.t. all parameters are finite
    grads = jax.grad(lambda p: jnp.sum(f(p, jnp.asarray(inside))))(params)
    assert all(np.all(np.isfinite(np.asarray(leaf, np.float32))) for leaf in jax.tree.leaves(grads))


def test_field_vmap_over_cases(rng):
    """K independent fields (leading case axis) in one vmap equal K separate calls."""
    config = FieldConfig(encoding=SMALL_GRID)
    g = _geometry()
    lo, hi = jm.volume_box(g)
    stacked = jax.vmap(lambda k: field_init(k, config))(jax.random.split(jax.random.key(2), 3))
    x = jnp.asarray(rng.uniform(np.asarray(lo), np.asarray(hi), (40, 3)).astype(np.float32))
    one = lambda p: field_apply(p, x, config, lo=lo, hi=hi)  # noqa: E731
    mu = jax.jit(jax.vmap(one))(stacked)  # jitted (eagerly each operation compiles on its own: 3x slower)
    for k in range(3):
        p_k = jax.tree.map(lambda a: a[k], stacked)
        np.testing.assert_allclose(mu[k], jax.jit(one)(p_k), rtol=1e-6, atol=1e-7)


def test_query_grid_equals_direct_apply():
    config = FieldConfig(encoding=SMALL_GRID)
    g = _geometry()
    params = field_init(jax.random.key(3), config)
    vol = query_grid(params, config, g, chunk=97)  # 960 voxels: the last chunk is padded
    assert vol.shape == g.n_voxel and vol.dtype == jnp.float32
    xs, ys, zs = jm.voxel_centers(g)
    pts = jnp.stack(jnp.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
    lo, hi = jm.volume_box(g)
    want = jax.jit(lambda p, x: field_apply(p, x, config, lo=lo, hi=hi))(params, pts).reshape(g.n_voxel)
    np.testing.assert_allclose(vol, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(query_grid(params, config, g, chunk=10**6), want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="chunk"):
        query_grid(params, config, g, chunk=0)


def test_make_field_fn_renders_and_differentiates():
    config = FieldConfig(encoding=SMALL_GRID, mu_scale=0.02)
    g = _geometry()
    lo, hi = jm.volume_box(g)
    params = field_init(jax.random.key(4), config)
    rays = jm.geometry_rays(g)
    flat = jax.tree.map(lambda a: a.reshape(-1, 3)[:50], rays)

    def loss(p):
        return jnp.sum(render_rays(make_field_fn(p, config, lo, hi), flat, lo, hi, n_samples=16) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and value > 0
    assert np.abs(np.asarray(grads["encoding"])).sum() > 0


def test_field_config_bad_values(unchecked):
    with pytest.raises(ValueError, match="out_activation"):
        FieldConfig(out_activation="tanh")
    with pytest.raises(ValueError, match="mu_scale"):
        FieldConfig(mu_scale=-1.0)
    with pytest.raises(ValueError, match="skips"):
        FieldConfig(depth=2, skips=(2,))
    with pytest.raises(ValueError, match="encoding"):
        FieldConfig(encoding="hash")
    assert FieldConfig().sizes == (32, 32, 32, 32, 1)
