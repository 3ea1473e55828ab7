"""NIfTI-1/2 volumes through ``nibabel``: RAS+ on disk, LPS in memory.

NIfTI's affine maps voxel indices to RAS+ millimetres (+x towards the patient's Right, +y
Anterior, +z Superior); DICOM's and our frame is LPS (+x Left, +y Posterior, +z Superior). So ``A_lps = diag(-1, -1, 1, 1) A_ras``
and back. Intensity metadata (modality, unit) round-trip through the header's ``descrip`` field
as ``jaxmedrf modality=CT unit=HU``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxmedrf._files import atomic_path
from jaxmedrf.io.volume_data import VolumeData, _check_volume_array, reorient_to_lps, spacing_from_affine

__all__ = ["load_nifti", "save_nifti", "LPS_FROM_RAS"]

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_UNIT_SCALE_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


def load_nifti(path: str | os.PathLike) -> VolumeData:
    """A ``.nii``/``.nii.gz`` file as a :class:`VolumeData` in LPS axes order.

    Raises:
        ValueError: not a NIfTI file, not 3D (a 4D file with one volume is accepted), or NaN/inf
            voxels (count reported).
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, OSError, zlib errors…
        raise ValueError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from None
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{path}: a volume must be 3D, got a NIfTI image of shape {arr.shape}")
    _check_volume_array(arr, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    xyz_unit = img.header.get_xyzt_units()[0]
    affine[:3, :] *= _UNIT_SCALE_MM.get(xyz_unit, 1.0)
    affine = LPS_FROM_RAS @ affine
    arr, affine = reorient_to_lps(arr, affine)
    modality, unit = "", ""
    descrip = img.header.get("descrip")
    text = bytes(np.asarray(descrip).tobytes()).split(b"\0")[0].decode("latin-1") if descrip is not None else ""
    if text.startswith("jaxmedrf "):
        fields = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
        modality, unit = (fields.get(k, "").strip("-") for k in ("modality", "unit"))
    return VolumeData(arr, spacing_from_affine(affine), affine, modality, unit, str(path), {"format": "nifti"})


def save_nifti(vol: VolumeData, path: str | os.PathLike) -> Path:
    """Writes ``vol`` as NIfTI-1 (float32, RAS affine in both qform and sform, mm units)."""
    import nibabel as nib

    path = Path(path)
    img = nib.Nifti1Image(np.asarray(vol.array, dtype=np.float32), LPS_FROM_RAS @ np.asarray(vol.affine, np.float64))
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    img.header["descrip"] = f"jaxmedrf modality={vol.modality or '-'} unit={vol.unit or '-'}"[:79]
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
