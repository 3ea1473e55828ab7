"""``jaxmedrf info PATH``: what a DICOM file/directory, NIfTI or .npz holds, and what would stop its use."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run", "describe"]

HELP = "summarise a DICOM file/series directory, NIfTI or .npz volume"  # one line in `jaxmedrf --help`


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info", help=HELP,
        description="Modality, size, spacing, orientation, series found, transfer syntax, intensity range; "
                    "for a simulate/reconstruct .npz also the projections, angles and geometry; "
                    "and a clear note of anything that prevents loading it as a volume or radiograph.",
    )
    p.add_argument("path", help="DICOM file or directory, .nii/.nii.gz, or .npz")
    p.add_argument("--series", metavar="UID", default=None, help="SeriesInstanceUID to describe in a directory")
    return p


_DIRECTION = {"L": "left", "R": "right", "P": "posterior", "A": "anterior", "S": "superior", "I": "inferior"}


def _num(values, fmt: str = ".4g") -> str:
    return ", ".join(f"{float(v):{fmt}}" for v in np.ravel(values))


def _sizes(values, fmt: str = ".4g") -> str:
    return " x ".join(f"{float(v):{fmt}}" for v in np.ravel(values))


def _range(a: np.ndarray) -> str:
    return f"{float(a.min()):.6g} .. {float(a.max()):.6g} (mean {float(a.mean()):.6g})"


def _volume_lines(vol, *, with_format: bool = True) -> list[str]:
    a = vol.array
    towards = ", ".join(_DIRECTION.get(c, c) for c in vol.orientation)
    return [f"format: {vol.meta.get('format', '?')}"] * with_format + [
        f"volume: {a.shape[0]} x {a.shape[1]} x {a.shape[2]} voxels (x, y, z in LPS order)",
        f"spacing: {', '.join(f'{s:.4g}' for s in vol.spacing)} mm",
        f"orientation: {vol.orientation} (array axes 0, 1, 2 increase towards {towards})",
        f"origin (first voxel centre, LPS): {', '.join(f'{v:.2f}' for v in vol.affine[:3, 3])} mm",
        f"modality: {vol.modality or 'unknown'}, unit: {vol.unit or 'unknown'}",
        f"intensity range: {_range(a)}",
    ]


def _angle_line(angles: np.ndarray) -> str:
    deg = np.degrees(np.asarray(angles, np.float64))
    line = f"angles: {deg.size} views, {deg[0]:.4g}° .. {deg[-1]:.4g}°"
    if deg.size > 1:
        step = np.diff(deg)
        line += f" (step {step[0]:.4g}°)" if np.allclose(step, step[0], atol=1e-6) else \
                f" (uneven steps {step.min():.4g}° .. {step.max():.4g}°)"
    return line


def _spread(values, fmt: str = ".6g") -> str:
    """``a`` when all values are equal, else ``a .. b``."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}} .. {hi:{fmt}}"


