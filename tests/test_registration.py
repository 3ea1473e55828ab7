"""Registration: losses vs NumPy references, pose gradients vs finite differences, recovery of
a known pose, multi-start vmap == sequential runs, error measures computed by hand."""

import contextlib
import dataclasses
import functools
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import jaxmedrf as jm
from jaxmedrf import pose as P
from jaxmedrf import registration as R


def blobs(n: int, d: float) -> np.ndarray:
    """An asymmetric phantom: an ellipsoid body with four spheres of other attenuation (mm⁻¹)."""
    x = (np.arange(n) - (n - 1) / 2) * d
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r = n * d / 2
    v = 0.02 * ((X / (0.9 * r)) ** 2 + (Y / (0.75 * r)) ** 2 + (Z / (0.95 * r)) ** 2 < 1)
    for c, rad, val in [((0.3, 0.2, 0.1), 0.25, 0.03), ((-0.35, -0.1, 0.3), 0.18, 0.04),
                        ((0.0, -0.3, -0.4), 0.2, -0.01), ((-0.1, 0.35, -0.2), 0.12, 0.05)]:
        v = v + val * (((X - c[0] * r) ** 2 + (Y - c[1] * r) ** 2 + (Z - c[2] * r) ** 2) < (rad * r) ** 2)
    return v.astype(np.float32)


N, D = 32, 4.0
GEOM = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=D, n_detector=(32, 32), d_detector=8.0, DSD=800.0, DSO=400.0, n_views=1)
CFG = R.RegistrationConfig(levels=(2, 1), iterations=120, loss="ncc")
# Compiling a registration program takes 15-20 s on a CPU and running one well under a second, so
# the multi-start tests share three programs: MULTI with two starts (and a progress function), MULTI
# with one start, and PRUNED with two starts. Under MULTI every start runs every level; with a single
# start ``multi_start_levels`` changes nothing (there is nothing to prune), so MULTI's one-start
# program serves a single start of PRUNED. 30 iterations a level: batched and single runs then
# differ in rounding only (near convergence, at 120, flat losses let float32 rounding move the pose
# by 0.02 mm).
MULTI = R.RegistrationConfig(levels=(2, 1), iterations=30, loss="ncc", multi_start_levels=None)
PRUNED = dataclasses.replace(MULTI, multi_start_levels=1)
TRUTH = P.se3_exp(jnp.asarray([0.1, -0.05, 0.2, 3.0, -2.0, 4.0], jnp.float32))


def offset(pose, deg, mm, axis=(1.0, 2.0, -1.0), direction=(1.0, -1.0, 1.0)):
    ax = np.asarray(axis) / np.linalg.norm(axis)
    tr = np.asarray(direction) / np.linalg.norm(direction)
    delta = P.Pose(P.so3_exp(jnp.asarray(ax * np.radians(deg), jnp.float32)), jnp.asarray(tr * mm, jnp.float32))
    return P.compose(delta, pose)


@functools.lru_cache(maxsize=1)
def problem():
    vol = blobs(N, D)
    return vol, R.drr(vol, GEOM, TRUTH, step=CFG.step)


# ------------------------------------------------------------------------------ losses


def test_ncc_matches_numpy(rng):
    x, y = rng.normal(size=(2, 12, 15)).astype(np.float32)
    ref = np.corrcoef(x.ravel(), y.ravel())[0, 1]
    np.testing.assert_allclose(float(R.ncc_loss(jnp.asarray(x), jnp.asarray(y))), 1 - ref, atol=1e-5)
    assert float(R.ncc_loss(jnp.asarray(x), jnp.asarray(3 * x + 2))) == pytest.approx(0.0, abs=1e-5)
    assert float(R.ncc_loss(jnp.asarray(x), jnp.asarray(-x))) == pytest.approx(2.0, abs=1e-5)
    # patch NCC: the mean of per-tile correlations (12×15 cropped centrally to 12×12 with 6×6 tiles)
    tiles = [(x[i:i + 6, 1 + j:1 + j + 6], y[i:i + 6, 1 + j:1 + j + 6]) for i in (0, 6) for j in (0, 6)]
    ref_p = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in tiles])
    np.testing.assert_allclose(float(R.patch_ncc(jnp.asarray(x), jnp.asarray(y), 6)), ref_p, atol=1e-5)
    want = 1 - 0.5 * (ref + ref_p)
    np.testing.assert_allclose(float(R.multiscale_ncc_loss(jnp.asarray(x), jnp.asarray(y), patch_sizes=(None, 6))), want, atol=1e-5)


