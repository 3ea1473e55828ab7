"""Projection radiographs (CR, DX, XA, RF, …) from DICOM.

The display pipeline of DICOM PS3.4 N.2 is applied in order: modality LUT (or
``RescaleSlope/Intercept``), VOI LUT (``VOILUTSequence``, else ``WindowCenter/Width``), then
``MONOCHROME1`` is inverted so that larger values are always brighter (less attenuation is
darker, as in ``MONOCHROME2``). Geometry tags are mapped onto our names: ``DistanceSourceToDetector``
→ ``DSD``, ``DistanceSourceToPatient`` → ``DSO`` (mm), ``ImagerPixelSpacing`` (detector plane,
preferred) or ``PixelSpacing`` → ``d_detector`` (row, column) mm.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

from jaxmedrf.io.dicom import decode_pixels, read_dicom

__all__ = ["RadiographData", "load_radiograph"]


@dataclasses.dataclass(frozen=True, eq=False)
class RadiographData:
    """One radiograph.

    Attributes:
        array: ``(rows, cols)`` float32 display values (brighter = larger), after modality and VOI LUTs.
        d_detector: ``(row, col)`` pixel spacing in mm, or ``None`` when absent (or zero).
        DSD: source-to-detector distance, mm (``DistanceSourceToDetector``), or ``None``.
        DSO: source-to-patient (isocentre) distance, mm (``DistanceSourceToPatient``), or ``None``.
        modality: DICOM modality (``"CR"``, ``"DX"``…).
        photometric: the file's ``PhotometricInterpretation`` (before our inversion).
        voi: which VOI transform was applied: ``"lut"``, ``"window"`` or ``"none"``.
        source: the file path.
    """

    array: np.ndarray
    d_detector: tuple[float, float] | None
    DSD: float | None
    DSO: float | None
    modality: str
    photometric: str
    voi: str
    source: str

    @property
    def n_detector(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    def geometry_fields(self) -> dict:
        """The fields known from the file, as :class:`jaxmedrf.Geometry` keyword arguments."""
        out = {"n_detector": self.n_detector}
        for k in ("DSD", "DSO", "d_detector"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def load_radiograph(path: str | os.PathLike, *, apply_voi: bool = True) -> RadiographData:
    """Reads a single-frame grey-scale DICOM radiograph.

    Args:
        path: a DICOM file.
        apply_voi: apply the VOI LUT / window when present (``False``: modality values only).

    Raises:
        ValueError: not DICOM, truncated, no pixel data, colour, multi-frame, or undecodable.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    ds = read_dicom(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = decode_pixels(ds, path)
    if frames > 1 or arr.ndim != 2:
        raise ValueError(f"{path}: a radiograph must be one 2D frame, got {frames} frame(s) of shape {arr.shape}")
    out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    voi = "none"
    if apply_voi:
        if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
            voi = "lut"
        elif ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
            voi = "window"
        if voi != "none":
            src = arr if (voi == "lut" and np.array_equal(out, arr)) else out  # a LUT indexes stored values
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = np.asarray(apply_voi_lut(src, ds, index=0), dtype=np.float64)
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "MONOCHROME1":
        out = out.min() + out.max() - out
    spacing = None
    for kw in ("ImagerPixelSpacing", "PixelSpacing"):
        if kw in ds and ds.get(kw):
            vals = [_positive(v) for v in ds.get(kw)]
            if len(vals) == 2 and None not in vals:
                spacing = (vals[0], vals[1])
                break
    return RadiographData(
        array=out.astype(np.float32), d_detector=spacing,
        DSD=_positive(ds.get("DistanceSourceToDetector")), DSO=_positive(ds.get("DistanceSourceToPatient")),
        modality=str(ds.get("Modality", "")), photometric=photometric, voi=voi, source=str(path),
    )
