"""Iterative reconstructions with the exact projector pair: SART / OS-SART and CGLS.

Both solve ``A x ≈ b`` with ``A`` = :func:`jaxmedrf.project` and ``Aᵀ`` =
:func:`jaxmedrf.backproject` (its exact adjoint), ``b`` the measured line integrals.

* **OS-SART** (Andersen & Kak, "Simultaneous algebraic reconstruction technique (SART)",
  Ultrason. Imaging 6, 1984; ordered subsets as in TIGRE, Biguri et al. 2016): for each subset
  ``s`` of views, ``x ← x + λ V_s ⊙ A_sᵀ (W_s ⊙ (b_s − A_s x))`` with the row and column
  normalisations ``W_s = 1 / (A_s 1)`` (per ray) and ``V_s = 1 / (A_sᵀ 1)`` (per voxel),
  0 for rays shorter than half a voxel (as TIGRE) and for voxels whose column sum is below
  10⁻³ of the largest (round-off-sized intersections are never divided by); then
  ``x ← max(x, 0)`` when ``nonneg``. ``n_subsets = n_views`` is SART, ``n_subsets = 1`` is SIRT. Subsets interleave the views (view ``i`` in
  subset ``i mod n_subsets``) so that each covers the whole arc.
  Optional TV step after each iteration (ASD-POCS style, Sidky & Pan, Phys. Med. Biol. 53,
  2008): ``tv_iters`` steps of ``x ← x − tv_weight · ‖Δx‖ · ∇TV(x)/‖∇TV(x)‖`` where ``Δx`` is
  the change made by the data step (no adaptive step control).
* **CGLS** (Hestenes & Stiefel 1952; Björck, *Numerical Methods for Least Squares Problems*,
  1996, alg. 7.4.1): conjugate gradients on the normal equations ``AᵀA x = Aᵀ b``; one forward
  and one backprojection per iteration; no constraint.

All return :class:`~jaxmedrf.recon.Result` ``(volume, history)`` with ``history["residual"]``
= ‖A x − b‖₂ after each iteration.

With ``mesh`` both run over a device mesh: ``shard="volume"`` (default) keeps the iterate
sharded along z and uses the slab projector pair (:mod:`jaxmedrf.sharded_projection`),
``shard="rays"`` replicates the volume and splits the rays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float
from tqdm.auto import tqdm

from jaxmedrf.geometry import Geometry
from jaxmedrf.parallel import volume_sharding
from jaxmedrf.projectors import auto_method, backproject, project
from jaxmedrf.sharded_projection import backproject_sharded, project_sharded
from jaxmedrf.recon._result import Result

__all__ = ["PROJECTORS", "cgls", "rays_undersample", "sart", "tv_gradient"]

def _subset_geometry(geometry: Geometry, idx) -> Geometry:
    """``geometry`` restricted to the views ``idx`` (works with traced indices; per-view
    ``DSD``/``DSO``/``off_detector`` are sliced with the angles and poses)."""
    return geometry.take_views(idx)


def rays_undersample(geometry: Geometry) -> bool:
    """Whether neighbouring detector rays pass further apart than a voxel at the isocentre.

    The pixel pitch is scaled to the rotation axis (× DSO/DSD for a cone beam, the largest over
    views when they are given per view) and compared, per detector axis, with the smallest voxel
    side (mm).
    """
    d_det = np.asarray(geometry.d_detector, np.float64).reshape(-1)
    scale = 1.0 if geometry.beam == "parallel" else float(np.max(np.asarray(geometry.DSO) / np.asarray(geometry.DSD)))
    return bool(np.max(d_det) * scale > np.min(np.asarray(geometry.d_voxel, np.float64)) * (1 + 1e-6))


def _safe_inv(x, floor):
    """``1/x`` where ``x > floor``, else 0."""
    ok = x > floor
    return jnp.where(ok, 1.0 / jnp.where(ok, x, 1.0), 0.0)


def tv_gradient(x: Float[ArrayLike, "nx ny nz"]) -> Float[Array, "nx ny nz"]:
    """Gradient of the isotropic total variation Σ √(|∇x|² + ε) (forward differences)."""
    eps = jnp.asarray(1e-8, x.dtype) * (jnp.max(jnp.abs(x)) ** 2 + 1e-30)

    def tv(v):
        d = [jnp.diff(v, axis=a, append=jnp.take(v, jnp.array([-1]), axis=a)) for a in range(3)]
        return jnp.sum(jnp.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2 + eps))

    return jax.grad(tv)(x)


def _tv_step(x, dx_norm, tv_weight, tv_iters):
    def body(_, v):
        g = tv_gradient(v)
        gn = jnp.linalg.norm(g)
        return v - tv_weight * dx_norm * g / jnp.where(gn > 0, gn, 1.0)

    return jax.lax.fori_loop(0, tv_iters, body, x)


PROJECTORS = ("auto", "siddon", "trilinear", "joseph")


def _check_common(projections, geometry, n_iters, method):
    geometry.check_projections(projections)
    if int(n_iters) != n_iters or n_iters <= 0:
        raise ValueError(f"n_iters must be a positive integer, got {n_iters!r}")
    if method not in PROJECTORS:
        raise ValueError(f"method must be one of {PROJECTORS}, got {method!r}")


def _resolve(method: str, implementation: str, mesh) -> tuple[str, str]:
    """``(method, implementation)`` with ``"auto"`` resolved.

    ``method="auto"``: Joseph's projector on a single CPU (plane-by-plane reads that stay in
    cache; the README gives the measured speed-up, ``benchmarks/cpu_baselines.py``),
    Siddon elsewhere (the fused GPU kernel, and the z-slab pair of a device mesh).
    ``implementation="auto"``: the fused kernel on a single GPU (about 20× the XLA pair per
    iteration at 128³, ``benchmarks/baselines.py``) for Siddon and trilinear, XLA elsewhere.
    """
    if implementation not in ("auto", "xla", "pallas"):
        raise ValueError(f"implementation must be 'auto', 'xla' or 'pallas', got {implementation!r}")
    method = auto_method(method, otherwise="siddon", mesh=mesh)
    if implementation == "auto":
        implementation = "pallas" if mesh is None and jax.default_backend() == "gpu" and method != "joseph" else "xla"
    return method, implementation


def _x0(x0, geometry, dtype, mesh=None, shard="volume"):
    if x0 is None:
        x = jnp.zeros(geometry.n_voxel, dtype)
    else:
        geometry.check_volume(x0, "x0")
        x = jnp.asarray(x0, dtype)
    if mesh is not None and shard == "volume" and geometry.n_voxel[2] % mesh.size == 0:
        x = jax.device_put(x, volume_sharding(mesh))
    return x


def _operators(method, step, chunk_size, mesh, shard, dtype, implementation="xla"):
    """``(A, Aᵀ)`` as functions of ``(array, geometry)``: single device or over ``mesh``."""
    kw = dict(method=method, step=step, chunk_size=chunk_size)
    if mesh is None:
        kw["implementation"] = implementation
        return (lambda x, g: project(x, g, **kw)), (lambda y, g: backproject(y, g, dtype=dtype, **kw))
    kw.update(mesh=mesh, shard=shard)
    return (lambda x, g: project_sharded(x, g, **kw)), (lambda y, g: backproject_sharded(y, g, dtype=dtype, **kw))


def _run(n_iters, step, state, residual_of, progress, callback, desc):
    hist = []
    bar = tqdm(range(n_iters), desc=desc, disable=not progress, leave=False)
    for it in bar:
        state = step(state)
        res = float(residual_of(state))
        hist.append(res)
        bar.set_postfix(residual=f"{res:.4g}")
        if callback is not None:
            callback(it, state[0], res)
    return state, np.asarray(hist)


@functools.lru_cache(maxsize=64)
def _sart_programs(method, step, chunk_size, mesh, shard, dtype, implementation, backprojector, relaxation, nonneg,
                   tv_weight, tv_iters):
    """SART's jitted ``(weights, epoch, residual)`` for one set of static options, built once
    and cached, so that repeated ``sart`` calls reuse the compiled programs."""
    fwd, bwd = _operators(method, step, chunk_size, mesh, shard, dtype, implementation)
    if backprojector == "voxel":
        from jaxmedrf.recon.fdk import voxel_backproject

        def bwd(y, g):  # noqa: F811 — the unmatched, voxel-driven Aᵀ
            return voxel_backproject(y.astype(dtype), g, mesh=mesh if shard == "volume" else None)

    @jax.jit
    def weights(geometry, ids, mask):
        def one(idx, msk):
            g = _subset_geometry(geometry, idx)
            # TIGRE's floors: rays shorter than half a voxel carry no update (row sums), and
            # voxels seen 1000× less than the best-seen one are left alone (column sums), so
            # round-off-sized intersections are never divided by.
            W = _safe_inv(fwd(jnp.ones(geometry.n_voxel, dtype), g), 0.5 * jnp.min(jnp.asarray(geometry.d_voxel))) * msk[:, None, None]
            col = bwd(jnp.broadcast_to(msk[:, None, None], g.projection_shape).astype(dtype), g)
            V = _safe_inv(col, 1e-3 * jnp.max(col))
            return W, V

        return jax.lax.map(lambda a: one(*a), (ids, mask))

    @jax.jit
    def epoch(x, geometry, ids, W, V, bs):
        """One pass over the subsets; also ``√Σ_s ‖b_s − A_s x_s‖²`` over the rays that carry an
        update, each subset's residual taken before its own update (free: it is computed anyway)."""

        def body(x, sub):
            idx, Ws, Vs, bsub = sub
            g = _subset_geometry(geometry, idx)
            r = bsub - fwd(x, g)
            x = x + relaxation * Vs * bwd(Ws * r, g)
            return (jnp.maximum(x, 0) if nonneg else x), jnp.sum(jnp.where(Ws > 0, r, 0.0) ** 2)

        x_new, r2 = jax.lax.scan(body, x, (ids, W, V, bs))
        if tv_weight > 0:
            dx = jnp.linalg.norm(x_new - x)
            x_new = _tv_step(x_new, dx, tv_weight, tv_iters)
            if nonneg:
                x_new = jnp.maximum(x_new, 0)
        return x_new, jnp.sqrt(jnp.sum(r2))

    residual = jax.jit(lambda x, g, b: jnp.linalg.norm(fwd(x, g) - b))
    return weights, epoch, residual