def _geometry_lines(g) -> list[str]:
    from jaxmedrf.geometry import tomosynthesis_sweep

    nv, nu = g.n_detector
    dv, du = np.asarray(g.d_detector, np.float64)
    n = g.n_views  # DSD, DSO and offsets of every view (given once, or per view), float64
    dsd, dso = (np.broadcast_to(np.asarray(x, np.float64), (n,)) for x in (g.DSD, g.DSO))
    off = np.broadcast_to(np.asarray(g.off_detector, np.float64), (n, 2))
    per_view = " (per view)" if np.ndim(g.DSD) or np.ndim(g.DSO) else ""
    if g.beam == "cone":
        beam = (f"geometry: cone beam, DSO {_spread(dso)} mm, DSD {_spread(dsd)} mm (magnification "
                f"{_spread(dsd / dso, '.4g')}){per_view}")
    else:
        beam = "geometry: parallel beam"
    offset = (f"offset (v, u) {_num(g.off_detector)} mm" if np.ndim(g.off_detector) == 1 else
              f"offset per view: v {_spread(off[:, 0], '.4g')} mm, u {_spread(off[:, 1], '.4g')} mm")
    lines = [
        beam,
        f"detector: {nv} x {nu} pixels (nv x nu) of {dv:.4g} x {du:.4g} mm = {nv * dv:.4g} x {nu * du:.4g} mm, {offset}",
        f"voxel grid: {' x '.join(map(str, g.n_voxel))} voxels (nx x ny x nz) of {_sizes(g.d_voxel)} mm = "
        f"{_sizes(np.asarray(g.n_voxel) * np.asarray(g.d_voxel, np.float64))} mm, centre (x, y, z) {_num(g.off_origin)} mm",
    ]
    if g.detector != "flat":
        lines[1] += (f", {g.detector} (columns on a circle of radius DSD around the source, "
                     f"{_spread(du / dsd, '.4g')} rad each)")
    sweep = tomosynthesis_sweep(g)
    if sweep is not None:
        lines.append(f"tomosynthesis ({sweep.path} source path) over a stationary flat panel: sweep "
                     f"{np.degrees(sweep.angle):.4g}° seen from the volume centre, travel {sweep.travel:.4g} mm "
                     f"(a limited-angle scan: sharp slices parallel to the panel, little depth resolution)")
    elif g.rotation is not None or g.translation is not None:
        from jaxmedrf.geometry import axial_travel

        travel = axial_travel(g) if g.beam == "cone" else 0.0
        if g.rotation is None and travel > 0:
            height = nv * dv * float(np.mean(dso / dsd))
            turns = abs(float(np.ptp(np.asarray(g.angles, np.float64)))) / (2 * np.pi)
            feed = travel / turns if turns > 0 else float("nan")
            lines.append(f"helical: the source travels {travel:.4g} mm along z over {turns:.3g} turns "
                         f"(table feed {feed:.4g} mm/turn, pitch {feed / height:.3g})")
        else:
            lines.append("rig pose: a rotation/translation per view (not a plain circular orbit)")
    return lines


def _npz_lines(path: Path) -> tuple[list[str], list[str], set[str]]:
    """What a ``simulate`` / ``reconstruct`` ``.npz`` holds beside its volume: its arrays, the
    projections, angles and geometry; ``(lines, problems, array names)``. Not an npz file at
    all: ``ValueError`` (exit 2)."""
    from jaxmedrf._files import read_npz
    from jaxmedrf.geometry import Geometry

    z = read_npz(path, what="file")
    lines = ["format: npz",
             "arrays: " + (", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in sorted(z.items())) or "none")]
    problems: list[str] = []
    g = None
    if "geometry" in z:
        try:
            g = Geometry.from_json(str(z["geometry"]))
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"geometry: not a valid jaxmedrf geometry ({type(e).__name__}: {e})")
    p = z.get("projections")
    if p is not None:
        if p.ndim == 3 and np.issubdtype(p.dtype, np.number):
            lines.append(f"projections: {p.shape[0]} views x {p.shape[1]} x {p.shape[2]} pixels (views, nv, nu), "
                         f"{p.dtype}, range {_range(p)}")
            bad = int(p.size - np.count_nonzero(np.isfinite(p)))
            if bad:
                problems.append(f"projections: {bad} values are NaN or infinite")
        else:
            problems.append(f"projections: expected a numeric (views, nv, nu) array, got {p.dtype} {p.shape}")
        if g is not None and p.shape != g.projection_shape:
            problems.append(f"projections have shape {p.shape}, the geometry expects {g.projection_shape}")
    else:
        lines.append("projections: none")
    angles = z.get("angles")
    if angles is None and g is not None:
        angles = np.asarray(g.angles)
    if angles is not None and angles.ndim == 1 and angles.size and np.issubdtype(angles.dtype, np.number):
        lines.append(_angle_line(angles))
        if g is not None and "angles" in z and (angles.shape != np.shape(g.angles)
                                                or not np.allclose(angles, np.asarray(g.angles))):
            problems.append("the 'angles' array differs from the geometry's angles")
    elif angles is not None:
        problems.append(f"angles: expected a 1-D numeric array (rad), got {angles.dtype} {angles.shape}")
    if g is not None:
        lines += _geometry_lines(g)
    elif "geometry" not in z:
        lines.append("geometry: none")
    if "physics" in z:
        try:
            lines += _physics_lines(z)
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"physics: not valid jaxmedrf physics settings ({type(e).__name__}: {e})")
    return lines, problems, set(z)


