"""``jaxmedrf info PATH``: what a DICOM file/directory, NIfTI or .npz holds, and what would stop its use."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run", "describe"]

HELP = "summarise a DICOM file/series directory, NIfTI or .npz volume"  # one line in `jaxmedrf --help`


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info", help=HELP,
        description="Modality, size, spacing, orientation, series found, transfer syntax, intensity range, "
                    "and a clear note of anything that prevents loading it as a volume or radiograph.",
    )
    p.add_argument("path", help="DICOM file or directory, .nii/.nii.gz, or .npz")
    p.add_argument("--series", metavar="UID", default=None, help="SeriesInstanceUID to describe in a directory")
    return p


def _volume_lines(vol) -> list[str]:
    a = vol.array
    return [
        f"format: {vol.meta.get('format', '?')}",
        f"volume: {a.shape[0]} x {a.shape[1]} x {a.shape[2]} voxels (x, y, z in LPS order)",
        f"spacing: {', '.join(f'{s:.4g}' for s in vol.spacing)} mm",
        f"orientation: {vol.orientation} (array axes increase towards)",
        f"origin (first voxel centre, LPS): {', '.join(f'{v:.2f}' for v in vol.affine[:3, 3])} mm",
        f"modality: {vol.modality or 'unknown'}, unit: {vol.unit or 'unknown'}",
        f"intensity range: {float(a.min()):.6g} .. {float(a.max()):.6g} (mean {float(a.mean()):.6g})",
    ]


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
    try:
        vol = load_volume(path, series=series)
        lines += _volume_lines(vol)
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
