"""`jaxmedrf info` on the files the command line writes: a simulate / reconstruct .npz is
described in full (projections, angles, geometry, volume); a file that is no npz is refused."""

import subprocess
import sys

import numpy as np
import pytest

from jaxmedrf.cli import main


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "sim.npz"
    assert main(["simulate", "--n-voxel", "16", "--n-views", "12", "--n-detector", "20", "24", "--dsd", "1200",
                 "--dso", "800", "--mu-scale", "1", "--no-png", "--out", str(out)]) == 0
    return out


def _info(path, capsys):
    capsys.readouterr()
    rc = main(["info", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_reports_projections_angles_geometry_and_volume(sim, capsys):
    rc, out, err = _info(sim, capsys)
    assert rc == 0 and err == "", err
    lines = out.splitlines()
    z = np.load(sim)
    p = z["projections"]
    proj = next(x for x in lines if x.startswith("projections:"))
    assert "12 views x 20 x 24 pixels" in proj and f"{float(p.max()):.6g}" in proj and "float32" in proj
    assert "angles: 12 views, 0° .. 330° (step 30°)" in lines
    assert "geometry: cone beam, DSO 800 mm, DSD 1200 mm (magnification 1.5)" in lines
    det = next(x for x in lines if x.startswith("detector:"))
    assert det.startswith("detector: 20 x 24 pixels (nv x nu) of ")
    assert ("voxel grid: 16 x 16 x 16 voxels (nx x ny x nz) of 16 x 16 x 16 mm = 256 x 256 x 256 mm, "
            "centre (x, y, z) 0, 0, 0 mm") in lines
    assert "volume: 16 x 16 x 16 voxels (x, y, z in LPS order)" in lines and "spacing: 16, 16, 16 mm" in lines
    assert "modality: unknown, unit: mm^-1" in lines
    # the orientation line says where each axis goes (it used to stop at "increase towards)")
    assert "orientation: LPS (array axes 0, 1, 2 increase towards left, posterior, superior)" in lines
    assert lines[-1] == "problems: none" and lines.count("format: npz") == 1


def test_info_on_a_reconstruction_and_on_projections_alone(sim, tmp_path, capsys):
    rec = tmp_path / "fdk.npz"
    assert main(["reconstruct", str(sim), "--method", "fdk", "--no-png", "--out", str(rec)]) == 0
    rc, out, _ = _info(rec, capsys)
    assert rc == 0 and "projections: none" in out and "angles: 12 views" in out and "geometry: cone beam" in out
    assert "volume: 16 x 16 x 16 voxels" in out and "problems: none" in out
    with np.load(sim) as z:
        np.savez(tmp_path / "proj.npz", projections=z["projections"], geometry=z["geometry"])
        np.savez(tmp_path / "wrong.npz", projections=z["projections"][:5], geometry=z["geometry"])
    rc, out, _ = _info(tmp_path / "proj.npz", capsys)
    assert rc == 0 and "volume: none (projections only)" in out and "problems: none" in out
    rc, out, _ = _info(tmp_path / "wrong.npz", capsys)
    assert rc == 0 and "projections have shape (5, 20, 24), the geometry expects (12, 20, 24)" in out


@pytest.mark.parametrize("content", [b"a text file\nrenamed\n", b""], ids=["text", "empty"])
def test_info_on_a_file_that_is_no_npz_exits_2_with_one_line(tmp_path, content):
    path = tmp_path / "renamed.npz"
    path.write_bytes(content)
    res = subprocess.run([sys.executable, "-m", "jaxmedrf.cli", "info", str(path)], capture_output=True, text=True)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == "" and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "not an npz file" in res.stderr and "allow_pickle" not in res.stderr, res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["renamed.npz"]  # nothing written


def test_info_on_an_npz_of_objects_exits_2_without_numpy_options(tmp_path, capsys):
    np.savez(tmp_path / "obj.npz", volume=np.array([{"a": 1}], dtype=object))
    rc, out, err = _info(tmp_path / "obj.npz", capsys)
    assert rc == 2 and out == "" and "holds Python objects" in err and "allow_pickle" not in err
