"""SMORE-style self-supervised through-plane network, anisotropic INR grid, multi-stack protocol."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedrf.cli import main
from jaxmedrf.mri import (
    INRConfig, SMOREConfig, SliceStack, apply_smore, brain_phantom, evaluate_interpolation, fit_smore, interpolate,
    make_stack,
)
from jaxmedrf.mri.inr import axis_steps
from jaxmedrf.mri.phantom import phantom_affine
from jaxmedrf.mri.smore import cnn_apply, cnn_init, degrade_matrix

TINY = SMOREConfig(features=8, depth=3, n_iters=100, batch=8, lr=5e-3, patch=24, n_patches=256, steps_per_call=50, chunk=8)


@pytest.mark.parametrize("ratio,width,profile,phase", [(4.0, 1.0, "box", 0.0), (4.0, 4.0, "box", 2.0),
                                                        (2.5, 2.5, "gaussian", 1.25)])
def test_degrade_matrix_keeps_lines_and_samples(ratio, width, profile, phase):
    n = 161
    d, valid = degrade_matrix(n, ratio, width, profile, phase)
    line = 0.3 + 0.05 * np.arange(n)
    inner = valid & (np.arange(n) > 50) & (np.arange(n) < n - 50)  # away from the ends (blur, spline boundary)
    np.testing.assert_allclose((d @ line)[inner], line[inner], atol=1e-5)  # the profile and the spline keep lines
    assert valid[int(np.ceil(phase))] and not valid[-1] or (n - 1 - phase) % ratio == 0
    if width == 1.0 and phase == 0.0:  # point samples: the kept positions are exact for any signal
        x = np.random.default_rng(0).normal(size=n)
        np.testing.assert_allclose((d @ x)[::4], x[::4], atol=1e-6)
    with pytest.raises(ValueError, match="ratio"):
        degrade_matrix(n, 1.0, 1.0, "box", 0.0)


def test_cnn_starts_at_zero_jit_vmap_and_grads(x64):
    p = [(w.astype(jnp.float64), b.astype(jnp.float64)) for w, b in cnn_init(jax.random.key(0), 4, 3)]
    x = jax.random.normal(jax.random.key(1), (2, 9, 7), jnp.float64)
    assert float(jnp.abs(cnn_apply(p, x)).max()) == 0.0  # the last layer starts at zero: output = cubic input
    p = [(w + 0.1 * jax.random.normal(jax.random.key(i), w.shape), b) for i, (w, b) in enumerate(p)]
    np.testing.assert_allclose(jax.jit(cnn_apply)(p, x), cnn_apply(p, x), atol=1e-12)
    np.testing.assert_allclose(jax.vmap(lambda im: cnn_apply(p, im[None])[0])(x), cnn_apply(p, x), atol=1e-12)
    # a 3x3 kernel: the response to one pixel stays within a (2 depth + 1) square
    imp = jnp.zeros((1, 15, 15)).at[0, 7, 7].set(1.0)
    lin = [(w, jnp.zeros_like(b)) for w, b in p]
    r = cnn_apply(lin, imp) - cnn_apply(lin, jnp.zeros_like(imp))
    mask = np.ones((15, 15), bool)
    mask[4:11, 4:11] = False
    assert float(jnp.abs(r[0][mask]).max()) == 0.0
    from jax.test_util import check_grads

    check_grads(lambda w: cnn_apply([(w, p[0][1])] + p[1:], x[:1, :5, :5]).sum(), (p[0][0],), order=1, modes=["rev"])


def test_smore_trains_below_cubic_and_restores_the_grid():
    v, a = brain_phantom(None, (40, 40, 29), 1.0)
    s = make_stack(v, a, 2, 4)
    res = fit_smore(jax.random.key(0), s, TINY)
    assert res.ratio == 4.0 and res.history["loss"][-1] < 0.95 * res.history["baseline_mse"]
    native = apply_smore(res, s)
    assert native.shape == (40, 40, 29) and np.isfinite(native).all()
    out, aff = interpolate(s, "smore", target_spacing=2.0, smore_config=TINY, key=jax.random.key(0))
    assert out.shape == (40, 40, 15)
    np.testing.assert_allclose(out, native[:, :, ::2], atol=1e-4)  # the same key: the same network
    np.testing.assert_allclose(aff[:3, 2], [0, 0, 2.0])
    cub, _ = interpolate(s, "cubic", shape=v.shape, affine=a)
    removed = [i for i in range(29) if i % 4]
    err = lambda r: np.mean((r[:, :, removed] - v[:, :, removed]) ** 2)  # noqa: E731
    assert err(native) < err(cub)  # measured: MSE ~20 % below cubic on the removed slices


def test_smore_bad_input():
    v, a = brain_phantom(None, (12, 12, 8), 1.0)
    with pytest.raises(ValueError, match="must exceed the in-plane"):
        fit_smore(jax.random.key(0), SliceStack(v, a, 2), TINY)
    bad = v.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_smore(jax.random.key(0), SliceStack(bad, phantom_affine(v.shape, (1, 1, 3)), 2), TINY)
    with pytest.raises(ValueError, match="depth"):
        SMOREConfig(depth=1)


def test_axis_steps_follow_the_stacks():
    v = np.zeros((8, 8, 5), np.float32)
    ax = SliceStack(v, phantom_affine(v.shape, (1.0, 1.0, 4.0)), 2)
    np.testing.assert_allclose(axis_steps([ax]), [1, 1, 4])
    cor = SliceStack(np.zeros((8, 3, 20)), phantom_affine((8, 3, 20), (1.0, 4.0, 1.0)), 1)
    np.testing.assert_allclose(axis_steps([ax, cor]), [1, 1, 1])


def test_protocol_with_orthogonal_stacks_and_cli_smore(tmp_path, capsys):
    from jaxmedrf.io import save_volume

    v, a = brain_phantom(None, (16, 16, 13), 2.0)
    from test_mri import TINY_FIELD  # plumbing: a small hash grid, a few steps

    res = evaluate_interpolation(v, a, 4, ("inr", "cubic"), stack_axes=(2, 1, 0),
                                 inr_config=INRConfig(n_iters=10, batch=1024, steps_per_call=10, field=TINY_FIELD))
    assert res["stack_axes"] == [2, 1, 0] and np.isfinite(res["methods"]["inr"]["removed"]["psnr_mean"])
    with pytest.raises(ValueError, match="stack_axes"):
        evaluate_interpolation(v, a, 4, ("cubic",), stack_axes=(1, 2))
    src = save_volume(v, tmp_path / "in.npz", affine=a)
    assert main(["interpolate", str(src), "--evaluate", "2", "--method", "smore", "--smore-iters", "5", "--quiet",
                 "--report", str(tmp_path / "r")]) == 0
    assert "smore" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "r" / "interpolation.json").read_text())["methods"]) == {"smore", "cubic", "linear"}


def test_fit_smore_warns_when_it_does_not_learn():
    """A fit whose loss stays at cubic interpolation's says so (its result is cubic interpolation)."""
    v, a = brain_phantom(None, (24, 24, 13), 2.0)
    with pytest.warns(RuntimeWarning, match="did not learn"):
        fit_smore(jax.random.key(0), make_stack(v, a, 2, 4), SMOREConfig(n_iters=20, lr=1e-12, lr_final=1e-12,
                                                                         steps_per_call=10))
