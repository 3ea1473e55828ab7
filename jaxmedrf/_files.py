"""Atomic output: write to a temporary file or folder beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "check_writable"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yields a temporary path in the target's folder; renames it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so no
    half-written output survives a failure or an interrupt.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
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

    On any exception the temporary directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
