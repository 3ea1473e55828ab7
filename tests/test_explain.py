"""jaxmedrf.explain: provenance against column sums and a NumPy voxel walk, field provenance
against dense Jacobians, zero spread for identical ensemble members, Integrated Gradients'
completeness, Grad-CAM against a NumPy reference, and the CLI round trip.

Tolerances (float32): provenance parts vs Aᵀ1 1e-5 of the largest value; vs the float64
voxel walk 1e-5; field provenance vs dense Jacobians 1e-4; IG completeness 1e-4 of |f(x) − f(x')|
(Gauss–Legendre, 32 points); Grad-CAM 1e-5.
"""

import itertools
import json

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from test_projectors import voxel_walk_reference

import jaxmedrf as jm
from jaxmedrf import explain as E
from jaxmedrf.fields import FieldConfig, HashGridConfig
from jaxmedrf.recon.naf import NAFConfig, field_volume, train_naf


def tiny_geometry(rng, n_views=3):
    return jm.cone_beam(n_voxel=(5, 4, 3), d_voxel=(1.0, 1.2, 0.9), n_detector=(4, 5), d_detector=(1.9, 2.1),
                        DSD=40.0, DSO=25.0, n_views=n_views, off_detector=(0.3, -0.2),
                        angles=rng.uniform(0, 2 * np.pi, n_views))


# ------------------------------------------------------------------------------ provenance
def test_provenance_matches_a_numpy_voxel_walk_and_sums_to_the_column_sums(rng):
    """P_v = A_vᵀ 1: each voxel's intersection length with view v's rays, against the float64
    Amanatides–Woo walk of tests/test_projectors.py on one-hot volumes; the parts by view and by
    detector tile sum to the projector's column sums Aᵀ 1 (its backprojection of ones)."""
    g = jm.cone_beam(n_voxel=(4, 3, 3), d_voxel=(1.0, 1.2, 0.9), n_detector=(3, 4), d_detector=(1.9, 2.1),
                     DSD=40.0, DSO=25.0, n_views=3, off_detector=(0.3, -0.2), angles=rng.uniform(0, 2 * np.pi, 3))
    rays = jm.geometry_rays(g)
    origins, directions = np.asarray(rays.origins, np.float64), np.asarray(rays.directions)  # host arrays, indexed per ray
    lo = np.asarray(jm.volume_box(g)[0])
    ref = np.zeros((g.n_views, *g.n_voxel))
    for idx in itertools.product(*map(range, g.n_voxel)):
        onehot = np.zeros(g.n_voxel)
        onehot[idx] = 1.0
        for v, r, c in itertools.product(*map(range, g.projection_shape)):
            o = origins[v, r, c]
            ref[(v, *idx)] += voxel_walk_reference(onehot, lo, g.d_voxel, o, o + directions[v, r, c])
    pr = E.provenance(g, regions=E.detector_tiles(g.n_detector, (2, 2)))  # one group per view
    assert pr.views.shape == (3, *g.n_voxel) and pr.regions.shape == (4, *g.n_voxel)
    np.testing.assert_allclose(pr.views, ref, rtol=1e-5, atol=1e-5 * ref.max())
    s1, s2 = ref.sum(0), (ref**2).sum(0)
    eff = np.where(s2 > 0, s1**2 / np.where(s2 > 0, s2, 1), 0)
    np.testing.assert_allclose(pr.effective_views, eff, rtol=1e-5, atol=1e-6)

    col = np.asarray(jm.backproject(jnp.ones(g.projection_shape), g), np.float64)  # Aᵀ 1
    tol = 1e-5 * col.max()
    for parts in (pr.views, pr.regions):
        np.testing.assert_allclose(np.asarray(parts, np.float64).sum(0), col, atol=tol)
    np.testing.assert_allclose(pr.total, col, atol=tol)
    frac = np.asarray(E.provenance_fractions(pr.regions))
    np.testing.assert_allclose(frac.sum(0)[col > 0], 1.0, rtol=1e-6)
    assert np.all(frac >= 0) and np.count_nonzero(ref) > 20 and np.count_nonzero(frac.max(0) < 1) > 5
    np.testing.assert_array_equal(E.view_sectors(5, 2), [0, 0, 0, 1, 1])


