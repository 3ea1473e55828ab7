"""MRI slice interpolation: phantom, slice model, INR, baselines, protocol, CLI."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxmedrf.cli import main
from jaxmedrf.mri import (
    INRConfig, SliceStack, acquire, brain_phantom, evaluate_interpolation, fit_inr, interpolate, make_stack,
    query_inr, stack_points,
)
from jaxmedrf.mri.phantom import phantom_affine

# A small hash grid for the tests of plumbing, not of quality: each step of the default's 12 levels of
# 2^19 rows (and its Adam update) is slow on the CPU, and its compilation too.
TINY_FIELD = dataclasses.replace(INRConfig.field, width=16, encoding=dataclasses.replace(INRConfig.field.encoding,
                                                                                         n_levels=4, log2_table_size=12))


def test_phantom_range_and_noise():
    v, a = brain_phantom(None, (24, 24, 16), 3.0)
    assert v.shape == (24, 24, 16) and v.min() >= 0 and v.max() <= 1 and v.max() > 0.7
    assert np.allclose(np.diag(a)[:3], 3.0)
    n, _ = brain_phantom(jax.random.key(1), (24, 24, 16), 3.0, noise_sigma=0.05, bias=0.2)
    assert n.min() >= 0 and n.max() <= 1 and not np.allclose(n, v)
    with pytest.raises(ValueError, match="key"):
        brain_phantom(None, (8, 8, 8), noise_sigma=0.1)


@pytest.mark.parametrize("profile", ["box", "gaussian"])
@pytest.mark.parametrize("use_key", [False, True])
def test_slice_model_integrates_linear_field_exactly(profile, use_key):
    g = np.array([0.3, -0.2, 0.7], np.float32)
    f = lambda x: x @ g + 1.0  # noqa: E731
    a = np.array([[0.0, 1.2, 0.0, 3.0], [0.9, 0.0, 0.0, -4.0], [0.0, 0.0, 2.5, 5.0], [0, 0, 0, 1.0]])
    s = SliceStack(np.zeros((5, 6, 4)), a, 2, 5.0, profile)
    exact = f(stack_points(s)).reshape(s.shape)
    key = jax.random.key(0) if use_key else None
    np.testing.assert_allclose(np.asarray(acquire(key, f, s, n=4)), exact, atol=1e-4)
    # a quadratic field is blurred through plane by the thick box/Gaussian: differs from the centre value
    q = lambda x: x[:, 2] ** 2  # noqa: E731
    assert np.all(np.asarray(acquire(None, q, s, n=4)) > q(stack_points(s)).reshape(s.shape) + 0.1)


def test_make_stack_affine_and_thick_profile():
    v = np.arange(2 * 3 * 9, dtype=np.float32).reshape(2, 3, 9)
    a = phantom_affine(v.shape, (1.0, 1.0, 2.0))
    s = make_stack(v, a, 2, 3, offset=1)
    np.testing.assert_array_equal(s.values, v[:, :, 1::3])
    np.testing.assert_allclose(stack_points(s).reshape(*s.shape, 3)[0, 0, 1], a[:3, :3] @ [0, 0, 4] + a[:3, 3])
    t = make_stack(v, a, 2, 3, profile="box")
    assert t.thickness == 6.0
    np.testing.assert_allclose(t.values[:, :, 1], v[:, :, 2:5].mean(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="too large"):
        make_stack(v, a, 2, 9)


def test_residual_base_grid_is_isotropic_and_on_the_acquired_voxels():
    """One thick axial stack (1 × 1 mm pixels, 4 mm slices) and an orthogonal one: the base of
    ``INRConfig(base="fusion")`` lives on a 1 mm grid along every axis (its restored detail between
    the slices survives), and every acquired voxel centre is one of its voxel centres (the stacks'
    box reaches half a slice step, 2 mm, past the first slice: a grid anchored at the box sat half a
    voxel off)."""
    from jaxmedrf.mri.inr import base_grid, check_overlap

    v = np.zeros((8, 8, 16), np.float32)
    a = phantom_affine(v.shape, 1.0)
    stacks = [make_stack(v, a, 2, 4), make_stack(v, a, 0, 4)]
    lo, hi = check_overlap(stacks)
    shape, aff = base_grid(stacks, lo, hi)
    np.testing.assert_allclose(np.diag(aff)[:3], 1.0)
    assert np.all(aff[:3, 3] - 0.5 <= lo) and np.all(aff[:3, 3] + np.asarray(shape) - 0.5 >= hi)  # covers the box
    for s in stacks:
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in s.shape], indexing="ij"), -1).reshape(-1, 3)
        world = idx @ s.affine[:3, :3].T + s.affine[:3, 3]
        c = (world - aff[:3, 3]) / np.diag(aff)[:3]
        np.testing.assert_allclose(c, np.round(c), atol=1e-6)


def test_auto_base_follows_the_slice_profile():
    """``INRConfig.base="auto"``: point-like slices get a learned base (SMORE for one thick-spaced stack,
    the fusion for several or for an isotropic one); any thick slice gets the field alone."""
    from jaxmedrf.mri.inr import auto_base

    v = np.zeros((8, 8, 16), np.float32)
    a = phantom_affine(v.shape, 1.0)
    thin = [make_stack(v, a, ax, 4) for ax in (2, 1, 0)]
    assert auto_base(thin[:1]) == "smore"
    assert auto_base(thin) == "fusion"
    assert auto_base([make_stack(v, a, 2, 1)]) == "fusion"  # nothing to restore through plane
    assert auto_base([make_stack(v, a, 2, 4, profile="box")]) == "none"
    assert auto_base(thin[:2] + [make_stack(v, a, 0, 4, profile="box")]) == "none"


def test_inr_residual_over_a_base_fits_thick_slices_and_its_query_paths_agree():
    """Thick (box-profile) slices: the base does not reproduce the acquired voxels, so the residual is
    fitted; with the residual's last layer zeroed the query takes the base-only path, which must equal
    the full path's base + zero residual."""
    v, a = brain_phantom(None, (16, 16, 12), 2.0)
    stacks = [make_stack(v, a, ax, 3, profile="box") for ax in (2, 1)]
    res = fit_inr(stacks, INRConfig(base="fusion", n_iters=20, batch=256, steps_per_call=10, field=TINY_FIELD),
                  progress=False)
    assert res.history["initial_loss"] > res.config.tol and res.history["step"] == [10, 20]
    fitted = query_inr(res, v.shape, a)
    assert np.all(np.isfinite(fitted))
    w, b = res.params["mlp"][-1]
    zero = dict(res.params, mlp=res.params["mlp"][:-1] + [(np.zeros_like(w), np.zeros_like(b))])
    base_only = query_inr(res._replace(params=zero), v.shape, a)
    tiny = dict(res.params, mlp=res.params["mlp"][:-1] + [(np.zeros_like(w), np.full_like(b, 1e-30))])
    full_path = query_inr(res._replace(params=tiny), v.shape, a)  # not all zero: the field's path
    np.testing.assert_allclose(base_only, full_path, atol=1e-5 * float(np.abs(base_only).max()))
    assert float(np.abs(fitted - base_only).max()) > 0


