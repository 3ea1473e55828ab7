"""Files: atomic output (write to a temporary file or folder beside the target, then rename)
and the safe readers of the ``.npz`` / ``.npy`` inputs of the command line.

Outputs get the permissions a plain ``open(path, "w")`` (or ``mkdir``) would give them, the
user's umask applied to ``0o666`` (``0o777`` for a folder); ``tempfile`` alone would leave them
owner-only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_dir", "atomic_path", "check_writable", "read_npy", "read_npz"]


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc``): setting
    it, as ``os.umask`` must in order to read it, would change it for every thread at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yields a temporary path in the target's folder; renames it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so no
    half-written output survives a failure or an interrupt. The file ends with the mode
    ``open(path, "w")`` would give it (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> None:
    """``ValueError`` if ``path`` exists (a file, or a non-empty directory) and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path}: output exists (pass overwrite=True / --overwrite to replace it)")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yields a temporary directory next to ``path``; on success it replaces ``path``.

    On any exception the temporary directory is removed and ``path`` is left as it was. The
    folder ends with ``mkdir``'s mode (``0o777`` less the umask), not ``mkdtemp``'s ``0o700``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_NPY_MAGIC = b"\x93NUMPY"


def _what_it_is(head: bytes) -> str:
    """A few words on a file's first bytes: what it is, where it is not what it should be."""
    if not head:
        return "it is empty"
    if head.startswith(_NPY_MAGIC):
        return "it is a single .npy array"
    if head.startswith(_ZIP_MAGIC):
        return "it is a zip archive"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8]!r}"
    if all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"it is text, starting {text[:20]!r}"
    return f"it starts with the bytes {head[:8]!r}"


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _pickle_message(key: str | None) -> str:
    arr = f"array {key!r}" if key else "the array"
    return f"{arr} holds Python objects, which need unpickling; jaxmedrf reads only numeric and string arrays"


def _check_kind(path, what: str, kind: str, magic: bytes | tuple[bytes, ...], hint: str) -> Path:
    """``path`` as a Path, if it is a file that starts with ``magic``; FileNotFoundError or a
    ValueError saying it is not a ``kind`` file (and what it looks like) otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such file (not found)")
    if path.is_dir():
        raise ValueError(f"cannot read {what} {path}: not an {kind} file (it is a directory)")
    head = _head(path)
    if not head.startswith(magic):
        raise ValueError(f"cannot read {what} {path}: not an {kind} file ({hint}; {_what_it_is(head)})")
    return path


def read_npz(path: str | os.PathLike, required: tuple[str, ...] = (), *, what: str = "file") -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file, read without unpickling anything.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: it is not an npz file (not a zip archive: text, a lone ``.npy``, …), it is
        truncated or corrupt, it holds object arrays, or it lacks one of the ``required`` keys.
        Messages name ``what`` (e.g. ``"--volume"``) and never suggest NumPy's options.
    """
    path = _check_kind(path, what, "npz", _ZIP_MAGIC, "a .npz is a zip archive of .npy arrays")
    key = None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {}
            for key in z.files:
                arrays[key] = z[key]
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickled" in str(e):
            raise ValueError(f"cannot read {what} {path}: {_pickle_message(key)}") from None
        raise ValueError(f"cannot read {what} {path}: not a readable .npz file ({e})") from e
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, zlib.error …
        raise ValueError(f"cannot read {what} {path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(f"{what} {path}: missing keys {missing} (has {sorted(arrays)})")
    return arrays


def read_npy(path: str | os.PathLike, *, what: str = "file") -> np.ndarray:
    """The array of a ``.npy`` file, read without unpickling anything.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: it is not an npy file (text, an ``.npz``, …), it is truncated, or it holds
        Python objects. Messages name ``what`` and never suggest NumPy's options.
    """
    path = _check_kind(path, what, "npy", _NPY_MAGIC, "a .npy starts with NumPy's header")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickled" in str(e):
            raise ValueError(f"cannot read {what} {path}: {_pickle_message(None)}") from None
        raise ValueError(f"cannot read {what} {path}: not a readable .npy file ({e})") from e
    except Exception as e:  # EOFError, OSError …
        raise ValueError(f"cannot read {what} {path}: not a readable .npy file ({type(e).__name__}: {e})") from e
