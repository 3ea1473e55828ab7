"""The learned denoising prior: DSM training, its file, and its use as a SART / NAF regulariser."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import cli, phantoms
from jaxmedrf.priors import (DenoiserConfig, denoise, dsm_loss, load_prior, prior_from_bytes, prior_to_bytes,
                             red_field_loss, red_step, save_prior, train_prior)

CFG = DenoiserConfig(width=8, depth=3, patch=8, sigmas=(0.05, 0.1, 0.2))


def _geometry(n=16, views=8):
    return jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(24, 24), d_detector=1.6 * 256 / 24,
                        DSD=1500.0, DSO=1000.0, n_views=views)


@pytest.fixture(scope="module")
def truth():
    return np.asarray(phantoms.voxelize(phantoms.shepp_logan(radius=128.0, mu_scale=0.1), _geometry()))


@pytest.fixture(scope="module")
def trained(truth):
    return train_prior(jax.random.key(0), [truth], CFG, steps=100, batch=16, lr=3e-3, trained_on=["sl"])


def test_training_lowers_the_dsm_loss(trained, truth):
    prior, hist = trained
    assert prior.trained_on == ("sl",)
    assert prior.config.mu_scale == pytest.approx(np.percentile(truth, 99.5), rel=1e-5)
    x = jnp.asarray(np.moveaxis(truth / prior.config.mu_scale, 2, 0)[4:12, 4:12, 4:12])
    init = jm.priors.denoiser_init(jax.random.key(0), prior.config)
    keys = [jax.random.key(s) for s in range(4)]
    before = np.mean([float(dsm_loss(k, init, x, prior.config)) for k in keys])
    after = np.mean([float(dsm_loss(k, prior.params, x, prior.config)) for k in keys])
    assert before == pytest.approx(1.0, abs=0.1)  # the last layer starts at 0: ε̂ = 0
    assert after < 0.8 * before
    assert hist["loss"][-1] < hist["loss"][0]


def test_denoiser_removes_noise_and_red_step_moves_towards_it(trained, truth):
    prior, _ = trained
    sigma = 0.1
    noisy = truth + sigma * prior.config.mu_scale * np.asarray(jax.random.normal(jax.random.key(5), truth.shape))
    err = lambda v: float(np.linalg.norm(np.asarray(v) - truth))  # noqa: E731
    d = np.moveaxis(np.asarray(denoise(prior, np.moveaxis(noisy, 2, 0), sigma)), 0, 2)
    assert err(d) < 0.9 * err(noisy)  # 100 training steps: about 0.81
    full, half = red_step(prior, weight=1.0, sigma=sigma), red_step(prior, weight=0.5, sigma=sigma)
    np.testing.assert_allclose(full(jnp.asarray(noisy)), d, atol=1e-6)
    np.testing.assert_allclose(half(jnp.asarray(noisy)), 0.5 * (noisy + d), atol=1e-6)
    assert err(half(jnp.asarray(noisy))) < err(noisy)


def test_sart_with_prior_step(trained, truth):
    prior, _ = trained
    g = _geometry()
    proj = phantoms.analytic_projections(phantoms.shepp_logan(radius=128.0, mu_scale=0.1), g)
    calls, red = [], red_step(prior, weight=0.5, sigma=0.1)

    def step(x):
        calls.append(1)
        return red(x)

    plain = jm.sart(proj, g, n_iters=2, progress=False)
    reg = jm.sart(proj, g, n_iters=2, progress=False, prior_step=step)
    assert len(calls) == 2 and np.all(np.isfinite(reg.volume)) and np.min(reg.volume) >= 0
    assert not np.allclose(plain.volume, reg.volume)
    neg = jm.sart(proj, g, n_iters=1, progress=False, prior_step=lambda x: x - 1.0)
    assert np.min(neg.volume) == 0.0  # nonneg clips after the prior step too


def test_red_field_loss_gradient_is_red(trained):
    """On a nearest-voxel field the loss's gradient at the patch voxels is 2w/N (x − D_σ(x))/s²."""
    prior, _ = trained
    n, patch, w, sigma = 16, 8, 0.3, 0.1
    d = jnp.full((3,), 2.0)
    lo, hi = -n * d / 2, n * d / 2
    vol = jnp.asarray(np.random.default_rng(0).random((n, n, n)), jnp.float32) * prior.config.mu_scale

    def field_of(v):
        def f(p):
            i = jnp.clip(jnp.floor((p - lo) / d).astype(jnp.int32), 0, n - 1)
            return v[i[:, 0], i[:, 1], i[:, 2]]
        return f

    loss = red_field_loss(prior, weight=w, sigma=sigma, patch=patch)
    key = jax.random.key(2)
    grad = jax.grad(lambda v: loss(key, field_of(v), lo, hi, d))(vol)
    touched = np.argwhere(np.asarray(grad) != 0)
    assert len(touched) == patch * patch and len(np.unique(touched[:, 2])) == 1  # one axial patch
    x0, y0, z0 = touched.min(0)
    x = vol[x0:x0 + patch, y0:y0 + patch, z0]
    expect = 2 * w / patch**2 * (x - denoise(prior, x, sigma)) / prior.config.mu_scale**2
    np.testing.assert_allclose(grad[x0:x0 + patch, y0:y0 + patch, z0], expect, rtol=1e-4, atol=1e-6)


