"""``jaxmedrf interpolate IN [IN2 …] (--spacing MM | --factor K) --method … --out OUT``: slice interpolation.

Each input (DICOM series directory, NIfTI or .npz, through :func:`jaxmedrf.io.load_volume`) is
one stack; its slice axis is the axis of largest spacing (``--axis`` to choose). The output grid
is the first input's, refined along its slice axis; it is written with its affine (orientation
kept) by :func:`jaxmedrf.io.save_volume` (DICOM output de-identified). ``--evaluate K`` runs the
slice-removal protocol on each input and prints its table (the chosen method beside cubic and
linear), and with several inputs the mean ± std over them. ``--method inr`` fits a residual over
the base that ``--inr-base`` names (default ``auto``: :func:`jaxmedrf.mri.inr.auto_base`). ``--method smore`` trains the self-supervised through-plane network of
:mod:`jaxmedrf.mri.smore` on the first input's own in-plane slices. ``--phantom`` uses the
built-in brain phantom as the input.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

__all__ = ["add_parser", "run"]

HELP = "MRI slice interpolation / super-resolution (INR or nearest/linear/cubic)"  # one line in `jaxmedrf --help`


def inr_args():
    """The flags of :class:`~jaxmedrf.mri.inr.INRConfig` fields: defaults, types, choices and
    ranges are the config's (``args.inr_config`` receives the config). ``--seed`` also seeds SMORE."""
    from jaxmedrf.cli._config_args import ConfigArgs, Flag
    from jaxmedrf.mri.inr import BASES, SINGLE_STACK_SMOOTHNESS, INRConfig

    flags = [
        Flag("n_iters", "--iters", "INR optimisation steps (default: 300 over its base, 1000 with --inr-base none)"),
        Flag("batch", "--batch", "INR voxels per step"),
        Flag("base", "--inr-base", "what the INR corrects (auto: for thin slices smore with one stack, fusion with "
                                   "several; for thick slices none, the field alone)", choices=BASES),
        Flag("smoothness", "--smoothness",
             f"INR through-plane curvature prior weight (default: {SINGLE_STACK_SMOOTHNESS:g} for one stack, 0 for "
             "several; 0 = off)", metavar="W"),
        Flag("seed", "--seed", "seed of the INR fit and of the SMORE key"),
    ]
    return ConfigArgs("inr_config", INRConfig(), flags)


def smore_args():
    """The flags of :class:`~jaxmedrf.mri.smore.SMOREConfig` fields (``args.smore_config``)."""
    from jaxmedrf.cli._config_args import ConfigArgs, Flag
    from jaxmedrf.mri.smore import ACCELERATOR_PRESET, CPU_PRESET, SMOREConfig

    steps = " or ".join(map(str, sorted({ACCELERATOR_PRESET["n_iters"], CPU_PRESET["n_iters"]})))
    return ConfigArgs("smore_config", SMOREConfig(), [
        Flag("n_iters", "--smore-iters", f"SMORE training steps (default: the backend's preset, {steps})"),
    ])


