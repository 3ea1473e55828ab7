"""`jaxmedrf evaluate`: round trip, comparison table, cases folder, bad input (exit 2)."""

import json

import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import cli


@pytest.fixture
def main():
    return cli.main


def _write(path, vol, **extra):
    np.savez(path, volume=np.asarray(vol, np.float32), **extra)
    return str(path)


@pytest.fixture
def volumes(tmp_path, rng):
    g = jm.cone_beam(n_voxel=(12, 12, 12), d_voxel=2.0, n_detector=(16, 16), d_detector=3.0, DSD=600.0, DSO=400.0, n_views=4)
    ref = np.zeros(g.n_voxel, np.float32)
    ref[3:9, 3:9, 2:10] = 0.02
    ref_path = _write(tmp_path / "ref.npz", ref, projections=np.asarray(jm.project(ref, g)), geometry=g.to_json())
    a = _write(tmp_path / "good.npz", ref + 0.0005 * rng.standard_normal(ref.shape))
    b = _write(tmp_path / "bad.npz", ref + 0.003 * rng.standard_normal(ref.shape))
    return ref_path, a, b, ref


def test_round_trip_json_png_csv(main, volumes, tmp_path, capsys):
    ref, a, b, _ = volumes
    out = tmp_path / "out"
    rc = main(["evaluate", a, b, "--reference", ref, "--out-json", str(out / "m.json"), "--out-png", str(out / "f.png"),
               "--out-csv", str(out / "t.csv"), "--mu-water", "0.02"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| good |" in table and "*" in table
    res = json.loads((out / "m.json").read_text())["results"]
    assert res["good"]["psnr"] > res["bad"]["psnr"]
    assert len(res["good"]["ssim_per_slice_z"]) == 12 and len(res["good"]["reproj_rmse_per_view"]) == 4
    assert {"psnr", "ssim3d", "ssim_slices", "gmsd", "mae", "rmse", "mae_hu", "rmse_hu", "reproj_rmse"} <= set(res["good"])
    assert (out / "f.png").read_bytes()[:4] == b"\x89PNG"
    csv_text = (out / "t.csv").read_text().splitlines()
    assert csv_text[0].startswith("recon,psnr") and csv_text[1].startswith("good,") and "psnr" in csv_text[1].split(",")[-1]


def test_cases_folder_mean_std(main, tmp_path, rng, capsys):
    for d in ("ref", "m1"):
        (tmp_path / d).mkdir()
    for i in range(3):
        r = rng.random((12, 12, 12)).astype(np.float32)
        _write(tmp_path / "ref" / f"case{i}.npz", r)
        _write(tmp_path / "m1" / f"case{i}.npz", r + 0.01 * rng.standard_normal(r.shape))
    rc = main(["evaluate", str(tmp_path / "m1"), "--reference", str(tmp_path / "ref"), "--out-json", str(tmp_path / "c.json")])
    assert rc == 0
    assert "±" in capsys.readouterr().out
    rep = json.loads((tmp_path / "c.json").read_text())["results"]["m1"]
    assert len(rep["cases"]) == 3 and rep["std"]["psnr"] > 0


def test_bad_inputs_exit_2(main, volumes, tmp_path, capsys):
    ref, a, _, refvol = volumes
    small = _write(tmp_path / "small.npz", refvol[:-2])
    nan = refvol.copy()
    nan[0, 0, 0] = np.nan
    cases = [
        ([small], "different grid"),
        ([_write(tmp_path / "nan.npz", nan)], "NaN"),
        ([str(tmp_path / "missing.npz")], "no such file"),
        ([a, "--reference", _write(tmp_path / "flat.npz", np.ones_like(refvol))], "constant"),
    ]
    np.savez(tmp_path / "nokey.npz", other=refvol)
    cases.append(([str(tmp_path / "nokey.npz")], "missing keys ['volume']"))
    (tmp_path / "junk.npz").write_text("not a zip")
    cases.append(([str(tmp_path / "junk.npz")], "cannot read"))
    for args, msg in cases:
        argv = ["evaluate", *args] + ([] if "--reference" in args else ["--reference", ref])
        argv += ["--out-json", str(tmp_path / "never.json")]
        assert main(argv) == 2, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
        assert not (tmp_path / "never.json").exists()
    # --resample makes the grids agree explicitly
    assert main(["evaluate", small, "--reference", ref, "--resample", "--no-reprojection"]) == 0


def test_nifti_inputs_go_through_io(main, volumes, tmp_path, capsys):
    from jaxmedrf import io

    _, _, _, ref = volumes
    spacing = np.array([2.0, 2.0, 2.0])
    for name, vol in (("ref", ref), ("rec", ref + 0.001)):
        io.save_volume(io.VolumeData(array=vol, spacing=spacing, affine=np.diag([2.0, 2.0, 2.0, 1.0]), unit="mm^-1"),
                       tmp_path / f"{name}.nii.gz")
    out = tmp_path / "m.json"
    assert main(["evaluate", str(tmp_path / "rec.nii.gz"), "--reference", str(tmp_path / "ref.nii.gz"),
                 "--out-json", str(out), "--no-reprojection"]) == 0
    res = json.loads(out.read_text())["results"]
    (only,) = res.values()
    np.testing.assert_allclose(only["mae"], 0.001, rtol=1e-3)
