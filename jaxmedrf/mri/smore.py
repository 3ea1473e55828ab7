"""SMORE-style self-supervised through-plane super-resolution of one thick-slice stack.

Following SMORE (Zhao et al., "SMORE: a self-supervised anti-aliasing and super-resolution
algorithm for MRI using deep learning", IEEE TMI 2021; arXiv 2020), the high-resolution
in-plane data trains the network that restores the low-resolution through-plane axis:

1. *Training pairs from in-plane slices.* Each acquired in-plane slice (pixel step ``Δ``) is
   degraded along one of its axes the way the scanner degrades the through-plane axis: blurred
   by the through-plane slice profile (box of width ``thickness / Δ`` pixels or a Gaussian of
   that FWHM), sampled every ``r = slice spacing / Δ`` pixels (every phase ``0 … r−1``), and
   interpolated back to every pixel with the cubic B-spline. Both in-plane axes are degraded in
   turn (the slice transposed), so the network sees the degraded axis along image columns.
2. *A residual network* (a small 2-D CNN: ``depth`` 3 × 3 convolutions of ``features``
   channels with ReLU; the last layer starts at zero, so training starts from cubic
   interpolation) learns ``HR − cubic(LR)`` on random patches by Adam on the mean squared error
   (SMORE uses EDSR with an L1 loss; this is a lighter stand-in of the same scheme).
3. *Application.* The stack is cubic-interpolated along its slice axis to the in-plane step
   ``Δ``; every 2-D plane that contains the slice axis (both families: in-plane axis 1 ×
   slices and in-plane axis 2 × slices) goes through the network with the slice axis along
   columns, and the two restored volumes are averaged (SMORE's orthogonal-plane fusion). The
   result is resampled (cubic) onto the requested grid along the slice axis. Where the slices
   are point-like (thickness ≤ the in-plane step) and the ratio is an integer, the acquired
   slices keep their values (data consistency; the removed slices are not affected).

The in-plane statistics stand in for the through-plane ones, which assumes a roughly
isotropic object (true of brain anatomy; the network cannot learn what the in-plane slices
never show). The two in-plane axes share ``Δ`` (their mean when they differ).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf._checks import check_numbers
from jaxmedrf.mri.resample import _profile_kernel, axis_weights, interpolate_along_axis
from jaxmedrf.mri.slices import SliceStack, intensity_norm
from jaxmedrf.training import adam_with_schedule, train_loop

__all__ = ["SMOREConfig", "SMOREResult", "fit_smore", "apply_smore", "degrade_matrix", "cnn_init", "cnn_apply"]


@dataclasses.dataclass(frozen=True)
class SMOREConfig:
    """Settings of the self-supervised through-plane network.

    ``features``, ``depth``, ``n_iters``, ``batch`` and ``patch`` left at ``None`` take the
    preset of the backend that trains (:meth:`for_backend`): :data:`ACCELERATOR_PRESET` on a GPU or
    TPU, :data:`CPU_PRESET` on CPU, whose steps are 12× cheaper there (0.035 s against 0.43 s on 2
    cores, ``benchmarks/results/smore_cpu_cpu_2026-12-03.json``).

    Attributes:
      features: channels of the hidden convolutions.
      depth: 3 × 3 convolution layers (≥ 2).
      n_iters: Adam steps.
      batch: patches per step.
      patch: patch side, pixels (smaller when the slices are smaller).
      n_patches: size of the pool of training patches drawn before training.
      lr, lr_final: learning rate after warm-up and at the end (cosine decay).
      steps_per_call: steps per jitted call.
      chunk: planes per batch when the network is applied.
    """

    features: int | None = None
    depth: int | None = None
    n_iters: int | None = None
    batch: int | None = None
    patch: int | None = None
    n_patches: int = 4096
    lr: float = 2e-3
    lr_final: float = 2e-5
    steps_per_call: int = 50
    chunk: int = 16

    def __post_init__(self):
        ints = tuple(f for f in ("features", "depth", "n_iters", "batch", "patch") if getattr(self, f) is not None)
        check_numbers(self, positive_ints=(*ints, "n_patches", "steps_per_call", "chunk"), positive=("lr", "lr_final"))
        if self.depth is not None and self.depth < 2:
            raise ValueError(f"SMOREConfig.depth must be >= 2, got {self.depth}")

    def for_backend(self, backend: str | None = None) -> "SMOREConfig":
        """This config with its ``None`` fields set from the preset of ``backend`` (default:
        ``jax.default_backend()``): :data:`CPU_PRESET` on ``"cpu"``, :data:`ACCELERATOR_PRESET` elsewhere."""
        preset = CPU_PRESET if (backend or jax.default_backend()) == "cpu" else ACCELERATOR_PRESET
        return dataclasses.replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})


#: SMORE on a GPU or TPU: 1000 steps of 32 patches of 48², 6 layers of 32 channels. On the H200
#: (``benchmarks/results/interpolate_real_base_nvidia-h200_2026-12-03.json``, k = 4, removed axial
#: slices) it beat :data:`CPU_PRESET` by 0.18–0.27 dB on the three held-out MNI quadrants, 0.08 dB
#: on the tuning one and 1.6–2.9 dB on the two phantoms, in 2.4–3.1 s against 1.8–2.5 s.
ACCELERATOR_PRESET = {"features": 32, "depth": 6, "n_iters": 1000, "batch": 32, "patch": 48}
#: SMORE on CPU: the same network, 8 patches of 32² per step. Chosen on the tuning quadrant on 2 CPU
#: cores: 30.29 dB in 36 s of training (cubic 26.56; ``benchmarks/smore_cpu.py``); the accelerator
#: preset scored 30.28 dB there on the H200. Tried on CPU and not kept: 2000 steps 30.33 dB, 16
#: channels in 4 layers 29.2–29.6 dB.
CPU_PRESET = {"features": 32, "depth": 6, "n_iters": 1000, "batch": 8, "patch": 32}


class SMOREResult(NamedTuple):
    """The trained network: ``params``, ``config``, the intensity ``norm`` (network units ×
    norm = stack units), the ``ratio`` r = slice spacing / in-plane step and ``history``."""

    params: Any
    config: SMOREConfig
    norm: float
    ratio: float
    history: dict


# ----------------------------------------------------------------------------------------
# Degradation model


def degrade_matrix(n: int, ratio: float, width: float, profile: str, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``(n, n)`` operator that turns a high-resolution line into its cubic
    re-interpolation from through-plane-like samples, and the mask of valid outputs.

    The line is blurred by the slice profile (``width`` pixels; ends clamped), sampled at
    ``phase + j · ratio`` (cubic B-spline for fractional positions) and interpolated back
    to every pixel with the cubic B-spline (pixels outside the first and last samples are
    marked invalid: they would be extrapolated).
    """
    if not ratio > 1:
        raise ValueError(f"ratio (slice spacing / in-plane step) must exceed 1, got {ratio}")
    ker = _profile_kernel(width, profile)
    h = len(ker) // 2
    blur = np.zeros((n, n))
    for i in range(n):
        for o, w in zip(range(-h, h + 1), ker):
            blur[i, min(max(i + o, 0), n - 1)] += w
    m = int(math.floor((n - 1 - phase) / ratio + 1e-9)) + 1
    pos = phase + ratio * np.arange(m)
    sample = axis_weights(n, pos, 3)  # (m, n)
    up = axis_weights(m, (np.arange(n) - phase) / ratio, 3)  # (n, m)
    valid = (np.arange(n) >= phase - 1e-9) & (np.arange(n) <= pos[-1] + 1e-9)
    return up @ sample @ blur, valid


