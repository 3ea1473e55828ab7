"""Phantoms (analytic line integrals, voxelisation) and photon noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import noise, phantoms
from jaxmedrf.rays import Rays


def test_sphere_chord_is_exact():
    ph = phantoms.Phantom(centers=np.array([[1.0, 2.0, 3.0]]), semi_axes=np.array([[5.0, 5.0, 5.0]]),
                          phi=np.zeros(1), values=np.array([0.5]))
    # Segments at distance h from the centre, long enough to cross the sphere: chord 2√(25 − h²).
    h = np.array([0.0, 1.0, 3.0, 4.9, 5.1])
    o = np.stack([np.full_like(h, -20.0) + 1, 2 + h, np.full_like(h, 3.0)], -1)
    d = np.tile([40.0, 0.0, 0.0], (5, 1))
    line_integrals = jax.jit(phantoms.line_integrals)  # one program, not one per primitive
    got = line_integrals(ph, Rays(jnp.asarray(o), jnp.asarray(d)))
    expect = 0.5 * 2 * np.sqrt(np.clip(25 - h**2, 0, None))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    # A segment ending inside the sphere (cone beam stops at the detector): half chord.
    half = line_integrals(ph, Rays(jnp.array([[-19.0, 2.0, 3.0]]), jnp.array([[20.0, 0.0, 0.0]])))
    np.testing.assert_allclose(half, [0.5 * 5.0], rtol=1e-5)


def test_line_integrals_match_quadrature_of_the_indicator(rng):
    ph = phantoms.shepp_logan(radius=50.0, mu_scale=1.0)
    o = rng.uniform(-80, 80, (20, 3))
    e = rng.uniform(-30, 30, (20, 3)) * np.array([1, 1, 1])
    o[:, 0] = -90.0
    e[:, 0] = 90.0
    d = e - o
    exact = np.asarray(phantoms.line_integrals(ph, Rays(jnp.asarray(o), jnp.asarray(d))))
    t = (np.arange(200_000) + 0.5) / 200_000

    @jax.jit
    def mu_at(pts):  # μ at the points of one ray (a ray at a time: 24 MB, not 480 MB, of unit coordinates)
        q = phantoms._to_unit(ph, pts)
        return jnp.sum(jnp.where(jnp.sum(q * q, -1) <= 1, jnp.asarray(ph.values), 0.0), -1)

    mu = np.stack([np.asarray(mu_at(jnp.asarray(o[i] + t[:, None] * d[i]))) for i in range(len(o))])
    quad = mu.mean(1) * np.linalg.norm(d, axis=1)
    assert np.count_nonzero(exact) > 10
    np.testing.assert_allclose(exact, quad, atol=2e-3 * np.abs(exact).max())


def test_shepp_logan_values_and_voxelisation():
    g = jm.cone_beam(n_voxel=(32, 32, 32), d_voxel=8.0, n_views=1)
    vol = np.asarray(phantoms.voxelize(phantoms.shepp_logan(radius=128.0, mu_scale=1.0), g, supersample=1))
    assert vol.dtype == np.float32 and vol.shape == (32, 32, 32)
    assert vol.min() >= -1e-6 and abs(vol.max() - 1.0) < 1e-6
    assert abs(vol[16, 16, 16] - 0.2) < 1e-6  # brain-like region
    # mu_scale 0.1: brain = water.
    brain = np.asarray(phantoms.voxelize(phantoms.shepp_logan(radius=128.0), g, supersample=1))[16, 16, 16]
    assert abs(brain - phantoms.MU_WATER) < 1e-7
    # Supersampled voxels average the indicator: values between the extremes at edges.
    fine = np.asarray(phantoms.voxelize(phantoms.spheres(radius=100.0), g, supersample=4))
    assert np.any((fine > 0.001) & (fine < 0.019))
    with pytest.raises(ValueError, match="phantom"):
        phantoms.get_phantom("head", radius=1.0)


def test_poisson_noise_statistics():
    p = jnp.full((200, 200), 2.0)
    i0 = 1e4
    noisy = noise.poisson_noise(jax.random.key(0), p, i0=i0)
    # Var[-log(N/I0)] ≈ 1 / E[N] = e^p / I0 (delta method).
    assert abs(float(noisy.mean()) - 2.0) < 3e-3
    np.testing.assert_allclose(float(noisy.var()), np.exp(2.0) / i0, rtol=0.05)
    again = noise.poisson_noise(jax.random.key(0), p, i0=i0)
    np.testing.assert_array_equal(noisy, again)
    other = noise.poisson_noise(jax.random.key(1), p, i0=i0)
    assert not np.array_equal(noisy, other)
    with_e = noise.poisson_noise(jax.random.key(0), p, i0=i0, sigma_e=50.0)
    assert float(with_e.var()) > float(noisy.var())
    with pytest.raises(ValueError, match="i0"):
        noise.poisson_noise(jax.random.key(0), p, i0=0.0)
    with pytest.raises(ValueError, match="sigma_e"):
        noise.poisson_noise(jax.random.key(0), p, i0=1.0, sigma_e=-1.0)
