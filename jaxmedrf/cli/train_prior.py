"""``jaxmedrf train-prior``: train the learned denoising prior on CT volumes.

Reads VOLUMES (``.npz`` with ``volume``, μ in mm⁻¹, or NIfTI / DICOM read with ``--units``),
trains the denoiser of :mod:`jaxmedrf.priors` by denoising score matching on patches of their
slices, and writes ``--out`` (flax msgpack: weights + config + the ids of the training
volumes). With ``--folds K --fold I`` only the training side of fold I is used (the volumes
are split with :func:`jaxmedrf.crossval.kfold_volumes`, by volume, never by slice), and the
held-out volumes are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]

HELP = "train the learned denoising prior (for reconstruct --prior) on CT volumes"


def _config_args():
    from jaxmedrf.cli._config_args import ConfigArgs, Flag
    from jaxmedrf.priors import DenoiserConfig

    flags = [
        Flag("width", "--width", "channels of the hidden convolutions"),
        Flag("depth", "--depth", "3×3 convolutions"),
        Flag("sigmas", "--sigmas", "noise levels trained on (units of the 99.5th percentile of μ)"),
        Flag("patch", "--patch", "training patch side (pixels)"),
    ]
    return ConfigArgs("prior_config", DenoiserConfig(), flags, title="denoiser (jaxmedrf.priors.DenoiserConfig)")


def add_parser(sub) -> argparse.ArgumentParser:
    from jaxmedrf.cli._config_args import param_default
    from jaxmedrf.cli._units import add_units_argument
    from jaxmedrf.priors import train_prior

    p = sub.add_parser("train-prior", help=HELP, description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("volumes", nargs="+", metavar="VOLUME", help="training volumes (.npz 'volume' μ mm⁻¹, NIfTI, DICOM)")
    p.add_argument("--out", required=True, help="the prior file to write (.msgpack)")
    for name, flag, helptext in (("steps", "--steps", "Adam steps"), ("batch", "--batch", "patches per step"),
                                 ("lr", "--lr", "peak learning rate")):
        d = param_default(train_prior, name)
        p.add_argument(flag, type=type(d), default=d, help=helptext)
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--folds", type=int, default=None, metavar="K", help="split the volumes into K folds (by volume)")
    p.add_argument("--fold", type=int, default=None, metavar="I", help="with --folds: train on fold I's training side")
    add_units_argument(p, help="read DICOM/NIfTI as attenuation (HU → μ with water 0.02 mm⁻¹, or mu); .npz is μ")
    _config_args().add_to(p)
    return p


def run(a) -> int:
    import jax
    import numpy as np

    from jaxmedrf.cli.evaluate import load_volume
    from jaxmedrf.crossval import group_of, kfold_volumes
    from jaxmedrf.priors import save_prior, train_prior

    out = Path(a.out)
    paths = [Path(v) for v in a.volumes]
    names = [p.name.split(".")[0] for p in paths]
    if len(set(names)) != len(names):
        raise ValueError("two VOLUMES share a name; the prior records its training volumes by name")
    groups = [group_of(n) for n in names]
    chosen = list(range(len(paths)))
    held_out: tuple[str, ...] = ()
    if (a.folds is None) != (a.fold is None):
        raise ValueError("--folds and --fold go together")
    if a.folds is not None:
        folds = kfold_volumes(None, groups, a.folds)
        if not 0 <= a.fold < a.folds:
            raise ValueError(f"--fold must be in [0, {a.folds - 1}], got {a.fold}")
        held_out = folds[a.fold].test
        chosen = [i for i, g in enumerate(groups) if g not in held_out]
    vols = [load_volume(paths[i], units=a.units, mu_water=0.02 if a.units else None)[0] for i in chosen]
    small = [paths[i] for i, v in zip(chosen, vols) if min(v.shape) < a.prior_config.patch]
    if small:
        raise ValueError(f"{small[0]}: every side must be ≥ --patch {a.prior_config.patch}")
    for v, i in zip(vols, chosen):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{paths[i]}: volume holds NaN or infinite values")
    prior, hist = train_prior(jax.random.key(a.seed), vols, a.prior_config, steps=a.steps, batch=a.batch, lr=a.lr,
                              trained_on=[names[i] for i in chosen])
    save_prior(out, prior)
    print(f"trained on {len(chosen)} volume(s) {[names[i] for i in chosen]}"
          + (f"; held out (fold {a.fold}/{a.folds}): {list(held_out)}" if held_out else ""))
    print(f"DSM loss {hist['loss'][0]:.4f} -> {hist['loss'][-1]:.4f}; μ scale {prior.config.mu_scale:.4g} mm⁻¹ -> {out}")
    return 0
