"""jaxmedrf._files: the reader of the command line's .npz inputs, and atomic output
that keeps the user's umask."""

import contextlib
import os
import stat

import numpy as np
import pytest

from jaxmedrf._files import atomic_dir, atomic_path, read_npz


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_read_npz_reads_checks_and_never_unpickles(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, volume=np.ones((2, 2, 2), np.float32), geometry=np.asarray('{"a": 1}'))
    z = read_npz(good, ("volume",), what="--volume")
    assert set(z) == {"volume", "geometry"} and z["volume"].shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"--volume .*missing keys \['projections'\]"):
        read_npz(good, ("volume", "projections"), what="--volume")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_npz(tmp_path / "none.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, volume=np.array([{"evil": 1}], dtype=object))  # an object array needs pickle to load
    with pytest.raises(ValueError, match="cannot read"):
        read_npz(pickled)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_npz(tmp_path / "junk.npz")


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
                         ids=["umask022", "umask077", "umask002"])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "series") as tmp:
            (tmp / "1.dcm").write_bytes(b"x")
        with open(tmp_path / "plain.txt", "w") as f:  # what the outputs should match
            f.write("x")
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "series").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "series" / "1.dcm").stat().st_mode) == file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "plain.txt", "series"]  # no temporaries left