def _through_plane_width(stack: SliceStack, step: float) -> float:
    return stack.thickness / step


# ----------------------------------------------------------------------------------------
# The network


def cnn_init(key: PRNGKeyArray, features: int, depth: int) -> list:
    """``depth`` 3 × 3 convolutions ``1 → features → … → 1`` (He-normal; the last one zero)."""
    sizes = [1] + [int(features)] * (depth - 1) + [1]
    params = []
    for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:])):
        std = 0.0 if i == depth - 1 else math.sqrt(2.0 / (9 * cin))
        params.append((std * jax.random.normal(jax.random.fold_in(key, i), (3, 3, cin, cout), jnp.float32),
                       jnp.zeros((cout,), jnp.float32)))
    return params


def _conv3x3_lax(h: Float[Array, "b h w c"], w: Float[ArrayLike, "3 3 c d"]) -> Float[Array, "b h w d"]:
    return jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv3x3_matmul(h: Float[Array, "b h w c"], w: Float[ArrayLike, "3 3 c d"]) -> Float[Array, "b h w d"]:
    """The same convolution as one matrix product of the nine shifted copies (im2col). On CPU, XLA's
    convolution inside a loop (the training scan, ``lax.map``) took 9.3 s per step of the accelerator
    preset's network against 0.37 s outside one; the product takes 0.43 s in the loop
    (``benchmarks/smore_cpu.py``)."""
    n_h, n_w = h.shape[1:3]
    p = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([p[:, i:i + n_h, j:j + n_w, :] for i in range(3) for j in range(3)], -1)
    return cols @ w.reshape(-1, w.shape[-1])


