"""Neural attenuation fields (NAF) for sparse-view CT, trained from projections.

The field μ(x) = s · softplus(MLP(hash-grid(x))) (mm⁻¹) is rendered along random detector
rays by the ray marcher (:func:`jaxmedrf.render.render_rays`) and fitted to the measured line
integrals by Adam on the mean squared error (Zha et al., "NAF: Neural Attenuation Fields for
Sparse-View CBCT Reconstruction", MICCAI 2022, Eq. 1–3; Müller et al., Instant-NGP 2022).

* One ``jit``-compiled function runs ``steps_per_call`` optimisation steps (``lax.scan``).
* Data parallel over every device of a mesh: each step's rays are split over the devices
  (``NamedSharding``), parameters are replicated and the compiler reduces the gradients.
* Many scans of one geometry train together: every array of the training state carries a
  leading *case* axis and the step is ``vmap``-ed over it. With ``shard_cases=True`` (cohort
  mode) that case axis, not the rays, is split over the mesh (``NamedSharding`` outside,
  ``vmap`` inside): each device trains its own cases and no gradient crosses devices. K is
  padded to a multiple of the device count with dummy cases (copies of case 0) that are
  dropped from the results.
* Randomness: the key of step ``n`` is ``fold_in(key, n)``, so a run resumed from a
  checkpoint draws the same rays as an uninterrupted run.
* Checkpoints (orbax) every ``checkpoint_every`` steps hold the parameters, optimiser state,
  step and key (and the occupancy grid); ``config.json`` beside them guards ``resume``
  against another configuration.
* Empty-space skipping (``occupancy_resolution > 0``): an occupancy grid of the field
  (:mod:`jaxmedrf.occupancy`) lives in the training state, is refreshed every
  ``occupancy_update_every`` steps from the current field, and the marcher puts its samples
  only in its occupied cells (Instant-NGP Sec. 4). The output volume does not use it.
* Lineformer (``field=LineformerConfig(...)``, :mod:`jaxmedrf.fields.lineformer`): a ray field
  (μ at a sample depends on its line segment; SAX-NeRF, CVPR 2024) in place of the MLP, rendered
  with ``ray_field=True``; with ``ray_sampling=MLGConfig(...)`` (:mod:`jaxmedrf.recon.mlg`) each
  step's rays are SAX-NeRF's masked local-global sample instead of uniform over all pixels.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf._checks import check_numbers
from jaxmedrf.fields.encodings import HashGridConfig
from jaxmedrf.fields.field import FieldConfig, field_apply, field_init, query_grid, resolved_implementation
from jaxmedrf.fields.lineformer import LineformerConfig, lineformer_apply, lineformer_init, lineformer_query_grid
from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.occupancy import occupancy_init, occupancy_update, occupied_fraction
from jaxmedrf.parallel import batch_sharding, constrain, replicated
from jaxmedrf.rays import box_intersect, pixel_rays
from jaxmedrf.recon.mlg import MLGConfig, mlg_indices
from jaxmedrf.render import render_rays
from jaxmedrf.training import INSTANT_NGP_ADAM, adam_with_schedule, committed_like, train_loop

__all__ = ["NAFConfig", "NAFResult", "TrainState", "estimate_mu_scale", "train_naf"]


@dataclasses.dataclass(frozen=True)
class NAFConfig:
    """Every setting of a NAF reconstruction.

    Attributes:
      field: the field: encoding + MLP (:class:`FieldConfig`), or a Lineformer ray field
        (:class:`jaxmedrf.fields.lineformer.LineformerConfig`; no occupancy grid). The hash
        grid's finest level has 512 cells across the volume box (Instant-NGP's 2048 resolves far below a 128³–256³ voxel grid; on the
        tuning cases of ``benchmarks/ct_protocol.py`` 512 scored +0.2–0.4 dB and trained
        faster).
      auto_mu_scale: replace ``field.mu_scale`` by 4 × the data's mean μ along the rays
        (so that the initial field, softplus(0) · scale ≈ 2.8 × mean, is of the right order).
      n_iters: optimisation steps; ``None``: ``1500 · max(1, N / 128)``, ``N`` the largest side
        of the voxel grid (1500 up to 128³, 3000 at 256³; :meth:`for_geometry`).
      batch_rays: rays per step (split over the devices).
      n_samples: stratified samples per ray; ``None``: ``N``, one per voxel along the grid's
        longest side (128 at 128³, 256 at 256³). Samples decide the quality at 256³: 256 of them
        and 3000 steps scored 40.2 / 36.7 dB on the whole chest scan at 50 / 25 views against
        37.6 / 35.2 dB with 128 and 1500, while 3000 or 5000 steps or a finer hash grid at 128
        samples changed < 0.5 dB (H200, ``ct_protocol_chest256_scale`` in ``benchmarks/results``).
      n_importance: extra samples per ray drawn where the first pass found attenuation
        (hierarchical sampling, :func:`jaxmedrf.render.render_rays`); 0 = off.
      lr, lr_final: Adam learning rate at the start (after warm-up) and at the end (cosine).
      warmup: linear warm-up steps.
      l1_weight: weight of an L1 term on the residual (robust to outliers).
      tv_weight: weight of total variation on a random patch of the field.
      tv_patch: side of that patch, voxels.
      steps_per_call: steps per compiled call (between progress updates and NaN checks).
      grid_supersample: the output volume is the field's mean over ``grid_supersample``³
        evenly placed points per voxel (1: the value at the voxel centre), i.e. the same
        voxel average that :func:`jaxmedrf.phantoms.voxelize` takes of a phantom.
      seed: PRNG seed.
      occupancy_resolution: cells per axis of the occupancy grid (empty-space skipping,
        :mod:`jaxmedrf.occupancy`); 0 = off.
      occupancy_update_every: steps between grid refreshes (the first at step 0).
      occupancy_threshold: a cell is empty below this fraction of the grid's largest μ.
      occupancy_decay: factor of the per-cell moving maximum at each refresh.
      ray_sampling: ``None``: each step's rays uniform over all pixels of all views; an
        :class:`jaxmedrf.recon.mlg.MLGConfig`: masked local-global sampling (SAX-NeRF).
    """

    field: FieldConfig | LineformerConfig = FieldConfig(encoding=HashGridConfig(finest_resolution=512, implementation="auto"),
                                     out_activation="softplus")
    auto_mu_scale: bool = True
    n_iters: int | None = None
    batch_rays: int = 8192
    n_samples: int | None = None
    n_importance: int = 0
    lr: float = 1e-2
    lr_final: float = 1e-3
    warmup: int = 50
    l1_weight: float = 0.0
    tv_weight: float = 0.0
    tv_patch: int = 8
    steps_per_call: int = 25
    grid_supersample: int = 2
    seed: int = 0
    occupancy_resolution: int = 0
    occupancy_update_every: int = 16
    occupancy_threshold: float = 0.01
    occupancy_decay: float = 0.8
    ray_sampling: MLGConfig | None = None

    def __post_init__(self):
        check_numbers(
            self,
            positive_ints=("batch_rays", "steps_per_call", "tv_patch", "grid_supersample", "occupancy_update_every",
                           *(k for k in ("n_iters", "n_samples") if getattr(self, k) is not None)),
            nonneg_ints=("n_importance", "occupancy_resolution"),
            positive=("lr", "lr_final"),
            nonneg=("l1_weight", "tv_weight", "warmup"),
        )  # fmt: skip
        if not 0.0 <= self.occupancy_threshold < 1.0:
            raise ValueError(f"occupancy_threshold must be in [0, 1), got {self.occupancy_threshold!r}")
        if not 0.0 <= self.occupancy_decay <= 1.0:
            raise ValueError(f"occupancy_decay must be in [0, 1], got {self.occupancy_decay!r}")
        if isinstance(self.field, LineformerConfig) and self.occupancy_resolution:
            raise ValueError("occupancy_resolution must be 0 with a Lineformer field (the grid is made of pointwise queries)")
        if self.ray_sampling is not None and self.batch_rays % self.ray_sampling.views_per_step:
            raise ValueError(f"batch_rays={self.batch_rays} does not divide over "
                             f"ray_sampling.views_per_step={self.ray_sampling.views_per_step}")

    def for_geometry(self, geometry: Geometry) -> "NAFConfig":
        """This configuration with ``n_iters`` and ``n_samples`` set for ``geometry``'s voxel grid
        where they are ``None`` (see the attributes)."""
        n = max(geometry.n_voxel)
        return dataclasses.replace(self, n_iters=self.n_iters or round(1500 * max(1.0, n / 128)),
                                   n_samples=self.n_samples or max(n, 8))

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["field"]["encoding_type"] = type(self.field.encoding).__name__
        return json.dumps(d, sort_keys=True, default=str)


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array
    key: Array
    occupancy: Any = None  # an OccupancyGrid with occupancy_resolution > 0


class NAFResult(NamedTuple):
    """``volume`` (K, nx, ny, nz) or (nx, ny, nz) mm⁻¹, final ``params`` and a ``history`` dict."""

    volume: Array
    params: Any
    history: dict


def estimate_mu_scale(projections: Float[ArrayLike, "*cases views nv nu"], geometry: Geometry) -> float:
    """Mean μ along the rays that cross the volume (mm⁻¹): Σ p / Σ chord length."""
    n_views, nv, nu = geometry.projection_shape
    view = jnp.linspace(0, n_views - 1, min(n_views, 8)).astype(jnp.int32)[:, None, None]
    row = jnp.arange(nv)[None, :, None]
    col = jnp.arange(nu)[None, None, :]
    rays = pixel_rays(geometry, *jnp.broadcast_arrays(view, row, col))
    lo, hi = volume_box(geometry)
    t0, t1 = box_intersect(rays, lo, hi)
    chord = (t1 - t0) * rays.lengths
    p = jnp.asarray(projections)[..., view[:, 0, 0], :, :]
    return float(jnp.sum(jnp.clip(p, 0)) / jnp.maximum(jnp.sum(chord) * (p.size // chord.size), 1e-6))


def _optimizer(cfg: NAFConfig) -> optax.GradientTransformation:
    if cfg.n_iters is None:
        raise ValueError("NAFConfig.n_iters is None: resolve it with config.for_geometry(geometry) first")
    return adam_with_schedule(cfg.lr, cfg.n_iters, final_fraction=cfg.lr_final / cfg.lr, warmup=cfg.warmup,
                              initial_fraction=1e-2, **INSTANT_NGP_ADAM)


def _tv(key, params, field_cfg, lo, hi, d_voxel, patch):
    """Anisotropic total variation of μ on a random ``patch``³ block of voxel-spaced points."""
    corner = jax.random.uniform(key, (3,))
    step = d_voxel
    start = lo + corner * jnp.maximum(hi - lo - patch * step, 0.0)
    grid = jnp.stack(jnp.meshgrid(*[jnp.arange(patch)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pts = start + grid * step
    if isinstance(field_cfg, LineformerConfig):  # lines along z, as the volume is queried
        mu = lineformer_apply(params, pts.reshape(patch * patch, patch, 3), field_cfg, lo=lo, hi=hi)
    else:
        mu = field_apply(params, pts, field_cfg, lo=lo, hi=hi)
    mu = mu.reshape(patch, patch, patch)
    return sum(jnp.mean(jnp.abs(jnp.diff(mu, axis=a))) for a in range(3))


def field_volume(params, config: NAFConfig, geometry: Geometry) -> Array:
    """The field on the geometry's voxel grid (voxel means with ``config.grid_supersample``)."""
    s = config.grid_supersample
    query_grid_ = lineformer_query_grid if isinstance(config.field, LineformerConfig) else query_grid
    if s == 1:
        return query_grid_(params, config.field, geometry)
    offs = (np.arange(s) + 0.5) / s - 0.5
    d = jnp.asarray(geometry.d_voxel, jnp.float32)
    total = 0.0
    for o in np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3):
        total = total + query_grid_(params, config.field, geometry, offset=jnp.asarray(o, jnp.float32) * d)
    return total / s**3


