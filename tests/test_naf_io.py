"""A trained field read back from its checkpoint folder, and its DRRs along any geometry."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

import jaxmedrf as jm
from jaxmedrf.cli import main
from jaxmedrf.recon.naf import NAFConfig, train_naf
from jaxmedrf.recon.naf_io import load_field, naf_config_from_dict, render_projections
from test_naf import SMALL_FIELD, scan


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("naf") / "ck"
    g, vol, proj = scan(n=16, views=12, det=20)
    cfg = NAFConfig(field=SMALL_FIELD, n_iters=60, batch_rays=256, n_samples=24, n_importance=8, steps_per_call=20, warmup=5)
    res = train_naf(proj, g, cfg, progress=False, checkpoint_dir=root, checkpoint_every=60)
    return root, g, res


def test_config_round_trip():
    cfg = NAFConfig(field=SMALL_FIELD, n_samples=40, n_importance=16, tv_weight=0.1)
    assert naf_config_from_dict(json.loads(cfg.to_json())) == cfg
    freq = NAFConfig(field=jm.fields.FieldConfig(encoding=jm.fields.FrequencyConfig(n_frequencies=4)))
    assert naf_config_from_dict(json.loads(freq.to_json())) == freq


def test_load_field_returns_the_trained_parameters(trained):
    root, g, res = trained
    params, cfg, g0 = load_field(root)
    assert g0.to_json() == g.to_json() and cfg.field.mu_scale == pytest.approx(res.history["mu_scale"])
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(res.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_field_drrs_match_drrs_of_its_voxel_grid(trained):
    """Integrating the field along rays ≈ projecting the field sampled on the voxel grid."""
    root, g, res = trained
    params, cfg, g0 = load_field(root)
    drr = np.asarray(jax.jit(lambda p: render_projections(p, cfg, g0, g, chunk_rays=1000))(params))
    ref = np.asarray(jm.project(res.volume, g))
    assert drr.shape == g.projection_shape
    rel = np.linalg.norm(drr - ref) / np.linalg.norm(ref)
    assert rel < 0.05, rel  # stated: within 5 % (sampling and voxelisation differ)


def test_render_cli_draws_the_field(trained, tmp_path, capsys):
    root, _, _ = trained
    gif = tmp_path / "field.gif"
    assert main(["render", str(root), "--out", str(gif), "--n-frames", "3", "--size", "12", "--chunk-rays", "200"]) == 0
    assert "of the field" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames == 3 and im.size == (12, 12)
    assert main(["render", str(tmp_path), "--out", str(gif)]) == 2  # a folder that is no checkpoint