def test_cli_inr_base_option_selects_the_base(tmp_path, capsys):
    """``--inr-base fusion`` on point-like slices returns the fusion itself (nothing left to fit);
    ``--inr-base none`` fits the field alone, which scores differently."""
    from jaxmedrf.io import save_volume

    v, a = brain_phantom(None, (16, 16, 9), 3.0)
    src = str(save_volume(v, tmp_path / "in.npz", affine=a))

    def removed_psnr(*extra):
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        assert main(["interpolate", src, "--evaluate", "2", "--quiet", "--report", str(out), *extra]) == 0
        res = json.loads((out / "interpolation.json").read_text())
        return res["methods"][extra[1]]["removed"]["psnr_pooled"]

    fusion = removed_psnr("--method", "fusion")
    inr_fusion = removed_psnr("--method", "inr", "--inr-base", "fusion")
    inr_none = removed_psnr("--method", "inr", "--inr-base", "none", "--iters", "20", "--batch", "256")
    np.testing.assert_allclose(inr_fusion, fusion, atol=1e-3)
    assert abs(inr_none - fusion) > 0.1
    capsys.readouterr()


def test_protocol_scores_only_removed_slices():
    v, a = brain_phantom(None, (20, 20, 13), 3.0)
    res = evaluate_interpolation(v, a, 4, ("nearest",))
    assert res["removed"] == [i for i in range(13) if i % 4]
    # the same score on a volume whose kept slices differ: only removed slices count
    w = v.copy()
    w[:, :, ::4] += 0.3
    res2 = evaluate_interpolation(w, a, 4, ("nearest",))
    r1, r2 = res["methods"]["nearest"], res2["methods"]["nearest"]
    # nearest copies kept slices, so removed-slice errors change (kept ones are copied), the whole-volume
    # statistics include the exact kept slices
    assert r1["whole"]["n_exact"] == 4 and r1["removed"]["n_exact"] == 0
    # a reconstruction that is perfect on removed slices and wrong on kept ones scores inf on removed
    from jaxmedrf.mri.evaluate import slice_metrics

    bad = v.copy()
    bad[:, :, ::4] = 0
    m = slice_metrics(bad, v, res["removed"], data_range=1.0)
    assert m["n_exact"] == m["n_slices"] > 0
    assert slice_metrics(bad, v, range(13), data_range=1.0)["psnr_pooled"] < 40
    assert r2["removed"]["psnr_pooled"] != r1["removed"]["psnr_pooled"]