def test_field_provenance_of_the_voxel_field_is_the_backprojection(rng):
    """μ_θ = θ on the voxel grid, rendered by the projector: J_μ J_Rᵀ 1 = Aᵀ 1."""
    g = tiny_geometry(rng)
    theta = jnp.asarray(rng.uniform(0, 1, g.n_voxel), jnp.float32)
    kw = dict(view_groups=np.array([0, 1, 1]), regions=E.detector_tiles(g.n_detector, (1, 2)))
    render = lambda p, v: jm.project(p, E.single_view(g, v))[0]  # noqa: E731
    fp = E.field_provenance(render, lambda p: p, theta, g, **kw)
    vp = E.provenance(g, **kw)
    for a, b in zip(fp, vp):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(vp.total.max()))
    mask = np.ones(g.n_voxel, np.float32)
    mask[:2] = 0.0  # the kernel through the other parameters only: here, those voxels
    masked = E.field_provenance(render, lambda p: p, theta, g, tangent_mask=mask, **kw)
    np.testing.assert_allclose(masked.regions, vp.regions * mask, rtol=1e-5, atol=1e-5 * float(vp.total.max()))


def test_naf_provenance_matches_dense_jacobians(rng):
    """P_{v,r} = J_μ J_{R_v}ᵀ 1_r with both Jacobians built densely (jacrev) and multiplied in NumPy."""
    g = jm.cone_beam(n_voxel=(4, 4, 4), d_voxel=8.0, n_detector=(3, 4), d_detector=16.0, DSD=400.0, DSO=250.0,
                     n_views=2)
    field = FieldConfig(encoding=HashGridConfig(n_levels=2, log2_table_size=5, base_resolution=2, finest_resolution=4),
                        width=8, depth=2, skips=(), out_activation="softplus")
    cfg = NAFConfig(field=field, n_iters=1, n_samples=6, grid_supersample=1).for_geometry(g)
    params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.standard_normal(a.shape), a.dtype),
                          jm.fields.field_init(jax.random.key(0), field))
    tiles = E.detector_tiles(g.n_detector, (1, 2))
    pr = E.naf_provenance(params, cfg, g, regions=tiles, chunk_rays=5, parameters="encoding")

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    vol = lambda f: field_volume(unravel(f), cfg, g).ravel()  # noqa: E731
    j_vol = np.asarray(jax.jit(jax.jacrev(vol))(flat), np.float64)  # (voxels, P)
    render = lambda f, v: jm.render_projections(unravel(f), cfg, g, E.single_view(g, v))[0].ravel()  # noqa: E731
    j_render = jax.jit(jax.jacrev(render))
    table = np.asarray(jax.flatten_util.ravel_pytree(  # through the hash table only
        {"encoding": jax.tree.map(jnp.ones_like, params["encoding"]),
         "mlp": jax.tree.map(jnp.zeros_like, params["mlp"])})[0], np.float64)
    ref = np.zeros((g.n_views, 2, j_vol.shape[0]))
    for v in range(g.n_views):
        j_r = np.asarray(j_render(flat, v), np.float64)  # (pixels, P)
        for r in range(2):
            ref[v, r] = j_vol @ (table * (j_r.T @ (tiles.ravel() == r)))
    shape = (-1, *g.n_voxel)
    tol = 1e-4 * np.abs(ref).max()
    np.testing.assert_allclose(pr.views, ref.sum(1).reshape(shape), atol=tol)
    np.testing.assert_allclose(pr.regions, ref.sum(0).reshape(shape), atol=tol)
    np.testing.assert_allclose(pr.total, ref.sum((0, 1)).reshape(g.n_voxel), atol=tol)
    assert np.abs(ref).max() > 0


# ----------------------------------------------------------------------------- uncertainty
@pytest.mark.slow  # a NAF training step compiles (most of this file's time)
def test_identical_members_have_zero_spread_and_different_keys_do_not(rng):
    # test_naf.py's data and its stacked-cases configuration: the same compiled step as its 3-case test
    from test_naf import CASES, cfg, scan

    g, _, proj = scan()
    k = jax.random.key(3)
    keys = jnp.stack([k, k, jax.random.key(4)])  # members 0 and 1 identical
    res = train_naf(np.stack([proj] * 3), g, cfg(**CASES), case_keys=keys, progress=False)
    std_same = np.asarray(E.ensemble_std(res.volume[:2]))
    assert np.all(std_same == 0.0)
    std_all = np.asarray(E.ensemble_std(res.volume))
    assert std_all.max() > 0
    np.testing.assert_allclose(std_all, np.std(np.asarray(res.volume, np.float64), 0), rtol=1e-4, atol=1e-7)


def test_ensemble_std_matches_numpy(rng):
    m = rng.normal(5.0, 1e-3, (4, 3, 5)).astype(np.float32)  # a large mean: the shifted form keeps the digits
    np.testing.assert_allclose(E.ensemble_std(m), np.std(m.astype(np.float64), 0), rtol=2e-3)
    assert np.all(np.asarray(E.ensemble_std(np.repeat(m[:1], 3, 0))) == 0.0)


