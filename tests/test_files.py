"""jaxmedrf._files.read_npz: the one reader of the command line's .npz inputs."""

import numpy as np
import pytest

from jaxmedrf._files import read_npz


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