def make_train_fn(cfg: NAFConfig, geometry: Geometry, *, mesh=None, regularizer: Callable | None = None) -> Callable:
    """A jitted ``(state, projections) → (state, losses (steps_per_call,))`` for K stacked cases.

    ``state`` and ``projections`` carry a leading case axis; steps are ``vmap``-ed over it.
    ``regularizer(key, field, lo, hi, d_voxel) → scalar`` is added to each step's loss (see
    :func:`train_naf`).
    """
    cfg = cfg.for_geometry(geometry)
    n_views, nv, nu = geometry.projection_shape
    total = n_views * nv * nu
    lo, hi = volume_box(geometry)
    d_voxel = jnp.asarray(geometry.d_voxel, jnp.float32)
    tx = _optimizer(cfg)
    field_cfg = cfg.field
    enc = field_cfg.encoding
    if mesh is not None and mesh.size > 1 and isinstance(enc, HashGridConfig) and enc.implementation != "per_level":
        # With rays sharded, the per-level gather lets XLA scatter each device's table gradient
        # locally and all-reduce it; the flattened (level-major) layout made it all-gather every
        # point's indices and cotangents instead (1.6 GB a step at 8192 rays × 128 samples).
        field_cfg = dataclasses.replace(field_cfg, encoding=dataclasses.replace(enc, implementation="per_level"))
    if mesh is not None and mesh.size > 1 and getattr(field_cfg, "implementation", "xla") != "xla":
        # The fused field kernel is one pallas_call, which XLA cannot partition over the rays.
        field_cfg = dataclasses.replace(field_cfg, implementation="xla")

    mlg = cfg.ray_sampling
    ray_field = isinstance(field_cfg, LineformerConfig)
    apply = lineformer_apply if ray_field else field_apply

    def loss_fn(params, key, proj_flat, occupancy):
        k_idx, k_samp, k_tv = jax.random.split(key, 3)
        if mlg is None:
            idx = jax.random.randint(k_idx, (cfg.batch_rays,), 0, total)
        else:
            mask = (proj_flat > mlg.threshold * jnp.max(proj_flat)).reshape(n_views, nv, nu)
            idx = mlg_indices(k_idx, mask, n_rays=cfg.batch_rays, config=mlg)
        if mesh is not None:
            idx = constrain(idx, mesh)
        view, rem = idx // (nv * nu), idx % (nv * nu)
        rays = pixel_rays(geometry, view, rem // nu, rem % nu)
        field = lambda x: apply(params, x, field_cfg, lo=lo, hi=hi)  # noqa: E731
        pred = render_rays(field, rays, lo, hi, n_samples=cfg.n_samples, n_importance=cfg.n_importance, key=k_samp,
                           occupancy=occupancy, ray_field=ray_field)
        resid = pred - proj_flat[idx]
        loss = jnp.mean(resid**2)
        if cfg.l1_weight:
            loss = loss + cfg.l1_weight * jnp.mean(jnp.abs(resid))
        if cfg.tv_weight:
            loss = loss + cfg.tv_weight * _tv(k_tv, params, field_cfg, lo, hi, d_voxel, cfg.tv_patch)
        if regularizer is not None:  # its own key: the rays drawn stay those of a run without it
            loss = loss + regularizer(jax.random.fold_in(key, 3), field, lo, hi, d_voxel)
        return loss

    def refresh(grid, params, key):
        field = lambda x: field_apply(params, x, field_cfg, lo=lo, hi=hi)  # noqa: E731
        return occupancy_update(jax.random.fold_in(key, 1 << 20), grid, field, decay=cfg.occupancy_decay,
                                threshold=cfg.occupancy_threshold)

    def one_step(state: TrainState, proj_flat, step):
        # ``step`` is the (shared, unbatched) step number, so the refresh stays a real branch
        # under the vmap over cases.
        key = jax.random.fold_in(state.key, state.step)
        grid = state.occupancy
        if grid is not None:
            grid = jax.lax.cond(step % cfg.occupancy_update_every == 0, refresh, lambda g, *_: g,
                                grid, state.params, key)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, key, proj_flat, grid)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1, state.key, grid), loss

    def many_steps(state, proj_flat, step0):
        steps = step0 + jnp.arange(cfg.steps_per_call, dtype=step0.dtype)
        return jax.lax.scan(lambda s, n: one_step(s, proj_flat, n), state, steps)

    def train_fn(state, projections):
        proj_flat = projections.reshape(projections.shape[0], -1)
        return jax.vmap(many_steps, in_axes=(0, 0, None))(state, proj_flat, state.step[0])

    return jax.jit(train_fn, donate_argnums=0)