def test_gradient_ncc_matches_scipy_sobel(rng):
    x, y = rng.normal(size=(2, 10, 11))
    gx = [ndimage.sobel(x, axis=a)[1:-1, 1:-1].ravel() for a in (0, 1)]
    gy = [ndimage.sobel(y, axis=a)[1:-1, 1:-1].ravel() for a in (0, 1)]
    ref = 1 - 0.5 * sum(np.corrcoef(a, b)[0, 1] for a, b in zip(gx, gy))
    np.testing.assert_allclose(float(R.gradient_ncc_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))), ref, atol=1e-5)


def _mi_reference(x, y, bins, sigma):
    """Slow Parzen-window MI: loops over pixels and bins."""
    def w(a):
        a = (a - a.min()) / (a.max() - a.min())
        c = (np.arange(bins) + 0.5) / bins
        out = np.array([[np.exp(-0.5 * ((v - cc) / sigma) ** 2) for cc in c] for v in a.ravel()])
        return out / out.sum(1, keepdims=True)
    wx, wy = w(x), w(y)
    pxy = np.zeros((bins, bins))
    for n in range(wx.shape[0]):
        pxy += np.outer(wx[n], wy[n])
    pxy /= wx.shape[0]
    px, py = pxy.sum(1), pxy.sum(0)
    return sum(pxy[i, j] * np.log(pxy[i, j] / (px[i] * py[j])) for i in range(bins) for j in range(bins) if pxy[i, j] > 0)


def test_mutual_information_matches_reference(rng):
    x = rng.normal(size=(9, 8))
    y = np.tanh(x) + 0.3 * rng.normal(size=x.shape)
    got = float(R.mutual_information_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), bins=8))
    np.testing.assert_allclose(got, -_mi_reference(x, y, 8, 1 / 8), rtol=1e-3)  # float32 sums
    assert got < 0
    # An image shares more information with itself than with a noisy copy. (Not with ``y``: the
    # binned estimate of I(x; tanh x + noise) can exceed that of I(x; x), because tanh spreads
    # y over more bins: that comparison failed for about 1 seed in 70.) With noise σ = 0.7 the
    # ordering held for 20 000 of 20 000 seeds at this size.
    noisy = x + 0.7 * rng.normal(size=x.shape)
    self_mi = float(R.mutual_information_loss(jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32), bins=8))
    noisy_mi = float(R.mutual_information_loss(jnp.asarray(x, jnp.float32), jnp.asarray(noisy, jnp.float32), bins=8))
    assert -np.log(8) <= self_mi < noisy_mi < 0


@pytest.mark.parametrize("name", sorted(R.LOSSES))
def test_losses_jit_vmap_and_constant_images(name, rng):
    fn = R.get_loss(name)
    x, y = jnp.asarray(rng.normal(size=(2, 3, 16, 16)), jnp.float32)
    batched = jax.jit(jax.vmap(fn))(x, y)
    one = jax.jit(fn)  # one image pair at a time (compiled once, not op by op for each pair)
    np.testing.assert_allclose(np.asarray(batched), [float(one(a, b)) for a, b in zip(x, y)], rtol=1e-5, atol=1e-6)
    const = jnp.ones((16, 16))
    val, g = jax.jit(jax.value_and_grad(fn))(const, x[0])
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
    with pytest.raises(ValueError, match="loss"):
        R.get_loss("nope")


