"""``jaxmedrf preprocess``: raw intensity frames (+ flat/dark fields, or air) to a scan ``.npz``.

Reads the frames (:func:`jaxmedrf.io.load_frames`), turns them into line integrals
(:func:`jaxmedrf.preprocess.raw_to_line_integrals`) and writes the ``.npz`` that ``simulate``
writes, without a ``volume`` (:func:`jaxmedrf.io.save_scan`), for ``jaxmedrf reconstruct``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["add_parser", "run"]

HELP = "raw projections (TIFF/PNG/NPY/DICOM + flat/dark) to line integrals"  # one line in `jaxmedrf --help`


def add_parser(sub) -> argparse.ArgumentParser:
    from jaxmedrf.cli._config_args import param_default
    from jaxmedrf.preprocess import BAD_PIXEL_MODES, raw_to_line_integrals

    p = sub.add_parser(
        "preprocess",
        help=HELP,
        description="Turn raw detector intensities I into line integrals p = -log((I - D)/(F - D)) (F flat, "
                    "D dark field; or F from an air region of each frame), replace bad pixels, optionally remove "
                    "rings, and write OUT.npz (projections, angles, geometry) for `jaxmedrf reconstruct`. FRAMES: "
                    "a .npy stack, a (multi-frame) TIFF, a multi-frame DICOM, or a folder of TIFF/PNG/NPY files "
                    "(natural name order) or of DICOM radiographs (InstanceNumber order).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("frames", metavar="FRAMES", help="raw projection frames: file or folder, one frame per view")
    p.add_argument("--out", required=True, help="output .npz")
    fields = p.add_argument_group("intensity reference")
    fields.add_argument("--flat", nargs="+", default=None, metavar="PATH",
                        help="flat (open-beam) field: file(s) or folder(s), all frames averaged")
    fields.add_argument("--dark", nargs="+", default=None, metavar="PATH",
                        help="dark (beam-off) field: file(s) or folder(s), all frames averaged")
    fields.add_argument("--air-region", nargs="+", default=None, metavar="REGION",
                        help="I0 of each frame from air: 'auto' (the frame's border) or R0 R1 C0 C1, rows R0:R1 and "
                             "columns C0:C1 of the frames (half-open, 0-based) that see air in every frame. Unset "
                             "without --flat: auto; with --flat it rescales each frame so that air reads 0 (source drift)")
    fields.add_argument("--air-border", type=int, default=param_default(raw_to_line_integrals, "air_border"),
                        help="--air-region auto: border width, pixels")
    fields.add_argument("--floor", type=float, default=param_default(raw_to_line_integrals, "floor"),
                        help="smallest transmission (I - D)/(F - D) kept: line integrals are capped at -log(FLOOR)")
    fix = p.add_argument_group("corrections")
    fix.add_argument("--bad-pixels", choices=BAD_PIXEL_MODES, default=param_default(raw_to_line_integrals, "bad_pixels"),
                     help="find dead/hot pixels from the flat/dark fields, from the frames' temporal statistics, both, "
                          "or none (auto: the fields when given, else temporal); they are replaced by the median of "
                          "their good neighbours")
    fix.add_argument("--ring-filter", action="store_true",
                     help="remove stripes from the sinograms (rings in the volume): Vo et al. 2018's sorting-based filter")
    fix.add_argument("--ring-size", type=int, default=None,
                     help="ring filter's median window across detector columns, pixels; unset: 1%% of the columns, at least 5")
    fix.add_argument("--flip-rows", action="store_true",
                     help="mirror the frames' rows: use when row 0 of the files is the top of the detector (the "
                          "geometry's row 0 is its bottom, v = -(nv-1)/2 dv)")
    fix.add_argument("--flip-cols", action="store_true", help="mirror the frames' columns (the geometry's u runs along "
                                                              "(-sin θ, cos θ, 0))")
    geo = p.add_argument_group("geometry (a --geometry JSON, or the cone-beam flags; README: 'Geometry')")
    geo.add_argument("--geometry", default=None, metavar="JSON",
                     help="geometry file written by Geometry.to_json (n_detector and the number of angles must match "
                          "the frames)")
    geo.add_argument("--dso", type=float, default=None, help="source-origin distance DSO, mm")
    geo.add_argument("--dsd", type=float, default=None, help="source-detector distance DSD, mm")
    geo.add_argument("--d-detector", type=float, nargs=2, default=None, metavar=("DV", "DU"),
                     help="detector pixel size (rows, columns), mm")
    geo.add_argument("--off-detector", type=float, nargs=2, default=None, metavar=("V", "U"),
                     help="detector offset, mm; unset: 0 0")
    geo.add_argument("--arc", type=float, default=None,
                     help="frames equally spaced over this arc, degrees, starting at 0 (endpoint excluded); "
                          "unset: 360")
    geo.add_argument("--angles", default=None, metavar="FILE",
                     help="the gantry angle of each frame instead, degrees (.npy or text), one per frame")
    geo.add_argument("--n-voxel", type=int, nargs="+", default=None, metavar="N",
                     help="reconstruction grid nx [ny nz]; unset: NU NU NV, the detector's field of view")
    geo.add_argument("--d-voxel", type=float, nargs="+", default=None, metavar="MM",
                     help="voxel size dx [dy dz], mm; unset: the detector pixel at the isocentre, DU·DSO/DSD "
                          "across and DV·DSO/DSD along z")
    geo.add_argument("--off-origin", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                     help="volume centre, mm; unset: 0 0 0")
    return p


_CONE_FLAGS = ("dso", "dsd", "d_detector", "off_detector", "arc", "angles", "n_voxel", "d_voxel", "off_origin")


def _air_region(values):
    if values is None:
        return None
    if values == ["auto"]:
        return "auto"
    try:
        region = tuple(int(v) for v in values)
    except ValueError:
        region = ()
    if len(region) != 4:
        raise ValueError(f"--air-region takes 'auto' or four integers R0 R1 C0 C1, got {' '.join(values)}")
    return region


def _triple(values, name, cast):
    if values is None:
        return None
    out = tuple(cast(v) for v in values) * 3 if len(values) == 1 else tuple(cast(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{name} takes 1 or 3 numbers, got {len(values)}")
    return out


def _check_geometry_args(a) -> None:
    """What can be checked before the frames are read: one source of geometry, nothing missing."""
    if a.geometry is not None:
        given = [f"--{k.replace('_', '-')}" for k in _CONE_FLAGS if getattr(a, k) is not None]
        if given:
            raise ValueError(f"--geometry fixes the whole geometry; drop {', '.join(given)}")
        if not Path(a.geometry).is_file():
            raise FileNotFoundError(f"--geometry {a.geometry}: no such file")
        return
    missing = [f"--{k.replace('_', '-')}" for k in ("dso", "dsd", "d_detector") if getattr(a, k) is None]
    if missing:
        raise ValueError(f"give --geometry JSON, or the cone-beam geometry: missing {', '.join(missing)}")
    if a.arc is not None and a.angles is not None:
        raise ValueError("--angles gives every angle; drop --arc")


def _geometry(a, n_frames: int, shape: tuple[int, int]):
    """The scan's Geometry from ``--geometry`` or the cone-beam flags, checked against the frames."""
    from jaxmedrf.geometry import Geometry, circular_angles, cone_beam

    nv, nu = shape
    if a.geometry is not None:
        path = Path(a.geometry)
        try:
            g = Geometry.from_json(path.read_text())
        except (ValueError, TypeError, AttributeError) as e:  # not JSON, not an object, fields of wrong types
            raise ValueError(f"--geometry {path}: not a geometry JSON ({e})") from None
        if tuple(g.n_detector) != (nv, nu):
            raise ValueError(f"--geometry {path}: n_detector is {g.n_detector[0]}x{g.n_detector[1]}, the frames are {nv}x{nu}")
        if g.n_views != n_frames:
            raise ValueError(f"--geometry {path}: {g.n_views} angles for {n_frames} frames")
        return g
    if not (math.isfinite(a.dso) and math.isfinite(a.dsd) and 0 < a.dso < a.dsd):
        raise ValueError(f"need 0 < DSO < DSD (mm), got --dso {a.dso} --dsd {a.dsd}")
    dv, du = a.d_detector
    if not all(math.isfinite(d) and d > 0 for d in (dv, du)):
        raise ValueError(f"--d-detector must be positive, got {dv} {du}")
    if a.angles is not None:
        import numpy as np

        from jaxmedrf.io.raw import load_angles

        angles = np.deg2rad(load_angles(a.angles))
        if angles.size != n_frames:
            raise ValueError(f"--angles {a.angles}: {angles.size} angles for {n_frames} frames")
    else:
        arc = 360.0 if a.arc is None else a.arc
        if not (math.isfinite(arc) and arc > 0):
            raise ValueError(f"--arc must be positive (degrees), got {arc}")
        angles = circular_angles(n_frames, arc=math.radians(arc))
    iso = a.dso / a.dsd  # detector pixel → isocentre
    n_voxel = _triple(a.n_voxel, "--n-voxel", int) or (nu, nu, nv)
    d_voxel = _triple(a.d_voxel, "--d-voxel", float) or (du * iso, du * iso, dv * iso)
    if min(n_voxel) <= 0 or not all(math.isfinite(d) and d > 0 for d in d_voxel):
        raise ValueError(f"--n-voxel and --d-voxel must be positive, got {list(n_voxel)} and {list(d_voxel)}")
    return cone_beam(n_voxel=n_voxel, d_voxel=d_voxel, n_detector=(nv, nu), d_detector=(dv, du), DSD=a.dsd, DSO=a.dso,
                     angles=angles, off_detector=tuple(a.off_detector or (0.0, 0.0)),
                     off_origin=tuple(a.off_origin or (0.0, 0.0, 0.0)))