def init_state(cfg: NAFConfig, keys: Array, geometry: Geometry | None = None) -> TrainState:
    """Stacked initial states, one per key in ``keys`` (K,); ``geometry`` (its volume box)
    is needed with ``cfg.occupancy_resolution > 0`` or ``cfg.n_iters = None``."""
    if geometry is not None:
        cfg = cfg.for_geometry(geometry)
    tx = _optimizer(cfg)
    if cfg.occupancy_resolution and geometry is None:
        raise ValueError("init_state: occupancy_resolution > 0 needs the geometry")

    def one(key):
        init = lineformer_init if isinstance(cfg.field, LineformerConfig) else field_init
        params = init(jax.random.fold_in(key, 1 << 30), cfg.field)
        grid = occupancy_init(*volume_box(geometry), resolution=cfg.occupancy_resolution) if cfg.occupancy_resolution else None
        return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), key, grid)

    return jax.vmap(one)(keys)


# ------------------------------------------------------------------------- checkpoints
def _ckpt_dirs(root: Path) -> list[tuple[int, Path]]:
    out = []
    for p in root.glob("step_*"):
        if p.is_dir() and p.name[5:].isdigit():
            out.append((int(p.name[5:]), p))
    return sorted(out)


def _to_saveable(state: TrainState) -> dict:
    out = {"params": state.params, "opt_state": state.opt_state, "step": state.step,
           "key": jax.random.key_data(state.key)}
    if state.occupancy is not None:
        out["occupancy"] = {f.name: getattr(state.occupancy, f.name) for f in dataclasses.fields(state.occupancy)}
    return out


