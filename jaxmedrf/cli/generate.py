"""``jaxmedrf generate``: a generative attenuation field (GRAF + MedNeRF) over DRR sets.

* ``generate train DRR_SET... --out gen/``: trains :func:`jaxmedrf.generative.train_generative`
  on DRR folders (``jaxmedrf simulate --preset mednerf --export-png DIR``) or simulate ``.npz``
  files of one geometry; orbax checkpoints in ``gen/`` (``--resume`` continues).
* ``generate invert XRAY --model gen/ --out vol.npz``: codes (and, with ``--finetune-steps``, the
  generator) fitted to one X-ray (:func:`jaxmedrf.generative.invert`); writes ``vol.npz``
  (``volume`` μ in mm⁻¹ on the geometry's grid, ``projections`` of the rendered views, their
  ``views`` and the ``geometry``) and the rendered views as PNGs in ``vol_views/``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run"]

HELP = "generative field (MedNeRF/GRAF): train on DRR sets, invert one X-ray"  # one line in `jaxmedrf --help`


def graf_args():
    """The flags of :class:`~jaxmedrf.generative.GRAFConfig` (its defaults, types and ranges)."""
    from jaxmedrf.cli._config_args import ConfigArgs, Flag
    from jaxmedrf.generative.graf import GRAFConfig

    flags = [
        Flag("n_iters", "--iters", "training steps"),
        Flag("batch", "--batch", "patches per step"),
        Flag("patch", "--patch", "side of the rendered patches (power of two)"),
        Flag("n_samples", "--n-samples", "samples per ray"),
        Flag("hidden", "--hidden", "width of the generator's MLP"),
        Flag("depth", "--depth", "hidden layers of the shape MLP"),
        Flag("z_shape", "--z-shape", "size of the shape code"),
        Flag("z_app", "--z-app", "size of the appearance code"),
        Flag("d_width", "--d-width", "channels of the discriminator's first layer"),
        Flag("min_scale", "--min-scale", "smallest patch scale (fraction of the panel)"),
        Flag("r1_weight", "--r1", "R1 penalty weight γ"),
        Flag("dag_weight", "--dag-weight", "DAG: total weight of the rotated heads"),
        Flag("recon_weight", "--recon-weight", "discriminator auto-encoding weight"),
        Flag("steps_per_call", "--steps-per-call", "steps per compiled call"),
        Flag("seed", "--seed", "PRNG seed"),
    ]
    return ConfigArgs("graf_config", GRAFConfig(), flags, title="generator (jaxmedrf.generative.GRAFConfig)")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help=HELP, description=HELP,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    t = s.add_parser("train", help="train the generator on DRR sets of one geometry",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("drr_sets", nargs="+", metavar="DRR_SET",
                   help="DRR folder (simulate --export-png: PNGs + poses.json) or simulate .npz")
    t.add_argument("--out", required=True, help="model folder (model.json + orbax checkpoints)")
    t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: at the end)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    graf_args().add_to(t)
    i = s.add_parser("invert", help="fit the generator's codes to one X-ray; write the volume and rendered views",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    i.add_argument("xray", help="the X-ray: a DRR PNG (its JSON sidecar gives the view and value range), "
                                "or an .npy of line integrals on the model's detector")
    i.add_argument("--model", required=True, help="model folder of `generate train`")
    i.add_argument("--out", required=True, help="OUT.npz (volume, rendered views); PNGs go to OUT_views/")
    i.add_argument("--view", type=int, default=None, help="view index in the model's geometry (default: the sidecar's, else 0)")
    i.add_argument("--steps", type=int, default=300, help="Adam steps on the codes")
    i.add_argument("--restarts", type=int, default=4, help="code initialisations (the best kept)")
    i.add_argument("--finetune-steps", type=int, default=0, help="then Adam steps on the generator (0: codes only)")
    i.add_argument("--resolution", type=int, default=64, help="rays per side of the fitted grid")
    i.add_argument("--n-views-out", type=int, default=8, help="rendered views written (evenly spaced over the orbit)")
    i.add_argument("--seed", type=int, default=0, help="PRNG seed")
    return p


def _read_xray(path: Path, model, view):
    """``(line integrals (nv, nu), view)`` of a DRR PNG (with its sidecar) or an .npy."""
    if not path.is_file():
        raise FileNotFoundError(f"X-ray {path} not found")
    if path.suffix == ".npy":
        from jaxmedrf._files import read_npy

        img = np.asarray(read_npy(path), np.float32)
        return img, 0 if view is None else view
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: expected a .png DRR or a .npy of line integrals")
    from PIL import Image

    img = np.asarray(Image.open(path), np.float64)
    side = path.with_suffix(".json")
    if side.exists():
        meta = json.loads(side.read_text())
        lo, hi = meta["value_range"]
        top = (1 << int(meta.get("bits", 16))) - 1
        view = int(meta.get("view", 0)) if view is None else view
    else:  # a plain image: its grey levels (8 or 16 bit) spread over [0, the training's peak]
        top = 65535.0 if img.max() > 255 else 255.0
        lo, hi = 0.0, model.peak
        view = 0 if view is None else view
    if img.ndim != 2:
        raise ValueError(f"{path}: expected a grey-scale image, got shape {img.shape}")
    return (img[::-1] / top * (hi - lo) + lo).astype(np.float32), view


def run(args) -> int:
    if args.action == "train":
        return _train(args)
    return _invert(args)


def _train(args) -> int:
    from jaxmedrf.generative import load_drr_sets, train_generative

    if args.checkpoint_every < 0:
        raise ValueError("--checkpoint-every must be >= 0")
    images, geometry = load_drr_sets([Path(p) for p in args.drr_sets])
    _, history = train_generative(images, geometry, args.graf_config, out_dir=Path(args.out),
                                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                                  progress=not args.no_progress)
    last = {k: history[k][-1] for k in ("d_loss", "g_loss", "r1", "recon") if history[k]}
    print(f"trained on {images.shape[0]} DRR sets of {images.shape[1]} views; model in {args.out}; "
          + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    return 0


def _invert(args) -> int:
    import jax

    from jaxmedrf.generative import generator_volume, invert, load_generator, render_views

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    for name in ("steps", "restarts", "resolution", "n_views_out"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.finetune_steps < 0:
        raise ValueError("--finetune-steps must be >= 0")
    model = load_generator(args.model)
    image, view = _read_xray(Path(args.xray), model, args.view)
    res = invert(jax.random.key(args.seed), image, view, model, n_steps=args.steps, n_restarts=args.restarts,
                 finetune_steps=args.finetune_steps, resolution=args.resolution)
    n = model.geometry.n_views
    views = np.unique(np.round(np.linspace(0, n, args.n_views_out, endpoint=False)).astype(int) % n)
    views = np.unique(np.concatenate([[view], views]))
    proj = np.asarray(render_views(res.g_params, res.z_shape, res.z_app, model, views))
    vol = np.asarray(generator_volume(res.g_params, res.z_shape, res.z_app, model))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, volume=vol, projections=proj, views=views, geometry=model.geometry.to_json(),
                        history=json.dumps(res.history))
    png_dir = out.with_name(out.stem + "_views")
    _write_pngs(proj, views, png_dir)
    fit = res.history.get("finetune_fit", res.history["code_fit"])[-1]
    psnr = -10 * math.log10(max(float(np.mean((proj[list(views).index(view)] - image) ** 2)) / model.peak**2, 1e-30))
    print(f"fitted view {view}: PSNR {psnr:.2f} dB (fit MSE {fit:.3g}); volume {vol.shape} -> {out}; "
          f"{len(views)} views -> {png_dir}/")
    return 0


def _write_pngs(proj, views, folder: Path):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lo, hi = float(proj.min()), float(proj.max())
    for p, v in zip(proj, views):
        img = np.clip((p[::-1] - lo) / max(hi - lo, 1e-12), 0, 1)
        Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(folder / f"view_{int(v):04d}.png")
