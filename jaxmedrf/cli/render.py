"""``jaxmedrf render``: DRRs of a volume or a trained field along a circular orbit (GIF or PNGs).

The input is a volume file, or a NAF checkpoint folder (``reconstruct --checkpoint-dir``):
then the field itself is integrated along every pixel ray (:func:`render_projections`), with
the training's sampling, instead of a voxel grid.

The orbit is a cone-beam circle around the volume (DSO = 3 × the volume's bounding radius,
DSD = 1.5 × DSO, detector covering the volume), optionally tilted by ``--elevation`` degrees
about the x axis. Frames are rendered in batches by :func:`jaxmedrf.project` and the frame
rate of the rendering (after compilation) is printed.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from jaxmedrf.cli._units import add_units_argument, to_attenuation

__all__ = ["add_parser", "orbit_geometry", "run", "write_frames"]

HELP = "render DRRs of a volume along an orbit (GIF or PNG sequence)"  # one line in `jaxmedrf --help`


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "render",
        help=HELP,
        description="Render DRRs of a volume (a .npz with `volume` and `geometry` from simulate/reconstruct, "
                    "or any volume jaxmedrf.io reads) along a circular orbit; writes an animated GIF "
                    "(OUT.gif) or a folder of PNGs (any other OUT).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", help="volume file (.npz from simulate/reconstruct, NIfTI, DICOM series folder) "
                                 "or a NAF checkpoint folder (reconstruct --checkpoint-dir): renders the field")
    p.add_argument("--out", required=True, help="OUT.gif, or a folder for PNG frames")
    p.add_argument("--n-frames", type=int, default=36, help="frames over 360°")
    p.add_argument("--size", type=int, default=256, help="detector pixels per side")
    p.add_argument("--elevation", type=float, default=0.0, help="tilt of the orbit plane, degrees")
    p.add_argument("--method", default="trilinear", choices=["trilinear", "siddon"], help="projector")
    p.add_argument("--fps", type=float, default=12.0, help="GIF frame rate")
    p.add_argument("--chunk-rays", type=int, default=1 << 16, help="field input: rays rendered together")
    add_units_argument(p, help="intensity unit of a volume file other than a simulate/reconstruct .npz: HU (converted to μ) "
                               "or mu (μ in mm⁻¹, rendered as is). Default: the file's own unit (a volume whose unit is not "
                               "attenuation, e.g. MR, is rendered as is); a file of unknown unit is taken as HU when its values "
                               "look like HU (air near −1000, a note says so) and refused otherwise")
    return p


def orbit_geometry(n_voxel, d_voxel, *, n_frames: int, size: int, elevation_deg: float = 0.0, off_origin=(0.0, 0.0, 0.0)):
    """A cone-beam orbit that sees the whole volume, tilted by ``elevation_deg`` about x."""
    from jaxmedrf.geometry import Geometry, circular_angles

    extent = np.asarray(n_voxel, float) * np.asarray(d_voxel, float)
    r = 0.5 * float(np.linalg.norm(extent))
    dso, dsd = 3.0 * r, 4.5 * r
    half = 1.05 * dsd * r / math.sqrt(dso**2 - r**2)
    e = math.radians(elevation_deg)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(e), -math.sin(e)], [0.0, math.sin(e), math.cos(e)]])
    return Geometry(DSD=dsd, DSO=dso, n_detector=(size, size), d_detector=2 * half / size, n_voxel=tuple(n_voxel),
                    d_voxel=tuple(d_voxel), off_origin=tuple(off_origin), angles=circular_angles(n_frames),
                    rotation=np.repeat(rot[None], n_frames, 0) if elevation_deg else None,
                    translation=np.repeat(np.asarray(off_origin, float)[None], n_frames, 0) if elevation_deg else None)


def write_frames(frames: np.ndarray, out: Path, *, fps: float) -> None:
    """8-bit frames (n, h, w), bright = attenuating, as ``out.gif`` or ``out/frame_XXXX.png``."""
    from PIL import Image

    from jaxmedrf._files import atomic_path

    hi = float(np.max(frames)) or 1.0
    imgs = [Image.fromarray(np.clip(f[::-1] / hi * 255, 0, 255).astype(np.uint8)) for f in frames]
    if out.suffix.lower() == ".gif":
        with atomic_path(out, suffix=".gif") as tmp:
            imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return
    from jaxmedrf._files import atomic_dir

    with atomic_dir(out) as tmp:
        for i, im in enumerate(imgs):
            im.save(tmp / f"frame_{i:04d}.png")


def _read_volume(path: Path, units: str | None = None):
    """``(volume μ, d_voxel, off_origin)`` from a .npz with geometry, or any volume io reads.

    ``units`` (``None``, ``"HU"``, ``"mu"``) applies to the latter, see ``--units``.
    """
    if path.suffix == ".npz":
        from jaxmedrf._files import read_npz
        from jaxmedrf.geometry import Geometry

        z = read_npz(path, ("volume", "geometry"), what="input")
        g0 = Geometry.from_json(str(z["geometry"]))
        volume = np.asarray(z["volume"], np.float32)
        g0.check_volume(volume)
        d_voxel, off = np.asarray(g0.d_voxel), np.asarray(g0.off_origin)
    else:
        from jaxmedrf.io import load_volume
        from jaxmedrf.io.volume_data import MU_UNITS

        vol = load_volume(path)
        if units is None and vol.unit and vol.unit != "HU" and vol.unit not in MU_UNITS:
            volume = np.asarray(vol.array, np.float32)  # a stated unit that is not attenuation (MR…): as is
        else:
            volume = to_attenuation(vol, units)
        d_voxel, off = np.asarray(vol.spacing), np.zeros(3)
    if not np.all(np.isfinite(volume)):
        raise ValueError(f"{path}: volume contains NaN or infinite values")
    return volume, d_voxel, off


def run(a) -> int:
    import jax

    from jaxmedrf.projectors import project

    if a.n_frames <= 0 or a.size <= 0 or a.chunk_rays <= 0:
        raise ValueError(f"--n-frames, --size and --chunk-rays must be positive, got {a.n_frames}, {a.size}, {a.chunk_rays}")
    if not (math.isfinite(a.fps) and a.fps > 0):
        raise ValueError(f"--fps must be positive, got {a.fps}")
    path = Path(a.input)
    if path.is_dir() and (path / "config.json").exists():
        from jaxmedrf.recon.naf_io import load_field, render_projections

        params, cfg, g0 = load_field(path)
        g = orbit_geometry(g0.n_voxel, g0.d_voxel, n_frames=a.n_frames, size=a.size, elevation_deg=a.elevation,
                           off_origin=g0.off_origin)
        fn = jax.jit(lambda p: render_projections(p, cfg, g0, g, chunk_rays=a.chunk_rays))
        arg, what = params, "field"
    else:
        volume, d_voxel, off = _read_volume(path, a.units)
        g = orbit_geometry(volume.shape, d_voxel, n_frames=a.n_frames, size=a.size, elevation_deg=a.elevation, off_origin=off)
        fn = jax.jit(lambda v: project(v, g, method=a.method))
        arg, what = volume, "volume"
    jax.block_until_ready(fn(arg))  # compile
    t0 = time.perf_counter()
    frames = np.asarray(jax.block_until_ready(fn(arg)))
    dt = time.perf_counter() - t0
    out = Path(a.out)
    write_frames(frames, out, fps=a.fps)
    print(f"rendered {a.n_frames} DRRs of {a.size}x{a.size} of the {what} in {dt:.2f} s ({a.n_frames / dt:.1f} frames/s, "
          f"{jax.devices()[0].device_kind}) -> {out}")
    return 0