def save_checkpoint(root: Path, state: TrainState, *, keep: int = 2) -> Path:
    import orbax.checkpoint as ocp

    step = int(np.asarray(state.step).reshape(-1)[0])
    path = (root / f"step_{step:08d}").resolve()
    if path.exists():
        return path
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, _to_saveable(state))
    ckptr.wait_until_finished()
    for _, old in _ckpt_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def restore_checkpoint(root: Path, like: TrainState) -> tuple[TrainState, Path]:
    import orbax.checkpoint as ocp

    found = _ckpt_dirs(root)
    if not found:
        raise ValueError(f"resume: no checkpoint found in {root}")
    path = found[-1][1].resolve()
    saveable = _to_saveable(like)
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, saveable)
    try:
        tree = ocp.StandardCheckpointer().restore(path, target)
    except Exception as e:  # orbax raises several types for a structure mismatch
        raise ValueError(f"resume: checkpoint {path} does not match this configuration ({e})") from e
    tree = committed_like(tree, saveable)
    key = jax.random.wrap_key_data(tree["key"])
    grid = None if like.occupancy is None else type(like.occupancy)(**tree["occupancy"])
    return TrainState(tree["params"], tree["opt_state"], tree["step"], key, grid), path


# ------------------------------------------------------------------------- the driver
def check_projection_values(projections: np.ndarray, name: str = "projections") -> None:
    """Refuses NaN/inf and clearly negative line integrals.

    Photon noise makes line integrals near zero slightly negative (−log(N/I0) with N > I0),
    so values down to −5 % of the largest one are accepted; below that the data are not
    line integrals (an offset, or intensities instead of their log).
    """
    if not np.all(np.isfinite(projections)):
        raise ValueError(f"{name} contain NaN or infinite values")
    lo = float(np.min(projections))
    if lo < -0.05 * max(float(np.max(np.abs(projections))), 1e-6):
        raise ValueError(f"{name} contain negative line integrals (min {lo:.4g}): expected -log(I/I0) >= 0")


