"""Digitally reconstructed radiographs (DRRs) from a loaded patient volume.

:func:`geometry_for_volume` turns a :class:`~jaxmedrf.io.VolumeData` into a
:class:`jaxmedrf.Geometry` whose voxel grid *is* the loaded grid (``n_voxel`` = array shape,
``d_voxel`` = spacing, centred at the origin unless ``off_origin`` is given). Our rotation axis is
``z``; in LPS ``z`` points to the patient's head (superior), so source and panel rotate about the
patient's long (vertical, for a standing patient) axis as in MedNeRF (Corona-Figueroa et al.,
EMBC 2022: 72 DRRs at 5° over 360°, 128×128 pixels).

:func:`export_drr_pngs` writes each DRR as a PNG with a JSON sidecar holding its pose, so that the
set can be used by tools outside jaxmedrf.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxmedrf.geometry import Geometry, circular_angles, detector_per_view, view_frames
from jaxmedrf._files import atomic_dir, check_writable
from jaxmedrf.io.intensity import MU_AIR, MU_WATER, hu_to_mu, looks_like_hu
from jaxmedrf.io.volume_data import MU_UNITS, UNITS, VolumeData  # noqa: F401 - UNITS re-exported

__all__ = ["geometry_for_volume", "attenuation_volume", "attenuation_units", "export_drr_pngs", "PRESETS", "UNITS"]


PRESETS = {
    # MedNeRF DRRs: 72 views at 5° steps over 360°, 128×128 detector, vertical rotation axis.
    "mednerf": {"n_views": 72, "arc": 2 * math.pi, "n_detector": (128, 128)},
}


def geometry_for_volume(
    vol: VolumeData,
    *,
    preset: str | None = None,
    n_views: int | None = None,
    arc: float | None = None,
    n_detector: tuple[int, int] | None = None,
    d_detector: float | tuple[float, float] | None = None,
    DSO: float | None = None,
    DSD: float | None = None,
    off_origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    margin: float = 1.05,
) -> Geometry:
    """A circular cone-beam :class:`~jaxmedrf.Geometry` imaging the whole of ``vol``.

    Unset distances are scaled to the volume: with ``R`` the radius of the sphere bounding the
    volume box, ``DSO = 3R`` (source well outside), ``DSD = 1.5·DSO``; the detector half-size is
    ``margin · DSD·R / sqrt(DSO² − R²)`` (the cone tangent to the bounding sphere) on both axes,
    so every ray through the volume hits the panel; pixels are square.

    Args:
        vol: the loaded volume (LPS, so ``z`` is superior: the rotation axis is vertical).
        preset: ``None`` or ``"mednerf"`` (72 views, 5° steps over 360°, 128×128 detector);
            explicit arguments override the preset.
        n_views: number of views (default 72).
        arc: angular range, rad (default 2π; endpoint excluded).
        n_detector: ``(nv, nu)`` pixels (default 128×128).
        d_detector: pixel size, mm (default: scaled to the volume).
        DSO: source–isocentre distance, mm.
        DSD: source–detector distance, mm.
        off_origin: volume centre, mm.
        margin: detector oversize factor (≥ 1).

    Returns:
        The geometry (``geometry.check_volume(vol.array)`` passes).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be None or one of {sorted(PRESETS)}, got {preset!r}")
    p = dict(PRESETS.get(preset, {}))
    n_views = int(n_views if n_views is not None else p.get("n_views", 72))
    arc = float(arc if arc is not None else p.get("arc", 2 * math.pi))
    n_detector = tuple(int(n) for n in (n_detector if n_detector is not None else p.get("n_detector", (128, 128))))
    if len(n_detector) != 2 or min(n_detector) < 1:
        raise ValueError(f"n_detector must be two positive integers, got {n_detector!r}")
    if margin < 1:
        raise ValueError(f"margin must be >= 1, got {margin!r}")
    spacing = np.asarray(vol.spacing, np.float64)
    extent = np.asarray(vol.shape, np.float64) * spacing
    R = 0.5 * float(np.linalg.norm(extent))
    DSO = float(DSO) if DSO is not None else 3.0 * R
    DSD = float(DSD) if DSD is not None else 1.5 * DSO
    if not DSO > R:
        raise ValueError(f"DSO={DSO} mm puts the source inside the volume (bounding radius {R:.1f} mm)")
    if not DSD > DSO:
        raise ValueError(f"DSD={DSD} mm must exceed DSO={DSO} mm")
    if d_detector is None:
        half = margin * DSD * R / math.sqrt(DSO**2 - R**2)
        d = 2 * half / min(n_detector)
        d_detector = (d, d)
    return Geometry(
        DSD=DSD, DSO=DSO, n_detector=n_detector, d_detector=d_detector, off_detector=(0.0, 0.0),
        n_voxel=tuple(int(n) for n in vol.shape), d_voxel=tuple(float(s) for s in spacing),
        off_origin=tuple(float(o) for o in off_origin), angles=circular_angles(n_views, arc=arc), beam="cone",
    )