# ------------------------------------------------------------------------------ geometry


def test_downsample_detector_pixel_centres():
    g = jm.cone_beam(n_voxel=(4, 4, 4), d_voxel=1.0, n_detector=(11, 14), d_detector=(0.7, 0.5), DSD=50, DSO=30,
                     n_views=1, off_detector=(0.3, -0.2))
    img = jnp.arange(11 * 14, dtype=jnp.float32).reshape(11, 14)
    g3, img3 = R.downsample_detector(g, img, 3)
    assert g3.n_detector == (3, 4) and img3.shape == (3, 4)
    full = jm.geometry_rays(g)
    centres = np.asarray(full.origins + full.directions)[0]  # (11, 14, 3) pixel centres
    sv, su = 1, 1  # (11 − 9)//2, (14 − 12)//2
    blocks = centres[sv:sv + 9, su:su + 12].reshape(3, 3, 4, 3, 3).mean(axis=(1, 3))
    small = jm.geometry_rays(g3)
    np.testing.assert_allclose(np.asarray(small.origins + small.directions)[0], blocks, atol=1e-4)
    np.testing.assert_allclose(np.asarray(img3), np.asarray(img)[1:10, 1:13].reshape(3, 3, 4, 3).mean(axis=(1, 3)))
    with pytest.raises(ValueError, match="larger than the detector"):
        R.downsample_detector(g, img, 12)


