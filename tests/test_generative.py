"""The generative field (GRAF + MedNeRF's discriminator): its steps, resume, inversion, CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf.generative import data as gdata, graf

GEO = jm.cone_beam(n_voxel=(16, 16, 16), d_voxel=4.0, n_detector=(16, 16), d_detector=8.0, n_views=8)
CFG = graf.GRAFConfig(z_shape=8, z_app=4, hidden=32, depth=2, patch=8, batch=4, n_samples=16, d_width=8, n_iters=4,
                      steps_per_call=2)
SPHERES = [(20, 0, 0), (12, 12, -6), (16, -12, 8), (24, 6, 10)]  # radius, x, z (mm)


def _images():
    x, y, z = (np.asarray(a)[:, None, None] for a in jm.voxel_centers(GEO))
    x, y, z = np.broadcast_arrays(x, y.reshape(1, -1, 1), z.reshape(1, 1, -1))
    vols = [(0.02 * ((x - cx) ** 2 + y**2 + (z - cz) ** 2 < r**2)).astype(np.float32) for r, cx, cz in SPHERES]
    return np.stack([np.asarray(jm.project(v, GEO)) for v in vols])


@pytest.fixture(scope="module")
def images():
    return _images()


@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "straight"
    model, history = graf.train_generative(images, GEO, CFG, out_dir=root, progress=False)
    return root, model, history


def test_discriminator_and_generator_steps_lower_their_losses(images):
    state = graf.gan_init(jax.random.key(0), CFG)
    k_real, k_fake, k_g = jax.random.split(jax.random.key(1), 3)
    peak, mu_scale = float(images.max()), 0.02

    @jax.jit  # one program: eagerly, each operation of the renderer compiled on its own
    def patches(images, g_params):
        real = graf.normalise(graf.sample_real_patches(k_real, images, patch=CFG.patch, min_scale=CFG.min_scale,
                                                       batch=CFG.batch), peak)
        return real, graf.fake_patches(k_fake, g_params, GEO, CFG, mu_scale=mu_scale, peak=peak)

    real, fake = patches(jnp.asarray(images), state.g_params)
    assert real.shape == fake.shape == (CFG.batch, CFG.patch, CFG.patch)
    d_step = jax.jit(lambda s: graf.d_step(s, real, fake, CFG))
    g_step = jax.jit(lambda s: graf.g_step(k_g, s, GEO, CFG, mu_scale=mu_scale, peak=peak))
    d_losses, g_losses = [], []  # each step reports the loss of the parameters it starts from
    for _ in range(4):
        state, m = d_step(state)
        d_losses.append(float(m["d_loss"]))
    for _ in range(4):
        state, m = g_step(state)
        g_losses.append(float(m["g_loss"]))
    assert np.all(np.isfinite(d_losses + g_losses))
    assert d_losses[-1] < d_losses[0] and g_losses[-1] < g_losses[0]


def test_resume_continues_exactly(images, trained, tmp_path):
    root, straight, history = trained
    assert (root / "step_00000004").is_dir() and json.loads((root / "model.json").read_text())["cases"] == 4
    assert len(history["d_loss"]) == 2 and all(np.isfinite(history["g_loss"]))
    part = tmp_path / "resumed"
    graf.train_generative(images, GEO, CFG, out_dir=part, stop_after=2, progress=False)
    assert (part / "step_00000002").is_dir() and not (part / "step_00000004").exists()
    logs = []
    resumed, _ = graf.train_generative(images, GEO, CFG, out_dir=part, resume=True, progress=False, log=logs.append)
    assert "at step 2" in logs[0]
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.g_params, straight.g_params)
    loaded = graf.load_generator(part)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.g_params, straight.g_params)
    assert loaded.config == CFG and loaded.peak == pytest.approx(straight.peak)
    with pytest.raises(ValueError, match="other settings"):
        graf.train_generative(images[:2], GEO, CFG, out_dir=part, resume=True, progress=False)


def test_invert_explains_a_training_drr_better_than_the_mean_image(images, trained):
    _, model, _ = trained
    target = images[1, 2]
    res = graf.invert(jax.random.key(3), target, 2, model, n_steps=20, n_restarts=1, finetune_steps=150,
                      resolution=16)
    assert res.history["finetune_fit"][-1] < res.history["code_final"]
    view = graf.render_views(res.g_params, res.z_shape, res.z_app, model, [2])[0]
    err = float(np.mean((np.asarray(view) - target) ** 2))
    mean_err = float(np.mean((images.mean((0, 1)) - target) ** 2))
    assert err < mean_err
    vol = graf.generator_volume(res.g_params, res.z_shape, res.z_app, model)
    assert vol.shape == GEO.n_voxel and bool(jnp.all(vol >= 0))


def test_drr_sets_round_trip_through_pngs(images, tmp_path):
    from jaxmedrf.io.drr import export_drr_pngs

    for i in range(2):
        export_drr_pngs(images[i], GEO, tmp_path / f"set{i}")
    got, geo = gdata.load_drr_sets([tmp_path / "set0", tmp_path / "set1"])
    assert got.shape == (2, *GEO.projection_shape) and geo.n_detector == GEO.n_detector
    np.testing.assert_allclose(got, images[:2], atol=images.max() / 2**15)
    other = GEO.replace(DSO=900.0)
    export_drr_pngs(images[2], other, tmp_path / "other")
    with pytest.raises(ValueError, match="another geometry"):
        gdata.load_drr_sets([tmp_path / "set0", tmp_path / "other"])


def test_augment_volume_keeps_grid_and_varies(images):
    v = np.zeros((12, 12, 6), np.float32)
    v[3:8, 4:9, 1:5] = 0.02
    a, b = gdata.augment_volume(0, v), gdata.augment_volume(1, v)
    assert a.shape == b.shape == v.shape and a.min() >= 0
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, gdata.augment_volume(0, v))


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    from jaxmedrf.cli import main

    assert main(["generate", "train", str(tmp_path / "nothing"), "--out", str(tmp_path / "g")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["generate", "train", str(tmp_path), "--out", str(tmp_path / "g"), "--patch", "12"]) == 2
    assert "--patch" in capsys.readouterr().err
    assert main(["generate", "invert", str(tmp_path / "x.png"), "--model", str(tmp_path), "--out",
                 str(tmp_path / "v.npz")]) == 2
    assert "model.json" in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and not (tmp_path / "v.npz").exists()


def test_cli_flags_default_to_the_config():
    from jaxmedrf.cli import _parser
    from jaxmedrf.cli._config_args import build_configs

    argv = ["generate", "train", "drr/", "--out", "gen/"]
    assert build_configs(_parser(argv).parse_args(argv)).graf_config == graf.GRAFConfig()
    args = build_configs(_parser(argv + ["--patch", "16", "--r1", "5"]).parse_args(argv + ["--patch", "16", "--r1", "5"]))
    assert args.graf_config == graf.GRAFConfig(patch=16, r1_weight=5.0)