def attenuation_units(vol: VolumeData, *, units: str | None = None) -> tuple[str, str]:
    """The unit in which :func:`attenuation_volume` reads ``vol``'s intensities, and why.

    ``units`` (the user's word) wins over the file's; without it the file's own unit is used
    (a DICOM CT, or a NIfTI/.npz jaxmedrf wrote, says ``HU`` or ``mm^-1``); a volume of unknown
    unit (e.g. a NIfTI written by another tool) is taken as HU when its values look like HU
    (:func:`jaxmedrf.io.intensity.looks_like_hu`: air near −1000) and refused otherwise.

    Args:
        vol: the loaded volume.
        units: ``None`` (the file's unit, else the guess), ``"HU"`` (Hounsfield units) or
            ``"mu"`` (already μ in mm⁻¹).

    Returns:
        ``(unit, note)``: ``unit`` is ``"HU"`` or ``"mm^-1"``; ``note`` is one line to show the
        user when the unit was guessed or ``units`` overrides a different unit the file states,
        else ``""``.

    Raises:
        ValueError: ``units`` is not one of :data:`UNITS`; or, without ``units``, the file's unit
            is not attenuation (MR signal…), or it is unknown and the values do not look like HU.
            The message names ``--units``.
    """
    if units is not None and units not in UNITS:
        raise ValueError(f"units must be None, 'HU' or 'mu', got {units!r}")
    name = os.path.basename(vol.source) if vol.source else "volume"
    stated = "HU" if vol.unit == "HU" else ("mm^-1" if vol.unit in MU_UNITS else vol.unit)
    if units is not None:
        unit = "HU" if units == "HU" else "mm^-1"
        note = f"{name}: the file says its unit is {stated}; taking {units} as --units says" if stated and stated != unit else ""
        return unit, note
    if stated in ("HU", "mm^-1"):
        return stated, ""
    if stated:
        raise ValueError(f"{vol.source or 'volume'}: intensities in {stated!r} ({vol.modality or 'unknown modality'}) are "
                         "not attenuation; DRRs need a CT in HU or μ in mm^-1 (pass --units HU|mu if the values are)")
    lo, hi = float(np.min(vol.array)), float(np.max(vol.array))
    if looks_like_hu(vol.array):
        return "HU", (f"{name}: unit unknown, values look like HU (air ≈ −1000; range {lo:g}..{hi:g}); "
                      "taking HU (pass --units to override)")
    raise ValueError(f"{name}: unit unknown and values {lo:.4g}..{hi:.4g} do not look like HU (no air near -1000): "
                     "pass --units HU or --units mu if they are attenuation (an MR volume is not)")


def attenuation_volume(vol: VolumeData, *, units: str | None = None, mu_water: float = MU_WATER,
                       mu_air: float = MU_AIR) -> np.ndarray:
    """The volume as linear attenuation μ (mm⁻¹, float32, ≥ 0 for HU input) for projection.

    The intensities' unit comes from :func:`attenuation_units` (``units``, else the file's unit,
    else a guess that the values are HU, announced by a :class:`UserWarning`). HU are converted
    with :func:`jaxmedrf.io.intensity.hu_to_mu`; μ in ``mm^-1`` is returned as is.

    Args:
        vol: the loaded volume.
        units: ``None``, ``"HU"`` or ``"mu"`` (μ in mm⁻¹), see :func:`attenuation_units`.
        mu_water: μ of water, mm⁻¹ (HU conversion).
        mu_air: μ of air, mm⁻¹ (HU conversion).

    Raises:
        ValueError: the unit is not attenuation (MR signal…) or unknown and not HU-like.
    """
    unit, note = attenuation_units(vol, units=units)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    if unit == "HU":
        return np.asarray(hu_to_mu(vol.array, mu_water=mu_water, mu_air=mu_air), np.float32)
    return np.asarray(vol.array, np.float32)