def add_parser(subparsers) -> argparse.ArgumentParser:
    from jaxmedrf.cli._config_args import field_default
    from jaxmedrf.mri.interpolate import METHODS
    from jaxmedrf.mri.slices import PROFILES, SliceStack

    p = subparsers.add_parser(
        "interpolate", help=HELP,
        description="Restore thin slices from thick-slice stacks; or --evaluate K: remove slices and score.",
    )
    p.add_argument("inputs", nargs="*", metavar="IN", help="volumes (DICOM dir, .nii/.nii.gz, .npz); one stack each")
    p.add_argument("--phantom", action="store_true", help="use the built-in brain phantom (128x128x80, 2 mm) as IN")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--spacing", type=float, metavar="MM", help="target slice spacing, mm")
    g.add_argument("--factor", type=float, metavar="K", help="refine the slice spacing K times")
    # CLI default on purpose: the INR (the command's reason to exist), where the library's
    # interpolate(method=...) defaults to the cheap "cubic".
    p.add_argument("--method", default="inr", choices=METHODS,
                   help="inr: hash-grid INR fitted to all inputs; fusion: per-stack filters learned from the inputs' "
                        "own in-plane slices, fused with local error weights (seconds, no fit loop); smore: self-supervised through-plane CNN "
                        "trained on the first input's in-plane slices (SMORE); cubic/linear/nearest along the slice axis "
                        "(default: %(default)s)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=None,
                   help="slice axis of the first input (default: its largest spacing)")
    p.add_argument("--thickness", type=float, default=None, metavar="MM", help="slice thickness (default: spacing)")
    p.add_argument("--profile", default=field_default(SliceStack, "profile"), choices=PROFILES,
                   help="through-plane PSF (default: %(default)s)")
    p.add_argument("--out", metavar="OUT", help="output volume (.nii/.nii.gz, .npz, or a DICOM directory)")
    p.add_argument("--evaluate", type=int, metavar="K",
                   help="keep every K-th slice of each IN, restore, print the table; several IN (or --phantom and "
                        "IN): also mean ± std over the volumes")
    p.add_argument("--report", metavar="DIR",
                   help="with --evaluate: write interpolation.json and .png, and the per-slice report "
                        "interpolation_slices.csv (PSNR/SSIM of each removed slice) and _slices.png (truth, cubic and "
                        "--method on the worst and the median removed slice, error maps) here (several volumes: one "
                        "folder each, and summary.json)")
    inr_args().add_to(p)
    smore_args().add_to(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _slice_axis(vol, axis):
    if axis is not None:
        return axis
    sp = np.asarray(vol.spacing)
    return int(np.argmax(sp)) if np.ptp(sp) > 1e-6 * sp.max() else 2


def _load(args):
    from jaxmedrf.io import VolumeData, load_volume
    from jaxmedrf.mri.phantom import brain_phantom

    vols = []
    if args.phantom:
        v, a = brain_phantom(None, (128, 128, 80), 2.0)
        vols.append(VolumeData(v, np.full(3, 2.0), a, "MR", "MR", "phantom"))
    vols += [load_volume(p) for p in args.inputs]
    if not vols:
        raise ValueError("no input: give IN or --phantom")
    for v, name in zip(vols, ["phantom"] * args.phantom + list(args.inputs)):
        a = np.asarray(v.array)
        if a.ndim != 3 or min(a.shape) < 2:
            raise ValueError(f"{name}: a 3-D volume with at least 2 slices is needed, got shape {a.shape}")
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise ValueError(f"{name}: {bad} NaN or infinite voxels")
    return vols


def _evaluate(vols, args, cfg, smore_kw) -> int:
    """``--evaluate K``: the protocol on every input volume; with several, mean ± std over them."""
    import json
    from pathlib import Path

    from jaxmedrf._files import atomic_path
    from jaxmedrf.mri.evaluate import (
        evaluate_interpolation, format_summary, format_table, save_report, save_slice_report, summarize_volumes,
    )

    names = ["phantom"] * args.phantom + [Path(p).name for p in args.inputs]
    for v, name in zip(vols, names):
        ax = _slice_axis(v, args.axis)
        if args.evaluate < 2 or args.evaluate >= v.shape[ax]:
            raise ValueError(f"{name}: --evaluate K must be in [2, {v.shape[ax] - 1}] for {v.shape[ax]} slices, "
                             f"got {args.evaluate}")
    methods = tuple(dict.fromkeys((args.method, "cubic", "linear")))
    results = []
    for i, (v, name) in enumerate(zip(vols, names)):
        res = evaluate_interpolation(v.array, v.affine, args.evaluate, methods, axis=_slice_axis(v, args.axis),
                                     inr_config=cfg, progress=not args.quiet, **smore_kw)
        results.append(res)
        if len(vols) > 1:
            print(f"== {name}")
        print(format_table(res))
        if args.report:  # one volume: report/interpolation.*; several: report/<i>_<name>/interpolation.*
            out = Path(args.report) if len(vols) == 1 else Path(args.report) / f"{i}_{name.split('.')[0]}"
            for p in save_report(res, v.array, out) + save_slice_report(res, v.array, out, method=args.method):
                print(f"wrote {p}")
    if len(vols) > 1:
        summary = summarize_volumes(results)
        print(format_summary(summary))
        if args.report:
            with atomic_path(Path(args.report) / "summary.json") as tmp:
                tmp.write_text(json.dumps({"volumes": names, **summary}, indent=2))
            print(f"wrote {Path(args.report) / 'summary.json'}")
    return 0


def run(args) -> int:
    import jax

    from jaxmedrf.mri.inr import check_overlap
    from jaxmedrf.mri.slices import SliceStack

    vols = _load(args)
    cfg = args.inr_config
    smore_kw = {"smore_config": args.smore_config, "key": jax.random.key(args.seed)}
    if args.evaluate is not None:
        return _evaluate(vols, args, cfg, smore_kw)
    if args.out is None:
        raise ValueError("--out is required (or use --evaluate K)")
    if args.spacing is None and args.factor is None:
        raise ValueError("give --spacing MM or --factor K")
    from jaxmedrf.io import save_volume
    from jaxmedrf._files import check_writable
    from pathlib import Path

    check_writable(Path(args.out), overwrite=args.overwrite)
    stacks = []
    for i, v in enumerate(vols):
        ax = _slice_axis(v, args.axis if i == 0 else None)
        thick = args.thickness if (args.thickness and i == 0) else float(v.spacing[ax])
        stacks.append(SliceStack(v.array, v.affine, ax, thick, args.profile))
    if len(stacks) > 1:
        check_overlap(stacks)
    s0 = stacks[0]
    if args.factor is not None and args.factor <= 0 or args.spacing is not None and args.spacing <= 0:
        raise ValueError(f"--spacing/--factor must be positive, got {args.spacing or args.factor}")
    from jaxmedrf.mri.interpolate import interpolate

    out, aff = interpolate(stacks, args.method, target_spacing=args.spacing, factor=args.factor, inr_config=cfg,
                           progress=not args.quiet, **smore_kw)
    base = vols[0]
    res = dataclasses.replace(base, array=out.astype(np.float32), affine=aff,
                              spacing=np.linalg.norm(aff[:3, :3], axis=0))
    path = save_volume(res, args.out, overwrite=args.overwrite)
    print(f"wrote {path}: {out.shape[0]} x {out.shape[1]} x {out.shape[2]}, slice spacing "
          f"{np.linalg.norm(aff[:3, s0.axis]):.4g} mm ({args.method})")
    return 0