def _conv3x3(h, w):
    """3 × 3 convolution, zero padding ("SAME"): im2col on CPU, XLA's convolution elsewhere."""
    return jax.lax.platform_dependent(h, w, cpu=_conv3x3_matmul, default=_conv3x3_lax)


def cnn_apply(params: list, x: Float[Array, "b h w"]) -> Float[Array, "b h w"]:
    """The residual the network adds to ``x`` (images, zero padding at the borders)."""
    h = x[..., None]
    for i, (w, b) in enumerate(params):
        h = _conv3x3(h, w) + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h[..., 0]


# ----------------------------------------------------------------------------------------
# Training


def _patch_pool(rng: np.random.Generator, stack: SliceStack, cfg: SMOREConfig, norm: float):
    """``(inputs, targets)`` of shape ``(P, p, p)``: cubic(LR) and HR patches of in-plane slices."""
    step = stack.in_plane_step
    ratio = stack.slice_spacing / step
    width = _through_plane_width(stack, step)
    v = np.moveaxis(stack.values, stack.axis, 0) / norm  # (slices, n1, n2)
    phases = np.arange(int(math.ceil(ratio - 1e-9))) * (ratio / math.ceil(ratio - 1e-9))
    sets = []  # (degraded images, targets, valid columns) with the degraded axis last
    for imgs in (v, np.swapaxes(v, 1, 2)):
        n = imgs.shape[2]
        for ph in phases:
            d, valid = degrade_matrix(n, ratio, width, stack.profile, float(ph))
            sets.append((np.einsum("shw,vw->shv", imgs, d).astype(np.float32), imgs, np.flatnonzero(valid)))
    p = min(cfg.patch, min(s[0].shape[1] for s in sets), min(len(s[2]) for s in sets))
    xs = np.empty((cfg.n_patches, p, p), np.float32)
    ys = np.empty_like(xs)
    lo_content = 0.02 * float(np.max(np.abs(v)) or 1.0)
    for i in range(cfg.n_patches):
        for _ in range(20):  # prefer patches with some content
            x_in, y_hr, cols = sets[rng.integers(len(sets))]
            s = rng.integers(x_in.shape[0])
            r0 = rng.integers(x_in.shape[1] - p + 1)
            c0 = cols[0] + rng.integers(len(cols) - p + 1)
            tgt = y_hr[s, r0:r0 + p, c0:c0 + p]
            if np.ptp(tgt) > lo_content:
                break
        xs[i] = x_in[s, r0:r0 + p, c0:c0 + p]
        ys[i] = tgt
    return xs, ys


def _make_train(cfg: SMOREConfig):
    tx = adam_with_schedule(cfg.lr, cfg.n_iters, final_fraction=cfg.lr_final / cfg.lr,
                            warmup=min(50, cfg.n_iters // 10 + 1))

    def loss_fn(params, key, xs, ys):
        idx = jax.random.randint(key, (cfg.batch,), 0, xs.shape[0])
        x, y = xs[idx], ys[idx]
        flip = jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5)  # rows are interchangeable
        x, y = jnp.where(flip, x[:, ::-1], x), jnp.where(flip, y[:, ::-1], y)
        return jnp.mean((x + cnn_apply(params, x) - y) ** 2)

    def one(carry, _, xs, ys):
        params, opt, step, key = carry
        loss, g = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, step), xs, ys)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), opt, step + 1, key), loss

    @partial(jax.jit, donate_argnums=0)
    def train(carry, xs, ys):
        return jax.lax.scan(partial(one, xs=xs, ys=ys), carry, None, length=cfg.steps_per_call)

    return tx, train


