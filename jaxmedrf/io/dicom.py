"""DICOM volumes: series directories and enhanced (multi-frame) files in, CT/MR series out.

Slices are grouped by ``SeriesInstanceUID`` and ordered by ``ImagePositionPatient`` projected on
the slice normal ``n = r × c`` (``r``, ``c``: the row and column direction cosines of
``ImageOrientationPatient``), never by file name or ``InstanceNumber``. Stored values are mapped
with ``RescaleSlope``/``RescaleIntercept`` (CT → HU). The voxel array is indexed
``(column, row, slice)`` with affine columns ``r·Δc``, ``c·Δr``, ``n·Δs`` (``PixelSpacing`` is
``[Δr, Δc]``, DICOM PS3.3 C.7.6.2.1.1), then brought to LPS axes order by
:func:`jaxmedrf.io.volume.reorient_to_lps`. Compressed transfer syntaxes (JPEG, JPEG-LS,
JPEG 2000, RLE) decode through pydicom's pixel-data plugins (``pylibjpeg`` and its decoders).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from jaxmedrf._files import atomic_dir
from jaxmedrf.io.deid import CARRY, DEID_METHOD, EMPTY
from jaxmedrf.io.volume_data import VolumeData, _check_volume_array, reorient_to_lps

__all__ = ["read_dicom", "decode_pixels", "scan_series", "load_dicom_volume", "save_dicom_series"]

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Tolerances: positions (mm) and direction cosines.
_POS_TOL_MM = 0.01
_REL_GAP_TOL = 0.01
_COS_TOL = 1e-4


def read_dicom(path: str | os.PathLike, *, pixels: bool = True) -> Dataset:
    """``pydicom.dcmread`` with errors turned into one ``ValueError`` naming the file.

    Args:
        path: a DICOM file (Part 10, or a bare dataset pydicom recognises).
        pixels: also read the pixel data element (``False``: stop before it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        raise ValueError(f"{path}: not a DICOM file (no 'DICM' preamble or readable header)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError, OverflowError) as e:
        raise ValueError(f"{path}: truncated or corrupt DICOM file ({type(e).__name__}: {e})") from None
    if len(ds) == 0:
        raise ValueError(f"{path}: not a DICOM file (empty dataset)")
    return ds


def _transfer_syntax(ds: Dataset) -> str:
    fm = getattr(ds, "file_meta", None)
    uid = fm.get("TransferSyntaxUID") if fm is not None else None
    return f"{uid} ({UID(uid).name})" if uid else "unknown (no file meta)"


def decode_pixels(ds: Dataset, name: Any) -> np.ndarray:
    """The stored pixel values of ``ds`` (``(rows, cols)`` or ``(frames, rows, cols)``).

    Raises:
        ValueError: no pixel data, colour data, or a transfer syntax that cannot be decoded
            (message names ``name``, the transfer syntax and the decoder's reason).
    """
    if not any(t in ds for t in _PIXEL_TAGS):
        raise ValueError(f"{name}: no pixel data in this {_sop_name(ds)} file (not an image object, or truncated)")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{name}: colour images ({ds.get('PhotometricInterpretation', '?')}, "
                         f"{ds.SamplesPerPixel} samples/pixel) are not supported; a grey-scale image is needed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as e:  # decoders raise many types: all mean "cannot decode"
        raise ValueError(f"{name}: cannot decode pixel data with transfer syntax {_transfer_syntax(ds)} "
                         f"({type(e).__name__}: {e})") from None
    return np.asarray(arr)


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return UID(uid).name if uid else "unknown SOP class"


def scan_series(directory: str | os.PathLike) -> tuple[dict[str, list[tuple[Path, Dataset]]], list[tuple[Path, str]]]:
    """Headers of every DICOM image file under ``directory``, grouped by ``SeriesInstanceUID``.

    Returns:
        ``(series, skipped)``: ``series`` maps a UID to ``[(file, header), …]`` (headers read
        without pixel data); ``skipped`` lists ``(file, reason)`` for files that are not DICOM or
        hold no image.
    """
    directory = Path(directory)
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    skipped: list[tuple[Path, str]] = []
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        if f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            continue
        try:
            ds = read_dicom(f, pixels=False)
        except ValueError as e:
            skipped.append((f, str(e).split(": ", 1)[-1]))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append((f, f"no image ({ds.get('Modality', '?')} {_sop_name(ds)})"))
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    return series, skipped


def describe_series(series: dict[str, list[tuple[Path, Dataset]]]) -> list[str]:
    """One line per series: UID, modality, number of files, description."""
    lines = []
    for uid, items in series.items():
        ds = items[0][1]
        frames = sum(int(d.get("NumberOfFrames", 1) or 1) for _, d in items)
        lines.append(f"{uid or '<no SeriesInstanceUID>'}: {ds.get('Modality', '?')}, {len(items)} file(s), "
                     f"{frames} image(s), {ds.get('Rows')}x{ds.get('Columns')}, "
                     f"'{ds.get('SeriesDescription', '')}'")
    return lines


class _Slice(NamedTuple):
    name: str
    ipp: np.ndarray
    iop: np.ndarray
    spacing: np.ndarray  # PixelSpacing [Δrow, Δcol]
    slope: float
    intercept: float
    shape: tuple[int, int]
    get: Any  # () -> (rows, cols) stored values


def _floats(value: Any, n: int, what: str, name: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: {what} must hold {n} numbers, got {value!r}")
    return out


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", 1.0)
    intercept = ds.get("RescaleIntercept", 0.0)
    return float(slope if slope not in (None, "") else 1.0), float(intercept if intercept not in (None, "") else 0.0)


def _slices_from_files(items: list[tuple[Path, Dataset]]) -> list[_Slice]:
    out = []
    for f, hdr in items:
        name = str(f)
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if kw not in hdr:
                raise ValueError(f"{name}: no {kw}; cannot place the slice in patient space")
        if int(hdr.get("NumberOfFrames", 1) or 1) != 1:
            raise ValueError(f"{name}: multi-frame file inside a series of {len(items)} files; load it on its own")

        def get(f=f, name=name):
            ds = read_dicom(f)
            return decode_pixels(ds, name)

        out.append(_Slice(name, _floats(hdr.ImagePositionPatient, 3, "ImagePositionPatient", name),
                          _floats(hdr.ImageOrientationPatient, 6, "ImageOrientationPatient", name),
                          _floats(hdr.PixelSpacing, 2, "PixelSpacing", name), *_rescale(hdr),
                          (int(hdr.Rows), int(hdr.Columns)), get))
    return out


def _fg(ds: Dataset, i: int, seq: str, kw: str) -> Any:
    """Attribute ``kw`` of functional group ``seq`` for frame ``i`` (per-frame, then shared)."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        g = groups[i] if len(groups) > 1 or groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        if seq in g and len(g[seq].value) and kw in g[seq].value[0]:
            return g[seq].value[0][kw].value
    return ds.get(kw)


def _slices_from_multiframe(ds: Dataset, name: str) -> list[_Slice]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    pf = ds.get("PerFrameFunctionalGroupsSequence")
    if pf is not None and len(pf) != n:
        raise ValueError(f"{name}: {len(pf)} per-frame functional groups for {n} frames")
    cache: dict[str, np.ndarray] = {}

    def frames() -> np.ndarray:
        if "a" not in cache:
            a = decode_pixels(ds, name)
            cache["a"] = a.reshape((n, *a.shape[-2:]))
        return cache["a"]

    legacy_step = None
    if pf is None:
        step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or not step:
            raise ValueError(f"{name}: multi-frame image without patient geometry (no per-frame "
                             f"ImagePositionPatient/ImageOrientationPatient); cannot place the volume")
        legacy_step = float(step)
    out = []
    for i in range(n):
        ipp = _fg(ds, i, "PlanePositionSequence", "ImagePositionPatient")
        iop = _fg(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _fg(ds, i, "PixelMeasuresSequence", "PixelSpacing")
        slope = _fg(ds, i, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _fg(ds, i, "PixelValueTransformationSequence", "RescaleIntercept")
        fname = f"{name} frame {i + 1}"
        for kw, v in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop), ("PixelSpacing", ps)):
            if v is None:
                raise ValueError(f"{fname}: no {kw}; cannot place the frame in patient space")
        iop = _floats(iop, 6, "ImageOrientationPatient", fname)
        ipp = _floats(ipp, 3, "ImagePositionPatient", fname)
        if legacy_step is not None:
            ipp = ipp + i * legacy_step * np.cross(iop[:3], iop[3:])
        out.append(_Slice(fname, ipp, iop, _floats(ps, 2, "PixelSpacing", fname),
                          float(slope) if slope not in (None, "") else 1.0,
                          float(intercept) if intercept not in (None, "") else 0.0,
                          (int(ds.Rows), int(ds.Columns)), lambda i=i: frames()[i]))
    return out


def _stack(slices: list[_Slice], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Orders, checks and stacks slices; returns ``(array (col,row,slice), affine)``."""
    if len(slices) < 2:
        raise ValueError(f"{source}: a single 2D image ({slices[0].shape[0]}x{slices[0].shape[1]}); "
                         f"a volume needs a series of slices or a multi-frame file")
    first = slices[0]
    for s in slices[1:]:
        if s.shape != first.shape:
            raise ValueError(f"{source}: inconsistent image size: {s.name} is {s.shape[0]}x{s.shape[1]} "
                             f"(rows x columns) but {first.name} is {first.shape[0]}x{first.shape[1]}")
        if np.max(np.abs(s.iop - first.iop)) > _COS_TOL:
            raise ValueError(f"{source}: inconsistent ImageOrientationPatient: {s.name} has {s.iop.tolist()}, "
                             f"{first.name} has {first.iop.tolist()}")
        if np.max(np.abs(s.spacing - first.spacing)) > 1e-4:
            raise ValueError(f"{source}: inconsistent PixelSpacing: {s.name} has {s.spacing.tolist()}, "
                             f"{first.name} has {first.spacing.tolist()}")
    r, c = first.iop[:3], first.iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        raise ValueError(f"{first.name}: ImageOrientationPatient {first.iop.tolist()} is not two orthonormal vectors")
    normal = np.cross(r, c)
    pos = np.array([s.ipp @ normal for s in slices])
    order = np.argsort(pos, kind="stable")
    slices = [slices[i] for i in order]
    pos = pos[order]
    d = np.diff(pos)
    dup = np.nonzero(d < _POS_TOL_MM)[0]
    if dup.size:
        pairs = "; ".join(f"{slices[i].name} and {slices[i + 1].name} at {pos[i]:.3f} mm" for i in dup[:5])
        raise ValueError(f"{source}: duplicate slice positions ({dup.size}): {pairs}"
                         + (" …" if dup.size > 5 else "") + " (several acquisitions or echoes in one series?)")
    step = float(np.median(d))
    bad = np.nonzero(np.abs(d - step) > max(_POS_TOL_MM, _REL_GAP_TOL * step))[0]
    if bad.size:
        gaps = "; ".join(f"{d[i]:.3f} mm between {pos[i]:.3f} and {pos[i + 1]:.3f} ({Path(slices[i + 1].name).name})"
                         for i in bad[:5])
        raise ValueError(f"{source}: non-uniform slice spacing (median {step:.3f} mm): {gaps}"
                         + (" …" if bad.size > 5 else "") + " — missing or extra slices?")
    # Gantry tilt: slice origins must move along the normal only.
    offs = np.array([s.ipp - slices[0].ipp for s in slices])
    inplane = offs - np.outer(offs @ normal, normal)
    shear = float(np.max(np.linalg.norm(inplane, axis=1)))
    if shear > max(_POS_TOL_MM, 1e-3 * (pos[-1] - pos[0])):
        disp = offs[-1] / np.linalg.norm(offs[-1])
        tilt = np.degrees(np.arccos(np.clip(abs(disp @ normal), -1.0, 1.0)))
        raise ValueError(f"{source}: gantry tilt of {tilt:.2f}° detected (slice positions are sheared by up to "
                         f"{shear:.2f} mm off the slice normal); tilted series are not supported — "
                         f"resample to an orthogonal grid first (e.g. dcm2niix)")
    stack = []
    for s in slices:
        a = np.asarray(s.get())
        if a.shape != s.shape:
            raise ValueError(f"{s.name}: pixel data is {a.shape} but Rows x Columns is {s.shape}")
        stack.append(a.astype(np.float64) * s.slope + s.intercept)
    arr = np.stack(stack, axis=0).transpose(2, 1, 0).astype(np.float32)  # (col, row, slice)
    dr, dc = first.spacing
    affine = np.eye(4)
    affine[:3, 0] = r * dc
    affine[:3, 1] = c * dr
    affine[:3, 2] = normal * step
    affine[:3, 3] = slices[0].ipp
    return arr, affine


def _unit(ds: Dataset) -> str:
    modality = str(ds.get("Modality", ""))
    rtype = str(_fg(ds, 0, "PixelValueTransformationSequence", "RescaleType") or "")
    if modality == "CT":
        return "HU" if rtype in ("", "HU", "US") else rtype  # CT Image IOD: stored→HU
    return rtype if rtype not in ("", "US") else modality


def _meta(ds: Dataset, **extra: Any) -> dict:
    meta = {"format": "dicom", "transfer_syntax": _transfer_syntax(ds),
            "series_uid": str(ds.get("SeriesInstanceUID", "")), "sop_class": _sop_name(ds)}
    for kw in CARRY:
        if kw in ds and ds.get(kw) not in (None, ""):
            meta[kw] = str(ds.get(kw))
    meta.update(extra)
    return meta


def load_dicom_volume(path: str | os.PathLike, *, series: str | None = None) -> VolumeData:
    """A DICOM series directory or one multi-frame DICOM file as a :class:`VolumeData` (LPS).

    See :func:`jaxmedrf.io.load_volume` for the contract.
    """
    path = Path(path)
    if path.is_dir():
        groups, skipped = scan_series(path)
        if not groups:
            why = f" ({len(skipped)} file(s) skipped, e.g. {skipped[0][0].name}: {skipped[0][1]})" if skipped else ""
            raise ValueError(f"{path}: no DICOM image files found{why}")
        if series is not None:
            if series not in groups:
                raise ValueError(f"{path}: series {series!r} not found; series present:\n  "
                                 + "\n  ".join(describe_series(groups)))
            items = groups[series]
        elif len(groups) > 1:
            raise ValueError(f"{path}: {len(groups)} series found; choose one with series=UID (CLI: --series UID):\n  "
                             + "\n  ".join(describe_series(groups)))
        else:
            items = next(iter(groups.values()))
        header = items[0][1]
        if len(items) == 1 and int(header.get("NumberOfFrames", 1) or 1) > 1:
            return load_dicom_volume(items[0][0])
        slices = _slices_from_files(items)
        source = str(path)
        n_files = len(items)
    else:
        header = read_dicom(path)
        name = str(path)
        if not any(t in header for t in _PIXEL_TAGS):
            decode_pixels(header, name)  # raises "no pixel data …"
        if int(header.get("NumberOfFrames", 1) or 1) <= 1:
            raise ValueError(f"{name}: a single 2D image ({header.get('Rows')}x{header.get('Columns')}); a volume "
                             f"needs a series directory or a multi-frame file (for a radiograph use load_radiograph)")
        slices = _slices_from_multiframe(header, name)
        source = name
        n_files = 1
    arr, affine = _stack(slices, source)
    _check_volume_array(arr, source)
    arr, affine = reorient_to_lps(arr, affine)
    from jaxmedrf.io.volume_data import spacing_from_affine

    return VolumeData(arr, spacing_from_affine(affine), affine, str(header.get("Modality", "")), _unit(header),
                      source, _meta(header, n_files=n_files))


# ---------------------------------------------------------------------------------------------
# Writing


def _ds_str(x: float) -> str:
    return format_number_as_ds(float(x))


def _integer_scaling(array: np.ndarray, unit: str) -> tuple[float, float]:
    """``(slope, intercept)`` so that ``round((v - intercept) / slope)`` fits int16."""
    lo, hi = float(array.min()), float(array.max())
    if unit == "HU" and lo >= -32768 and hi <= 32767:
        return 1.0, 0.0
    span = hi - lo
    if span <= 0:
        return 1.0, lo
    slope = float(_ds_str(span / 65000.0))
    intercept = float(_ds_str(0.5 * (lo + hi)))
    return slope, intercept


def save_dicom_series(vol: VolumeData, path: str | os.PathLike) -> Path:
    """Writes ``vol`` as a directory of single-slice DICOM images (one per ``z`` index).

    New Study/Series/SOP Instance and Frame of Reference UIDs; ``ImagePositionPatient``,
    ``ImageOrientationPatient``, ``PixelSpacing``, ``SliceThickness`` and
    ``SpacingBetweenSlices`` from the affine so that viewers stack it; ``ImageType`` DERIVED;
    int16 stored values with ``RescaleSlope``/``RescaleIntercept`` (slope 1 for HU that fit);
    patient/study attributes present but empty (PS3.15 Annex E), nothing copied from a source
    header except the technical :data:`jaxmedrf.io.deid.CARRY` attributes.
    """
    path = Path(path)
    arr = np.asarray(vol.array, dtype=np.float32)
    affine = np.asarray(vol.affine, dtype=np.float64)
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    r, c, k = (affine[:3, i] / sp[i] for i in range(3))
    if abs(r @ c) > 1e-4 or np.linalg.norm(np.cross(np.cross(r, c), k)) > 1e-4:
        raise ValueError(f"affine {affine.tolist()} is sheared (slice axis not normal to the image plane); "
                         f"a DICOM series cannot represent it")
    modality = vol.modality or "CT"
    is_mr = modality == "MR"
    sop_class = pydicom.uid.MRImageStorage if is_mr else pydicom.uid.CTImageStorage
    slope, intercept = _integer_scaling(arr, vol.unit)
    stored = np.clip(np.rint((arr.astype(np.float64) - intercept) / slope), -32768, 32767).astype(np.int16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    lo, hi = float(arr.min()), float(arr.max())

    with atomic_dir(path) as tmp:
        for kz in range(arr.shape[2]):
            sop = generate_uid()
            fm = FileMetaDataset()
            fm.MediaStorageSOPClassUID = sop_class
            fm.MediaStorageSOPInstanceUID = sop
            fm.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = fm
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if abs(k[2]) > 0.9 else "OTHER"]
            # the de-identification table's Type 2 attributes (present, empty), and two technical ones
            for kw in EMPTY + ("Manufacturer", "PositionReferenceIndicator"):
                setattr(ds, kw, "")
            ds.PatientIdentityRemoved = "YES"
            ds.DeidentificationMethod = DEID_METHOD
            ds.Modality = modality
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.FrameOfReferenceUID = frame
            ds.SeriesNumber = 1
            ds.InstanceNumber = kz + 1
            ds.SeriesDescription = "jaxmedrf derived volume"
            ds.DerivationDescription = "written by jaxmedrf.io.save_volume"
            for kw in CARRY:
                if kw in vol.meta and (kw != "KVP" or not is_mr):
                    setattr(ds, kw, vol.meta[kw])
            if is_mr:
                for kw in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType"):
                    setattr(ds, kw, "")
                ds.EchoTime = ds.RepetitionTime = ds.EchoTrainLength = None
            else:
                ds.setdefault("KVP", "")
                ds.AcquisitionNumber = None
            ipp = affine @ np.array([0.0, 0.0, kz, 1.0])
            ds.ImagePositionPatient = [_ds_str(v) for v in ipp[:3]]
            ds.ImageOrientationPatient = [_ds_str(v) for v in (*r, *c)]
            ds.PixelSpacing = [_ds_str(sp[1]), _ds_str(sp[0])]
            ds.SliceThickness = _ds_str(sp[2])
            ds.SpacingBetweenSlices = _ds_str(sp[2])
            ds.SliceLocation = _ds_str(ipp[:3] @ np.cross(r, c))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = arr.shape[1], arr.shape[0]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept = _ds_str(intercept)
            ds.RescaleSlope = _ds_str(slope)
            ds.RescaleType = "HU" if vol.unit == "HU" else "US"
            ds.WindowCenter = _ds_str(0.5 * (lo + hi))
            ds.WindowWidth = _ds_str(max(hi - lo, 1e-6))
            ds.PixelData = np.ascontiguousarray(stored[:, :, kz].T).tobytes()
            ds.save_as(tmp / f"IM{kz + 1:05d}.dcm", enforce_file_format=True)
    return path