def test_reports_leave_the_matplotlib_backend_and_figures_alone(tmp_path):
    """save_report / save_slice_report draw on their own Figure: a notebook's backend and open
    pyplot figures are as they were (they used to switch the backend to Agg)."""
    import matplotlib
    import matplotlib.pyplot as plt

    from jaxmedrf.mri import save_report, save_slice_report

    v, a = brain_phantom(None, (20, 20, 13), 3.0)
    res = evaluate_interpolation(v, a, 4, ("nearest", "cubic"))
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        fig = plt.figure()
        paths = save_report(res, v, tmp_path) + save_slice_report(res, v, tmp_path, method="cubic")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [fig.number]
        plt.close(fig)
    finally:
        matplotlib.use(before)
    assert [p.name for p in paths] == ["interpolation.json", "interpolation.png", "interpolation_slices.csv",
                                       "interpolation_slices.png"]
    assert all(p.stat().st_size > 0 for p in paths) and paths[1].read_bytes()[:4] == b"\x89PNG"


def test_inr_beats_linear_on_smooth_volume():
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (20, 20, 25)], indexing="ij")
    v = (0.5 + 0.3 * np.sin(2.2 * x + 1.0) * np.cos(1.7 * y) * np.sin(3.0 * z + 0.5)).astype(np.float32)
    a = phantom_affine(v.shape, 1.0)
    # the field itself, not a learned base; a hash table of 2^14 rows (10^4 voxels here), not the default's 2^19,
    # whose Adam updates made the steps 2.5x slower on the CPU
    field = dataclasses.replace(INRConfig.field, encoding=dataclasses.replace(INRConfig.field.encoding, log2_table_size=14))
    cfg = INRConfig(n_iters=200, batch=1024, lr=1e-2, base="none", field=field)
    res = evaluate_interpolation(v, a, 4, ("inr", "linear"), inr_config=cfg)
    m = res["methods"]
    # measured on CPU: INR 43.2-46.1 dB over seeds 0-9 (44.9 dB for seed 0; 45.3 dB with the default table),
    # linear 35.6 dB (cubic 41.4 dB) on the removed slices
    assert m["inr"]["removed"]["psnr_pooled"] > m["linear"]["removed"]["psnr_pooled"] + 3.0


def test_stacks_in_different_orientations_place_a_point_consistently():
    v = np.zeros((12, 10, 8), np.float32)
    v[7, 3, 5] = 1.0
    a = phantom_affine(v.shape, (1.0, 1.5, 2.0))
    world = a[:3, :3] @ [7, 3, 5] + a[:3, 3]
    perm = (2, 0, 1)
    flip = np.flip(np.transpose(v, perm), axis=1)  # another orientation of the same voxels
    b = a[:, list(perm) + [3]].copy()
    b[:3, 3] += b[:3, 1] * (flip.shape[1] - 1)
    b[:3, 1] *= -1
    stacks = [SliceStack(v, a, 2), SliceStack(flip, b, 0)]
    for s in stacks:
        i = np.unravel_index(np.argmax(s.values), s.shape)
        np.testing.assert_allclose(stack_points(s).reshape(*s.shape, 3)[i], world, atol=1e-5)
    res = fit_inr(stacks, INRConfig(n_iters=10, batch=256, steps_per_call=10, field=TINY_FIELD), progress=False)
    assert res.scales.shape == (2,) and np.isfinite(query_inr(res, v.shape, a)).all()


def test_baselines_api_and_cubic_interpolates_kept_slices():
    v, a = brain_phantom(None, (16, 16, 13), 3.0)
    s = make_stack(v, a, 2, 3)
    for m in ("nearest", "linear", "cubic"):
        out, aff = interpolate(s, m, target_spacing=3.0)
        assert out.shape == (16, 16, 13)
        np.testing.assert_allclose(aff, a)
        np.testing.assert_allclose(out[:, :, ::3], v[:, :, ::3], atol=1e-5)
    with pytest.raises(ValueError, match="in-plane"):
        interpolate(s, "cubic", shape=(8, 16, 13), affine=a)