def fit_smore(
    key: PRNGKeyArray, stack: SliceStack, config: SMOREConfig = SMOREConfig(), *, progress: bool = False
) -> SMOREResult:
    """Trains the through-plane network on the stack's own in-plane slices.

    Args:
      key: PRNG key (patch selection, initialisation, batches).
      stack: one thick-slice stack (slice spacing larger than the in-plane step).
      config: :class:`SMOREConfig`.
      progress: a tqdm bar with the loss.

    Returns:
      :class:`SMOREResult`; apply it with :func:`apply_smore`.

    Raises:
      ValueError: non-finite voxels, or a slice spacing not larger than the in-plane step.
    """
    if not isinstance(stack, SliceStack):
        raise ValueError(f"fit_smore: stack must be a SliceStack, got {type(stack).__name__}")
    if not np.all(np.isfinite(stack.values)):
        raise ValueError("fit_smore: the stack contains NaN or infinite voxels")
    ratio = stack.slice_spacing / stack.in_plane_step
    if ratio <= 1.0 + 1e-6:
        raise ValueError(f"fit_smore: the slice spacing ({stack.slice_spacing:g} mm) must exceed the in-plane "
                         f"step ({stack.in_plane_step:g} mm); nothing to restore")
    norm = intensity_norm(stack)
    config = config.for_backend()
    config = dataclasses.replace(config, steps_per_call=min(config.steps_per_call, config.n_iters))
    k_pool, k_init, k_train = jax.random.split(key, 3)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_pool)).ravel().tolist())
    t0 = time.perf_counter()
    xs, ys = _patch_pool(rng, stack, config, norm)
    params = cnn_init(k_init, config.features, config.depth)
    tx, train = _make_train(config)
    carry = (params, tx.init(params), jnp.zeros((), jnp.int32), k_train)
    data = (jnp.asarray(xs), jnp.asarray(ys))
    history = {"step": [], "loss": [], "time_s": [], "baseline_mse": float(np.mean((xs - ys) ** 2))}
    carry = train_loop(train, carry, data, config.n_iters, config.steps_per_call, history, desc="SMORE",
                       progress=progress, tol=0.0)
    history["fit_s"] = time.perf_counter() - t0
    tail = history["loss"][-max(1, len(history["loss"]) // 5):]
    if tail and float(np.mean(tail)) > 0.95 * history["baseline_mse"]:
        warnings.warn(
            f"SMORE did not learn: its loss ({np.mean(tail):.3g}) stayed at cubic interpolation's "
            f"({history['baseline_mse']:.3g}), so the result is cubic interpolation. On small volumes a fit "
            "can stall like this (about 1 in 4 seeds on a 32 x 32 x 33 crop); try another seed or more steps.",
            RuntimeWarning, stacklevel=2)
    return SMOREResult(carry[0], config, norm, float(ratio), history)


@partial(jax.jit, static_argnames=("chunk",))
def _restore_planes(params, planes, *, chunk):
    n = planes.shape[0]
    m = -(-n // chunk)
    pad = jnp.concatenate([planes, jnp.zeros((m * chunk - n, *planes.shape[1:]), planes.dtype)])
    out = jax.lax.map(lambda p: p + cnn_apply(params, p), pad.reshape(m, chunk, *planes.shape[1:]))
    return out.reshape(m * chunk, *planes.shape[1:])[:n]


def apply_smore(result: SMOREResult, stack: SliceStack, shape=None, affine=None) -> Float[np.ndarray, "n0 n1 n2"]:
    """Restores the stack along its slice axis (see the module docstring).

    Args:
      result: from :func:`fit_smore` on this stack.
      stack: the stack.
      shape, affine: the target grid, which must share the stack's in-plane grid; default the
        native grid (slice step = the in-plane step ``Δ``).

    Returns:
      The restored volume on the target grid (stack units).
    """
    ax = stack.axis
    n = stack.shape[ax]
    ratio = result.ratio
    m = int(math.floor((n - 1) * ratio + 1e-6)) + 1
    up = axis_weights(n, np.arange(m) / ratio, 3)  # (m, n)
    v = np.moveaxis(stack.values, ax, -1) / result.norm  # (n1, n2, n)
    cub = np.einsum("abn,mn->abm", v, up).astype(np.float32)  # (n1, n2, m): slice axis along columns
    c = result.config.chunk
    r1 = np.asarray(_restore_planes(result.params, jnp.asarray(cub), chunk=c))  # planes (n2, m) per n1
    r2 = np.asarray(_restore_planes(result.params, jnp.asarray(np.swapaxes(cub, 0, 1)), chunk=c))  # (n1, m) per n2
    sr = 0.5 * (r1 + np.swapaxes(r2, 0, 1)) * result.norm
    r = int(round(ratio))
    if abs(ratio - r) < 1e-3 and stack.point_like:
        sr[..., ::r] = np.moveaxis(stack.values, ax, -1)  # point-like slices: the acquired voxels are kept
    sr = np.moveaxis(sr, -1, ax).astype(np.float32)
    aff = stack.affine.copy()
    aff[:3, ax] /= ratio
    native = SliceStack(sr, aff, ax, stack.thickness, stack.profile)
    if shape is None:
        return sr
    return interpolate_along_axis(native, shape, affine, "cubic")