def _check_inputs(projections: np.ndarray, geometry: Geometry) -> None:
    if projections.shape[1:] != geometry.projection_shape:
        raise ValueError(
            f"projections have shape {projections.shape[1:]} but the geometry expects {geometry.projection_shape}"
        )
    check_projection_values(projections)


def train_naf(
    projections: Float[ArrayLike, "*cases views nv nu"],
    geometry: Geometry,
    config: NAFConfig = NAFConfig(),
    *,
    mesh=None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    eval_fn: Callable[[Array], dict] | None = None,
    eval_every: int = 0,
    case_keys: Array | None = None,
    shard_cases: bool = False,
    log: Callable[[str], None] = print,
    regularizer: Callable | None = None,
) -> NAFResult:
    """Trains a NAF field on one scan ``(V, nv, nu)`` or K scans ``(K, V, nv, nu)`` of ``geometry``.

    Args:
      projections: measured line integrals (dimensionless, ≥ 0).
      geometry: the scan (shared by all cases).
      config: settings (:class:`NAFConfig`).
      mesh: optional device mesh: each step's rays are split over its devices (or, with
        ``shard_cases``, the cases).
      checkpoint_dir: where orbax checkpoints go (with ``config.json``).
      checkpoint_every: steps between checkpoints (rounded up to ``steps_per_call``).
      resume: continue from the newest checkpoint in ``checkpoint_dir``.
      progress: show a tqdm bar with step, loss, projection PSNR and rays/s.
      stop_after: stop (after checkpointing) once this many steps are done — as if killed.
      eval_fn: called on the volume (the field on the voxel grid) at the end, and every
        ``eval_every`` steps if that is set; results go into the history (``"eval"`` holds
        the intermediate ones with the training seconds so far, evaluation and checkpoint time
        excluded).
      eval_every: steps between intermediate evaluations (0: only at the end); each one
        is also logged as a line.
      case_keys: one PRNG key per case (default ``fold_in(key(config.seed), case)``); a
        case trained alone with its key follows the same path as inside a stack.
      shard_cases: cohort mode: split the case axis over ``mesh``'s devices instead of each
        step's rays. When K does not divide over the devices it is padded with dummy cases
        (copies of case 0, trained and then dropped; a log line says so).
      log: where log lines go.
      regularizer: ``(key, field, lo, hi, d_voxel) → scalar`` added to the loss of each step:
        ``field`` maps points (mm) to μ (mm⁻¹), ``lo``/``hi`` the volume box and ``d_voxel`` the
        voxel size (mm); e.g. a learned prior's :func:`jaxmedrf.priors.red_field_loss`.

    Returns:
      :class:`NAFResult`; with one case, the case axis is dropped.

    Raises:
      ValueError: bad inputs, or a checkpoint from another configuration.
      FloatingPointError: the loss became NaN (names the step and the last good checkpoint).
    """
    proj, single, config, keys, n_pad = _setup(projections, geometry, config, mesh=mesh, case_keys=case_keys,
                                               shard_cases=shard_cases, log=log)
    n_cases = proj.shape[0] - n_pad
    state = init_state(config, keys, geometry)
    if shard_cases:
        state = jax.tree_util.tree_map(lambda x: jax.device_put(x, batch_sharding(mesh, x.ndim)), state)
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else None
    state, last_ckpt = _open_checkpoints(ckpt_root, config, geometry, state, n_cases=n_cases + n_pad, resume=resume,
                                         log=log)
    state = _placed_like_its_steps(state, mesh=mesh, shard_cases=shard_cases)
    if mesh is not None and mesh.size > 1 and getattr(config.field, "implementation", "xla") != "xla":
        # One pallas_call (the fused field) is not partitioned by XLA over devices.
        config = dataclasses.replace(config, field=dataclasses.replace(config.field, implementation="xla"))
    train_fn = make_train_fn(config, geometry, mesh=None if shard_cases else mesh, regularizer=regularizer)
    to_volume = jax.jit(jax.vmap(lambda p: field_volume(p, config, geometry)))
    proj_dev = jax.device_put(proj, batch_sharding(mesh, proj.ndim)) if shard_cases else jnp.asarray(proj)
    peak = float(np.max(proj)) or 1.0
    every = config.steps_per_call
    ckpt_every = -(-checkpoint_every // every) * every if checkpoint_every else 0
    target = config.n_iters if stop_after is None else min(config.n_iters, stop_after)

    def evaluate(params):
        vol = to_volume(params)[:n_cases]
        return eval_fn(vol[0] if single else vol)

    state, history, last_ckpt = _loop(
        train_fn, state, proj_dev, config, target=target, n_cases=n_cases, peak=peak, ckpt_root=ckpt_root,
        ckpt_every=ckpt_every, last_ckpt=last_ckpt, evaluate=evaluate if eval_fn is not None else None,
        eval_every=eval_every, progress=progress, log=log)
    if ckpt_root is not None and (stop_after is not None or ckpt_every):
        last_ckpt = save_checkpoint(ckpt_root, state)
    volume = to_volume(state.params)[:n_cases]
    history["mu_scale"] = config.field.mu_scale
    history["field_implementation"] = (resolved_implementation(config.field) if isinstance(config.field, FieldConfig)
                                       else "xla")
    if state.occupancy is not None:
        history["occupied_fraction"] = float(occupied_fraction(jax.tree_util.tree_map(lambda x: x[:n_cases],
                                                                                      state.occupancy)))
    if eval_fn is not None:
        history.update(eval_fn(volume[0] if single else volume))
    params = jax.tree_util.tree_map(lambda x: x[0] if single else x[:n_cases], state.params)
    return NAFResult(volume[0] if single else volume, params, history)


def _setup(projections, geometry, config, *, mesh, case_keys, shard_cases, log):
    """Checked inputs: ``(projections (K', V, nv, nu) float32, single case?, config resolved for
    the geometry (μ scale from the data), one key per case, dummy cases added)``."""
    proj = np.asarray(projections, np.float32)
    single = proj.ndim == 3
    if single:
        proj = proj[None]
    if proj.ndim != 4:
        raise ValueError(f"projections must be (views, nv, nu) or (cases, views, nv, nu), got {proj.shape}")
    _check_inputs(proj, geometry)
    if shard_cases and mesh is None:
        raise ValueError("shard_cases=True needs a mesh (jaxmedrf.parallel.make_mesh)")
    if mesh is not None and not shard_cases and config.batch_rays % mesh.size:
        raise ValueError(f"batch_rays={config.batch_rays} does not divide over {mesh.size} devices")
    config = config.for_geometry(geometry)
    if config.auto_mu_scale:
        scale = 4.0 * max(estimate_mu_scale(proj, geometry), 1e-6)
        config = dataclasses.replace(config, auto_mu_scale=False, field=dataclasses.replace(config.field, mu_scale=scale))
    n_cases = proj.shape[0]
    if case_keys is None:
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(config.seed), i))(jnp.arange(n_cases))
    else:
        # A copy: the training state (keys included) is donated to the compiled step.
        keys = jax.random.wrap_key_data(jnp.array(jax.random.key_data(case_keys), copy=True))
        if keys.shape != (n_cases,):
            raise ValueError(f"case_keys must hold one key per case ({n_cases}), got shape {keys.shape}")
    n_pad = (-n_cases) % mesh.size if shard_cases else 0
    if n_pad:
        log(f"cohort mode: {n_cases} cases do not divide over {mesh.size} devices; "
            f"padding with {n_pad} dummy case(s) (copies of case 0), dropped from the results")
        proj = np.concatenate([proj, np.repeat(proj[:1], n_pad, 0)])
        keys = jnp.concatenate([keys, jnp.repeat(keys[:1], n_pad, 0)])
    return proj, single, config, keys, n_pad