def test_cli_round_trip_keeps_affine_and_spacing(tmp_path):
    from jaxmedrf.io import load_volume, save_volume

    v, _ = brain_phantom(None, (12, 14, 6), 2.0)
    aff = np.array([[1.5, 0, 0, 10], [0, 1.0, 0, -5], [0, 0, 4.0, 3], [0, 0, 0, 1]])
    src = save_volume(v, tmp_path / "in.nii.gz", affine=aff, modality="MR", unit="MR")
    out = tmp_path / "out.nii.gz"
    assert main(["interpolate", str(src), "--factor", "2", "--method", "cubic", "--out", str(out), "--quiet"]) == 0
    r = load_volume(out)
    assert r.shape == (12, 14, 11)
    np.testing.assert_allclose(r.affine[:3, :2], aff[:3, :2], atol=1e-4)
    np.testing.assert_allclose(r.affine[:3, 2], [0, 0, 2.0], atol=1e-4)
    np.testing.assert_allclose(r.affine[:3, 3], aff[:3, 3], atol=1e-4)
    np.testing.assert_allclose(r.array[:, :, ::2], v, atol=1e-4)


def test_cli_evaluate_prints_table(tmp_path, capsys):
    from jaxmedrf.io import save_volume

    v, a = brain_phantom(None, (16, 16, 9), 3.0)
    src = save_volume(v, tmp_path / "in.npz", affine=a)
    assert main(["interpolate", str(src), "--evaluate", "2", "--method", "linear", "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and "cubic" in out
    assert json.loads((tmp_path / "r" / "interpolation.json").read_text())["k"] == 2
    assert (tmp_path / "r" / "interpolation.png").exists()


def test_cli_evaluate_several_volumes_gives_mean_and_std_over_them(tmp_path, capsys):
    from jaxmedrf.io import save_volume
    from jaxmedrf.mri import summarize_volumes

    v, a = brain_phantom(None, (16, 16, 9), 3.0)
    w, b = brain_phantom(jax.random.key(1), (16, 16, 9), 3.0, noise_sigma=0.05)
    srcs = [str(save_volume(v, tmp_path / "a.npz", affine=a)), str(save_volume(w, tmp_path / "b.npz", affine=b))]
    assert main(["interpolate", *srcs, "--evaluate", "2", "--method", "linear", "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "== a.npz" in out and "== b.npz" in out and "mean ± std over 2 volumes" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    one = [json.loads((tmp_path / "r" / d / "interpolation.json").read_text()) for d in ("0_a", "1_b")]
    vals = [r["methods"]["cubic"]["removed"]["psnr_pooled"] for r in one]
    got = summary["methods"]["cubic"]["psnr_removed"]
    assert summary["volumes"] == ["a.npz", "b.npz"] and summary["n_volumes"] == 2
    np.testing.assert_allclose([got["mean"], got["std"]], [np.mean(vals), np.std(vals)], rtol=1e-12)
    assert vals[0] != vals[1]  # the noisy volume scores differently: the std is not trivially 0
    with pytest.raises(ValueError, match="different k"):
        summarize_volumes([{"k": 2, "methods": {}}, {"k": 4, "methods": {}}])


def test_cli_bad_inputs(tmp_path, capsys):
    from jaxmedrf.io import save_volume

    v, a = brain_phantom(None, (10, 10, 6), 3.0)
    good = save_volume(v, tmp_path / "g.npz", affine=a)
    far = a.copy()
    far[:3, 3] += 1000
    other = save_volume(v, tmp_path / "far.npz", affine=far)
    nan = v.copy()
    nan[1, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", volume=nan, spacing=np.full(3, 3.0), affine=a)
    out = tmp_path / "o.nii.gz"
    cases = [
        ([str(good), "--evaluate", "6"], "--evaluate"),
        ([str(good), str(other), "--factor", "2", "--out", str(out)], "overlap"),
        ([str(tmp_path / "nan.npz"), "--factor", "2", "--out", str(out)], "NaN"),
    ]
    for argv, msg in cases:
        assert main(["interpolate", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not out.exists()
    np.savez(tmp_path / "flat.npz", volume=v[:, :, :1], spacing=np.full(3, 3.0), affine=a)
    assert main(["interpolate", str(tmp_path / "flat.npz"), "--factor", "2", "--out", str(out)]) == 2
    assert not out.exists()
