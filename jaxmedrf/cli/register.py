"""``jaxmedrf register``: find an X-ray's pose against a CT by differentiable rendering.

Inputs:

* ``--volume``: a ``.npz`` with ``volume`` (μ, mm⁻¹) and ``geometry`` (JSON; e.g. from
  ``jaxmedrf simulate``), or a ``.npy`` (μ, mm⁻¹, indexed x, y, z) with ``--spacing``, or a DICOM
  series / NIfTI read by :func:`jaxmedrf.io.load_volume` (HU converted to μ, spacing from the file).
  ``--units HU|mu`` says what the values are (a ``.npz``/``.npy`` in HU, a NIfTI of unknown unit);
  without it a NIfTI of unknown unit is taken as HU only when its values look like HU.
* ``--xray``: a ``.npz`` from ``jaxmedrf simulate`` (``projections`` + ``geometry``; view
  ``--view``; the true pose is known, so errors are reported), or a ``.npy``/``.png`` image
  (line integrals or any affine function of them, bright = attenuating) with ``--sdd`` and
  ``--pixel-spacing``, or a DICOM radiograph read by :func:`jaxmedrf.io.load_radiograph`.

The estimated pose is the *rig pose* (rig frame → CT frame, see :mod:`jaxmedrf.pose`); the
initial pose is ``--init POSE.json`` or the nominal one (the view's gantry angle for a
simulated ``.npz``, the identity otherwise), optionally offset by ``--perturb-deg/-mm``.
Writes ``--out`` (JSON: pose in every parameterisation, loss, iterations, time, errors when
the truth is known) and a PNG beside it (X-ray, final DRR, edge overlay, loss curve).
"""

from __future__ import annotations

import argparse
import json
import contextlib
import math
from pathlib import Path

import numpy as np

from jaxmedrf._files import atomic_path, read_npy, read_npz
from jaxmedrf.cli._units import add_units_argument, to_attenuation

__all__ = ["add_parser", "run"]

HELP = "2D/3D registration: the pose of an X-ray relative to a CT"  # one line in `jaxmedrf --help`


def registration_args():
    """The flags of :class:`~jaxmedrf.registration.RegistrationConfig` fields: defaults, types,
    choices and ranges are the config's (``args.registration_config`` receives the config)."""
    from jaxmedrf.cli._config_args import ConfigArgs, Flag
    from jaxmedrf.projectors import METHODS
    from jaxmedrf.registration import LOSSES, RegistrationConfig

    flags = [
        Flag("multi_start_levels", "--multi-levels",
             "multi-start: the K starts share the M coarsest levels, then the best continues alone "
             "(much faster for large K); 0 = every start runs every level", none_as=0, metavar="M"),
        Flag("levels", "--levels", "detector downsampling factors, coarse to fine", metavar="F"),
        Flag("iterations", "--iterations", "maximum iterations per level"),
        Flag("lr", "--lr", "Adam step (≈ degrees and mm per step) at the coarsest level"),
        Flag("loss", "--loss", "image similarity: NCC, multiscale patch NCC, gradient NCC, mutual information, MSE",
             choices=tuple(LOSSES)),
        Flag("step", "--step", "DRR sampling step, voxels (trilinear projector)"),
        Flag("projector", "--projector", "DRR projector: auto = Joseph's on a CPU (several times faster there), "
             "trilinear elsewhere", choices=("auto", *METHODS)),
        Flag("intensity", "--intensity", "also optimise an intensity scale of the DRR"),
    ]
    return ConfigArgs("registration_config", RegistrationConfig(), flags)


