"""The Lineformer ray field and MLG ray sampling (SAX-NeRF) inside NAF's training.

* the field: shapes, a NumPy reference of one line attention layer (float64, rtol 1e-6), μ of a
  sample depends on its own segment only, padding, jit/vmap, gradients (check_grads, float64);
* the volume is the field on z-columns of voxels, or the mean over x-, y- and z-columns;
* MLG: every index on the detector, whole windows inside the mask, global pixels inside the
  mask and outside the windows;
* a short fit lowers the loss; the CLI round trip (``--field lineformer``) with a resume.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import phantoms
from jaxmedrf.cli import main
from jaxmedrf.fields import HashGridConfig
from jaxmedrf.fields.lineformer import (LineformerConfig, line_attention, lineformer_apply, lineformer_init,
                                        lineformer_query_grid)
from jaxmedrf.recon.mlg import MLGConfig, mlg_counts, mlg_indices
from jaxmedrf.recon.naf import NAFConfig, train_naf

ENC = HashGridConfig(n_levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)
CFG = LineformerConfig(encoding=ENC, width=8, segment_length=4, heads=2, head_dim=3, ffn_mult=2)
LO, HI = jnp.full(3, -10.0), jnp.full(3, 10.0)

# One compiled program each (run op by op, every small op of the field compiles on its own); the
# eager path itself is compared with these in test_jit_and_vmap_agree.
_init = jax.jit(lineformer_init, static_argnums=1)
apply = jax.jit(lineformer_apply, static_argnames="config")


def init(key, config):
    """``lineformer_init`` (float32 parameters), compiled once, also inside a test with x64 on."""
    with jax.enable_x64(False):
        return _init(key, config)


def _points(key, rays=5, samples=8):
    return jax.random.uniform(key, (rays, samples, 3), minval=-9.0, maxval=9.0)


def _attention_np(b, x, heads):
    """Slow float64 reference of one pre-norm layer (SAX-NeRF's PreNorm(LineAttention) + PreNorm(FFN))."""
    from math import erf

    f = lambda t: np.asarray(t, np.float64)  # noqa: E731
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        s = x[n]

        def ln(p, t):
            mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
            return (t - mu) / np.sqrt(var + 1e-5) * f(p["g"]) + f(p["b"])

        z = ln(b["ln1"], s)
        q, kv = z @ f(b["q"]["w"]), z @ f(b["kv"]["w"])
        hd = q.shape[1]
        k, v = kv[:, :hd], kv[:, hd:]
        d = hd // heads
        o = np.zeros_like(q)
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            sim = q[:, sl] @ k[:, sl].T / np.sqrt(d) + f(b["pos"][h])
            att = np.exp(sim - sim.max(1, keepdims=True))
            att /= att.sum(1, keepdims=True)
            o[:, sl] = att @ v[:, sl]
        s = s + o @ f(b["out"]["w"]) + f(b["out"]["b"])
        w1, w2, w3 = (f(p["w"]) for p in b["ffn"])
        out[n] = s + gelu(gelu(ln(b["ln2"], s) @ w1) @ w2) @ w3
    return out


def test_line_attention_matches_a_numpy_reference(x64):
    params = init(jax.random.key(0), CFG)
    block = jax.tree_util.tree_map(lambda t: t.astype(jnp.float64), params["layers"][1]["blocks"][0])
    x = np.random.default_rng(0).normal(size=(3, 4, 8))
    got = jax.jit(line_attention, static_argnames="heads")(block, jnp.asarray(x), heads=2)
    np.testing.assert_allclose(np.asarray(got), _attention_np(block, x, 2), rtol=1e-6, atol=1e-9)


def test_shapes_segments_padding_and_box():
    params = init(jax.random.key(1), CFG)
    x = _points(jax.random.key(2))
    mu = apply(params, x, CFG, lo=LO, hi=HI)
    assert mu.shape == (5, 8) and mu.dtype == jnp.float32 and bool(jnp.all(mu >= 0))
    # μ of a sample depends on its own segment (samples 0-3 | 4-7), not on the other one
    moved = x.at[:, 6].add(1.0)
    mu2 = apply(params, moved, CFG, lo=LO, hi=HI)
    np.testing.assert_array_equal(mu2[:, :4], mu[:, :4])
    assert float(jnp.max(jnp.abs(mu2[:, 4:6] - mu[:, 4:6]))) > 0  # ... and on the others in it
    # 6 samples: padded to 8 by repeating the last one; the first segment is unchanged
    mu6 = apply(params, x[:, :6], CFG, lo=LO, hi=HI)
    assert mu6.shape == (5, 6)
    np.testing.assert_allclose(mu6[:, :4], mu[:, :4], rtol=1e-6)
    # outside the box: 0
    assert float(jnp.abs(apply(params, x + 30.0, CFG, lo=LO, hi=HI)).max()) == 0.0


def test_jit_and_vmap_agree():
    params = init(jax.random.key(3), CFG)
    x = _points(jax.random.key(4), rays=6)
    eager = lineformer_apply(params, x, CFG, lo=LO, hi=HI)
    jitted = jax.jit(lambda p, x: lineformer_apply(p, x, CFG, lo=LO, hi=HI))(params, x)
    vmapped = jax.jit(jax.vmap(lambda r: lineformer_apply(params, r[None], CFG, lo=LO, hi=HI)[0]))(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-7)


def test_gradients_match_finite_differences(x64):
    from jax.test_util import check_grads

    params = jax.tree_util.tree_map(lambda t: t.astype(jnp.float64), init(jax.random.key(5), CFG))
    x = _points(jax.random.key(6), rays=2).astype(jnp.float64)
    block = params["layers"][1]["blocks"][0]

    def f(pos, wq, w_out):
        b = {**block, "pos": pos, "q": {"w": wq}, "ffn": [*block["ffn"][:2], {"w": w_out}]}
        layers = [params["layers"][0], {"blocks": [b]}, *params["layers"][2:]]
        return lineformer_apply({**params, "layers": layers}, x, CFG, lo=LO, hi=HI)

    # f compiled: the same function and gradients, one program instead of every op on its own
    check_grads(jax.jit(f), (block["pos"], block["q"]["w"], block["ffn"][2]["w"]), order=1, modes=["rev"], eps=1e-5)


def test_volume_is_the_field_on_voxel_columns():
    """z-columns by default (SAX-NeRF's); ``query_axes=(0, 1, 2)``: the mean of x-, y- and z-columns."""
    import dataclasses

    g = jm.cone_beam(n_voxel=(3, 4, 8), d_voxel=2.0, n_detector=(8, 8), d_detector=4.0, n_views=2)
    lo, hi = jm.volume_box(g)
    params = init(jax.random.key(7), CFG)
    params = {**params, "encoding": params["encoding"] * 1e4}  # features of size 1: μ varies along a segment
    vol = lineformer_query_grid(params, CFG, g, chunk=16)  # 2 columns a chunk
    xs, ys, zs = jm.voxel_centers(g)
    along = [jnp.stack(jnp.broadcast_arrays(xs, ys[1], zs[5]), -1), jnp.stack(jnp.broadcast_arrays(xs[2], ys, zs[5]), -1),
             jnp.stack(jnp.broadcast_arrays(xs[2], ys[1], zs), -1)]  # the columns through voxel (2, 1, 5)
    mu = [np.asarray(apply(params, c[None], CFG, lo=lo, hi=hi)[0]) for c in along]
    np.testing.assert_allclose(vol[2, 1], mu[2], rtol=1e-5, atol=1e-7)
    assert vol.shape == (3, 4, 8)
    mean = lineformer_query_grid(params, dataclasses.replace(CFG, query_axes=(0, 1, 2)), g, chunk=16)
    np.testing.assert_allclose(mean[2, 1, 5], (mu[0][2] + mu[1][1] + mu[2][5]) / 3, rtol=1e-5, atol=1e-7)
    assert np.abs(mean - vol).max() > 1e-2 * np.abs(vol).max()  # the columns differ (μ depends on its segment)
    with pytest.raises(ValueError, match="query_axes"):
        LineformerConfig(query_axes=(3,))


#: MLG on 3 views of a 20 × 27 detector, 96 rays a step over 2 views; compiled once for all masks.
MLG_CFG = MLGConfig(window=4, local_fraction=0.5, views_per_step=2)
mlg = jax.jit(mlg_indices, static_argnames=("n_rays", "config"))


@pytest.mark.parametrize("seed", range(4))
def test_mlg_indices_on_the_detector_windows_and_mask(seed):
    rng = np.random.default_rng(seed)
    views, nv, nu, w = 3, 20, 27, 4
    mask = np.zeros((views, nv, nu), bool)
    mask[:, 3:17, 5 + seed:22] = True  # the object's shadow
    mask &= rng.random(mask.shape) > 0.02  # with a few holes
    cfg = MLG_CFG
    n_rays = 96
    idx = np.asarray(mlg(jax.random.key(seed), jnp.asarray(mask), n_rays=n_rays, config=cfg))
    assert idx.shape == (n_rays,) and idx.min() >= 0 and idx.max() < views * nv * nu
    n_win, n_glob = mlg_counts(cfg, n_rays, (nv, nu))
    assert n_win == 2 and n_win * w * w + n_glob == n_rays // 2  # 24 of 48 rays local: 1.5 → 2 windows of 16
    for part in idx.reshape(2, -1):
        view = part // (nv * nu)
        assert (view == view[0]).all()  # one view per part
        row, col = (part % (nv * nu)) // nu, part % nu
        local, glob = slice(0, n_win * w * w), slice(n_win * w * w, None)
        win = (row[local] // w) * (nu // w) + col[local] // w
        for k in range(n_win):  # whole windows, each inside the mask, all different
            block = win[k * w * w:(k + 1) * w * w]
            assert (block == block[0]).all()
        assert len(set(win.tolist())) == n_win
        assert mask[view, row, col].all()  # every ray inside the mask
        inside_grid = (row[glob] < nv // w * w) & (col[glob] < nu // w * w)
        glob_win = np.where(inside_grid, (row[glob] // w) * (nu // w) + col[glob] // w, -1)
        assert not np.isin(glob_win, win).any()  # global rays outside the chosen windows
        assert len(set(part[glob].tolist())) == n_glob  # without replacement


def test_mlg_with_an_empty_mask_samples_the_whole_detector():
    idx = np.asarray(mlg(jax.random.key(0), jnp.zeros((3, 20, 27), bool), n_rays=96, config=MLG_CFG))
    assert idx.min() >= 0 and idx.max() < 3 * 20 * 27


def _scan(n=16, views=12, det=24):
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det, n_views=views)
    vol = phantoms.voxelize(phantoms.shepp_logan(radius=128.0, mu_scale=1.0), g)
    return g, vol, np.asarray(jm.project(vol, g))


def test_short_fit_lowers_the_loss():
    g, vol, proj = _scan()
    c = NAFConfig(field=LineformerConfig(encoding=ENC, width=16, segment_length=4, heads=2, head_dim=4), n_iters=60,
                  batch_rays=256, n_samples=24, steps_per_call=20, warmup=5, ray_sampling=MLGConfig(window=4))
    res = train_naf(proj, g, c, progress=False)
    losses = res.history["loss"]
    assert res.volume.shape == g.n_voxel and bool(jnp.all(res.volume >= 0))
    assert losses[-1] < 0.3 * losses[0], losses
    assert res.history["field_implementation"] == "xla"


def test_config_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="no attention"):
        LineformerConfig(depth=3, skips=(1,))
    with pytest.raises(ValueError, match="segment_length"):
        LineformerConfig(segment_length=0)
    with pytest.raises(ValueError, match="occupancy"):
        NAFConfig(field=LineformerConfig(), occupancy_resolution=16)
    with pytest.raises(ValueError, match="views_per_step"):
        NAFConfig(batch_rays=100, ray_sampling=MLGConfig(views_per_step=3))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "sim.npz"
    assert main(["simulate", "--n-voxel", "16", "--n-views", "12", "--n-detector", "20", "20", "--mu-scale", "1",
                 "--no-png", "--out", str(out)]) == 0
    return out


def test_cli_round_trip_with_resume(sim, tmp_path, capsys):
    common = [str(sim), "--method", "naf", "--field", "lineformer", "--segment-length", "4", "--attention-heads", "2",
              "--batch-rays", "128", "--n-samples", "16", "--log2-table-size", "10", "--hash-levels", "4",
              "--hash-finest-resolution", "32", "--ray-sampling", "mlg", "--mlg-window", "4", "--grid-supersample", "1", "--devices", "1",
              "--query-axes", "xyz",
              "--no-progress", "--no-png",
              "--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "25"]
    out = tmp_path / "lf.npz"
    assert main(["reconstruct", *common, "--iters", "50", "--out", str(out)]) == 0
    metrics = json.loads((tmp_path / "lf.json").read_text())
    assert metrics["field"] == "lineformer" and metrics["ray_sampling"] == "mlg" and metrics["steps"] == 50
    assert np.isfinite(metrics["psnr3d"])
    with np.load(out) as z:
        assert z["volume"].shape == (16, 16, 16)
    capsys.readouterr()
    assert main(["reconstruct", *common, "--iters", "75", "--resume", "--out", str(tmp_path / "lf2.npz")]) == 0
    assert "resumed from" in capsys.readouterr().out
    # the checkpoint folder loads back as a Lineformer field
    params, config, _ = jm.load_field(tmp_path / "ck")
    assert isinstance(config.field, LineformerConfig) and config.ray_sampling == MLGConfig(window=4)
    assert config.field.query_axes == (0, 1, 2)
    # a setting the config refuses: exit 2, nothing written
    bad = tmp_path / "bad.npz"
    assert main(["reconstruct", str(sim), "--method", "naf", "--field", "lineformer", "--segment-length", "0",
                 "--out", str(bad)]) == 2
    assert not bad.exists()
