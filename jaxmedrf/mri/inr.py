"""Implicit neural representation (INR) fit of MRI slice stacks: super-resolution on any grid.

The intensity field ``f(x) = softplus(MLP(hash-grid(x)))`` (:mod:`jaxmedrf.fields`) lives on
the union box of all stacks. Stack ``s`` predicts its acquired voxel ``p`` as
``c_s · Σ_m w_m f(A_s (p + u_m))`` — the slice acquisition model of :mod:`jaxmedrf.mri.slices`
(PSF offsets ``u`` drawn by Monte-Carlo, antithetic, a fresh draw per step) with a
per-stack intensity scale ``c_s`` (``c_0 = 1``: the first stack sets the units), fitted by
Adam on the mean squared error over random batches of the acquired voxels of every stack,
as NeSVoR does for slice-to-volume reconstruction (Xu et al., IEEE TMI 2023, Eq. 2–5)
without its motion and uncertainty terms. ``steps_per_call`` steps run in one jitted
``lax.scan``; the key of step ``n`` is ``fold_in(key, n)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from jaxmedrf.fields.encodings import HashGridConfig
from jaxmedrf.fields.field import FieldConfig, field_apply, field_init
from jaxmedrf.mri.slices import SliceStack, _frame, psf_offsets, stack_box, stack_points

__all__ = ["INRConfig", "INRResult", "fit_inr", "query_inr", "check_overlap"]


@dataclasses.dataclass(frozen=True)
class INRConfig:
    """Settings of the INR fit.

    Attributes:
      field: encoding + MLP; ``finest_resolution`` of a hash grid is replaced by
        ``resolution_factor`` × (box extent / smallest voxel step) unless ``auto_resolution``
        is off.
      auto_resolution: set the hash grid's finest resolution from the data (see above).
      resolution_factor: finest hash-grid cells per smallest voxel step.
      n_iters: optimisation steps.
      batch: acquired voxels per step.
      n_psf: PSF samples per voxel per step (even: antithetic pairs).
      lr, lr_final: Adam learning rate after warm-up and at the end (cosine decay).
      warmup: linear warm-up steps.
      steps_per_call: steps per jitted call.
      seed: PRNG seed.
    """

    field: FieldConfig = FieldConfig(
        encoding=HashGridConfig(n_levels=12, log2_table_size=19, base_resolution=8),
        width=64, depth=3, skips=(), activation="relu", out_activation="softplus",
    )
    auto_resolution: bool = True
    resolution_factor: float = 1.0
    n_iters: int = 2000
    batch: int = 16384
    n_psf: int = 4
    lr: float = 1e-2
    lr_final: float = 3e-4
    warmup: int = 50
    steps_per_call: int = 50
    seed: int = 0

    def __post_init__(self):
        for name in ("n_iters", "batch", "n_psf", "steps_per_call"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"INRConfig.{name} must be a positive integer, got {v!r}")
        for name in ("lr", "lr_final", "resolution_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"INRConfig.{name} must be positive, got {v!r}")


class INRResult(NamedTuple):
    """The fitted field: ``params``, per-stack ``scales``, the box ``lo``/``hi`` (mm), the
    intensity ``norm`` (field × norm = stack-0 units), the resolved ``config`` and ``history``."""

    params: Any
    scales: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    norm: float
    config: INRConfig
    history: dict


def check_overlap(stacks: Sequence[SliceStack]) -> tuple[np.ndarray, np.ndarray]:
    """The union box of the stacks (mm); ValueError if some stack does not overlap the first."""
    boxes = [stack_box(s) for s in stacks]
    lo0, hi0 = boxes[0]
    for i, (lo, hi) in enumerate(boxes[1:], 1):
        if np.any(np.minimum(hi, hi0) <= np.maximum(lo, lo0)):
            raise ValueError(
                f"stack {i} (box {np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} mm) does not overlap "
                f"stack 0 ({np.round(lo0, 1).tolist()}..{np.round(hi0, 1).tolist()} mm)"
            )
    lo = np.min([b[0] for b in boxes], 0)
    hi = np.max([b[1] for b in boxes], 0)
    return lo, hi


def _resolve_field(cfg: INRConfig, lo, hi, stacks) -> INRConfig:
    enc = cfg.field.encoding
    if not (cfg.auto_resolution and isinstance(enc, HashGridConfig)):
        return cfg
    step = min(float(np.min(s.spacing)) for s in stacks)
    finest = max(enc.base_resolution, int(math.ceil(cfg.resolution_factor * float(np.max(hi - lo)) / step)))
    enc = dataclasses.replace(enc, finest_resolution=finest, per_level_scale=None)
    return dataclasses.replace(cfg, field=dataclasses.replace(cfg.field, encoding=enc), auto_resolution=False)


def _optimizer(cfg: INRConfig):
    sched = optax.warmup_cosine_decay_schedule(
        init_value=cfg.lr * 1e-2, peak_value=cfg.lr, warmup_steps=max(cfg.warmup, 1),
        decay_steps=max(cfg.n_iters, cfg.warmup + 1), end_value=cfg.lr_final)
    return optax.adam(sched, b1=0.9, b2=0.99, eps=1e-15)


def _make_train(cfg: INRConfig, lo, hi, frames, widths, is_box):
    tx = _optimizer(cfg)
    fcfg = cfg.field
    lo = jnp.asarray(lo, jnp.float32)
    hi = jnp.asarray(hi, jnp.float32)
    frames = jnp.asarray(frames, jnp.float32)  # (S, 3, 3): index (in1, in2, through) → mm
    widths = jnp.asarray(widths, jnp.float32)  # (S, 3)
    is_box = jnp.asarray(is_box)

    def loss_fn(params, key, pts, vals, sid):
        k_idx, k_psf = jax.random.split(key)
        idx = jax.random.randint(k_idx, (cfg.batch,), 0, vals.shape[0])
        s = sid[idx]
        half = max(1, cfg.n_psf // 2)
        k1, k2 = jax.random.split(k_psf)
        g = jax.random.normal(k1, (cfg.batch, half, 3))
        uni = jax.random.uniform(k2, (cfg.batch, half), minval=-0.5, maxval=0.5)
        through = jnp.where(is_box[s][:, None], uni, g[..., 2])
        u = jnp.concatenate([g[..., :2], through[..., None]], -1) * widths[s][:, None, :]
        u = jnp.concatenate([u, -u], 1)  # antithetic pairs
        off = jnp.einsum("bij,bmj->bmi", frames[s], u)
        x = (pts[idx][:, None, :] + off).reshape(-1, 3)
        f = field_apply(params["field"], x, fcfg, lo=lo, hi=hi).reshape(cfg.batch, -1).mean(1)
        log_c = params["log_scale"].at[0].set(0.0)
        pred = jnp.exp(log_c[s]) * f
        return jnp.mean((pred - vals[idx]) ** 2)

    def one_step(carry, _, data):
        params, opt_state, step, key = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, step), *data)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, step + 1, key), loss

    @partial(jax.jit, donate_argnums=0)
    def train(carry, pts, vals, sid):
        return jax.lax.scan(partial(one_step, data=(pts, vals, sid)), carry, None, length=cfg.steps_per_call)

    return tx, train


def fit_inr(
    stacks: SliceStack | Sequence[SliceStack],
    config: INRConfig = INRConfig(),
    *,
    progress: bool = True,
) -> INRResult:
    """Fits the intensity field to one or more stacks (each with its own pose and PSF).

    Args:
      stacks: the acquired stacks; the first sets the intensity units.
      config: :class:`INRConfig`.
      progress: a tqdm bar with the loss.

    Returns:
      :class:`INRResult`; evaluate it with :func:`query_inr`.

    Raises:
      ValueError: non-finite voxels, or stacks that do not overlap.
    """
    if isinstance(stacks, SliceStack):
        stacks = [stacks]
    stacks = list(stacks)
    if not stacks:
        raise ValueError("fit_inr: no stacks given")
    for i, s in enumerate(stacks):
        if not np.all(np.isfinite(s.values)):
            raise ValueError(f"stack {i} contains NaN or infinite voxels")
    lo, hi = check_overlap(stacks)
    cfg = _resolve_field(config, lo, hi, stacks)
    norm = float(np.percentile(stacks[0].values, 99.9)) or float(np.max(np.abs(stacks[0].values))) or 1.0
    pts = np.concatenate([stack_points(s) for s in stacks])
    vals = np.concatenate([s.values.reshape(-1) / norm for s in stacks]).astype(np.float32)
    sid = np.concatenate([np.full(s.values.size, i, np.int32) for i, s in enumerate(stacks)])
    frames = np.stack([_frame(s) for s in stacks])
    widths = np.stack([s.psf_widths() for s in stacks])
    is_box = np.array([s.profile == "box" for s in stacks])
    tx, train = _make_train(cfg, lo, hi, frames, widths, is_box)
    key = jax.random.key(cfg.seed)
    params = {"field": field_init(jax.random.fold_in(key, 1 << 30), cfg.field),
              "log_scale": jnp.zeros((len(stacks),), jnp.float32)}
    carry = (params, tx.init(params), jnp.zeros((), jnp.int32), key)
    data = (jnp.asarray(pts), jnp.asarray(vals), jnp.asarray(sid))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.n_iters, desc="INR", unit="step", dynamic_ncols=True)
    history = {"step": [], "loss": [], "time_s": []}
    t0 = time.perf_counter()
    done = 0
    try:
        while done < cfg.n_iters:
            carry, losses = train(carry, *data)
            loss = float(losses[-1])
            done += cfg.steps_per_call
            if not math.isfinite(loss):
                raise FloatingPointError(f"INR loss became {loss} at step {done}")
            history["step"].append(done)
            history["loss"].append(loss)
            history["time_s"].append(time.perf_counter() - t0)
            if bar is not None:
                bar.update(cfg.steps_per_call)
                bar.set_postfix(loss=f"{loss:.3g}")
    finally:
        if bar is not None:
            bar.close()
    params = carry[0]
    scales = np.exp(np.asarray(params["log_scale"]).copy())
    scales[0] = 1.0
    history["fit_s"] = time.perf_counter() - t0
    return INRResult(params["field"], scales, lo, hi, norm, cfg, history)


def query_inr(
    result: INRResult, shape, affine, *, chunk: int = 65536, supersample: int = 1
) -> Float[np.ndarray, "n0 n1 n2"]:
    """The fitted field on a target grid (``shape``, voxel → LPS mm ``affine``), in stack-0 units.

    Evaluated ``chunk`` voxels at a time under ``lax.map``. With ``supersample`` > 1 each
    voxel is the mean over ``supersample³`` evenly placed points inside it.
    """
    shape = tuple(int(s) for s in shape)
    a = np.asarray(affine, np.float64)
    s = int(supersample)
    o = (np.arange(s) + 0.5) / s - 0.5
    offs = np.stack(np.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3) @ a[:3, :3].T
    out = _query(result.params, jnp.asarray(a[:3, :3], jnp.float32), jnp.asarray(a[:3, 3], jnp.float32),
                 jnp.asarray(offs, jnp.float32), jnp.asarray(result.lo, jnp.float32),
                 jnp.asarray(result.hi, jnp.float32), config=result.config.field, shape=shape, chunk=int(chunk))
    return np.asarray(out) * result.norm


@partial(jax.jit, static_argnames=("config", "shape", "chunk"))
def _query(params, lin, trans, offs, lo, hi, *, config, shape, chunk):
    n0, n1, n2 = shape
    total = n0 * n1 * n2
    chunk = min(chunk, total)
    n_chunks = -(-total // chunk)

    def one(flat):
        flat = jnp.minimum(flat, total - 1)
        idx = jnp.stack([flat // (n1 * n2), (flat // n2) % n1, flat % n2], -1).astype(jnp.float32)
        x = idx @ lin.T + trans
        pts = (x[:, None, :] + offs[None]).reshape(-1, 3)
        return field_apply(params, pts, config, lo=lo, hi=hi).reshape(flat.shape[0], -1).mean(1)

    idx = jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)
    return jax.lax.map(one, idx).reshape(-1)[:total].reshape(shape)
