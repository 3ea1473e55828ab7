"""Volumes on disk: one loader and one writer for DICOM series, enhanced DICOM, NIfTI and .npz.

Every loaded volume is brought to the patient **LPS** frame by permuting and flipping array axes
only (never resampling): array axis 0 increases towards the patient's Left, axis 1 towards
Posterior, axis 2 towards Superior, so that our ``(x, y, z)`` are anatomical whatever the
acquisition plane. ``affine`` maps a voxel index ``(i, j, k, 1)`` to patient LPS millimetres
(DICOM's patient coordinate system); for an axis-aligned acquisition it is diagonal with the
spacing on the diagonal. An oblique acquisition keeps its exact (non-diagonal) affine; its axes
are permuted/flipped to the nearest LPS axes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "VolumeData",
    "load_volume",
    "save_volume",
    "reorient_to_lps",
    "spacing_from_affine",
    "volume_format",
]


from jaxmedrf.io.volume_data import (  # noqa: F401 - re-exported
    VolumeData,
    _centred_affine,
    _check_volume_array,
    orientation_code,
    reorient_to_lps,
    spacing_from_affine,
)


def volume_format(path: str | os.PathLike) -> str:
    """``"nifti"``, ``"npz"`` or ``"dicom"`` from a path's name (a directory or other name: DICOM)."""
    name = str(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npz"):
        return "npz"
    return "dicom"


def load_volume(path: str | os.PathLike, *, series: str | None = None) -> VolumeData:
    """Loads a 3D volume and brings it to patient LPS axes order.

    Accepts a directory holding a DICOM series (files grouped by ``SeriesInstanceUID``, ordered by
    ``ImagePositionPatient`` projected on the slice normal, ``RescaleSlope/Intercept`` applied),
    one multi-frame (enhanced) DICOM file, a NIfTI file (``.nii``/``.nii.gz``, RAS → LPS) or one of
    our ``.npz`` files (``volume`` + ``spacing`` + ``affine``, or a ``simulate`` output).

    Args:
        path: file or directory.
        series: the ``SeriesInstanceUID`` to load when a directory holds several series.

    Returns:
        A :class:`VolumeData` in LPS axes order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable or unusable input; the message names the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    fmt = volume_format(path) if path.is_file() else "dicom"
    if fmt == "nifti":
        from jaxmedrf.io.nifti import load_nifti

        return load_nifti(path)
    if fmt == "npz":
        return load_npz(path)
    from jaxmedrf.io.dicom import load_dicom_volume

    return load_dicom_volume(path, series=series)


def load_npz(path: str | os.PathLike) -> VolumeData:
    """Reads our ``.npz`` volume (``volume``, ``spacing``, ``affine``) or a ``simulate`` output."""
    from jaxmedrf._files import read_npz

    path = Path(path)
    z = read_npz(path)  # not an npz, truncated, object arrays: ValueError
    if "volume" not in z:
        raise ValueError(f"{path}: .npz has no 'volume' array (keys: {sorted(z)})")
    vol = np.asarray(z["volume"], dtype=np.float32)
    modality = str(z["modality"]) if "modality" in z else ""
    unit = str(z["unit"]) if "unit" in z else ""
    if "affine" in z:
        affine = np.asarray(z["affine"], dtype=np.float64)
    elif "spacing" in z:
        affine = _centred_affine(vol.shape, np.asarray(z["spacing"], dtype=np.float64))
    elif "geometry" in z:
        from jaxmedrf.geometry import Geometry

        g = Geometry.from_json(str(z["geometry"]))
        affine = _centred_affine(vol.shape, np.asarray(g.d_voxel, dtype=np.float64),
                                 np.asarray(g.off_origin, dtype=np.float64))
        unit = unit or "mm^-1"
    else:
        affine = _centred_affine(vol.shape, np.ones(3))
    _check_volume_array(vol, path)
    if affine.shape != (4, 4):
        raise ValueError(f"{path}: 'affine' must be 4x4, got shape {affine.shape}")
    return VolumeData(vol, spacing_from_affine(affine), affine, modality, unit, str(path), {"format": "npz"})


def save_volume(
    volume: np.ndarray | VolumeData,
    path: str | os.PathLike,
    *,
    spacing: Any = None,
    affine: Any = None,
    like: VolumeData | str | os.PathLike | None = None,
    modality: str | None = None,
    unit: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes a volume as NIfTI (``.nii``/``.nii.gz``), ``.npz``, or a DICOM series directory.

    The format follows the name: ``.nii``/``.nii.gz`` → NIfTI (LPS affine turned to RAS),
    ``.npz`` → ``volume`` + ``spacing`` + ``affine`` (+ ``modality``, ``unit``), anything else → a
    directory of DICOM CT/MR image files, one per slice, with new Study/Series/SOP Instance UIDs
    and nothing patient-identifying (PS3.15 Annex E basic profile; see :mod:`jaxmedrf.io.deid`).
    Output is atomic: written to a temporary name, renamed on success.

    Args:
        volume: ``(x, y, z)`` array in LPS order, or a :class:`VolumeData` (its spacing, affine,
            modality and unit are the defaults).
        path: output file or directory.
        spacing: voxel size, mm (scalar or ``(3,)``); default from ``affine``/``like``, else 1 mm.
        affine: ``(4, 4)`` voxel index → LPS mm; default: diagonal ``spacing``, grid centred at 0.
        like: a :class:`VolumeData` (or a path to load one) whose geometry is used when
            ``spacing``/``affine`` are not given and whose technical (never identifying)
            attributes are carried into DICOM output.
        modality: DICOM modality (default: the volume's, else ``"CT"``).
        unit: intensity unit (default: the volume's, else ``"HU"`` for CT).
        overwrite: replace an existing output.

    Returns:
        The written path.
    """
    path = Path(path)
    if like is not None and not isinstance(like, VolumeData):
        like = load_volume(like)
    if isinstance(volume, VolumeData):
        base = volume
        array = volume.array
    else:
        base = like
        array = volume
    array = np.asarray(array, dtype=np.float32)
    _check_volume_array(array, "volume")
    if affine is None:
        if spacing is None and base is not None and tuple(base.shape) == array.shape:
            affine = base.affine
        else:
            if spacing is None:
                spacing = base.spacing if base is not None else 1.0
            spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
            if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
                raise ValueError(f"spacing must be positive and finite, got {spacing.tolist()}")
            affine = _centred_affine(array.shape, spacing)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if spacing is not None and not np.allclose(spacing_from_affine(affine), np.broadcast_to(spacing, (3,)), rtol=1e-4):
        raise ValueError(f"spacing {np.broadcast_to(spacing, (3,)).tolist()} disagrees with the affine's "
                         f"{spacing_from_affine(affine).tolist()}")
    modality = modality or (base.modality if base is not None and base.modality else "CT")
    unit = unit if unit is not None else (base.unit if base is not None and base.unit else
                                          ("HU" if modality == "CT" else ""))
    vol = VolumeData(array, spacing_from_affine(affine), affine, modality, unit, "",
                     dict(like.meta) if like is not None else (dict(base.meta) if base is not None else {}))
    from jaxmedrf._files import check_writable

    check_writable(path, overwrite=overwrite)
    fmt = volume_format(path)
    if fmt == "nifti":
        from jaxmedrf.io.nifti import save_nifti

        return save_nifti(vol, path)
    if fmt == "npz":
        return save_npz(vol, path)
    from jaxmedrf.io.dicom import save_dicom_series

    return save_dicom_series(vol, path)


def save_npz(vol: VolumeData, path: str | os.PathLike) -> Path:
    """Writes ``volume`` float32, ``spacing`` (3,), ``affine`` (4,4), ``modality``, ``unit``."""
    from jaxmedrf._files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, volume=np.asarray(vol.array, np.float32), spacing=np.asarray(vol.spacing, np.float64),
                     affine=np.asarray(vol.affine, np.float64), modality=np.str_(vol.modality),
                     unit=np.str_(vol.unit))
    return path
