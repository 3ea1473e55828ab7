"""``jaxmedrf convert IN OUT``: a volume between DICOM series, NIfTI and .npz, geometry kept."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

HELP = "convert a volume: DICOM series <-> NIfTI <-> .npz"  # one line in `jaxmedrf --help`


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help=HELP,
        description="Reads IN (DICOM series directory, multi-frame DICOM, .nii/.nii.gz or .npz) and writes OUT, "
                    "chosen by its name: .nii/.nii.gz -> NIfTI, .npz -> volume+spacing+affine, anything else -> a "
                    "directory of de-identified DICOM images (new UIDs, no patient data). Geometry (LPS affine) "
                    "is kept; output is written atomically.",
    )
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--series", metavar="UID", default=None, help="SeriesInstanceUID when IN holds several series")
    p.add_argument("--modality", default=None, help="DICOM modality to write (default: the input's, else CT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return p


def run(args) -> int:
    from jaxmedrf.io.volume import load_volume, save_volume

    vol = load_volume(args.input, series=args.series)
    out = save_volume(vol, args.output, modality=args.modality, overwrite=args.overwrite)
    a = vol.array
    print(f"{args.input} -> {out}: {a.shape[0]}x{a.shape[1]}x{a.shape[2]}, spacing "
          f"{', '.join(f'{s:.4g}' for s in vol.spacing)} mm, {vol.orientation}, {vol.modality or '?'} {vol.unit}")
    return 0
