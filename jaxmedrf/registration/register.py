"""2D/3D registration by gradient descent through a differentiable DRR, with multi-start.

Given a CT ``volume`` (μ, mm⁻¹) on ``geometry``'s grid, an X-ray ``target`` ``(nv, nu)`` seen
by ``geometry``'s detector, and an initial rig pose ``T₀`` (see :mod:`jaxmedrf.pose`: rig
frame → CT frame; the CT moves by its inverse), we estimate the rig pose

.. math::  T(p) = C \\circ \\exp(\\hat\\xi(p)) \\circ C^{-1} \\circ T_0,
           \\qquad \\xi(p) = (s_r p_{0:3},\\; s_t p_{3:6})

where ``C`` translates by the volume centre (rotations pivot about the CT's centre, which
decouples rotation from translation), ``s_r`` (rad) and ``s_t`` (mm) are unit scales so that
one optimiser step of size ``lr`` moves about ``lr`` degrees and ``lr`` mm, and ``p`` is
minimised with Adam (Kingma & Ba 2015) on ``loss(DRR(T(p)), target)``
(:mod:`jaxmedrf.registration.losses`). This is the DiffDRR/DiffPose recipe (Gopalakrishnan &
Golland, MICCAI 2022; Gopalakrishnan et al., CVPR 2024), written to be ``vmap``-ed.

* **Coarse to fine**: at level ``f`` the detector has ``f×f`` fewer, ``f``-times larger pixels
  and the target is block-averaged to match (:func:`downsample_detector`).
* **Stopping rule** per level: stop after ``patience`` iterations without a decrease of the
  best loss by more than ``tol``, or after ``iterations``; the best parameters are kept.
* **Multi-start**: ``K`` initial parameter vectors (the first is ``T₀`` itself, the others
  uniform in ``±rot_range_deg`` per rotation-vector component and ``±trans_range_mm`` per
  translation component) run as one batch — ``vmap`` of the optimiser step inside one
  ``jit``-compiled program over all levels — and the start with the lowest final loss wins.
* **Pruned multi-start** (``multi_start_levels=m``): all ``K`` starts run the ``m`` coarsest
  levels only; then the start with the lowest loss continues alone through the finer levels
  (the others keep their pose at that point and get an infinite final loss). The coarse
  levels are where the starts differ (the basin is chosen there) and cost ``f²`` times less
  per DRR, so a ``K``-start registration costs little more than a single start.
* **Intensity**: with ``intensity=True`` a log-scale ``s`` multiplies the DRR by ``eˢ``
  (e.g. an unknown HU→μ factor); useful with the ``mse`` loss (NCC is scale invariant).
* **Compilation**: the program is compiled ahead of time once per (volume shape, detector
  shape, geometry structure, dtypes, devices, ``config``, number of starts, progress on/off)
  and kept in a small cache: the CT, the target image, the initial pose, the start
  parameters, the geometry's distances and pixel sizes and the ``progress`` function are all
  run-time inputs, so later calls with new values of the same shapes compile nothing.
  :attr:`RegistrationResult.compile_s` tells the compilation time of a call (0 when cached)
  and :attr:`RegistrationResult.time_s` the optimisation alone.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf import pose as P
from jaxmedrf._checks import check_numbers
from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.projectors import METHODS, auto_method, project
from jaxmedrf.registration.losses import get_loss
from jaxmedrf.training import adam_with_schedule

__all__ = [
    "RegistrationConfig",
    "RegistrationResult",
    "downsample_detector",
    "drr",
    "params_to_pose",
    "random_perturbations",
    "register",
]


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """Settings of :func:`register` (hashable: a static argument of the compiled program).

    Attributes:
      levels: detector downsampling factors, coarse to fine (e.g. ``(4, 2, 1)``).
      iterations: maximum Adam steps per level.
      lr: Adam step size in scaled units (≈ degrees and mm per step) at the coarsest level;
        each level ``ℓ`` uses ``lr · lr_decay^ℓ``, and within a level it decays
        exponentially to ``lr_final_fraction`` of that by the last iteration.
      rot_scale_deg, trans_scale_mm: units of the rotation and translation parameters.
      patience, tol: stopping rule (iterations without improvement larger than ``tol``).
      loss: a name in :data:`jaxmedrf.registration.losses.LOSSES`.
      step: DRR sampling step in voxels (trilinear projector).
      projector: the DRR's projector (:func:`drr`): ``"auto"`` (Joseph's on a CPU, trilinear
        elsewhere), ``"trilinear"``, ``"joseph"`` or ``"siddon"``.
      intensity: also optimise a log intensity scale of the DRR.
      multi_start_levels: with several starts, how many of the coarsest levels run all of
        them; the best start (lowest loss) then continues alone. ``None``: all levels run
        every start. Default 1: the starts choose their basin on the coarsest level, where a
        DRR costs ``f²`` times less (100 % success over 2 × 100 trials against 96–100 % for a
        single start, ``benchmarks/results/register_NVIDIA_H200_20261204.json``; 3–4× faster
        than every start on every level on a CPU, ``benchmarks/cpu_baselines.py``).
    """

    levels: tuple[int, ...] = (4, 2, 1)
    iterations: int = 200
    lr: float = 1.0
    lr_decay: float = 0.5
    lr_final_fraction: float = 0.05
    rot_scale_deg: float = 1.0
    trans_scale_mm: float = 1.0
    patience: int = 25
    tol: float = 1e-6
    loss: str = "ncc"
    step: float = 1.0
    projector: str = "auto"
    intensity: bool = False
    multi_start_levels: int | None = 1

    def __post_init__(self):
        if not self.levels or any(int(f) != f or f < 1 for f in self.levels):
            raise ValueError(f"levels must be positive integers (downsampling factors), got {self.levels!r}")
        object.__setattr__(self, "levels", tuple(int(f) for f in self.levels))
        check_numbers(self, positive_ints=("iterations", "patience"),
                      positive=("lr", "rot_scale_deg", "trans_scale_mm", "step", "lr_decay", "lr_final_fraction"))
        get_loss(self.loss)
        if self.projector not in ("auto", *METHODS):
            raise ValueError(f"projector must be 'auto' or one of {METHODS}, got {self.projector!r}")
        m = self.multi_start_levels
        if m is not None and (int(m) != m or not 1 <= m <= len(self.levels)):
            raise ValueError(f"multi_start_levels must be None or an integer in [1, {len(self.levels)}], got {m!r}")

    @property
    def n_params(self) -> int:
        return 7 if self.intensity else 6


class RegistrationResult(NamedTuple):
    """Output of :func:`register` (NumPy arrays, float64 where poses).

    Attributes:
      pose: the estimated rig pose (best start).
      loss: its final loss at the finest level.
      intensity_scale: ``eˢ`` of the best start (1 without ``intensity``).
      best_start: index of the best start.
      losses: ``(K,)`` final loss of every start (``inf`` for starts dropped after
        ``config.multi_start_levels``).
      poses: ``(K,)``-batched poses of every start.
      iterations: ``(K, levels)`` iterations used per start and level (0 where dropped).
      history: ``(K, levels, iterations)`` loss per iteration (NaN after stopping or where
        dropped).
      time_s: wall time of the optimisation (s), compilation excluded.
      compile_s: time spent tracing and compiling the program in this call (s); 0 when a
        compiled program of the same shapes and ``config`` was reused.
    """

    pose: P.Pose
    loss: float
    intensity_scale: float
    best_start: int
    losses: np.ndarray
    poses: P.Pose
    iterations: np.ndarray
    history: np.ndarray
    time_s: float
    compile_s: float = 0.0


def downsample_detector(geometry: Geometry, image: Float[ArrayLike, "nv nu"] | None, factor: int):
    """A geometry with ``factor×factor`` fewer, larger pixels, and the image block-averaged.

    Rows/columns that do not fill a whole block are cropped symmetrically and
    ``off_detector`` is shifted so the new pixel centres are the blocks' centres.

    Returns:
      ``(geometry_f, image_f)`` (``image_f`` is ``None`` when ``image`` is).
    """
    f = int(factor)
    if f < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if f == 1:
        return geometry, image
    nv, nu = geometry.n_detector
    mv, mu = nv // f, nu // f
    if mv < 1 or mu < 1:
        raise ValueError(f"downsampling factor {f} is larger than the detector {geometry.n_detector}")
    sv, su = (nv - mv * f) // 2, (nu - mu * f) // 2
    d = np.asarray(geometry.d_detector, np.float64)
    off = np.asarray(geometry.off_detector, np.float64)
    off = off + np.array([sv - (nv - mv * f) / 2, su - (nu - mu * f) / 2]) * d
    g = geometry.replace(n_detector=(mv, mu), d_detector=d * f, off_detector=off)
    return g, None if image is None else _block_mean(jnp.asarray(image), f)


def _block_mean(image: Float[Array, "nv nu"], f: int) -> Float[Array, "mv mu"]:
    """``image`` cropped symmetrically to whole ``f×f`` blocks and block-averaged (the image
    half of :func:`downsample_detector`; shapes are static, so it runs inside ``jit``)."""
    if f == 1:
        return image
    nv, nu = image.shape
    mv, mu = nv // f, nu // f
    sv, su = (nv - mv * f) // 2, (nu - mu * f) // 2
    img = image[sv : sv + mv * f, su : su + mu * f]
    return img.reshape(mv, f, mu, f).mean(axis=(1, 3))


def drr(volume: Float[ArrayLike, "nx ny nz"], geometry: Geometry, pose: P.Pose, *, step: float = 1.0,
        method: str = "auto") -> Float[Array, "nv nu"]:
    """The DRR (line integrals) of ``volume`` seen by a rig at ``pose``.

    ``geometry`` gives the detector, distances and grid; its angles/pose are replaced.
    ``method``: the projector; ``"auto"`` is Joseph's on a CPU (several times faster there),
    trilinear with ``step`` (voxels) elsewhere. Differentiable in ``pose`` and ``volume``.
    """
    method = auto_method(method, otherwise="trilinear")
    return project(volume, P.to_geometry(pose, geometry), method=method, step=step)[0]


def params_to_pose(params: Float[Array, "*batch p"], init: P.Pose, pivot: Float[Array, "3"], config: RegistrationConfig) -> P.Pose:
    """``C ∘ exp(ξ(p)) ∘ C⁻¹ ∘ T₀`` (module docstring) for parameters ``p`` (first 6 used)."""
    scale = jnp.asarray([math.radians(config.rot_scale_deg)] * 3 + [config.trans_scale_mm] * 3, params.dtype)
    delta = P.se3_exp(params[..., :6] * scale)
    pivot = jnp.asarray(pivot, params.dtype)
    eye = jnp.eye(3, dtype=params.dtype)
    c = P.Pose(eye, pivot)
    c_inv = P.Pose(eye, -pivot)
    init = P.Pose(jnp.asarray(init.rotation, params.dtype), jnp.asarray(init.translation, params.dtype))
    return P.compose(c, P.compose(delta, P.compose(c_inv, init)))


def random_perturbations(
    key: PRNGKeyArray, n_starts: int, *, rot_range_deg: float = 15.0, trans_range_mm: float = 20.0
) -> Float[Array, "k 6"]:
    """``(K, 6)`` start parameters (degrees, mm; the units of :func:`params_to_pose` with unit
    scales): row 0 is zero (the initial pose itself), the others uniform in ``±rot_range_deg``
    per rotation-vector component and ``±trans_range_mm`` per translation component."""
    if int(n_starts) < 1:
        raise ValueError(f"n_starts must be ≥ 1, got {n_starts!r}")
    lim = jnp.asarray([rot_range_deg] * 3 + [trans_range_mm] * 3, jnp.float32)
    u = jax.random.uniform(key, (int(n_starts), 6), jnp.float32, -1.0, 1.0) * lim
    return u.at[0].set(0.0)


# Host side of the progress callback. The compiled program only knows whether it reports
# progress; which Python function receives it is looked up here by a run-time slot number,
# so a new closure per call (e.g. a progress bar) does not change the program.
_PROGRESS: dict[int, Callable[[int, int, float], None]] = {}
_PROGRESS_SLOTS = itertools.count()


def _report_progress(slot, level, it, best) -> None:
    fn = _PROGRESS.get(int(slot))
    if fn is not None:
        fn(int(level), int(it), float(best))


@functools.partial(jax.jit, static_argnames=("config", "progress"))
def _run(volume, geometries, target, init, pivot, starts, slot, *, config, progress):
    """The whole coarse-to-fine, multi-start optimisation as one program.

    Every array is a run-time input; ``geometries`` (one per level) carry their detector
    shapes as static pytree metadata. ``progress`` is a bool: whether to call
    :func:`_report_progress` with ``slot`` every iteration.
    """
    loss_fn = get_loss(config.loss)
    k_all = starts.shape[0]
    params = jnp.zeros((k_all, config.n_params), volume.dtype).at[:, : starts.shape[1]].set(starts.astype(volume.dtype))
    all_params = params  # every start's latest parameters, (K, p)
    alive = jnp.arange(k_all)  # which starts are still optimised
    all_iters, all_hist, final = [], [], None
    for level, (factor, geom) in enumerate(zip(config.levels, geometries)):
        if level == config.multi_start_levels and params.shape[0] > 1:
            alive = jnp.argmin(jnp.where(jnp.isnan(final), jnp.inf, final))[None]
            params = params[alive]
        k = params.shape[0]
        opt = adam_with_schedule(config.lr * config.lr_decay**level, config.iterations, decay="exponential",
                                 final_fraction=config.lr_final_fraction)
        target_l = _block_mean(target, factor)

        def objective(p, geom=geom, target=target_l):
            img = drr(volume, geom, params_to_pose(p, init, pivot, config), step=config.step, method=config.projector)
            if config.intensity:
                img = img * jnp.exp(p[6])
            return loss_fn(img, target)

        grad_fn = jax.vmap(jax.value_and_grad(objective))
        state0 = (
            jnp.int32(0),
            params,
            jax.vmap(opt.init)(params),
            jnp.full((k,), jnp.inf, volume.dtype),
            params,
            jnp.zeros((k,), jnp.int32),
            jnp.full((k, config.iterations), jnp.nan, volume.dtype),
        )

        def cond(s):
            it, *_, since, _ = s
            return (it < config.iterations) & jnp.any(since < config.patience)

        def body(s, level=level, opt=opt):
            it, p, st, best, best_p, since, hist = s
            active = since < config.patience
            val, g = grad_fn(p)
            val = jnp.where(jnp.isfinite(val), val, jnp.inf)
            improved = val < best - config.tol
            better = val < best
            best_p = jnp.where(better[:, None], p, best_p)
            best = jnp.where(better, val, best)
            since = jnp.where(active, jnp.where(improved, 0, since + 1), since)
            hist = hist.at[:, it].set(jnp.where(active, val, jnp.nan))
            upd, st_new = jax.vmap(opt.update)(g, st, p)
            p_new = optax.apply_updates(p, upd)
            keep = lambda a, b: jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
            p = keep(p_new, p)
            st = jax.tree_util.tree_map(keep, st_new, st)
            if progress:
                jax.debug.callback(_report_progress, slot, jnp.int32(level), it, jnp.min(best))
            return it + 1, p, st, best, best_p, since, hist

        it, p, st, best, best_p, since, hist = jax.lax.while_loop(cond, body, state0)
        params = best_p
        final = best
        all_params = all_params.at[alive].set(params)
        all_iters.append(jnp.zeros((k_all,), jnp.int32).at[alive].set(jnp.sum(jnp.isfinite(hist), axis=1)))
        all_hist.append(jnp.full((k_all, config.iterations), jnp.nan, volume.dtype).at[alive].set(hist))
    final = jnp.full((k_all,), jnp.inf, volume.dtype).at[alive].set(final)
    poses = params_to_pose(all_params, init, pivot, config)
    return all_params, poses, final, jnp.stack(all_iters, 1), jnp.stack(all_hist, 1)


# Compiled programs by input signature (LRU). jax.jit's own cache would also reuse a program,
# but compiling ahead of time lets us key on exactly what matters, report the compilation
# time apart from the optimisation, and behave the same across JAX versions.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_PROGRAMS_MAX = 16
_PROGRAMS_LOCK = threading.Lock()


def _signature(args) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((x.shape, x.dtype, getattr(x, "weak_type", False), x.sharding) for x in leaves)


def _compiled(args, config: RegistrationConfig, progress: bool):
    """``(executable, compile_s)`` for ``_run`` on ``args`` (all ``jax.Array``); cached."""
    key = (_signature(args), config, progress, bool(jax.config.jax_enable_x64))
    with _PROGRAMS_LOCK:
        exe = _PROGRAMS.get(key)
        if exe is not None:
            _PROGRAMS.move_to_end(key)
            return exe, 0.0
    t0 = time.perf_counter()
    exe = _run.lower(*args, config=config, progress=progress).compile()
    compile_s = time.perf_counter() - t0
    with _PROGRAMS_LOCK:
        _PROGRAMS[key] = exe
        while len(_PROGRAMS) > _PROGRAMS_MAX:
            _PROGRAMS.popitem(last=False)
    return exe, compile_s


def register(
    volume: Float[ArrayLike, "nx ny nz"],
    geometry: Geometry,
    target: Float[ArrayLike, "nv nu"],
    init: P.Pose,
    *,
    config: RegistrationConfig = RegistrationConfig(),
    starts: Float[ArrayLike, "k p"] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> RegistrationResult:
    """Registers ``target`` to ``volume``: the rig pose whose DRR best matches the X-ray.

    Args:
      volume: CT attenuation μ (mm⁻¹) on ``geometry``'s grid, ``(nx, ny, nz)``.
      geometry: detector (``n_detector`` = the target's shape), ``DSD``, ``DSO`` and volume
        grid; its angles and per-view pose are ignored (the pose comes from ``init``).
      target: the X-ray as line integrals (any affine intensity with NCC losses), ``(nv, nu)``.
      init: initial rig pose ``T₀``.
      config: :class:`RegistrationConfig`.
      starts: ``(K, 6)`` (or ``(K, 7)`` with intensity) initial parameters, e.g. from
        :func:`random_perturbations`; default one start at ``T₀``.
      progress: optional ``progress(level, iteration, best_loss)`` called from the compiled
        program every iteration (host callback; leave ``None`` for speed).

    Returns:
      A :class:`RegistrationResult`.

    Raises:
      ValueError: shape mismatches, non-finite inputs, a level larger than the detector.
    """
    geometry.check_volume(volume)
    target = jnp.asarray(target)
    if target.shape != tuple(geometry.n_detector):
        raise ValueError(f"target has shape {target.shape} but the geometry's n_detector is {geometry.n_detector}")
    if not bool(jnp.all(jnp.isfinite(target))):
        raise ValueError("target image contains NaN or infinite values")
    volume = jnp.asarray(volume, jnp.float32)
    if not bool(jnp.all(jnp.isfinite(volume))):
        raise ValueError("volume contains NaN or infinite values")
    if starts is None:
        starts = jnp.zeros((1, 6), jnp.float32)
    starts = jnp.asarray(starts, jnp.float32)
    if starts.ndim != 2 or starts.shape[1] not in (6, config.n_params):
        raise ValueError(f"starts must have shape (K, 6) or (K, {config.n_params}), got {starts.shape}")
    P._one_detector(geometry)
    geometry = geometry.replace(angles=np.zeros(1), rotation=None, translation=None)
    geoms = [downsample_detector(geometry, None, f)[0] for f in config.levels]
    lo, hi = volume_box(geometry)
    as_array = lambda x: jnp.asarray(np.asarray(x))  # noqa: E731 - concrete geometry leaves, never weak-typed
    geoms = [jax.tree_util.tree_map(as_array, g) for g in geoms]
    pivot = as_array(0.5 * (np.asarray(lo) + np.asarray(hi)))
    init = P.Pose(jnp.asarray(init.rotation, jnp.float32), jnp.asarray(init.translation, jnp.float32))
    slot = next(_PROGRESS_SLOTS) % (2**31 - 1)
    args = (volume, geoms, target.astype(jnp.float32), init, pivot, starts, jnp.asarray(slot, jnp.int32))
    exe, compile_s = _compiled(args, config, progress is not None)
    if progress is not None:
        _PROGRESS[slot] = progress
    try:
        t0 = time.perf_counter()
        params, poses, losses, iters, hist = jax.block_until_ready(exe(*args))
        elapsed = time.perf_counter() - t0
    finally:
        if progress is not None:
            jax.effects_barrier()
            _PROGRESS.pop(slot, None)
    losses = np.asarray(losses, np.float64)
    best = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.inf)))
    poses = P.Pose(np.asarray(poses.rotation, np.float64), np.asarray(poses.translation, np.float64))
    scale = float(np.exp(np.asarray(params)[best, 6])) if config.intensity else 1.0
    return RegistrationResult(
        pose=P.Pose(poses.rotation[best], poses.translation[best]),
        loss=float(losses[best]),
        intensity_scale=scale,
        best_start=best,
        losses=losses,
        poses=poses,
        iterations=np.asarray(iters),
        history=np.asarray(hist, np.float64),
        time_s=elapsed,
        compile_s=compile_s,
    )