def _placed_like_its_steps(state: TrainState, *, mesh, shard_cases: bool) -> TrainState:
    """``state`` placed as the compiled step returns it, so that its first call compiles the same
    program as the calls after it (a speed-up only: the same computation, the same numbers). With
    rays split over ``mesh`` the step returns the state replicated over the mesh; a fresh state
    lives on one device, and the first call compiled a second program for it. (A restored
    checkpoint is placed like a fresh state by :func:`jaxmedrf.training.committed_like`.)"""
    if mesh is not None and not shard_cases:
        return jax.device_put(state, replicated(mesh))
    return state


def _open_checkpoints(ckpt_root, config, geometry, state, *, n_cases, resume, log):
    """With a checkpoint folder: restore the newest checkpoint (``resume``, after checking that it
    was made with this configuration) or record the configuration. ``(state, last checkpoint)``."""
    if ckpt_root is None:
        if resume:
            raise ValueError("resume=True needs a checkpoint_dir")
        return state, None
    cfg_json = json.dumps({"config": json.loads(config.to_json()), "geometry": json.loads(geometry.to_json()),
                           "cases": n_cases})
    ckpt_root.mkdir(parents=True, exist_ok=True)
    cfg_file = ckpt_root / "config.json"
    if not resume:
        cfg_file.write_text(cfg_json)
        return state, None
    if not cfg_file.exists():
        raise ValueError(f"resume: {cfg_file} not found")
    saved, mine = json.loads(cfg_file.read_text()), json.loads(cfg_json)
    for d in (saved, mine):
        d["config"].pop("n_iters", None)
        d["config"].get("field", {}).pop("implementation", None)  # same function either way
        if not d["config"].get("occupancy_resolution"):  # off: checkpoints from before it existed match
            for k in [k for k in d["config"] if k.startswith("occupancy_")]:
                d["config"].pop(k)
        if d["config"].get("ray_sampling", 0) is None:  # off: checkpoints from before it existed match
            d["config"].pop("ray_sampling")
    if saved != mine:
        raise ValueError(f"resume: the checkpoint in {ckpt_root} was made with another configuration")
    state, last_ckpt = restore_checkpoint(ckpt_root, state)
    log(f"resumed from {last_ckpt} at step {int(np.asarray(state.step).reshape(-1)[0])}")
    return state, last_ckpt