def _to_uint(img: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    x = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.rint(np.clip(x, 0.0, 1.0) * top).astype(np.uint16 if bits == 16 else np.uint8)


def export_drr_pngs(
    projections: Any,
    geometry: Geometry,
    out_dir: str | os.PathLike,
    *,
    bits: int = 16,
    value_range: tuple[float, float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes each DRR as ``drr_XXXX.png`` with a pose sidecar ``drr_XXXX.json``, plus ``poses.json``.

    Pixel values are line integrals (dimensionless, ∫μ dl) linearly mapped from ``value_range``
    (default: the min and max over all views, stored in every sidecar) to 0…2^bits−1. PNG row 0 is
    the *top* of the image, i.e. the largest ``v`` (superior); so detector row ``r`` of the
    projection array is PNG row ``nv − 1 − r``. The sidecar gives, in mm in the volume frame
    (LPS, volume centred at ``off_origin``): ``source``, ``detector_center``, unit vectors ``u``
    (PNG columns, left→right) and ``v`` (up), ``pixel_size`` ``[dv, du]``, ``off_detector``,
    ``angle_rad``, ``DSO``, ``DSD`` (each view's own where the geometry gives them per view, e.g.
    tomosynthesis), the pixel-centre formula and ``value_range``.

    Args:
        projections: ``(views, nv, nu)`` line integrals.
        geometry: the scan that made them.
        out_dir: output directory (written atomically: a temporary directory renamed at the end).
        bits: 16 or 8.
        value_range: ``(lo, hi)`` mapped to black and white.
        overwrite: replace an existing non-empty ``out_dir``.
    """
    from PIL import Image

    proj = np.asarray(projections, dtype=np.float64)
    geometry.check_projections(proj)
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if not np.all(np.isfinite(proj)):
        raise ValueError("projections contain NaN or infinite values")
    lo, hi = (float(proj.min()), float(proj.max())) if value_range is None else map(float, value_range)
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite=overwrite)
    fr = view_frames(geometry)
    src, ctr, uu, vv = (np.asarray(a, np.float64) for a in (fr.source, fr.center, fr.u, fr.v))
    dv, du = (float(x) for x in np.asarray(geometry.d_detector))
    det = [np.asarray(x, np.float64) for x in detector_per_view(geometry)]  # per view (tomosynthesis) or repeated
    per_view = lambda i: {"off_detector": det[2][i].tolist(), "DSO": float(det[1][i]), "DSD": float(det[0][i])}  # noqa: E731
    angles = np.asarray(geometry.angles, np.float64)
    nv, nu = geometry.n_detector
    common = {
        "n_detector": [nv, nu], "pixel_size": [dv, du], **per_view(0), "beam": geometry.beam,
        "units": "mm; pixel values: line integral of mu (mm^-1 x mm), mapped linearly from value_range",
        "value_range": [lo, hi], "bits": bits,
        "pixel_center": "detector_center + u*((col-(nu-1)/2)*du + off_u) + v*(((nv-1)/2-png_row)*dv + off_v)",
        "frame": "volume frame = patient LPS, volume centre at off_origin; rotation axis z (superior)",
    }
    if geometry.detector != "flat":
        common["detector"] = geometry.detector
        common["pixel_center"] = ("source + DSD*(cos(g)*n + sin(g)*u) + v*(((nv-1)/2-png_row)*dv + off_v), "
                                  "g = ((col-(nu-1)/2)*du + off_u)/DSD, n = (detector_center - source)/DSD")
    with atomic_dir(out_dir) as tmp:
        index = []
        for i in range(proj.shape[0]):
            name = f"drr_{i:04d}"
            img = _to_uint(proj[i][::-1], lo, hi, bits)
            Image.fromarray(img).save(tmp / f"{name}.png")
            pose = {"file": f"{name}.png", "view": i, "angle_rad": float(angles[i]),
                    "source": src[i].tolist(), "detector_center": ctr[i].tolist(),
                    "u": uu[i].tolist(), "v": vv[i].tolist(), **common, **per_view(i)}
            (tmp / f"{name}.json").write_text(json.dumps(pose, indent=1))
            index.append(pose)
        (tmp / "poses.json").write_text(json.dumps({"geometry": json.loads(geometry.to_json()), "views": index}))
    return out_dir
