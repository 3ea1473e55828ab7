"""`jaxmedrf geometry`: conversions printed and written, other formats read back, the 3-D drawing,
and bad input refused with one line, status 2, nothing written."""

import json

import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import interop
from jaxmedrf.cli import main


def scan():
    return jm.cone_beam(n_voxel=(16, 16, 16), d_voxel=1.5, n_detector=(8, 10), d_detector=(3.0, 2.5), DSD=300.0,
                        DSO=200.0, n_views=3, off_detector=(1.3, -0.7), off_origin=(1.0, -2.0, 0.5))


@pytest.fixture
def npz(tmp_path):
    """A file shaped like `jaxmedrf simulate`'s output (only 'geometry' is read)."""
    path = tmp_path / "scan.npz"
    np.savez(path, geometry=np.asarray(scan().to_json()), projections=np.zeros((3, 8, 10), np.float32))
    return path


def same(a, b):
    assert a.n_detector == b.n_detector and a.n_voxel == b.n_voxel and b.rotation is None
    for name in ("DSD", "DSO", "d_detector", "off_detector", "d_voxel", "off_origin"):
        np.testing.assert_allclose(np.asarray(getattr(b, name)), np.asarray(getattr(a, name)), atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (np.asarray(b.angles) - np.asarray(a.angles)))), 0, atol=1e-12)


@pytest.mark.parametrize("fmt", interop.FORMATS)
def test_prints_each_format_and_reads_it_back(npz, tmp_path, capsys, fmt):
    assert main(["geometry", str(npz), "--to", fmt]) == 0
    data = json.loads(capsys.readouterr().out)
    same(scan(), interop.from_format(data, fmt))
    # and the other way: that JSON as input (format told from its keys), out as a jaxmedrf geometry
    src, out = tmp_path / f"{fmt}.json", tmp_path / "back.json"
    src.write_text(json.dumps(data))
    assert main(["geometry", str(src), "--to", "jaxmedrf", "--out", str(out)]) == 0
    assert f"({fmt}) ->" in capsys.readouterr().out
    same(scan(), jm.Geometry.from_json(out.read_text()))


def test_from_flag_and_plot(npz, tmp_path, capsys):
    tig = tmp_path / "tigre.json"
    assert main(["geometry", str(npz), "--to", "tigre", "--out", str(tig)]) == 0
    png = tmp_path / "geom.png"
    assert main(["geometry", str(tig), "--from", "tigre", "--plot", str(png), "--views", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"drew {png}")  # no --to: nothing printed but the note
    head = png.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 10_000


@pytest.mark.parametrize("argv, words", [
    (["{missing}", "--to", "astra"], "no such file"),
    (["{bad_json}", "--to", "astra"], "not a JSON geometry"),
    (["{unknown}", "--to", "astra"], "cannot tell"),
    (["{npz}", "--to", "astra", "--from", "tigre"], "jaxmedrf geometry"),
    (["{parallel}", "--to", "diffdrr"], "parallel"),
    (["{skewed}", "--to", "tigre"], "not perpendicular"),
    (["{npz}"], "nothing to do"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(npz, tmp_path, capsys, argv, words):
    files = {"missing": tmp_path / "absent.json", "bad_json": tmp_path / "bad.json", "unknown": tmp_path / "u.json",
             "npz": npz, "parallel": tmp_path / "par.json", "skewed": tmp_path / "skew.json"}
    files["bad_json"].write_text("{not json")
    files["unknown"].write_text('{"hello": 1}')
    files["parallel"].write_text(jm.parallel_beam(n_voxel=8, n_detector=(4, 4), n_views=2).to_json())
    astra = interop.json_ready(interop.to_astra(scan()))
    astra["proj_geom"]["Vectors"][0][9:12] = [0.5, 0.5, 8.5 ** 0.5]  # |v| = dv = 3, tilted towards u
    files["skewed"].write_text(json.dumps(astra))
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    args = [a.format(**files) for a in argv]
    rc = main(["geometry", *args, *(["--out", str(out)] if "--to" in args else []), "--plot", str(png)]
              if words != "nothing to do" else ["geometry", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and words in err and err.startswith("jaxmedrf geometry: error:")
    assert not out.exists() and not png.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_refuses_to_overwrite(npz, tmp_path, capsys):
    out = tmp_path / "o.json"
    out.write_text("keep")
    assert main(["geometry", str(npz), "--to", "nerf", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep"
    assert main(["geometry", str(npz), "--to", "nerf", "--out", str(out), "--overwrite"]) == 0
    assert "frames" in json.loads(out.read_text())