def run(a) -> int:
    from jaxmedrf.io.raw import load_field, load_frames
    from jaxmedrf.io.scan import save_scan
    from jaxmedrf.preprocess import raw_to_line_integrals

    out = Path(a.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {a.out!r}")
    air = _air_region(a.air_region)
    _check_geometry_args(a)
    if air is None and a.flat is None:
        air = "auto"
    frames = load_frames(a.frames)
    flat = load_field(a.flat) if a.flat else None
    dark = load_field(a.dark) if a.dark else None
    geometry = _geometry(a, frames.shape[0], frames.shape[1:])
    res = raw_to_line_integrals(frames, flat=flat, dark=dark, air_region=air, air_border=a.air_border,
                                bad_pixels=a.bad_pixels, ring_filter=a.ring_filter, ring_size=a.ring_size, floor=a.floor)
    proj = res.projections
    if a.flip_rows:
        proj = proj[:, ::-1]
    if a.flip_cols:
        proj = proj[:, :, ::-1]
    save_scan(out, proj, geometry)
    ref = "flat field" if flat is not None else "no flat field"
    ref += (", dark field" if dark is not None else ", no dark field")
    if air is not None:
        ref += ", I0 from " + ("each frame's border" if air == "auto" else f"rows {air[0]}:{air[1]}, columns {air[2]}:{air[3]}")
    n, nv, nu = frames.shape
    print(f"preprocessed {n} frames of {nv}x{nu} ({ref}): {res.summary()} -> {out}")
    return 0
