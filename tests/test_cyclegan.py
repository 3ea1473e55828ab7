"""The small CycleGAN: its losses fall and its cycle reconstruction improves on a toy domain pair;
the discriminators' gradient is the paper's loss on the updated generators' images; the learning
rate's schedule."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedrf.generative import cyclegan as cg


def _blobs(seed, n, side=16):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] / (side - 1) * 2 - 1
    out = []
    for _ in range(n):
        img = np.full((side, side), -1.0)
        for _ in range(3):
            cx, cy, r, v = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0.2, 0.5), rng.uniform(-0.2, 1)
            img = np.where((x - cx) ** 2 + (y - cy) ** 2 < r**2, v, img)
        out.append(img)
    return np.asarray(out, np.float32)


def test_cyclegan_losses_fall_and_cycle_reconstruction_improves():
    cfg = cg.CycleGANConfig(width=4, n_res=0, batch=4, n_iters=60, lr=2e-3)
    a = _blobs(0, 16)
    b = np.asarray(cg.mr_like(jax.random.key(0), _blobs(1, 16)))
    assert b.min() >= -1 - 1e-6 and b.max() <= 1 + 1e-6 and not np.allclose(np.sort(a.ravel()), np.sort(b.ravel()))
    init = cg.cyclegan_init(jax.random.key(cfg.seed), cfg).params
    params, hist = cg.train_cyclegan(a, b, cfg, steps_per_call=20)
    assert len(hist["cycle"]) == 3 and np.all(np.isfinite(hist["loss"]))
    assert hist["loss"][-1] < hist["loss"][0] and hist["cycle"][-1] < hist["cycle"][0]
    assert hist["cycle"][-1] < 0.7 * hist["cycle"][0]
    rec = cg.translate(params, cg.translate(params, a), direction="b2a")
    assert float(jnp.mean(jnp.abs(rec - a))) < float(jnp.mean(jnp.abs(cg.translate(init, cg.translate(init, a), direction="b2a") - a)))
    with pytest.raises(ValueError, match="direction"):
        cg.translate(params, a, direction="x")
    with pytest.raises(ValueError, match="multiples of 4"):
        cg.train_cyclegan(a[:, :15, :15], b[:, :15, :15], cfg)


def test_discriminator_gradient_is_the_losses_on_the_updated_generators_images():
    """The step's D gradient (Adam's first moment after one step: (1 − β₁) g) equals the gradient of
    ``cyclegan_losses``' ``d_total`` with the generators after their update."""
    cfg = cg.CycleGANConfig(width=2, n_res=0, batch=2, n_iters=4)
    a, b = jnp.asarray(_blobs(2, 2, side=8)), jnp.asarray(_blobs(3, 2, side=8))
    state = cg.cyclegan_init(jax.random.key(0), cfg)
    new, losses = jax.jit(cg.cyclegan_step, static_argnums=3)(state, a, b, cfg)
    discs = {k: state.params[k] for k in ("DA", "DB")}
    gens = {k: new.params[k] for k in ("G", "F")}
    want = jax.jit(jax.grad(lambda d: cg.cyclegan_losses({**gens, **d}, a, b, cfg)["d_total"]))(discs)
    chex.assert_trees_all_close(new.opt_d[0].mu, jax.tree.map(lambda g: 0.5 * g, want), rtol=1e-4, atol=1e-7)
    # the losses reported are those before the step
    before = jax.jit(cg.cyclegan_losses, static_argnums=3)(state.params, a, b, cfg)
    chex.assert_trees_all_close(losses, before, rtol=1e-4, atol=1e-6)


def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    cfg = cg.CycleGANConfig(n_iters=10, lr=1e-3, decay_from=0.5)
    lr = cg._learning_rate(cfg)
    np.testing.assert_allclose([float(lr(i)) for i in (0, 4, 5, 7, 10)], [1e-3, 1e-3, 1e-3, 6e-4, 0.0], atol=1e-9)
    assert float(cg._learning_rate(dataclasses.replace(cfg, decay_from=1.0))(10)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="decay_from"):
        cg.CycleGANConfig(decay_from=1.5)


def test_mr_like_has_one_scale_for_every_set_and_bias():
    """A fixed scale: a slice's contrast does not depend on the other slices of its set, and the
    bias-free image is the remap itself (soft tissue bright, air and bone dark)."""
    ct = jnp.asarray(_blobs(4, 3))
    clean = cg.mr_like(jax.random.key(0), ct, bias_strength=0.0)
    np.testing.assert_allclose(cg.mr_like(jax.random.key(5), ct[:1], bias_strength=0.0), clean[:1], atol=1e-6)
    hu = jnp.asarray([[[-1.0, -0.1, 0.0, 0.8]]])  # air, fat / soft tissue, water, bone (HU / 1000)
    y = np.asarray(cg.mr_like(jax.random.key(0), hu, bias_strength=0.0))[0, 0]
    assert y[0] < -0.99 and y[1] > 0.9 and y[2] > 0.8 and y[3] < -0.4
    biased = cg.mr_like(jax.random.key(1), ct, bias_strength=0.3)
    assert float(jnp.abs(biased - clean).max()) > 0.05 and float(jnp.abs(biased).max()) <= 1.0
