"""``jaxmedrf geometry FILE --to FORMAT``: a scan geometry in another tool's conventions, and a 3-D drawing.

The conversions are :mod:`jaxmedrf.interop`'s; this module only reads, writes and reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "run"]

# one line in `jaxmedrf --help`
HELP = "convert a scan geometry to/from ASTRA, TIGRE, DiffDRR, nanodrr, NeRF; draw it in 3-D"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from jaxmedrf.interop import FORMATS

    p = subparsers.add_parser(
        "geometry", help=HELP,
        description="Reads FILE (a .npz from `jaxmedrf simulate`, a geometry JSON from Geometry.to_json, or another "
                    "tool's geometry as JSON: ASTRA {proj_geom, vol_geom}, TIGRE attributes, DiffDRR/nanodrr "
                    "intrinsics and poses, a NeRF transforms.json) and prints its geometry in the --to format as "
                    "JSON (or writes it to --out). --plot draws the source path, a few detector frames and the "
                    "volume box. Lengths in mm, angles in rad; the conventions are in jaxmedrf.interop's docstring.",
    )
    p.add_argument("file", metavar="FILE", help=".npz with a 'geometry' entry, or a .json geometry")
    p.add_argument("--to", choices=(*FORMATS, "jaxmedrf"), default=None, help="output format")
    p.add_argument("--from", dest="source", choices=("auto", *FORMATS, "jaxmedrf"), default="auto",
                   help="format of a JSON FILE (default: told from its keys)")
    p.add_argument("--out", metavar="OUT", default=None,
                   help="write the converted geometry to OUT (JSON) instead of printing it")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a 3-D drawing of the geometry")
    p.add_argument("--views", type=int, default=4, help="detector frames drawn by --plot")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT or PNG")
    return p


def _dumps(obj, indent: int = 0) -> str:
    """JSON with one line per list of numbers (a vector, a matrix row)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list) and obj and not all(isinstance(v, (int, float)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def _read(path: Path, source: str):
    """The :class:`~jaxmedrf.Geometry` in ``path`` and the format it was read as."""
    from jaxmedrf.geometry import Geometry
    from jaxmedrf.interop import from_format, guess_format

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".npz":
        from jaxmedrf._files import read_npz

        if source not in ("auto", "jaxmedrf"):
            raise ValueError(f"{path}: a .npz holds a jaxmedrf geometry, not --from {source}")
        z = read_npz(path, ("geometry",), what="input")
        return Geometry.from_json(str(z["geometry"])), "jaxmedrf"
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON geometry ({e})") from e
    fmt = guess_format(data) if source == "auto" else source
    if fmt == "jaxmedrf":
        return Geometry.from_dict(data), fmt
    return from_format(data, fmt), fmt


def run(args) -> int:
    from jaxmedrf._files import atomic_path, check_writable
    from jaxmedrf.interop import json_ready, plot_geometry, to_format

    if args.to is None and args.plot is None:
        raise ValueError("nothing to do: give --to FORMAT and/or --plot PNG")
    if args.views < 1:
        raise ValueError(f"--views must be at least 1, got {args.views}")
    for out in (args.out, args.plot):
        if out is not None:
            check_writable(out, overwrite=args.overwrite)
    geometry, fmt = _read(Path(args.file), args.source)
    text = None
    if args.to is not None:  # convert (and fail) before anything is written
        data = geometry.to_dict() if args.to == "jaxmedrf" else json_ready(to_format(geometry, args.to))
        text = _dumps(data)
    fig = plot_geometry(geometry, views=args.views) if args.plot else None
    if text is not None and args.out is None:
        print(text)
    if text is not None and args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n")
        print(f"{args.file} ({fmt}) -> {args.out} ({args.to}): {geometry.beam} beam, {geometry.n_views} views")
    if fig is not None:
        with atomic_path(args.plot, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        print(f"drew {args.plot}")
    return 0