def test_drr_gradient_wrt_pose_matches_finite_differences(x64, rng):
    n, d = 12, 6.0
    x = (np.arange(n) - (n - 1) / 2) * d
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    vol = jnp.asarray(0.02 * np.exp(-((X - 8) ** 2 + (Y + 5) ** 2 / 2 + Z ** 2 / 3) / 400))  # smooth, float64
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=d, n_detector=(8, 8), d_detector=12.0, DSD=400.0, DSO=250.0, n_views=1)
    w = jnp.asarray(rng.normal(size=(8, 8)))
    init = P.se3_exp(jnp.asarray([0.05, 0.1, -0.1, 2.0, 1.0, -3.0]))
    pivot = jnp.zeros(3)

    @jax.jit  # one program for the 12 difference quotients (op by op, each compiled its own)
    def f(p):
        return jnp.sum(w * R.drr(vol, g, R.params_to_pose(p, init, pivot, CFG), step=0.25))

    p0 = jnp.asarray([1.0, -2.0, 0.5, 1.0, 2.0, -1.0])
    grad = np.asarray(jax.grad(f)(p0))
    # Trilinear interpolation is piecewise linear in position: a difference quotient that
    # straddles a cell face averages two slopes. With h = 1e-4 (float64) none does at this pose,
    # so the quotients equal the gradient to 1e-6 for any weights (one sample straddled a face
    # at h = 1e-3, and some draws of w then missed a 5e-3 tolerance).
    h = 1e-4
    fd = np.array([(f(p0 + h * e) - f(p0 - h * e)) / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


# ------------------------------------------------------------------------------ registration


def test_register_recovers_pose_from_10mm_5deg():
    vol, target = problem()
    init = offset(TRUTH, 5.0, 10.0)
    lm = R.default_landmarks(GEOM)
    assert float(R.mean_target_registration_error(init, TRUTH, lm)) > 9.0
    res = R.register(vol, GEOM, target, init, config=CFG)
    est = P.Pose(jnp.asarray(res.pose.rotation, jnp.float32), jnp.asarray(res.pose.translation, jnp.float32))
    assert float(R.mean_target_registration_error(est, TRUTH, lm)) < 0.5
    assert res.iterations.shape == (1, 2) and np.all(res.iterations >= 1)
    assert res.history.shape == (1, 2, CFG.iterations) and res.loss < 1e-3


def test_multistart_vmap_equals_sequential_runs():
    vol, target = problem()
    init = offset(TRUTH, 3.0, 6.0)
    starts = R.random_perturbations(jax.random.key(1), 2, rot_range_deg=4.0, trans_range_mm=5.0)
    assert np.all(np.asarray(starts[0]) == 0) and np.all(np.abs(np.asarray(starts[1:, 3:])) <= 5.0)
    # the batch of test_register_compiles_once_per_shapes, with a progress function as there (it
    # changes no arithmetic: the program calls it)
    batch = R.register(vol, GEOM, target, init, config=MULTI, starts=starts, progress=lambda *a: None)
    for k in range(2):
        one = R.register(vol, GEOM, target, init, config=MULTI, starts=starts[k:k + 1])
        np.testing.assert_allclose(one.losses[0], batch.losses[k], rtol=1e-4, atol=1e-6)
        # float32 Adam: batched and unbatched arithmetic differ in rounding only
        np.testing.assert_allclose(one.poses.translation[0], batch.poses.translation[k], atol=1e-2)
        assert float(P.rotation_distance_deg(jnp.asarray(one.poses.rotation[0], jnp.float32),
                                             jnp.asarray(batch.poses.rotation[k], jnp.float32))) < 0.02
        np.testing.assert_array_equal(one.iterations[0], batch.iterations[k])
    assert batch.best_start == int(np.argmin(batch.losses)) and batch.loss == batch.losses.min()


def test_pruned_multistart_continues_the_best_coarse_start_alone():
    vol, target = problem()
    init = offset(TRUTH, 3.0, 6.0)
    starts = R.random_perturbations(jax.random.key(2), 2, rot_range_deg=6.0, trans_range_mm=8.0)
    res = R.register(vol, GEOM, target, init, config=PRUNED, starts=starts)
    coarse = np.nanmin(res.history[:, 0], axis=1)  # each start's best loss at the coarse level
    b = int(np.argmin(coarse))
    assert res.best_start == b and np.isfinite(res.losses[b])
    assert np.all(np.isinf(np.delete(res.losses, b))) and np.all(res.iterations[:, 0] >= 1)
    assert np.all(np.delete(res.iterations[:, 1], b) == 0) and res.iterations[b, 1] >= 1
    # the same start alone (under MULTI: with one start there is nothing to prune, the same optimisation)
    one = R.register(vol, GEOM, target, init, config=MULTI, starts=starts[b:b + 1])
    np.testing.assert_allclose(one.loss, res.loss, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(one.pose.translation, res.pose.translation, atol=2e-2)
    with pytest.raises(ValueError, match="multi_start_levels"):
        R.RegistrationConfig(levels=(2, 1), multi_start_levels=3)


@contextlib.contextmanager
def compilations():
    """Collects the messages JAX logs for each compilation (``jax.log_compiles``, as in
    optax's ``test_utils.log_compilations``; works on JAX 0.10 and 0.11)."""
    records = []

    class Handler(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if re.search(r"Finished .*compilation|^Compiling ", msg):
                records.append(msg)

    handler = Handler(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield records
    finally:
        logger.removeHandler(handler)


def test_register_compiles_once_per_shapes():
    """A second call with a new CT, target, initial pose, start values, geometry distances and
    progress function of the same shapes reuses the compiled program: nothing compiles."""
    vol, target = problem()
    cfg = MULTI  # every start runs every level, so that each start's final loss is a full-detector loss
    starts = R.random_perturbations(jax.random.key(0), 2, rot_range_deg=3.0, trans_range_mm=3.0)
    R.register(vol, GEOM, target, offset(TRUTH, 3.0, 5.0), config=cfg, starts=starts, progress=lambda *a: None)
    geom2 = GEOM.replace(DSD=820.0, d_detector=(8.2, 7.9))
    truth2 = offset(TRUTH, 2.0, -4.0, axis=(0.0, 1.0, 1.0))
    vol2 = jnp.asarray(vol) * 1.3
    target2 = R.drr(vol2, geom2, truth2, step=cfg.step)
    starts2 = R.random_perturbations(jax.random.key(7), 2, rot_range_deg=5.0, trans_range_mm=2.0)
    init2 = offset(truth2, 4.0, 6.0)
    calls = []
    with compilations() as second:
        res = R.register(vol2, geom2, target2, init2, config=cfg, starts=starts2,
                         progress=lambda level, it, loss: calls.append((level, it)))
    assert second == [], second
    assert res.compile_s == 0.0 and res.time_s > 0
    assert calls and calls[0] == (0, 0) and {lv for lv, _ in calls} == {0, 1}
    # the reused program worked on the new CT, geometry and target: each start's final loss is
    # the loss of its pose recomputed from scratch (the finest level is the full detector)
    loss_fn = R.get_loss(cfg.loss)
    for k in range(2):
        pose_k = P.Pose(jnp.asarray(res.poses.rotation[k], jnp.float32), jnp.asarray(res.poses.translation[k], jnp.float32))
        again = float(loss_fn(R.drr(vol2, geom2, pose_k, step=cfg.step), target2))
        np.testing.assert_allclose(res.losses[k], again, rtol=1e-3, atol=1e-5)


def test_register_bad_input():
    vol, target = problem()
    with pytest.raises(ValueError, match="target has shape"):
        R.register(vol, GEOM, target[:-1], TRUTH, config=CFG)
    with pytest.raises(ValueError, match="NaN"):
        R.register(vol, GEOM, target.at[0, 0].set(jnp.nan), TRUTH, config=CFG)
    with pytest.raises(ValueError, match="levels"):
        R.RegistrationConfig(levels=(0,))
    with pytest.raises(ValueError, match="loss"):
        R.RegistrationConfig(loss="l1")


# ------------------------------------------------------------------------------ errors


def test_errors_by_hand():
    g = jm.cone_beam(n_voxel=(8, 8, 8), d_voxel=2.0, n_detector=(20, 30), d_detector=0.5, DSD=1500.0, DSO=1000.0, n_views=1)
    lm = jnp.asarray([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    truth = P.identity()
    mm, px = R.reprojection_error(truth, truth, lm, g)
    assert float(mm) == 0.0 and float(px) == 0.0
    # The rig moves +10 mm along u = +y: both landmarks appear 10 mm to −u, magnified by
    # DSD / (distance from the source): 1500/1000 for the origin, 1500/(1000−10) for x = 10.
    moved = P.Pose(jnp.eye(3), jnp.asarray([0.0, 10.0, 0.0]))
    mm, px = R.reprojection_error(moved, truth, lm, g)
    want = 0.5 * (10 * 1500 / 1000 + 10 * 1500 / 990)
    np.testing.assert_allclose(float(mm), want, rtol=1e-5)
    np.testing.assert_allclose(float(px), want / 0.5, rtol=1e-5)
    vu, rc = R.project_points(lm, g, truth)
    np.testing.assert_allclose(np.asarray(rc[0]), [9.5, 14.5], atol=1e-5)  # the origin hits the centre
    np.testing.assert_allclose(float(R.mean_target_registration_error(moved, truth, lm)), 10.0, rtol=1e-6)
    assert float(R.translation_error_mm(moved, truth)) == pytest.approx(10.0)
    rot = P.Pose(P.so3_exp(jnp.asarray([0.0, 0.0, np.radians(30.0)])), jnp.zeros(3))
    assert float(R.rotation_error_deg(rot, truth)) == pytest.approx(30.0, abs=1e-4)
    # batched poses
    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), truth, moved)
    np.testing.assert_allclose(np.asarray(R.reprojection_error(both, truth, lm, g)[0]), [0.0, want], rtol=1e-5, atol=1e-6)
    assert R.success_rate([0.1, 0.5, 2.0, np.nan], 1.0) == 0.5
