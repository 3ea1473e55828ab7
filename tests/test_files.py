"""jaxmedrf._files: the readers of the command line's .npz / .npy inputs, and atomic output
that keeps the user's umask."""

import contextlib
import os
import stat

import numpy as np
import pytest

from jaxmedrf._files import atomic_dir, atomic_path, read_npy, read_npz


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
    with pytest.raises(ValueError, match="cannot read .*'volume' holds Python objects") as e:
        read_npz(pickled)
    assert "allow_pickle" not in str(e.value)


@pytest.mark.parametrize("content, kind", [
    (b"hello\nworld\n", "it is text"),  # a text file renamed .npz: NumPy tries to unpickle it
    (b"", "it is empty"),
    (b"\x00\x01\x02\xff" * 8, "bytes"),
], ids=["text", "empty", "binary"])
def test_not_an_npz_file_says_so_and_offers_no_numpy_option(tmp_path, content, kind):
    path = tmp_path / "renamed.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot read --volume .*renamed.npz: not an npz file") as e:
        read_npz(path, what="--volume")
    assert kind in str(e.value) and "allow_pickle" not in str(e.value) and "pickle" not in str(e.value)
    np.save(tmp_path / "a.npy", np.ones(3))
    os.replace(tmp_path / "a.npy", path)  # a lone .npy renamed .npz
    with pytest.raises(ValueError, match="not an npz file .*single .npy array"):
        read_npz(path)
    with pytest.raises(ValueError, match="not an npz file .*directory"):
        read_npz(tmp_path)


def test_read_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3.0))
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), [0.0, 1.0, 2.0])
    (tmp_path / "t.npy").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="--xray .*not an npy file .*it is text") as e:
        read_npy(tmp_path / "t.npy", what="--xray")
    assert "pickle" not in str(e.value)
    np.save(tmp_path / "o.npy", np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds Python objects") as e:
        read_npy(tmp_path / "o.npy")
    assert "allow_pickle" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_npy(tmp_path / "none.npy")


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