def test_naf_with_regularizer_runs_and_acts(trained):
    prior, _ = trained
    g = _geometry(views=6)
    proj = phantoms.analytic_projections(phantoms.shepp_logan(radius=128.0, mu_scale=0.1), g)
    enc = dataclasses.replace(jm.NAFConfig().field.encoding, log2_table_size=10, n_levels=4, finest_resolution=32)
    cfg = dataclasses.replace(jm.NAFConfig(), field=dataclasses.replace(jm.NAFConfig().field, encoding=enc),
                              n_iters=25, steps_per_call=25, warmup=0, batch_rays=256, n_samples=16,
                              grid_supersample=1)
    plain = jm.train_naf(proj, g, cfg, progress=False)
    red = jm.train_naf(proj, g, cfg, progress=False, regularizer=red_field_loss(prior, weight=1e-2, patch=8))
    assert np.all(np.isfinite(red.volume)) and np.any(np.asarray(plain.volume) != np.asarray(red.volume))
    # the hook's sign: a loss that rewards μ at random points raises μ
    high = jm.train_naf(proj, g, cfg, progress=False,
                        regularizer=lambda k, f, lo, hi, d: -1e3 * jnp.mean(f(lo + (hi - lo) * jax.random.uniform(k, (64, 3)))))
    assert float(np.mean(high.volume)) > 1.2 * float(np.mean(plain.volume))


def test_file_round_trip(trained, tmp_path):
    prior, _ = trained
    back = prior_from_bytes(prior_to_bytes(prior))
    assert back.config == prior.config and back.trained_on == prior.trained_on
    jax.tree_util.tree_map(np.testing.assert_array_equal, back.params, prior.params)
    path = save_prior(tmp_path / "p.msgpack", prior)
    x = jnp.ones((2, 8, 8)) * 0.01
    np.testing.assert_array_equal(denoise(load_prior(path), x, 0.1), denoise(prior, x, 0.1))