# ----------------------------------------------------------------------------- attribution
def conv_classifier(rng, c1=3, c2=4, stride=1, act=jax.nn.relu):
    """A tiny 2-layer 3D conv 'classifier': features = relu(conv(relu(conv(x)))) (SAME, 3³
    kernels, channels last); head = dense(relu(dense(global mean))) → one logit."""
    w1 = rng.normal(0, 0.5, (3, 3, 3, 1, c1)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (3, 3, 3, c1, c2)).astype(np.float32)
    d1 = rng.normal(0, 1.0, (c2, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 3).astype(np.float32)
    d2 = rng.normal(0, 1.0, 3).astype(np.float32)

    def conv(x, w, s):
        dn = ("NDHWC", "DHWIO", "NDHWC")
        return jax.lax.conv_general_dilated(x[None], w, (s,) * 3, "SAME", dimension_numbers=dn)[0]

    def features(x):
        return act(conv(act(conv(x[..., None], w1, 1)), w2, stride))

    def head(a):
        return jnp.dot(act(jnp.mean(a, (0, 1, 2)) @ d1 + b1), d2)

    return features, head, (w1, w2, d1, b1, d2)


def numpy_conv_same(x, w):
    """3D correlation, stride 1, zero padding 1 (SAME for 3³ kernels), channels last."""
    pad = np.pad(x, ((1, 1),) * 3 + ((0, 0),))
    out = np.zeros((*x.shape[:3], w.shape[-1]))
    for i, j, k in itertools.product(*map(range, x.shape[:3])):
        out[i, j, k] = np.einsum("abcI,abcIO->O", pad[i:i + 3, j:j + 3, k:k + 3], w)
    return out


def test_grad_cam_matches_a_numpy_reference(rng):
    features, head, (w1, w2, d1, b1, d2) = conv_classifier(rng)
    x = rng.uniform(0, 1, (6, 5, 4)).astype(np.float32)
    cam = E.grad_cam(features, head, x)
    a = np.maximum(numpy_conv_same(np.maximum(numpy_conv_same(x[..., None].astype(np.float64), w1), 0), w2), 0)
    hidden = a.mean((0, 1, 2)) @ d1 + b1
    dy_dg = d1 @ (d2 * (hidden > 0))  # ∂y/∂(global mean)
    alpha = dy_dg / a[..., 0].size  # = mean over positions of ∂y/∂A
    ref = np.maximum(np.einsum("xyzc,c->xyz", a, alpha), 0)
    np.testing.assert_allclose(cam, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert np.count_nonzero(ref) > 0 and np.asarray(jax.jit(lambda v: E.grad_cam(features, head, v))(x)).shape == x.shape
    coarse = conv_classifier(rng, stride=2)  # a coarser feature map: resized to the input
    assert E.grad_cam(coarse[0], coarse[1], x).shape == x.shape


def test_volume_grad_cam_is_block_gradient_times_input(rng):
    x = rng.uniform(0, 1, (5, 4, 3)).astype(np.float32)
    w = rng.normal(0, 1, x.shape).astype(np.float32)
    f = lambda v: jnp.sum(w * v**2)  # noqa: E731  gradient 2 w x
    g = 2 * w * x
    np.testing.assert_allclose(E.volume_grad_cam(f, x, block=1), np.maximum(g * x, 0), rtol=1e-6)
    ref = np.zeros_like(x)
    for b in itertools.product(range(3), range(2), range(2)):
        sl = tuple(slice(2 * i, 2 * i + 2) for i in b)
        ref[sl] = max(g[sl].mean() * x[sl].mean(), 0)
    np.testing.assert_allclose(E.volume_grad_cam(f, x, block=2), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(E.gradient_x_input(f, x), g * x, rtol=1e-6)


def test_integrated_gradients_completeness_over_seeds(rng):
    """Σ IG = f(x) − f(x') (Sundararajan et al.'s completeness axiom) to 1e-4 relative with 32
    Gauss–Legendre points, for a smooth nonlinear conv classifier (softplus), over several seeds
    and baselines (with ReLUs the integrand has kinks and the quadrature converges slowly)."""
    for _ in range(5):
        features, head, _ = conv_classifier(rng, act=jax.nn.softplus)
        f = lambda v: head(features(v)) + jnp.sum(jnp.tanh(v) ** 2)  # noqa: E731
        x = rng.uniform(0, 1, (5, 4, 4)).astype(np.float32)
        base = None if rng.uniform() < 0.5 else rng.uniform(0, 0.2, x.shape).astype(np.float32)
        ig = E.integrated_gradients(f, x, baseline=base, n_steps=32)
        diff = float(f(x)) - float(f(jnp.zeros_like(x) if base is None else base))
        assert abs(float(np.sum(np.asarray(ig), dtype=np.float64)) - diff) <= 1e-4 * abs(diff) + 1e-6, (float(np.sum(ig)), diff)
    # the rules converge as stated: the trapezoid's gap falls with more points
    gaps = [abs(float(np.sum(np.asarray(E.integrated_gradients(f, x, n_steps=n, rule="trapezoid")), dtype=np.float64))
                - (float(f(x)) - float(f(jnp.zeros_like(x))))) for n in (3, 24)]
    assert gaps[1] < gaps[0]


def test_integrated_gradients_of_a_linear_function_is_gradient_times_input(rng):
    w = rng.normal(0, 1, (4, 6)).astype(np.float32)
    x = rng.normal(0, 1, (4, 6)).astype(np.float32)
    f = lambda v: jnp.sum(w * v)  # noqa: E731
    for rule in E.IG_RULES:
        np.testing.assert_allclose(E.integrated_gradients(f, x, n_steps=4, rule=rule), w * x, rtol=1e-5)
    with pytest.raises(ValueError, match="scalar"):
        E.integrated_gradients(lambda v: v, x)


# -------------------------------------------------------------------------------------- CLI
def test_cli_round_trip_writes_nifti_png_json(tmp_path, rng, capsys, monkeypatch):
    nib = pytest.importorskip("nibabel")
    from jaxmedrf.cli import main
    from jaxmedrf.io.scan import save_scan

    g = jm.cone_beam(n_voxel=(8, 8, 6), d_voxel=4.0, n_detector=(8, 10), d_detector=6.0, n_views=4)
    vol = np.asarray(jm.voxelize(jm.shepp_logan(radius=16.0, mu_scale=1.0), g), np.float32)
    scan = tmp_path / "sim.npz"
    save_scan(scan, np.asarray(jm.project(vol, g)), g, volume=vol)

    out = tmp_path / "prov"
    assert main(["explain", "provenance", str(scan), "--view-sectors", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sum_check"]["views_vs_total_max_rel"] < 1e-5
    cov = np.asarray(nib.load(str(out / "coverage.nii.gz")).dataobj)  # Aᵀ1: the library test checks its values
    assert cov.shape == g.n_voxel and np.isclose(cov.max(), summary["maps"]["coverage"]["max"]) and cov.max() > 0
    assert (out / "prov.png").stat().st_size > 1000 and (out / "view_sector_1.nii.gz").exists()

    out = tmp_path / "attr"
    assert main(["explain", "attribute", str(scan), "--target", "region-mean", "--box", "2", "2", "1", "6", "6", "5",
                 "--method", "ig", "--steps", "8", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert abs(s["completeness_gap"]) <= 1e-5 * abs(s["f_input"]) + 1e-7
    attr = np.asarray(nib.load(str(out / "attribution.nii.gz")).dataobj)
    assert attr.shape == g.n_voxel and np.all(attr[:2] == 0) and (out / "attr.png").exists()

    # Grad-CAM of a user's model split in two, imported from the current folder as module:function
    (tmp_path / "usermodel.py").write_text(
        "import jax.numpy as jnp\n"
        "def features(v):\n    return jnp.stack([v, v ** 2], -1)\n"
        "def head(a):\n    return jnp.sum(a[..., 1]) - jnp.mean(a[..., 0]) * 50.0\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cam"
    assert main(["explain", "attribute", str(scan), "--method", "gradcam", "--features", "usermodel:features",
                 "--head", "usermodel:head", "--out", str(out)]) == 0
    a = np.stack([vol, vol**2], -1)
    alpha = np.array([-50.0 / vol.size, 1.0])  # spatial means of ∂head/∂A
    cam = np.asarray(nib.load(str(out / "attribution.nii.gz")).dataobj)
    ref = np.maximum(a @ alpha, 0)
    np.testing.assert_allclose(cam, ref, rtol=1e-5, atol=1e-5 * ref.max())

    capsys.readouterr()
    bad = tmp_path / "bad"
    for argv in (["--target", "region-mean", "--box", "0", "0", "0", "9", "9", "9"], ["--target", "nosuchmodule:f"],
                 ["--target", "registration", "--view", "7"]):
        assert main(["explain", "attribute", str(scan), *argv, "--out", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("jaxmedrf explain: error:"), err
        assert not bad.exists()
