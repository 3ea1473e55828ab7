"""Raw projection frames in: image stacks (TIFF, PNG, NPY) and DICOM projection frames.

A *stack* is read from

* one ``.npy`` file: ``(frames, rows, cols)`` or a single ``(rows, cols)`` frame;
* one TIFF (``.tif``/``.tiff``), single- or multi-frame, or one PNG (grey-scale, 8 or 16 bit,
  or 32-bit integer/float TIFF);
* one DICOM file (any other name): a multi-frame object (XA, RF, enhanced XA/DX, …) or a
  single radiograph;
* a folder: its TIFF/PNG/NPY files of one kind in natural name order (``frame_2`` before
  ``frame_10``; other files are ignored), or, when it holds none, its DICOM files (every file
  but hidden ones and ``DICOMDIR``) ordered by ``InstanceNumber`` when every file has a distinct
  one, else by name. Each file gives its frames in turn.

Values are raw detector intensities (counts): DICOM stored values go through the modality
rescale (``RescaleSlope``/``RescaleIntercept``, per frame for enhanced objects) and nothing else:
no VOI window, and ``MONOCHROME1`` (a display convention) is not inverted. Every reader error
becomes one ``ValueError`` naming the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Sequence

import numpy as np

__all__ = ["FRAME_SUFFIXES", "load_angles", "load_field", "load_frames"]

FRAME_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
_KIND = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".npy": "NPY"}
# Pillow modes of grey-scale intensities (8/16/32-bit integers, 32-bit float).
_GREY_MODES = ("L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def _natural_key(path: Path):
    """``frame_2`` before ``frame_10``: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", path.name)]


def _as_stack(arr: np.ndarray, name) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name}: expected one frame (rows, cols) or a stack (frames, rows, cols), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) or arr.dtype == bool:
        raise ValueError(f"{name}: pixel values of type {arr.dtype} are not intensities (integers or floats needed)")
    return arr.astype(np.float32, copy=False)


def _npy_frames(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # not .npy, truncated, pickled objects
        raise ValueError(f"{path}: cannot read the .npy file ({e})") from None
    return _as_stack(arr, path)


def _image_frames(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    frames = []
    try:
        with Image.open(path) as im:
            for k, frame in enumerate(ImageSequence.Iterator(im)):
                if frame.mode not in _GREY_MODES:
                    raise ValueError(f"{path}: frame {k} is a {frame.mode!r} image; grey-scale intensities "
                                     "(8/16/32-bit integer or 32-bit float) are needed")
                frames.append(np.asarray(frame))
    except (OSError, SyntaxError, EOFError) as e:  # UnidentifiedImageError and truncated files are OSErrors
        raise ValueError(f"{path}: cannot read the image ({e})") from None
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"{path}: its frames differ in size ({', '.join(f'{r}x{c}' for r, c in sorted(shapes))})")
    return _as_stack(np.stack(frames), path)


def _dicom_frames(path: Path) -> np.ndarray:
    from jaxmedrf.io.dicom import _fg, decode_pixels, read_dicom

    ds = read_dicom(path)
    arr = decode_pixels(ds, path)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.asarray(arr).reshape(n, *arr.shape[-2:])
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return _as_stack(np.asarray(apply_modality_lut(arr, ds), np.float64), path)
    out = arr.astype(np.float64)
    for k in range(n):
        slope, intercept = (_fg(ds, k, "PixelValueTransformationSequence", kw) for kw in ("RescaleSlope", "RescaleIntercept"))
        slope = 1.0 if slope in (None, "") else float(slope)
        intercept = 0.0 if intercept in (None, "") else float(intercept)
        if slope != 1.0 or intercept != 0.0:
            out[k] = out[k] * slope + intercept
    return _as_stack(out, path)


def _file_frames(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _npy_frames(path)
    if suffix in FRAME_SUFFIXES:
        return _image_frames(path)
    return _dicom_frames(path)


def _dicom_files(folder: Path, files: list[Path]) -> list[Path]:
    """``files`` ordered by ``InstanceNumber`` when every one has a distinct one, else by name."""
    from jaxmedrf.io.dicom import read_dicom

    numbers = []
    for f in files:
        ds = read_dicom(f, pixels=False)
        try:
            numbers.append(int(ds.get("InstanceNumber")))
        except (TypeError, ValueError):
            return files
    return [f for _, f in sorted(zip(numbers, files))] if len(set(numbers)) == len(numbers) else files


def _folder_files(folder: Path) -> list[Path]:
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")), key=_natural_key)
    images = [f for f in files if f.suffix.lower() in FRAME_SUFFIXES]
    if images:
        kinds = sorted({_KIND[f.suffix.lower()] for f in images})
        if len(kinds) > 1:
            raise ValueError(f"{folder}: holds frames of several kinds ({', '.join(kinds)}); one kind a folder")
        return images
    files = [f for f in files if f.name.upper() != "DICOMDIR"]
    if not files:
        raise ValueError(f"{folder}: no frames (no TIFF, PNG, NPY or DICOM files)")
    return _dicom_files(folder, files)


def load_frames(path: str | os.PathLike) -> np.ndarray:
    """A stack of raw frames (module docstring: the formats and the folder order).

    Args:
        path: a file or a folder.

    Returns:
        ``(frames, rows, cols)`` float32 intensities, as stored (after a DICOM modality rescale).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file that cannot be read, colour images, frames of different sizes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not path.is_dir():
        return _file_frames(path)
    stacks, first = [], None
    for f in _folder_files(path):
        s = _file_frames(f)
        if first is None:
            first = (f, s.shape[1:])
        elif s.shape[1:] != first[1]:
            raise ValueError(f"{f}: frames of {s.shape[1]}x{s.shape[2]} pixels, but {first[0].name} has "
                             f"{first[1][0]}x{first[1][1]}; all frames must have one size")
        stacks.append(s)
    return np.concatenate(stacks) if len(stacks) > 1 else stacks[0]


def load_field(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> np.ndarray:
    """A flat or dark field: the mean of every frame of ``paths`` (each as :func:`load_frames`).

    Returns:
        ``(rows, cols)`` float64.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("no field files given")
    total, count, first = None, 0, None
    for p in paths:
        s = load_frames(p)
        if first is None:
            first = (p, s.shape[1:])
            total = np.zeros(s.shape[1:], np.float64)
        elif s.shape[1:] != first[1]:
            raise ValueError(f"{p}: frames of {s.shape[1]}x{s.shape[2]} pixels, but {first[0]} has "
                             f"{first[1][0]}x{first[1][1]}")
        total += s.sum(axis=0, dtype=np.float64)
        count += s.shape[0]
    return total / count


def load_angles(path: str | os.PathLike) -> np.ndarray:
    """Numbers from a ``.npy`` file or a text file (separated by white space, commas or new lines).

    Returns:
        ``(n,)`` float64, as written (the caller knows the unit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = path.read_text().replace(",", " ").split()
        values = np.asarray(values, np.float64).ravel()
    except (OSError, ValueError, TypeError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"{path}: cannot read angles ({e})") from None
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: angles must be finite numbers, {values.size} read")
    return values
