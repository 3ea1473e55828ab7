"""Metrics against scikit-image, dm-pix and NumPy references; jit/vmap; bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio as sk_psnr, structural_similarity as sk_ssim

import dm_pix
import jaxmedrf as jm
from jaxmedrf import metrics as M


# scikit-image's SSIM with our window (Gaussian, σ 1.5, 11 taps) and population covariance
SK = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


@pytest.fixture
def pair(rng):
    ref = rng.random((16, 18, 14))
    img = ref + 0.1 * rng.standard_normal(ref.shape)
    return img, ref


def test_psnr_matches_skimage(pair, x64):
    img, ref = pair
    dr = ref.max() - ref.min()
    assert float(M.psnr(img, ref)) == pytest.approx(sk_psnr(ref, img, data_range=dr), abs=1e-5)
    assert float(M.psnr(img, ref, data_range=2.0)) == pytest.approx(sk_psnr(ref, img, data_range=2.0), abs=1e-5)


def test_ssim_matches_skimage_and_dm_pix(pair, x64):
    img, ref = pair
    a, b = img[:, :, 3], ref[:, :, 3]
    assert float(M.ssim(a, b, data_range=1.0)) == pytest.approx(sk_ssim(b, a, **SK), abs=1e-5)
    assert float(M.ssim(a, b, data_range=1.0)) == pytest.approx(float(dm_pix.ssim(a[..., None], b[..., None])), abs=1e-5)
    assert float(M.ssim3d(img, ref, data_range=1.0)) == pytest.approx(sk_ssim(ref, img, **SK), abs=1e-5)
    # NAF's 3D SSIM = scikit-image defaults (uniform 7³ window, sample covariance)
    assert float(M.ssim3d(img, ref, data_range=1.0, window="uniform", filter_size=7)) == pytest.approx(
        sk_ssim(ref, img, data_range=1.0), abs=1e-5
    )
    per = np.asarray(jax.jit(M.ssim_per_slice, static_argnames="axis")(img, ref, axis=1, data_range=1.0))  # eager vmap: slow
    ref_per = [sk_ssim(ref[:, j], img[:, j], **SK) for j in range(ref.shape[1])]
    np.testing.assert_allclose(per, ref_per, atol=1e-5)


def test_ssim_slices_axis_none_is_mean_over_axes(pair):
    img, ref = pair
    # jitted: the eager per-slice vmap compiles each operation for each slice shape (3x slower here);
    # MetricsTransformationsTest runs ssim_slices without jit too
    ssim_slices = jax.jit(M.ssim_slices, static_argnames=("axis", "filter_size"))
    per_axis = [float(ssim_slices(img, ref, axis=a, filter_size=7)) for a in range(3)]
    assert float(ssim_slices(img, ref, filter_size=7)) == pytest.approx(np.mean(per_axis), abs=1e-6)
    assert float(ssim_slices(ref, ref, filter_size=7)) == pytest.approx(1.0, abs=1e-5)


def _gmsd_numpy(img, ref, c=170.0):
    """Xue et al. 2014 reference (the authors' MATLAB: conv2 'same', Prewitt/3, std2), images in [0, 255]."""
    def conv_same_matlab(x, k):
        full = convolve2d(x, k, mode="full")
        r0, c0 = (k.shape[0] - 1 + 1) // 2, (k.shape[1] - 1 + 1) // 2  # MATLAB: central part, ceil((k-1)/2)
        return full[r0 : r0 + x.shape[0], c0 : c0 + x.shape[1]]

    ave = np.ones((2, 2)) / 4
    y1 = conv_same_matlab(ref, ave)[::2, ::2]
    y2 = conv_same_matlab(img, ave)[::2, ::2]
    dx = np.array([[1, 0, -1]] * 3) / 3.0
    dy = dx.T
    g1 = np.sqrt(conv_same_matlab(y1, dx) ** 2 + conv_same_matlab(y1, dy) ** 2)
    g2 = np.sqrt(conv_same_matlab(y2, dx) ** 2 + conv_same_matlab(y2, dy) ** 2)
    q = (2 * g1 * g2 + c) / (g1**2 + g2**2 + c)
    return np.std(q)


def test_gmsd_matches_numpy_reference(pair, x64):
    img, ref = pair
    a, b = img[:, :, 0] * 255, ref[:, :, 0] * 255
    assert float(M.gmsd(a, b, data_range=255.0)) == pytest.approx(_gmsd_numpy(a, b), abs=1e-6)
    assert float(M.gmsd(ref, ref)) == pytest.approx(0.0, abs=1e-7)
    vol = float(M.gmsd(img, ref, data_range=1.0))
    assert vol == pytest.approx(np.mean([_gmsd_numpy(img[:, :, k] * 255, ref[:, :, k] * 255) for k in range(14)]), abs=1e-6)


def test_mae_rmse_hu(pair):
    img, ref = pair
    assert float(M.mae(img, ref)) == pytest.approx(np.mean(np.abs(img - ref)), rel=1e-5)
    assert float(M.rmse(img, ref, mu_water=0.02)) == pytest.approx(1000 / 0.02 * np.sqrt(np.mean((img - ref) ** 2)), rel=1e-5)


def _sk_ssim_slices(img, ref):
    """R²-Gaussian's SSIM: per axis the mean 2D SSIM over its slices, averaged over the axes."""
    return np.mean([np.mean([sk_ssim(np.take(ref, j, a), np.take(img, j, a), **SK) for j in range(ref.shape[a])])
                    for a in range(3)])


# name: (metric, float64 reference of the metric); both take (image, reference).
METRICS = {
    "psnr": (M.psnr, lambda a, b: sk_psnr(b, a, data_range=b.max() - b.min())),
    "mae": (M.mae, lambda a, b: np.mean(np.abs(a - b))),
    "rmse": (M.rmse, lambda a, b: np.sqrt(np.mean((a - b) ** 2))),
    "gmsd": (lambda a, b: M.gmsd(a, b, data_range=1.0),
             lambda a, b: np.mean([_gmsd_numpy(a[:, :, k] * 255, b[:, :, k] * 255) for k in range(a.shape[2])])),
    "ssim": (lambda a, b: M.ssim(a[:, :, 3], b[:, :, 3], data_range=1.0), lambda a, b: sk_ssim(b[:, :, 3], a[:, :, 3], **SK)),
    "ssim3d": (lambda a, b: M.ssim3d(a, b, data_range=1.0), lambda a, b: sk_ssim(b, a, **SK)),
    "ssim_slices": (lambda a, b: M.ssim_slices(a, b, data_range=1.0), _sk_ssim_slices),
}


class MetricsTransformationsTest(chex.TestCase):
    """Every metric in float32, jitted and not (chex variants), against its float64 reference
    (float32 round-off: 1e-4 relative), and under vmap."""

    @pytest.fixture(autouse=True)
    def _pair(self, pair):
        self.img, self.ref = pair

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((f"_{name}", name) for name in METRICS))
    def test_matches_the_reference(self, name):
        metric, reference = METRICS[name]
        got = self.variant(metric)(jnp.asarray(self.img, jnp.float32), jnp.asarray(self.ref, jnp.float32))
        chex.assert_trees_all_close(got, reference(self.img, self.ref), rtol=1e-4, atol=1e-6)

    @parameterized.named_parameters(*((f"_{name}", name) for name in METRICS))
    def test_vmap_is_one_metric_per_pair(self, name):
        metric, _ = METRICS[name]
        img, ref = jnp.asarray(self.img, jnp.float32), jnp.asarray(self.ref, jnp.float32)
        # jitted (eager vmap compiles every batched operation on its own; test_matches_the_reference runs eagerly)
        batched = jax.jit(jax.vmap(metric))(jnp.stack([img, ref]), jnp.stack([ref, img]))
        one = jax.jit(metric)
        chex.assert_trees_all_close(batched, jnp.stack([one(img, ref), one(ref, img)]), rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_reported(pair):
    img, ref = pair
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="image contains 1 NaN"):
        M.psnr(bad, ref)
    with pytest.raises(ValueError, match="reference contains"):
        M.ssim3d(img, np.where(ref > 0.5, np.inf, ref))
    with pytest.raises(ValueError, match="constant"):
        M.psnr(img, np.ones_like(ref))
    with pytest.raises(ValueError, match="shape"):
        M.mae(img, ref[:-1])
    # traced: NaN comes out, never a number
    assert np.isnan(float(jax.jit(M.psnr)(bad, ref)))
    assert np.isnan(float(jax.jit(M.psnr)(img, np.ones_like(ref))))


class ReprojectionErrorTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_a_uniform_offset_errs_by_the_box_length(self):
        g = jm.cone_beam(n_voxel=(12, 12, 12), d_voxel=2.0, n_detector=(16, 16), d_detector=3.0, DSD=600.0, DSO=400.0,
                         n_views=5)
        vol = np.zeros(g.n_voxel, np.float32)
        vol[3:9, 3:9, 3:9] = 0.02
        p = jm.project(vol, g)
        error = self.variant(lambda v: M.reprojection_error(v, p, g))
        chex.assert_trees_all_close(error(vol), M.ReprojectionError(0.0, 0.0, np.zeros(5), np.zeros(5)), atol=1e-6)
        # perturbation δ·1 on the volume: error per ray = δ × intersection length with the box
        delta = 1e-3
        lengths = np.asarray(jm.project(np.ones(g.n_voxel, np.float32), g)).reshape(5, -1)
        want = M.ReprojectionError(rmse=delta * np.sqrt(np.mean(lengths**2)), mae=delta * lengths.mean(),
                                   rmse_per_view=delta * np.sqrt(np.mean(lengths**2, 1)), mae_per_view=delta * lengths.mean(1))
        chex.assert_trees_all_close(error(vol + delta), want, rtol=1e-4)
