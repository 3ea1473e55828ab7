"""Metrics against scikit-image, dm-pix and NumPy references; jit/vmap; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio as sk_psnr, structural_similarity as sk_ssim

import dm_pix
import jaxmedrf as jm
from jaxmedrf import metrics as M


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
    sk = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert float(M.ssim(a, b, data_range=1.0)) == pytest.approx(sk_ssim(b, a, **sk), abs=1e-5)
    assert float(M.ssim(a, b, data_range=1.0)) == pytest.approx(float(dm_pix.ssim(a[..., None], b[..., None])), abs=1e-5)
    assert float(M.ssim3d(img, ref, data_range=1.0)) == pytest.approx(sk_ssim(ref, img, **sk), abs=1e-5)
    # NAF's 3D SSIM = scikit-image defaults (uniform 7³ window, sample covariance)
    assert float(M.ssim3d(img, ref, data_range=1.0, window="uniform", filter_size=7)) == pytest.approx(
        sk_ssim(ref, img, data_range=1.0), abs=1e-5
    )
    per = np.asarray(M.ssim_per_slice(img, ref, axis=1, data_range=1.0))
    ref_per = [sk_ssim(ref[:, j], img[:, j], **sk) for j in range(ref.shape[1])]
    np.testing.assert_allclose(per, ref_per, atol=1e-5)


def test_ssim_slices_axis_none_is_mean_over_axes(pair):
    img, ref = pair
    per_axis = [float(M.ssim_slices(img, ref, axis=a, filter_size=7)) for a in range(3)]
    assert float(M.ssim_slices(img, ref, filter_size=7)) == pytest.approx(np.mean(per_axis), abs=1e-6)
    assert float(M.ssim_slices(ref, ref, filter_size=7)) == pytest.approx(1.0, abs=1e-5)


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


def test_metrics_under_jit_and_vmap(pair):
    img, ref = (jnp.asarray(a, jnp.float32) for a in pair)
    fns = {
        "psnr": M.psnr, "mae": M.mae, "rmse": M.rmse, "gmsd": M.gmsd,
        "ssim_slices": lambda a, b: M.ssim_slices(a, b, filter_size=7),
        "ssim3d": lambda a, b: M.ssim3d(a, b, filter_size=7),
        "ssim": lambda a, b: M.ssim(a[:, :, 0], b[:, :, 0], filter_size=7),
    }
    for name, f in fns.items():
        eager = float(f(img, ref))
        assert float(jax.jit(f)(img, ref)) == pytest.approx(eager, rel=1e-4, abs=1e-6), name
        batched = jax.vmap(f)(jnp.stack([img, ref]), jnp.stack([ref, ref]))
        assert float(batched[0]) == pytest.approx(eager, rel=1e-4, abs=1e-6), name


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


def test_reprojection_error():
    g = jm.cone_beam(n_voxel=(12, 12, 12), d_voxel=2.0, n_detector=(16, 16), d_detector=3.0, DSD=600.0, DSO=400.0, n_views=5)
    vol = np.zeros(g.n_voxel, np.float32)
    vol[3:9, 3:9, 3:9] = 0.02
    p = jm.project(vol, g)
    r0 = M.reprojection_error(vol, p, g)
    assert float(r0.rmse) < 1e-6 and r0.rmse_per_view.shape == (5,)
    # perturbation δ·1 on the volume: error per ray = δ × intersection length with the box
    delta = 1e-3
    r1 = M.reprojection_error(vol + delta, p, g)
    lengths = np.asarray(jm.project(np.ones(g.n_voxel, np.float32), g))
    assert float(r1.mae) == pytest.approx(delta * lengths.mean(), rel=1e-4)
    np.testing.assert_allclose(np.asarray(r1.rmse_per_view), delta * np.sqrt((lengths**2).reshape(5, -1).mean(1)), rtol=1e-4)
    jitted = jax.jit(lambda v: M.reprojection_error(v, p, g).rmse)(vol + delta)
    assert float(jitted) == pytest.approx(float(r1.rmse), rel=1e-5)