def _physics_lines(z) -> list[str]:
    """The physics model ``simulate`` recorded (:mod:`jaxmedrf.physics`)."""
    from jaxmedrf.io.scan import load_physics

    d = load_physics(z, what="file")
    s = d.get("spectrum")
    if s is None:
        lines = ["physics: monochromatic"]
    else:
        e, f = np.asarray(s["energy_kev"], np.float64), np.asarray(s["fluence"], np.float64)
        mean = float(np.sum(e * f) / np.sum(f))
        lines = [f"physics: polychromatic, {s.get('source', '?')}: {e.size} energies {e.min():.4g} .. {e.max():.4g} keV, "
                 f"mean {mean:.4g} keV; detector {d.get('detector', '?')}"]
        m = d.get("materials") or {}
        if m:
            lines.append(f"materials: {' + '.join(m['names'])}, water up to {m['soft_threshold_hu']:g} HU, pure bone from "
                         f"{m['bone_hu']:.0f} HU (μ volume at {m['reference_kev']:g} keV)")
    sc = d.get("scatter")
    lines.append("scatter: " + (f"amplitude {sc['amplitude']:g}, kernel σ {sc['sigma_mm']:g} mm" if sc else "none")
                 + f"; detector blur σ {d.get('blur_sigma_mm', 0):g} mm")
    return lines


def describe(path: str | Path, *, series: str | None = None) -> tuple[list[str], list[str]]:
    """``(lines, problems)``: a readable summary and what prevents use (empty when usable)."""
    from jaxmedrf.io.dicom import describe_series, read_dicom, scan_series, _transfer_syntax, _sop_name
    from jaxmedrf.io.radiograph import load_radiograph
    from jaxmedrf.io.volume import load_volume, volume_format

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    lines: list[str] = [f"path: {path}"]
    problems: list[str] = []
    if path.is_dir():
        groups, skipped = scan_series(path)
        lines.append(f"DICOM series found: {len(groups)}")
        lines += [f"  {s}" for s in describe_series(groups)]
        if skipped:
            lines.append(f"files skipped: {len(skipped)} (e.g. {skipped[0][0].name}: {skipped[0][1]})")
        if not groups:
            problems.append("no DICOM image files in this directory")
            return lines, problems
        uid = series if series is not None else (next(iter(groups)) if len(groups) == 1 else None)
        if uid in groups:
            hdr = groups[uid][0][1]
            lines.append(f"transfer syntax: {_transfer_syntax(hdr)}")
    else:
        fmt = volume_format(path)
        if fmt == "dicom":
            hdr = read_dicom(path, pixels=False)  # not DICOM at all: ValueError, exit 2
            frames = int(hdr.get("NumberOfFrames", 1) or 1)
            lines += [
                f"DICOM {_sop_name(hdr)}, modality {hdr.get('Modality', '?')}",
                f"transfer syntax: {_transfer_syntax(hdr)}",
                f"image: {hdr.get('Rows', '-')} x {hdr.get('Columns', '-')} pixels, {frames} frame(s), "
                f"{hdr.get('PhotometricInterpretation', '-')}",
                f"series: {hdr.get('SeriesInstanceUID', '-')}",
            ]
            if "Rows" in hdr and frames == 1:
                try:
                    rg = load_radiograph(path)
                    lines.append(f"as a radiograph: {rg.array.shape}, pixel {rg.d_detector} mm, DSD {rg.DSD}, "
                                 f"DSO {rg.DSO}, values {float(rg.array.min()):.6g} .. {float(rg.array.max()):.6g}")
                except ValueError as e:
                    problems.append(str(e))
        elif fmt == "npz":
            more, problems, keys = _npz_lines(path)  # not an npz file: ValueError, exit 2
            lines += more
            if "volume" not in keys:
                if "projections" in keys:
                    lines.append("volume: none (projections only)")
                else:
                    problems.append("no 'volume' and no 'projections' array: neither a volume nor a scan")
                return lines, problems
    try:
        vol = load_volume(path, series=series)
        lines += _volume_lines(vol, with_format=vol.meta.get("format") != "npz")
    except ValueError as e:
        msg = str(e)
        if not (path.is_file() and "single 2D image" in msg and not problems):
            problems.append(msg)
        else:
            lines.append("volume: no (a single 2D image; usable as a radiograph)")
    return lines, problems


def run(args) -> int:
    lines, problems = describe(args.path, series=args.series)
    print("\n".join(lines))
    if problems:
        print("problems:")
        for p in problems:
            print("  - " + p.replace("\n", "\n    "))
    else:
        print("problems: none")
    return 0
