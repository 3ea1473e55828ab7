"""Issue 18: learned-filter fusion on real MRI (the MNI T1 template) and on the phantoms, the
per-slice report of ``interpolate --evaluate``."""

import csv

import jax
import numpy as np
import pytest

from jaxmedrf.cli import main
from jaxmedrf.mri import brain_phantom, interpolate, make_stack, realistic_phantom
from jaxmedrf.mri.evaluate import slice_metrics
from jaxmedrf.mri.phantom import phantom_affine


def _removed_psnr(vol, aff, k, axes, method):
    stacks = [make_stack(vol, aff, a, k) for a in axes]
    removed = [i for i in range(vol.shape[2]) if i % k]
    dr = float(np.ptp(vol))
    if method == "mean_cubic":
        rec = np.mean([interpolate(s, "cubic", shape=vol.shape, affine=aff)[0] for s in stacks], 0)
    else:
        rec, _ = interpolate(stacks, method, shape=vol.shape, affine=aff)
    return slice_metrics(rec, vol, removed, axis=2, data_range=dr)["psnr_pooled"]


@pytest.fixture(scope="module")
def mni_crop():
    from jaxmedrf.io.samples import load_sample

    try:
        a = np.asarray(load_sample("brain_t1").array, np.float32) / 255.0
    except ValueError as e:  # nilearn's wheel not installed
        pytest.skip(str(e))
    v = np.ascontiguousarray(a[60:92, 120:152, 100:133])  # 32 x 32 x 33 voxels of left cortex and white matter
    return v, phantom_affine(v.shape, 1.0)


def test_fusion_beats_cubic_on_a_real_mri_crop(mni_crop):
    v, a = mni_crop
    cub = _removed_psnr(v, a, 4, (2,), "cubic")
    one = _removed_psnr(v, a, 4, (2,), "fusion")
    # measured: cubic 29.02, fusion 1 stack 29.3 dB (three stacks: the INR test below, whose base it is)
    assert one >= cub, (one, cub)


def test_inr_defaults_do_not_lose_to_cubic_on_a_real_mri_crop(mni_crop):
    """Issue 18: on real anatomy with default settings (SMORE shortened to 200 steps for CI), the INR
    does not lose to cubic with one stack (its SMORE base) and beats the baselines with three (its
    fusion base). Measured (2 CPU cores): cubic 29.02 dB; one stack +0.06 dB for seed 0, +0.06 to
    +0.69 over seeds 0–7 (at 400 steps +0.00 to +1.15 over 16 seeds: on this small crop a SMORE fit
    can stall at cubic, and ``fit_smore`` warns); three stacks 34.0 dB against the mean of three
    cubics 31.4 dB."""
    from jaxmedrf.mri import INRConfig, SMOREConfig

    v, a = mni_crop
    cfg = INRConfig(smore=SMOREConfig(n_iters=200))
    removed = [i for i in range(v.shape[2]) if i % 4]

    def inr(axes):
        rec, _ = interpolate([make_stack(v, a, ax, 4) for ax in axes], "inr", shape=v.shape, affine=a, inr_config=cfg)
        return slice_metrics(rec, v, removed, axis=2, data_range=float(np.ptp(v)))["psnr_pooled"]

    cub = _removed_psnr(v, a, 4, (2,), "cubic")
    assert inr((2,)) >= cub - 0.01, cub
    three = inr((2, 1, 0))
    assert three >= _removed_psnr(v, a, 4, (2, 1, 0), "mean_cubic") + 2.0
    assert three >= max(_removed_psnr(v, a, 4, (ax,), "cubic") for ax in (1, 0)) + 1.0


def test_fusion_on_clean_and_realistic_phantoms():
    """Phantom regression: the three-stack fusion gains over the mean of three cubics on both phantoms."""
    clean = brain_phantom(None, (32, 32, 25), 1.0)
    real = realistic_phantom(jax.random.key(3), (32, 32, 25), 1.0)
    assert not np.allclose(clean[0], real[0])
    for v, a in (clean, real):
        gain = _removed_psnr(v, a, 4, (2, 1, 0), "fusion") - _removed_psnr(v, a, 4, (2, 1, 0), "mean_cubic")
        assert gain > 1.0, gain


def test_cli_evaluate_writes_per_slice_csv_and_worst_median_png(tmp_path, capsys):
    from jaxmedrf.io import save_volume

    v, a = brain_phantom(None, (20, 20, 13), 2.0)
    src = save_volume(v, tmp_path / "in.npz", affine=a)
    out = tmp_path / "r"
    assert main(["interpolate", str(src), "--evaluate", "4", "--method", "fusion", "--report", str(out), "--quiet"]) == 0
    assert "interpolation_slices.csv" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "interpolation_slices.csv").open()))
    removed = [i for i in range(13) if i % 4]
    assert [int(r["slice"]) for r in rows] == removed
    assert {"psnr_fusion_db", "ssim_fusion", "psnr_cubic_db", "ssim_linear"} <= set(rows[0])
    # the CSV agrees with the protocol's own per-slice scores
    ref = slice_metrics(*[interpolate(make_stack(v, a, 2, 4), "cubic", shape=v.shape, affine=a)[0], v], removed,
                        data_range=float(np.ptp(v)))
    got = [float(r["psnr_cubic_db"]) for r in rows if np.isfinite(float(r["psnr_cubic_db"]))]
    np.testing.assert_allclose(np.mean(got), ref["psnr_mean"], rtol=1e-4)
    assert (out / "interpolation_slices.png").stat().st_size > 5000