def add_parser(sub) -> argparse.ArgumentParser:
    from jaxmedrf.cli._config_args import param_default
    from jaxmedrf.registration import random_perturbations

    p = sub.add_parser(
        "register",
        help=HELP,
        description=(
            "Estimate the pose of the X-ray source–detector rig relative to a CT by matching a DRR of "
            "the CT to the X-ray (gradient descent through the differentiable projector, coarse to fine, "
            "optionally from K random starts at once). Writes OUT (JSON) and a PNG beside it."
        ),
    )
    p.add_argument("--volume", required=True, help="CT: .npz (volume + geometry) or .npy with --spacing")
    p.add_argument("--xray", required=True, help="X-ray: simulate .npz, or .npy/.png with --sdd --pixel-spacing")
    p.add_argument("--view", type=int, default=0, help="view of a multi-view .npz X-ray (default 0)")
    p.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM", help="voxel size of a .npy CT, mm (1 or 3 values)")
    add_units_argument(p, help="intensity unit of the CT: HU (converted to μ) or mu (μ in mm⁻¹). Default: a .npz/.npy is "
                               "μ; a DICOM/NIfTI file has its own unit (DICOM CT, a NIfTI jaxmedrf wrote) or, if unknown, "
                               "is taken as HU when its values look like HU (air near −1000, a note says so) and refused otherwise")
    p.add_argument("--sdd", type=float, default=None, help="source–detector distance, mm (for .npy/.png X-rays)")
    p.add_argument("--sod", type=float, default=None, help="source–isocentre distance, mm (default SDD/2)")
    p.add_argument("--pixel-spacing", type=float, nargs="+", default=None, metavar="MM", help="detector pixel size, mm (1 or 2 values: row, column)")
    p.add_argument("--principal-point", type=float, nargs=2, default=None, metavar=("ROW", "COL"), help="principal point, pixels (default the image centre)")
    p.add_argument("--detector", type=int, nargs=2, default=None, metavar=("NV", "NU"), help="expected X-ray size (checked)")
    p.add_argument("--init", default=None, help="initial pose JSON (e.g. a previous output); default the nominal pose")
    p.add_argument("--perturb-deg", type=float, default=0.0, help="rotate the initial pose by this angle about a random axis (testing)")
    p.add_argument("--perturb-mm", type=float, default=0.0, help="translate the initial pose by this distance in a random direction (testing)")
    p.add_argument("--starts", type=int, default=1, help="number of starts K (1 = the initial pose only)")
    p.add_argument("--rot-range-deg", type=float, default=param_default(random_perturbations, "rot_range_deg"),
                   help="multi-start: ± range per rotation component, degrees (default: %(default)s)")
    p.add_argument("--trans-range-mm", type=float, default=param_default(random_perturbations, "trans_range_mm"),
                   help="multi-start: ± range per translation component, mm (default: %(default)s)")
    registration_args().add_to(p)
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (starts, perturbation)")
    p.add_argument("--out", default="pose.json", help="output JSON (a PNG with the same stem is written beside it)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# ----------------------------------------------------------------------------- loading


def _geometry(js):
    from jaxmedrf.geometry import Geometry

    return Geometry.from_json(str(np.asarray(js)))


def _check_finite(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")


def load_ct(args):
    """``(volume, grid geometry or None, spacing)``: the CT in μ (mm⁻¹)."""
    path = Path(args.volume)
    if not path.exists():
        raise FileNotFoundError(f"--volume not found: {path}")
    geom = None
    if path.suffix == ".npz":
        z = read_npz(path, ("volume",), what="--volume")
        vol = np.asarray(z["volume"], np.float32)
        if "geometry" in z:
            geom = _geometry(z["geometry"])
    elif path.suffix == ".npy":
        vol = np.asarray(read_npy(path, what="--volume"), np.float32)
    else:  # DICOM series, enhanced DICOM, NIfTI: HU → μ (mm⁻¹)
        from jaxmedrf.io import load_volume

        loaded = load_volume(path)
        vol = to_attenuation(loaded, args.units)
        if args.spacing is None:
            args.spacing = [float(x) for x in loaded.spacing]
    if path.suffix in (".npz", ".npy") and args.units == "HU":
        from jaxmedrf.io import hu_to_mu

        vol = np.asarray(hu_to_mu(vol), np.float32)
    if vol.ndim != 3:
        raise ValueError(f"--volume must be a 3-D array (x, y, z), got shape {vol.shape}")
    _check_finite(vol, "--volume")
    if args.spacing is not None:
        sp = np.asarray(args.spacing, float)
        if sp.size not in (1, 3) or np.any(sp <= 0):
            raise ValueError(f"--spacing needs 1 or 3 positive values in mm, got {args.spacing}")
        spacing = np.broadcast_to(sp, (3,)).copy()
    elif geom is not None:
        geom.check_volume(vol)
        spacing = np.asarray(geom.d_voxel, float)
    else:
        raise ValueError(f"--volume {path} has no voxel spacing: give --spacing MM (or a .npz with a geometry)")
    return vol, geom, spacing


def _load_image(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        img = read_npy(path, what="--xray")
    elif path.suffix.lower() == ".png":
        import matplotlib.image

        img = matplotlib.image.imread(path)
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
    else:  # a DICOM radiograph
        from jaxmedrf.io import load_radiograph

        img = load_radiograph(path).array
    return np.asarray(img, np.float32)


def load_xray(args, vol, ct_geom, spacing):
    """``(image, registration geometry, nominal pose, true pose or None)``."""
    from jaxmedrf import pose as P

    path = Path(args.xray)
    if not path.exists():
        raise FileNotFoundError(f"--xray not found: {path}")
    truth = None
    nominal = P.Pose(np.eye(3), np.zeros(3))
    if path.suffix == ".npz":
        z = read_npz(path, ("projections", "geometry"), what="--xray")
        g = _geometry(z["geometry"])
        proj = np.asarray(z["projections"], np.float32)
        g.check_projections(proj, name="--xray projections")
        if not 0 <= args.view < g.n_views:
            raise ValueError(f"--view must be in [0, {g.n_views}), got {args.view}")
        img = proj[args.view]
        truth = P.from_geometry(g, args.view)
        nominal = P.Pose(P._rz_np(float(np.asarray(g.angles)[args.view])), np.zeros(3))
        if g.beam != "cone":
            raise ValueError("--xray: registration needs a cone-beam geometry, got beam='parallel'")
        one = g.take_views(np.array([args.view]))  # the view's own DSD, DSO and offset where given per view
        det = dict(DSD=float(np.ravel(one.DSD)[0]), DSO=float(np.ravel(one.DSO)[0]), n_detector=g.n_detector,
                   d_detector=np.asarray(g.d_detector), off_detector=np.asarray(one.off_detector).reshape(-1, 2)[0])
    else:
        img = _load_image(path)
        if img.ndim != 2:
            raise ValueError(f"--xray must be a 2-D image, got shape {img.shape}")
        missing = [o for o, v in (("--sdd", args.sdd), ("--pixel-spacing", args.pixel_spacing)) if v is None]
        if missing:
            raise ValueError(f"--xray {path} carries no geometry: give {' and '.join(missing)}")
        det = None
    if args.detector is not None and tuple(args.detector) != img.shape:
        raise ValueError(f"--xray has shape {img.shape} but --detector says {tuple(args.detector)}")
    _check_finite(img, "--xray image")
    if det is None or args.sdd is not None or args.pixel_spacing is not None:
        intr = P.c_arm_intrinsics(
            sdd=args.sdd if args.sdd is not None else det["DSD"],
            pixel_spacing=args.pixel_spacing if args.pixel_spacing is not None else det["d_detector"],
            n_detector=img.shape, principal_point=args.principal_point,
        )
        sod = args.sod if args.sod is not None else (det["DSO"] if det else 0.5 * intr["DSD"])
        det = dict(DSD=intr["DSD"], DSO=sod, n_detector=img.shape, d_detector=intr["d_detector"], off_detector=intr["off_detector"])
    elif args.sod is not None:
        det["DSO"] = args.sod
    from jaxmedrf.geometry import Geometry

    off_origin = np.asarray(ct_geom.off_origin) if ct_geom is not None else np.zeros(3)
    geom = Geometry(n_voxel=vol.shape, d_voxel=spacing, off_origin=off_origin, angles=np.zeros(1), beam="cone", **det)
    return img, geom, nominal, truth


def _random_offset(seed: int, deg: float, mm: float):
    from jaxmedrf import pose as P
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    ax, tr = rng.normal(size=3), rng.normal(size=3)
    ax, tr = ax / np.linalg.norm(ax), tr / np.linalg.norm(tr)
    r = np.asarray(P.so3_exp(jnp.asarray(ax * math.radians(deg), jnp.float32)), np.float64)
    return P.Pose(r, tr * mm)


# ----------------------------------------------------------------------------- reporting


def errors_dict(estimate, truth, geometry) -> dict:
    """mTRE, reprojection, rotation and translation errors of ``estimate`` vs ``truth``."""
    import jax.numpy as jnp

    from jaxmedrf import pose as P
    from jaxmedrf.registration import errors as E

    f32 = lambda p: P.Pose(jnp.asarray(p.rotation, jnp.float32), jnp.asarray(p.translation, jnp.float32))  # noqa: E731
    est, tru = f32(estimate), f32(truth)
    lm = E.default_landmarks(geometry)
    mm, px = E.reprojection_error(est, tru, lm, geometry)
    mtre = float(E.mean_target_registration_error(est, tru, lm))
    return {
        "mtre_mm": mtre,
        "reprojection_mm": float(mm),
        "reprojection_px": float(px),
        "rotation_deg": float(E.rotation_error_deg(est, tru)),
        "translation_mm": float(E.translation_error_mm(est, tru)),
        "success_mtre_below_1mm": bool(mtre < 1.0),
        "landmarks": "volume centre + corners of the central half box (mm, CT frame)",
    }


def _edges(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))
    return m / (m.max() or 1.0)


def save_png(path, xray, final, history, levels, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(16, 4))
    ax[0].imshow(xray, cmap="gray")
    ax[0].set_title("X-ray")
    ax[1].imshow(final, cmap="gray")
    ax[1].set_title("final DRR")
    norm = lambda a: (a - a.min()) / ((a.max() - a.min()) or 1.0)  # noqa: E731
    rgb = np.stack([norm(xray)] * 3, -1) * 0.7
    e = _edges(final) > 0.25
    rgb[e] = [1.0, 0.2, 0.2]
    ax[2].imshow(rgb)
    ax[2].set_title("X-ray + DRR edges (red)")
    start = 0
    for lev, h in zip(levels, history):
        h = h[np.isfinite(h)]
        ax[3].plot(np.arange(start, start + h.size), h, label=f"level ÷{lev}")
        start += h.size
    ax[3].set_xlabel("iteration")
    ax[3].set_ylabel("loss")
    ax[3].set_yscale("log")
    ax[3].legend()
    for a in ax[:3]:
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- run


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    from jaxmedrf import pose as P
    from jaxmedrf.registration import drr, random_perturbations, register

    if args.starts < 1:
        raise ValueError(f"--starts must be ≥ 1, got {args.starts}")
    config = args.registration_config
    vol, ct_geom, spacing = load_ct(args)
    img, geom, nominal, truth = load_xray(args, vol, ct_geom, spacing)
    for f in config.levels:
        if f > min(img.shape):
            raise ValueError(f"--levels {f} is larger than the X-ray {img.shape}")
    if args.init is not None:
        try:
            init = P.from_json_dict(json.loads(Path(args.init).read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"--init {args.init} is not valid JSON: {e}") from e
    else:
        init = nominal
    if args.perturb_deg or args.perturb_mm:
        init = P.compose(_random_offset(args.seed, args.perturb_deg, args.perturb_mm), init)
    starts = random_perturbations(jax.random.key(args.seed), args.starts, rot_range_deg=args.rot_range_deg,
                                  trans_range_mm=args.trans_range_mm)

    out = Path(args.out)
    png = out.with_suffix(".png")
    progress, bar = None, None
    if not args.no_progress:
        from tqdm.auto import tqdm

        total = config.iterations * len(config.levels)
        bar = tqdm(total=total, desc="register", unit="it", leave=False)

        def progress(level, it, loss):
            level, it = int(level), int(it)
            bar.n = level * config.iterations + it + 1
            bar.set_description(f"level ÷{config.levels[level]}")
            bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
            bar.refresh()

    try:
        res = register(vol, geom, img, init, config=config, starts=starts, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    report = {
        "pose": P.pose_to_dict(res.pose),
        "initial_pose": P.pose_to_dict(init),
        "loss": res.loss,
        "loss_name": config.loss,
        "intensity_scale": res.intensity_scale,
        "iterations": res.iterations[res.best_start].tolist(),
        "levels": list(config.levels),
        "starts": args.starts,
        "best_start": res.best_start,
        "start_losses": [float(v) if np.isfinite(v) else None for v in res.losses],  # None: dropped (--multi-levels)
        "multi_levels": config.multi_start_levels,
        "time_s": res.time_s,
        "compile_s": res.compile_s,
        "loss_history": [[v for v in h if np.isfinite(v)] for h in res.history[res.best_start].tolist()],
        "volume": str(args.volume),
        "xray": str(args.xray),
        "view": args.view,
        "geometry": json.loads(geom.to_json()),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
    }
    if truth is not None:
        report["true_pose"] = P.pose_to_dict(truth)
        report["errors"] = errors_dict(res.pose, truth, geom)
        report["initial_errors"] = errors_dict(init, truth, geom)
    png_ctx = contextlib.nullcontext() if args.no_png else atomic_path(png)
    with atomic_path(out) as tmp_json, png_ctx as tmp_png:
        if not args.no_png:
            final = np.asarray(drr(jnp.asarray(vol), geom, P.Pose(jnp.asarray(res.pose.rotation, jnp.float32),
                                                                  jnp.asarray(res.pose.translation, jnp.float32)), step=config.step,
                                 method=config.projector))
            title = f"loss {res.loss:.4g}"
            if truth is not None:
                title += f", mTRE {report['errors']['mtre_mm']:.3f} mm (initial {report['initial_errors']['mtre_mm']:.2f} mm)"
            save_png(tmp_png, img, final, res.history[res.best_start], config.levels, title)
        Path(tmp_json).write_text(json.dumps(report, indent=2))
    msg = f"wrote {out}" + ("" if args.no_png else f" and {png}") + f" (loss {res.loss:.4g}, {res.time_s:.1f} s"
    if truth is not None:
        msg += f", mTRE {report['errors']['mtre_mm']:.3f} mm"
    print(msg + ")")
    return 0

