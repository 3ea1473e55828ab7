"""`jaxmedrf simulate`: the promised file format, the PNG, and refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf.cli import main

SMALL = ["--n-voxel", "16", "--n-views", "6", "--n-detector", "12", "14"]

#: The session's persistent compilation cache (tests/conftest.py), for the CLI subprocesses.
JIT_CACHE = {k: v for k, v in os.environ.items() if k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}


def test_simulate_writes_the_promised_npz_and_png(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    rc = main(["simulate", *SMALL, "--off-detector", "1", "-2", "--off-origin", "0", "3", "0", "--arc", "200",
               "--noise-i0", "1e5", "--seed", "3", "--out", str(out)])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "6 cone-beam views" in line
    with np.load(out) as z:
        assert sorted(z.files) == ["angles", "geometry", "projections", "volume"]
        proj, angles, vol = z["projections"], z["angles"], z["volume"]
        geo = json.loads(str(z["geometry"]))
    assert proj.dtype == np.float32 and proj.shape == (6, 12, 14)
    assert vol.dtype == np.float32 and vol.shape == (16, 16, 16)
    np.testing.assert_allclose(angles, np.deg2rad(200) / 6 * np.arange(6))
    assert geo["beam"] == "cone" and geo["off_detector"] == [1.0, -2.0] and geo["off_origin"] == [0.0, 3.0, 0.0]
    assert {"DSD", "DSO", "n_detector", "d_detector", "off_detector", "n_voxel", "d_voxel", "off_origin", "angles"} <= set(geo)
    g = jm.Geometry.from_json(str(np.load(out)["geometry"]))
    # Noise-free re-projection of the stored volume is close to the noisy data (I0 = 1e5).
    clean = np.asarray(jm.project(vol, g))
    assert np.abs(clean - proj).mean() < 0.02
    assert (tmp_path / "sim.png").stat().st_size > 10_000


def test_parallel_trilinear_and_analytic(tmp_path):
    for method in ("trilinear", "analytic"):
        out = tmp_path / f"{method}.npz"
        assert main(["simulate", *SMALL, "--beam", "parallel", "--method", method, "--phantom", "spheres",
                     "--no-png", "--out", str(out)]) == 0
        with np.load(out) as z:
            assert json.loads(str(z["geometry"]))["beam"] == "parallel"
            assert z["projections"].max() > 0
        assert not (tmp_path / f"{method}.png").exists()


BAD = [
    (["--dsd", "900"], "DSD"),
    (["--d-voxel", "-1"], "d_voxel"),
    (["--n-views", "0"], "n-views"),
    (["--phantom", "head"], "phantom"),
    (["--n-voxel", "16", "0", "16"], "n-voxel"),
    (["--noise-i0", "-5"], "noise-i0"),
    (["--d-detector", "nan", "1"], "d_detector"),
    (["--out", "x.txt"], "--out"),
]


@pytest.mark.parametrize("args, word", BAD)
def test_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, args, word):
    """In this process: main returns 2 (argparse's own refusals exit with 2), one line on stderr."""
    out = tmp_path / "bad.npz"
    capsys.readouterr()
    try:
        rc = main(["simulate", *SMALL, "--out", str(out), *args])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and word in err
    assert err.strip().count("\n") == 0
    assert list(tmp_path.iterdir()) == []


def test_the_process_exits_2_with_one_line_and_no_file(tmp_path):
    """``python -m jaxmedrf.cli`` itself: exit status 2, one line, no traceback, no file."""
    args, word = BAD[2]
    out = tmp_path / "bad.npz"
    cmd = [sys.executable, "-m", "jaxmedrf.cli", "simulate", *SMALL, "--out", str(out), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu", "PATH": "", **JIT_CACHE})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and word in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert list(tmp_path.iterdir()) == []


def test_help_lists_units(capsys):
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--dsd", "--dso", "--n-detector", "--d-detector", "--off-detector", "--d-voxel", "--off-origin",
                "--arc", "--beam", "--method", "--noise-i0", "--seed"):
        assert opt in out
    assert "mm" in out and "degrees" in out


def test_simulate_from_a_volume_file_with_the_mednerf_preset(tmp_path):
    from jaxmedrf import io

    ct = np.full((12, 10, 8), -1000.0, np.float32)
    ct[3:9, 2:8, 2:6] = 40.0  # soft tissue block in air, HU
    src = tmp_path / "ct.nii.gz"
    io.save_volume(io.VolumeData(array=ct, spacing=np.array([2.0, 2.0, 3.0]), affine=np.diag([2.0, 2.0, 3.0, 1.0]),
                                 modality="CT", unit="HU"), src)
    out = tmp_path / "drr.npz"
    assert main(["simulate", "--volume", str(src), "--preset", "mednerf", "--n-detector", "16", "16",
                 "--export-png", str(tmp_path / "png"), "--no-png", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["projections"].shape == (72, 16, 16)
        np.testing.assert_allclose(np.diff(z["angles"]), np.deg2rad(5.0), atol=1e-9)
        g = jm.Geometry.from_json(str(z["geometry"]))
        assert g.n_voxel == (12, 10, 8) and np.allclose(g.d_voxel, [2, 2, 3])
        assert z["volume"].max() > 0.015  # 40 HU is about water, in mm⁻¹
    assert len(list((tmp_path / "png").glob("*.png"))) == 72
    assert main(["simulate", "--preset", "mednerf", "--out", str(tmp_path / "x.npz")]) == 2