def _loop(train_fn, state, proj_dev, config, *, target, n_cases, peak, ckpt_root, ckpt_every, last_ckpt, evaluate,
          eval_every, progress, log):
    """:func:`jaxmedrf.training.train_loop` until step ``target`` with NAF's hook after each compiled
    call: the projection PSNR (history and bar, with rays/s), checkpoints, intermediate evaluations
    (their time excluded); a NaN loss names the last good checkpoint. ``(state, history, last checkpoint)``."""
    start = int(np.asarray(state.step).reshape(-1)[0])
    history = {"step": [], "loss": [], "proj_psnr": [], "time_s": [], "eval": []}
    eval_period = -(-eval_every // config.steps_per_call) * config.steps_per_call if eval_every else 0
    write = log
    if progress:
        from tqdm.auto import tqdm

        write = tqdm.write  # a line above the bar

    def on_chunk(step, state, loss):
        nonlocal last_ckpt
        psnr = 10 * math.log10(peak**2 / max(loss, 1e-30))
        elapsed = history["time_s"][-1]
        history["proj_psnr"].append(psnr)
        if ckpt_root is not None and ckpt_every and step % ckpt_every == 0:
            last_ckpt = save_checkpoint(ckpt_root, state)
        if evaluate is not None and eval_period and step % eval_period == 0:
            scores = evaluate(state.params)
            history["eval"].append({"step": step, "train_seconds": elapsed, **scores})
            write(f"step {step} ({elapsed:.1f} s): " + ", ".join(
                f"{k} {v:.4g}" for k, v in scores.items() if isinstance(v, (int, float))))
        rays = (step - start) * config.batch_rays * n_cases
        return {"loss": f"{loss:.3e}", "psnr": f"{psnr:.1f}dB", "rays_s": f"{rays / elapsed:.2e}"}

    def train(state, proj):
        state, losses = train_fn(state, proj)
        return state, np.asarray(losses)[:n_cases]  # (cases, steps_per_call), dummy cases dropped: one sync a call

    try:
        state = train_loop(train, state, (proj_dev,), target, config.steps_per_call, history, desc="NAF",
                           progress=progress, start=start, chunk_loss=lambda losses: float(losses[:, -1].mean()),
                           on_chunk=on_chunk)
    except FloatingPointError as e:
        raise FloatingPointError(f"{e}; last good checkpoint: {last_ckpt or 'none'}") from e
    history["train_seconds"] = history["time_s"][-1] if history["time_s"] else 0.0
    return state, history, last_ckpt
