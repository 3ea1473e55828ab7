"""A volume in memory and its LPS frame: the data type every reader and writer of :mod:`jaxmedrf.io` shares.

Leaf of the I/O layer (no other jaxmedrf import). Conventions: :mod:`jaxmedrf.io.volume`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["MU_UNITS", "UNITS", "VolumeData", "orientation_code", "reorient_to_lps", "spacing_from_affine"]

UNITS = ("HU", "mu")  # the values of ``units=`` (and of the CLI's --units): Hounsfield units, or μ in mm⁻¹
MU_UNITS = ("mm^-1", "mm-1", "1/mm")  # spellings of a μ volume's unit


@dataclasses.dataclass(frozen=True, eq=False)
class VolumeData:
    """A volume in patient LPS axes order.

    Attributes:
        array: ``(x, y, z)`` voxel values, float32 (HU for CT, scanner units for MR, mm⁻¹ for μ).
        spacing: ``(3,)`` voxel size along the array axes, mm.
        affine: ``(4, 4)`` voxel index → patient LPS position of the voxel centre, mm.
        modality: DICOM modality (``"CT"``, ``"MR"``, …) or ``""`` when unknown.
        unit: intensity unit: ``"HU"``, ``"mm^-1"``, ``"MR"`` (arbitrary scanner units), ``""``.
        source: the path it was loaded from (``""`` when built in memory).
        meta: non-identifying technical attributes (transfer syntax, series UID, body part…);
            never used to write patient data back.
    """

    array: np.ndarray
    spacing: np.ndarray
    affine: np.ndarray
    modality: str = ""
    unit: str = ""
    source: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def orientation(self) -> str:
        """Three letters: the patient direction each array axis increases towards (``"LPS"``)."""
        return orientation_code(self.affine)

    def replace(self, **changes: Any) -> "VolumeData":
        return dataclasses.replace(self, **changes)


_LPS_POS = "LPS"
_LPS_NEG = "RAI"


def orientation_code(affine: np.ndarray) -> str:
    """The patient direction (L/R, P/A, S/I) each voxel axis of ``affine`` mostly increases towards."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    out = []
    for c in range(3):
        col = a[:, c]
        r = int(np.argmax(np.abs(col)))
        out.append(_LPS_POS[r] if col[r] > 0 else _LPS_NEG[r])
    return "".join(out)


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis (column norms of the affine's 3×3 part), mm."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _axis_assignment(direction: np.ndarray) -> list[int]:
    """For each array axis, the LPS axis it is closest to (greedy on |cosine|, one-to-one)."""
    a = np.abs(direction).copy()
    out = [-1, -1, -1]
    for _ in range(3):
        r, c = np.unravel_index(int(np.argmax(a)), a.shape)
        out[c] = int(r)
        a[r, :] = -1.0
        a[:, c] = -1.0
    return out


def reorient_to_lps(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permutes and flips ``array`` axes so they increase towards L, P, S; updates the affine.

    No resampling: the result holds the same voxels, and ``new_affine @ new_index`` is the same
    patient position as ``affine @ old_index`` for every voxel.

    Args:
        array: ``(n0, n1, n2)`` voxels.
        affine: ``(4, 4)`` voxel index → patient LPS mm.

    Returns:
        ``(array, affine)`` in LPS axes order.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if array.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"reorient_to_lps needs a 3D array and a 4x4 affine, got {array.shape} and {affine.shape}")
    sp = spacing_from_affine(affine)
    if np.any(sp <= 0) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine is singular or not finite: {affine.tolist()}")
    lps_of_axis = _axis_assignment(affine[:3, :3] / sp)
    perm = [lps_of_axis.index(r) for r in range(3)]  # new axis r takes old axis perm[r]
    array = np.transpose(array, perm)
    affine = affine.copy()
    affine[:, :3] = affine[:, perm]
    for r in range(3):
        if affine[r, r] < 0:
            n = array.shape[r]
            array = np.flip(array, axis=r)
            affine[:3, 3] = affine[:3, 3] + affine[:3, r] * (n - 1)
            affine[:3, r] = -affine[:3, r]
    return np.ascontiguousarray(array), affine


def _centred_affine(shape, spacing, off_origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Diagonal LPS affine of a grid centred at ``off_origin`` (our geometry convention)."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    a = np.eye(4)
    a[:3, :3] = np.diag(spacing)
    a[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1) / 2 * spacing + np.asarray(off_origin, dtype=np.float64)
    return a


def _check_volume_array(vol: np.ndarray, path: Any) -> None:
    if vol.ndim != 3:
        raise ValueError(f"{path}: a volume must be 3D, got an array of shape {vol.shape}")
    if min(vol.shape) < 1:
        raise ValueError(f"{path}: empty volume of shape {vol.shape}")
    bad = int(np.size(vol) - np.count_nonzero(np.isfinite(vol)))
    if bad:
        raise ValueError(f"{path}: {bad} voxel(s) are NaN or infinite")