def _bad_files(prior):
    from flax import serialization

    good = prior_to_bytes(prior)
    tree = serialization.msgpack_restore(good)
    wrong_cfg = dict(tree, config=json.dumps({**json.loads(tree["config"]), "width": 9}))
    return {
        "random bytes": np.random.default_rng(0).bytes(200),
        "truncated": good[: len(good) // 2],
        "foreign msgpack": serialization.msgpack_serialize({"a": np.zeros(3)}),
        "newer version": serialization.msgpack_serialize(dict(tree, version=99)),
        "config and weights disagree": serialization.msgpack_serialize(wrong_cfg),
        "unknown config key": serialization.msgpack_serialize(
            dict(tree, config=json.dumps({**json.loads(tree["config"]), "extra": 1}))),
    }


def test_bad_file_refused_with_one_line(trained, tmp_path, capsys):
    prior, _ = trained
    for what, data in _bad_files(prior).items():
        p = tmp_path / "bad.msgpack"
        p.write_bytes(data)
        with pytest.raises(ValueError, match="not a jaxmedrf denoising prior") as e:
            load_prior(p)
        assert "\n" not in str(e.value), what
    with pytest.raises(FileNotFoundError):
        load_prior(tmp_path / "missing.msgpack")


def _npz(path, vol, g=None, proj=None):
    kw = {"volume": np.asarray(vol, np.float32)}
    if g is not None:
        kw.update(geometry=np.asarray(g.to_json()), projections=np.asarray(proj, np.float32))
    np.savez(path, **kw)
    return str(path)


def test_cli_train_prior_reconstruct_and_refusals(truth, tmp_path, capsys):
    vols = [_npz(tmp_path / f"v{i}.npz", np.roll(truth, 3 * i, axis=0)) for i in range(3)]
    out = tmp_path / "prior.msgpack"
    rc = cli.main(["train-prior", *vols, "--out", str(out), "--steps", "50", "--batch", "8", "--width", "8",
                   "--depth", "3", "--patch", "8", "--folds", "3", "--fold", "1"])
    assert rc == 0, capsys.readouterr().err
    prior = load_prior(out)
    assert prior.trained_on == ("v0", "v2") and prior.config.width == 8
    assert "held out (fold 1/3): ['v1']" in capsys.readouterr().out
    g = _geometry()  # test_sart_with_prior_step's geometry: the same compiled SART and denoiser
    scan = _npz(tmp_path / "scan.npz", truth, g, phantoms.analytic_projections(phantoms.shepp_logan(radius=128.0), g))
    rec = tmp_path / "rec.npz"
    rc = cli.main(["reconstruct", scan, "--out", str(rec), "--method", "sart", "--iters", "2", "--prior", str(out),
                   "--prior-weight", "0.5", "--no-progress", "--no-png"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "rec.json").read_text())["prior"] == str(out)
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"not a prior")
    for args in (["--method", "sart", "--prior", str(bad)], ["--method", "fdk", "--prior", str(out)],
                 ["--method", "sart", "--prior-weight", "0.5"]):
        capsys.readouterr()
        rc = cli.main(["reconstruct", scan, "--out", str(tmp_path / "x.npz"), "--no-progress", *args])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "error" in err, (args, err)
        assert not (tmp_path / "x.npz").exists()
    rc = cli.main(["train-prior", *vols, "--out", str(tmp_path / "y.msgpack"), "--folds", "3"])
    assert rc == 2 and not (tmp_path / "y.msgpack").exists()


def test_cli_evaluate_folds(truth, tmp_path, capsys):
    ref, rec = tmp_path / "ref", tmp_path / "rec"
    ref.mkdir()
    rec.mkdir()
    rng = np.random.default_rng(1)
    for p in range(3):
        for v in (10, 25):
            _npz(ref / f"p{p}__{v}v.npz", truth)
            _npz(rec / f"p{p}__{v}v.npz", truth + rng.normal(0, 0.002 * (p + 1), truth.shape))
    js = tmp_path / "e.json"
    rc = cli.main(["evaluate", str(rec), "--reference", str(ref), "--folds", "3", "--out-json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count(" fold ") == 3 and "3 folds by volume" in out
    folds = json.loads(js.read_text())["results"]["rec"]["folds"]
    tested = [c for f in folds["per_fold"] for c in f["cases"]]
    assert sorted(tested) == sorted(p.name for p in ref.glob("*.npz"))  # each case in exactly one fold
    for f in folds["per_fold"]:
        assert len({c.split("__")[0] for c in f["cases"]}) == 1  # a volume's cases stay together
    psnrs = [f["mean"]["psnr"] for f in folds["per_fold"]]
    assert folds["mean"]["psnr"] == pytest.approx(np.mean(psnrs))
    assert folds["std"]["psnr"] == pytest.approx(np.std(psnrs, ddof=1))
    assert cli.main(["evaluate", str(rec / "p0__10v.npz"), "--reference", str(ref / "p0__10v.npz"), "--folds", "2"]) == 2
