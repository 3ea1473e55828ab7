"""`jaxmedrf render`: an orbit of DRRs as a GIF or PNG frames, and refusals."""

import numpy as np
import pytest
from PIL import Image

import jaxmedrf as jm
from jaxmedrf.cli import main
from jaxmedrf.cli.render import orbit_geometry


@pytest.fixture(scope="module")
def vol_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "sim.npz"
    assert main(["simulate", "--n-voxel", "12", "--n-views", "2", "--n-detector", "8", "8", "--no-png", "--out", str(path)]) == 0
    return path


def test_gif_and_png_frames(vol_npz, tmp_path, capsys):
    gif = tmp_path / "orbit.gif"
    assert main(["render", str(vol_npz), "--out", str(gif), "--n-frames", "6", "--size", "16", "--elevation", "15"]) == 0
    assert "frames/s" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (16, 16)
    folder = tmp_path / "frames"
    assert main(["render", str(vol_npz), "--out", str(folder), "--n-frames", "3", "--size", "8"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]


def test_orbit_sees_the_whole_volume():
    g = orbit_geometry((10, 10, 10), (2.0, 2.0, 2.0), n_frames=4, size=24, elevation_deg=30.0)
    p = np.asarray(jm.project(np.ones((10, 10, 10), np.float32), g))
    # The border rows and columns see no volume: the volume's shadow is inside the detector.
    assert p.max() > 0 and np.all(p[:, 0, :] == 0) and np.all(p[:, -1, :] == 0) and np.all(p[:, :, 0] == 0)


def test_bad_input(vol_npz, tmp_path):
    out = tmp_path / "x.gif"
    assert main(["render", str(tmp_path / "none.npz"), "--out", str(out)]) == 2
    assert main(["render", str(vol_npz), "--out", str(out), "--n-frames", "0"]) == 2
    np.savez(tmp_path / "nogeo.npz", volume=np.zeros((4, 4, 4), np.float32))
    assert main(["render", str(tmp_path / "nogeo.npz"), "--out", str(out)]) == 2
    (tmp_path / "junk.npz").write_text("not a zip")  # one line on stderr and status 2, not a BadZipFile traceback
    assert main(["render", str(tmp_path / "junk.npz"), "--out", str(out)]) == 2
    assert not out.exists()
