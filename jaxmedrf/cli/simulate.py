"""``jaxmedrf simulate``: projections of an analytic phantom (or a CT volume) to one ``.npz``.

Writes ``OUT.npz`` with exactly the keys ``projections`` (float32, (n_views, nv, nu)),
``angles`` (rad), ``volume`` (float32, mm⁻¹, the ground truth on the geometry's grid) and
``geometry`` (JSON, TIGRE field names plus ``beam``) — and ``physics`` (JSON: spectrum, detector,
materials, scatter, blur) when ``--spectrum``/``--kvp``/``--scatter``/``--blur`` model the physics
(:mod:`jaxmedrf.physics`) — and ``OUT.png`` beside it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from jaxmedrf.cli._units import add_units_argument, to_attenuation

__all__ = ["add_parser", "run", "simulate"]

HELP = "simulate X-ray projections (DRRs) of a phantom"  # one line in `jaxmedrf --help`


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "simulate",
        help=HELP,
        description=(
            "Simulate cone- or parallel-beam projections (line integrals of μ in mm⁻¹) of a built-in "
            "analytic phantom and write OUT.npz (projections, angles, volume, geometry) and OUT.png. "
            "Geometry follows TIGRE's conventions (README: 'Geometry')."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--phantom", default="shepp-logan", help="shepp-logan | spheres")
    p.add_argument("--volume", default=None, metavar="PATH",
                   help="simulate DRRs of a CT/MR volume instead (DICOM series folder, enhanced DICOM, NIfTI, .npz); "
                        "its LPS grid becomes n_voxel/d_voxel, centred at the origin unless --off-origin is given")
    p.add_argument("--series", default=None, help="SeriesInstanceUID when the --volume folder holds several series")
    add_units_argument(p)
    p.add_argument("--preset", default=None, choices=["mednerf"],
                   help="with --volume: MedNeRF's DRRs (72 views at 5°, 128×128 detector, geometry scaled to the volume)")
    p.add_argument("--export-png", default=None, metavar="DIR", help="also write each DRR as a PNG with a JSON pose sidecar")
    p.add_argument("--mu-scale", type=float, default=0.1, help="mm⁻¹ per unit of phantom contrast (0.1: brain = water)")
    p.add_argument("--phantom-radius", type=float, default=None, help="phantom radius in mm (default: half the smallest volume extent)")
    p.add_argument("--beam", default="cone", choices=["cone", "parallel"], help="beam geometry")
    p.add_argument("--n-voxel", type=int, nargs="+", default=[128], metavar="N", help="voxels nx [ny nz]")
    p.add_argument("--d-voxel", type=float, nargs="+", default=None, metavar="MM",
                   help="voxel size dx [dy dz] in mm (default: 256 mm field of view / nx)")
    p.add_argument("--off-origin", type=float, nargs=3, default=[0.0, 0.0, 0.0], metavar=("X", "Y", "Z"), help="volume centre, mm")
    p.add_argument("--n-views", type=int, default=None,
                   help="number of projections, per turn with --orbit helical (default 50; 72 with --preset mednerf)")
    p.add_argument("--orbit", default="circular", choices=["circular", "short-scan", "helical", "tomosynthesis"],
                   help="cone-beam source path: a circle over --arc, a short scan (180° + fan angle), a helix, or "
                        "tomosynthesis (the source sweeps over a stationary flat panel in the y-z plane at "
                        "x = DSO - DSD, along y; DSO to the isocentre at the origin)")
    p.add_argument("--pitch", type=float, default=None,
                   help="helical pitch: table feed per turn / detector height at the isocentre (default 1)")
    p.add_argument("--turns", type=float, default=None, help="helical turns (default 2)")
    p.add_argument("--sweep-path", default=None, choices=["linear", "arc"],
                   help="tomosynthesis source path: a line parallel to the panel, or an arc about the isocentre "
                        "(default linear)")
    p.add_argument("--sweep", type=float, default=None,
                   help="tomosynthesis sweep angle seen from the isocentre, degrees (default 40)")
    p.add_argument("--travel", type=float, default=None,
                   help="tomosynthesis source travel instead of --sweep: the path's length, mm")
    p.add_argument("--detector", default="flat", choices=["flat", "cylindrical"],
                   help="flat panel, or columns on a cylinder of radius DSD around the source (cone)")
    p.add_argument("--arc", type=float, default=None, help="angular range in degrees (default 360 cone, 180 parallel)")
    p.add_argument("--dsd", type=float, default=1500.0, help="source–detector distance DSD, mm (cone)")
    p.add_argument("--dso", type=float, default=1000.0, help="source–origin distance DSO, mm (cone)")
    p.add_argument("--n-detector", type=int, nargs=2, default=None, metavar=("NV", "NU"),
                   help="detector rows and columns (default: 2·nx square)")
    p.add_argument("--d-detector", type=float, nargs=2, default=None, metavar=("DV", "DU"),
                   help="detector pixel size, mm (default: covers the volume with a 10%% margin)")
    p.add_argument("--off-detector", type=float, nargs=2, default=[0.0, 0.0], metavar=("V", "U"), help="detector offset, mm")
    p.add_argument("--method", default="siddon", choices=["siddon", "trilinear", "analytic"],
                   help="projector: exact Siddon through the voxelised phantom, trilinear ray marching, "
                        "or the phantom's exact analytic line integrals")
    p.add_argument("--step", type=float, default=0.5, help="trilinear step, voxels")
    p.add_argument("--supersample", type=int, default=2, help="voxelisation: points per voxel edge")
    from jaxmedrf.cli._physics_args import add_physics_arguments

    add_physics_arguments(p, simulate=True)
    p.add_argument("--noise-i0", type=float, default=None, help="incident photons per pixel for Poisson noise (off if omitted)")
    p.add_argument("--noise-sigma", type=float, default=0.0, help="electronic noise std, counts (with --noise-i0)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for the noise")
    p.add_argument("--out", default="sim.npz", help="output .npz (a PNG with the same stem is written beside it)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG")
    return p


def _geometry_from_args(a):
    from jaxmedrf.geometry import Geometry, circular_angles

    n_voxel = tuple(a.n_voxel) * 3 if len(a.n_voxel) == 1 else tuple(a.n_voxel)
    if len(n_voxel) != 3:
        raise ValueError(f"--n-voxel takes 1 or 3 integers, got {a.n_voxel}")
    if min(n_voxel) <= 0:
        raise ValueError(f"--n-voxel must be positive, got {list(n_voxel)}")
    if a.d_voxel is None:
        d_voxel = (256.0 / n_voxel[0],) * 3
    else:
        d_voxel = tuple(a.d_voxel) * 3 if len(a.d_voxel) == 1 else tuple(a.d_voxel)
        if len(d_voxel) != 3:
            raise ValueError(f"--d-voxel takes 1 or 3 numbers, got {a.d_voxel}")
        if not all(math.isfinite(d) and d > 0 for d in d_voxel):
            raise ValueError(f"d_voxel must be positive, got {list(d_voxel)}")
    if a.n_views is None:
        a.n_views = 50
    if a.n_views <= 0:
        raise ValueError(f"--n-views must be positive, got {a.n_views}")
    arc_deg = a.arc if a.arc is not None else (360.0 if a.beam == "cone" else 180.0)
    if not (math.isfinite(arc_deg) and arc_deg > 0):
        raise ValueError(f"--arc must be positive (degrees), got {arc_deg}")
    n_det = tuple(a.n_detector) if a.n_detector else (2 * n_voxel[2], 2 * n_voxel[0])
    extent = np.asarray(n_voxel, float) * np.asarray(d_voxel, float)
    if a.d_detector is not None:
        d_det = tuple(a.d_detector)
    else:
        # Cover the volume's bounding sphere (and height) with a 10% margin at the detector.
        if a.beam == "cone" and a.dso > 0:
            r = 0.5 * float(np.hypot(extent[0], extent[1]))
            if r >= a.dso:
                raise ValueError(f"DSO={a.dso} mm puts the source inside the volume (radius {r:.1f} mm)")
            half_fan = r / math.sqrt(a.dso**2 - r**2)  # tan of the half fan angle
            width = 2 * a.dsd * half_fan
            height = extent[2] * a.dsd / (a.dso - r)
        else:
            width, height = float(np.hypot(extent[0], extent[1])), float(extent[2])
        d_det = (1.1 * height / n_det[0], 1.1 * width / n_det[1])
    return Geometry(
        DSD=a.dsd if a.beam == "cone" else 0.0,
        DSO=a.dso if a.beam == "cone" else 0.0,
        n_detector=n_det,
        d_detector=d_det,
        off_detector=tuple(a.off_detector),
        n_voxel=n_voxel,
        d_voxel=d_voxel,
        off_origin=tuple(a.off_origin),
        angles=circular_angles(a.n_views, arc=math.radians(arc_deg)),
        beam=a.beam,
        detector=a.detector,
    )


def _orbit(g, a):
    """``g`` on the source path of ``--orbit`` (builders in :mod:`jaxmedrf.geometry`)."""
    from jaxmedrf.geometry import circular_angles, helical_beam, short_scan_arc

    if a.orbit != "helical" and (a.pitch is not None or a.turns is not None):
        raise ValueError("--pitch and --turns need --orbit helical")
    if a.orbit != "tomosynthesis" and (a.sweep_path is not None or a.sweep is not None or a.travel is not None):
        raise ValueError("--sweep-path, --sweep and --travel need --orbit tomosynthesis")
    if a.orbit == "circular":
        return g
    if g.beam != "cone" or a.arc is not None:
        raise ValueError(f"--orbit {a.orbit} needs --beam cone and sets the arc itself (no --arc)")
    if a.orbit == "short-scan":
        return g.replace(angles=circular_angles(g.n_views, arc=short_scan_arc(g)))
    if a.orbit == "tomosynthesis":
        return _tomosynthesis(g, a)
    return helical_beam(pitch=1.0 if a.pitch is None else a.pitch, n_turns=2.0 if a.turns is None else a.turns,
                        views_per_turn=g.n_views, n_voxel=g.n_voxel, d_voxel=g.d_voxel, n_detector=g.n_detector,
                        d_detector=g.d_detector, DSD=float(g.DSD), DSO=float(g.DSO), off_detector=g.off_detector,
                        off_origin=g.off_origin, detector=g.detector)


def _tomosynthesis(g, a):
    """The tomosynthesis scan of ``--sweep-path``/``--sweep``/``--travel`` on ``g``'s volume, distances
    and panel; without ``--d-detector`` the pixels are sized so that the panel holds the volume's
    shadow from every source position (10% margin)."""
    from jaxmedrf.geometry import tomosynthesis, view_frames, volume_box

    if a.detector != "flat":
        raise ValueError("--orbit tomosynthesis needs a flat panel (--detector flat)")
    if a.n_views < 2:
        raise ValueError(f"--orbit tomosynthesis needs at least 2 views, got --n-views {a.n_views}")
    sweep = math.radians(a.sweep) if a.sweep is not None else None
    t = tomosynthesis(path=a.sweep_path or "linear", sweep=sweep, travel=a.travel, n_views=g.n_views,
                      DSO=float(g.DSO), DSD=float(g.DSD), n_voxel=g.n_voxel, d_voxel=g.d_voxel,
                      n_detector=g.n_detector, d_detector=g.d_detector, off_detector=g.off_detector,
                      off_origin=g.off_origin)
    if a.d_detector is not None:
        return t
    f = view_frames(t)
    S, u, v = (np.asarray(x, np.float64) for x in (f.source, f.u, f.v))
    off = np.asarray(t.off_detector, np.float64)
    panel = np.asarray(f.center, np.float64)[0] + off[0, 1] * u[0] + off[0, 0] * v[0]  # the same for every view
    normal = np.cross(u[0], v[0])
    lo, hi = (np.asarray(x, np.float64) for x in volume_box(t))
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ray = corners[None] - S[:, None]  # (views, 8, 3)
    if np.any(ray @ normal >= 0):
        raise ValueError(f"the volume reaches the source's side (DSO={float(g.DSO):g} mm is too short)")
    hit = S[:, None] + ray * (((panel - S) @ normal)[:, None] / (ray @ normal))[..., None]
    half_u, half_v = (float(np.abs((hit - panel) @ axis).max()) for axis in (u[0], v[0]))
    return t.replace(d_detector=(2.2 * half_v / t.n_detector[0], 2.2 * half_u / t.n_detector[1]))


def simulate(geometry, phantom, *, method="siddon", step=0.5, supersample=2):
    """Noise-free ground-truth volume and projections for ``phantom`` on ``geometry``."""
    from jaxmedrf import phantoms, projectors

    volume = phantoms.voxelize(phantom, geometry, supersample=supersample)
    if method == "analytic":
        proj = phantoms.analytic_projections(phantom, geometry)
    else:
        proj = projectors.project(volume, geometry, method=method, step=step)
    return volume, proj


def save_png(path, projections, volume, *, title="") -> None:
    """A few projections over the three central slices of the volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxmedrf._files import atomic_path

    n = projections.shape[0]
    picks = sorted({0, n // 4, n // 2, (3 * n) // 4})[:4]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.5))
    for ax, i in zip(axes[0], picks):
        im = ax.imshow(projections[i], cmap="gray", origin="lower")
        ax.set_title(f"view {i}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes[0][len(picks):]:
        ax.axis("off")
    nx, ny, nz = volume.shape
    for ax, (img, name) in zip(
        axes[1], [(volume[:, :, nz // 2].T, "axial (z mid)"), (volume[:, ny // 2, :].T, "coronal (y mid)"), (volume[nx // 2].T, "sagittal (x mid)")]
    ):
        im = ax.imshow(img, cmap="gray", origin="lower")
        ax.set_title(name)
        fig.colorbar(im, ax=ax, fraction=0.046, label="μ (mm⁻¹)")
    axes[1][3].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _simulate_volume(a):
    """Geometry, μ volume (mm⁻¹) and projections for a CT/MR volume read from disk."""
    from jaxmedrf import projectors
    from jaxmedrf.io import geometry_for_volume, load_volume

    if a.method == "analytic":
        raise ValueError("--method analytic needs a phantom, not --volume")
    vol = load_volume(a.volume, series=a.series)
    mu = to_attenuation(vol, a.units)
    kw = {"n_views": a.n_views} if a.n_views is not None else {}
    if a.n_detector:
        kw["n_detector"] = tuple(a.n_detector)
    geometry = geometry_for_volume(vol, preset=a.preset, off_origin=tuple(a.off_origin), **kw)
    return geometry, mu, projectors.project(mu, geometry, method=a.method, step=a.step)


def run(a) -> int:
    from jaxmedrf import phantoms

    out = Path(a.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {a.out!r}")
    if a.noise_i0 is not None and not (math.isfinite(a.noise_i0) and a.noise_i0 > 0):
        raise ValueError(f"--noise-i0 must be positive, got {a.noise_i0}")
    if a.supersample < 1:
        raise ValueError(f"--supersample must be a positive integer, got {a.supersample}")
    if a.volume is None and (a.preset or a.series or a.units):
        raise ValueError("--preset, --series and --units need --volume")
    if a.volume is not None and (a.orbit != "circular" or a.detector != "flat"):
        raise ValueError("--orbit and --detector apply to phantoms (not --volume)")
    from jaxmedrf.cli._physics_args import physics_settings, simulate_physics

    phys = physics_settings(a)  # None: the plain line integrals
    t0 = time.perf_counter()
    if a.volume is not None:
        geometry, volume, proj = _simulate_volume(a)
        source = Path(a.volume).name
    else:
        geometry = _orbit(_geometry_from_args(a), a)
        extent = np.asarray(geometry.n_voxel) * np.asarray(geometry.d_voxel)
        radius = a.phantom_radius if a.phantom_radius is not None else 0.5 * float(extent.min())
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"--phantom-radius must be positive, got {radius}")
        phantom = phantoms.get_phantom(a.phantom, radius=radius, mu_scale=a.mu_scale)
        volume, proj = simulate(geometry, phantom, method=a.method, step=a.step, supersample=a.supersample)
        source = a.phantom
    if phys is not None:
        proj = simulate_physics(phys, volume, proj, geometry, method=a.method, step=a.step)
    if a.noise_i0 is not None:
        import jax

        from jaxmedrf.noise import poisson_noise

        proj = poisson_noise(jax.random.key(a.seed), proj, i0=a.noise_i0, sigma_e=a.noise_sigma)
    volume, proj = np.asarray(volume, np.float32), np.asarray(proj, np.float32)
    dt = time.perf_counter() - t0
    from jaxmedrf.io.scan import save_scan

    save_scan(out, proj, geometry, volume=volume, physics=phys)
    png = out.with_suffix(".png")
    if not a.no_png:
        save_png(png, proj, volume, title=f"{source}, {geometry.beam} beam, {geometry.n_views} views, {a.method}")
    if a.export_png:
        from jaxmedrf.io import export_drr_pngs

        export_drr_pngs(proj, geometry, a.export_png)
    noise = f", Poisson noise I0={a.noise_i0:g}" if a.noise_i0 else ""
    if phys is not None and phys["spectrum"] is not None:
        noise = f", polychromatic ({phys['spectrum']['source']})" + noise
    print(
        f"simulated {geometry.n_views} {geometry.beam}-beam views of {source} "
        f"({'x'.join(map(str, geometry.n_voxel))} voxels, detector {geometry.n_detector[0]}x{geometry.n_detector[1]}, "
        f"{a.method}{noise}) in {dt:.1f} s -> {out}" + ("" if a.no_png else f", {png}")
    )
    return 0