@functools.lru_cache(maxsize=64)
def _cgls_programs(method, step, chunk_size, mesh, shard, dtype, implementation):
    """CGLS's jitted ``(init, iterate)``, cached like :func:`_sart_programs`."""
    fwd, bwd = _operators(method, step, chunk_size, mesh, shard, dtype, implementation)

    @jax.jit
    def init(x, geometry, b):
        r = b - fwd(x, geometry)
        p = bwd(r, geometry)
        return x, r, p, jnp.vdot(p, p)

    @jax.jit
    def iterate(state, geometry):
        x, r, p, gamma = state
        q = fwd(p, geometry)
        qq = jnp.vdot(q, q)
        alpha = jnp.where(qq > 0, gamma / jnp.where(qq > 0, qq, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * q
        s = bwd(r, geometry)
        gamma_new = jnp.vdot(s, s)
        beta = jnp.where(gamma > 0, gamma_new / jnp.where(gamma > 0, gamma, 1.0), 0.0)
        return x, r, s + beta * p, gamma_new

    return init, iterate


def sart(
    projections: Float[ArrayLike, "views nv nu"],
    geometry: Geometry,
    *,
    n_iters: int = 20,
    n_subsets: int = 10,
    relaxation: float = 1.0,
    nonneg: bool = True,
    tv_weight: float = 0.0,
    tv_iters: int = 10,
    method: str = "auto",
    step: float = 0.5,
    backprojector: str = "auto",
    implementation: str = "auto",
    x0: Float[ArrayLike, "nx ny nz"] | None = None,
    chunk_size: int | None = None,
    residual: str = "exact",
    callback: Callable[[int, Array, float], None] | None = None,
    progress: bool = True,
    dtype=jnp.float32,
    mesh=None,
    shard: str = "volume",
    prior_step: Callable[[Array], Array] | None = None,
) -> Result:
    """OS-SART (SART with ``n_subsets = n_views``, SIRT with 1), TIGRE normalisation.

    Args:
      projections: measured line integrals ``(n_views, nv, nu)``.
      geometry: the scan.
      n_iters: passes over all subsets.
      n_subsets: ordered subsets of views (clipped to ``n_views``). Memory: one volume of
        column weights per subset is kept.
      relaxation: λ, typically in (0, 2).
      nonneg: clip μ at 0 after every subset update.
      tv_weight: ASD-POCS-style TV step size relative to the data step (0 = off).
      tv_iters: TV gradient steps per iteration when ``tv_weight > 0``.
      method: the projector, ``"siddon"``, ``"trilinear"``, ``"joseph"`` or ``"auto"`` (default:
        Joseph's on a single CPU, Siddon elsewhere; see :func:`_resolve`).
      step, chunk_size: passed to the projector.
      backprojector: ``"auto"`` (default): ``"voxel"`` where the rays undersample the volume
        (:func:`rays_undersample`: a detector pixel, scaled to the isocentre, wider than a
        voxel, where ray-driven Siddon leaves voxels unvisited between neighbouring rays and
        SART's matched update streaks), else ``"matched"``.
        ``"matched"`` uses the projector's exact adjoint;
        ``"voxel"`` the voxel-driven interpolating backprojector of :func:`~jaxmedrf.fdk`
        (bilinear detector read at each voxel's projection, cone weight ``(DSO/U)²``), an
        unmatched pair like TIGRE's ``"FDK"`` backprojection type: several times faster per
        iteration, with the column normalisation ``V`` computed from the same backprojector.
      implementation: projector implementation: ``"xla"``, ``"pallas"`` (the fused GPU
        kernel of :mod:`jaxmedrf.kernels.projector`; single device) or ``"auto"`` (pallas on
        one GPU, xla elsewhere).
      x0: initial volume (default zeros).
      residual: what ``history["residual"]`` records after each iteration: ``"exact"``
        ‖A x − b‖₂ of the new iterate (one more projection of all views per iteration), or
        ``"running"`` √Σ_s ‖b_s − A_s x_s‖², each subset's residual before its own update,
        which the iteration computes anyway (no extra projection; TIGRE likewise computes
        the exact norm only on request).
      callback: ``callback(iteration, volume, residual)`` after each iteration.
      progress: show a tqdm bar.
      dtype: computation dtype.
      mesh: optional device mesh; ``shard`` = ``"volume"`` (z-slabs, Siddon only) or ``"rays"``.
      prior_step: ``x ↦ x'`` applied to the volume after each iteration (after the TV step;
        then clipped at 0 with ``nonneg``): a plug-and-play / RED denoising step such as
        :func:`jaxmedrf.priors.red_step`.

    Returns:
      :class:`Result` ``(volume, {"residual": per iteration, see ``residual``})``; μ in mm⁻¹.
    """
    _check_common(projections, geometry, n_iters, method)
    if residual not in ("exact", "running"):
        raise ValueError(f"residual must be 'exact' or 'running', got {residual!r}")
    if backprojector not in ("auto", "matched", "voxel"):
        raise ValueError(f"backprojector must be 'auto', 'matched' or 'voxel', got {backprojector!r}")
    if backprojector == "auto":
        backprojector = "voxel" if rays_undersample(geometry) else "matched"
    if not (0 < relaxation < 2):
        raise ValueError(f"relaxation must be in (0, 2), got {relaxation!r}")
    if int(n_subsets) != n_subsets or n_subsets <= 0:
        raise ValueError(f"n_subsets must be a positive integer, got {n_subsets!r}")
    if tv_weight < 0 or int(tv_iters) != tv_iters or tv_iters < 0:
        raise ValueError(f"tv_weight must be ≥ 0 and tv_iters a non-negative integer, got {tv_weight!r}, {tv_iters!r}")
    n_views = geometry.n_views
    n_sub = int(min(n_subsets, n_views))
    m = -(-n_views // n_sub)
    # subset s holds views s, s + n_sub, ...; short subsets are padded with a repeated view of weight 0.
    ids = np.arange(n_sub)[:, None] + n_sub * np.arange(m)[None, :]
    mask = ids < n_views
    ids = np.where(mask, ids, np.arange(n_sub)[:, None])
    b = jnp.asarray(projections, dtype)
    method, implementation = _resolve(method, implementation, mesh)
    weights, epoch, residual_of = _sart_programs(
        method, float(step), chunk_size, mesh, shard, jnp.dtype(dtype), implementation,
        backprojector, float(relaxation), bool(nonneg), float(tv_weight), int(tv_iters))
    ids_j = jnp.asarray(ids)
    W, V = weights(geometry, ids_j, jnp.asarray(mask, dtype))
    bs = b[ids_j]
    exact = residual == "exact"
    def one(s):
        x, r = epoch(s[0], geometry, ids_j, W, V, bs)
        if prior_step is not None:
            x = prior_step(x)
            x = jnp.maximum(x, 0) if nonneg else x
        return x, r

    (x, _), hist = _run(
        n_iters, one, (_x0(x0, geometry, dtype, mesh, shard), None),
        (lambda s: residual_of(s[0], geometry, b)) if exact else (lambda s: s[1]), progress, callback,
        "OS-SART" if n_sub > 1 else "SIRT",
    )
    return Result(x, {"residual": hist})


def cgls(
    projections: Float[ArrayLike, "views nv nu"],
    geometry: Geometry,
    *,
    n_iters: int = 20,
    method: str = "auto",
    step: float = 0.5,
    implementation: str = "auto",
    x0: Float[ArrayLike, "nx ny nz"] | None = None,
    chunk_size: int | None = None,
    callback: Callable[[int, Array, float], None] | None = None,
    progress: bool = True,
    dtype=jnp.float32,
    mesh=None,
    shard: str = "volume",
) -> Result:
    """CGLS: conjugate gradients for ``min ‖A x − b‖₂`` (no constraint, no regulariser).

    Few iterations act as the regulariser (semi-convergence): stop early on noisy data.

    Args:
      projections: measured line integrals ``(n_views, nv, nu)``.
      geometry: the scan.
      n_iters: iterations (one forward and one backprojection each).
      method: the projector, ``"siddon"``, ``"trilinear"``, ``"joseph"`` or ``"auto"`` (default:
        Joseph's on a single CPU, Siddon elsewhere; see :func:`_resolve`).
      step, chunk_size: passed to the projector.
      implementation: ``"xla"``, ``"pallas"`` (fused GPU projector; its adjoint is the
        kernel's exact atomic-add transpose) or ``"auto"`` (pallas on one GPU, xla elsewhere).
      x0: initial volume (default zeros).
      callback: ``callback(iteration, volume, residual)`` after each iteration.
      progress: show a tqdm bar.
      dtype: computation dtype.
      mesh: optional device mesh; ``shard`` = ``"volume"`` (z-slabs, Siddon only) or ``"rays"``.

    Returns:
      :class:`Result` ``(volume, {"residual": ‖A x − b‖₂ per iteration})``; μ in mm⁻¹.
    """
    _check_common(projections, geometry, n_iters, method)
    b = jnp.asarray(projections, dtype)
    method, implementation = _resolve(method, implementation, mesh)
    init, iterate = _cgls_programs(method, float(step), chunk_size, mesh, shard, jnp.dtype(dtype), implementation)
    state = init(_x0(x0, geometry, dtype, mesh, shard), geometry, b)
    state, hist = _run(
        n_iters, lambda s: iterate(s, geometry), state, lambda s: jnp.linalg.norm(s[1]), progress, callback, "CGLS"
    )
    return Result(state[0], {"residual": hist})


del functools
