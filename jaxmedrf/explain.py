"""Explaining reconstructions: provenance, uncertainty and attribution maps.

Three questions about a reconstruction, each answered by a volume-shaped map:

* **Provenance** — which measurements constrain a voxel. For a voxel reconstruction
  ``x`` from ``p = A x`` the data of pixel set ``S`` enter the normal equations through
  ``Aᵀ 1_S``, the backprojection of the set's indicator: its value at voxel ``j`` is
  ``Σ_{i∈S} a_ij``, the total intersection length (mm, Siddon) of the set's rays with the voxel.
  :func:`provenance` splits ``Aᵀ 1`` (the column sums of the system matrix, the voxel's
  *coverage*) by view group and by detector region with the projector's exact adjoint
  (:func:`jaxmedrf.backproject`), one backprojection of single-view geometries per view; the
  parts sum to ``Aᵀ 1`` exactly by linearity (to float32 rounding).

  For a neural field ``μ_θ(x)`` rendered as ``p = R(θ)`` the same quantity is taken through
  the parameters: ``P_S(x) = J_μ(x) J_Rᵀ 1_S = Σ_{i∈S} ⟨∂μ_θ(x)/∂θ, ∂p_i/∂θ⟩``, the neural
  tangent kernel (Jacot et al., NeurIPS 2018) between the voxel and the set's rays: the
  first-order change of ``μ(x)`` under one gradient step on a unit residual in ``S``
  (:func:`field_provenance`: one ``jax.vjp`` of the renderer per view, one ``jax.jvp`` of the
  voxel grid per map, no finite differences). With ``μ_θ = θ`` on the voxel grid and
  ``R = A`` it is ``Aᵀ 1_S`` again (tested). Unlike ``Aᵀ 1_S`` it can be negative (parameters
  are shared between points), so :func:`provenance_fractions` normalises magnitudes.

* **Uncertainty** — the per-voxel standard deviation over an ensemble of fields trained from
  different keys (:func:`train_ensemble`: different initialisations and ray batches, trained
  together by ``vmap`` over a case axis, :func:`jaxmedrf.train_naf`; Lakshminarayanan et al.,
  "Simple and scalable predictive uncertainty estimation using deep ensembles", NeurIPS 2017).

* **Attribution** — which voxels (or pixels) a scalar function of the volume or a DRR responds
  to: Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017, Eq. 1), Grad-CAM (Selvaraju et
  al., ICCV 2017, Eq. 1–2) for a function split as ``head_fn(features_fn(x))``, and, for a
  function without such a split, gradient × input and a *volume Grad-CAM* (Grad-CAM's recipe
  with the input itself as the one-channel feature map, its weight averaged over blocks instead
  of the whole image; :func:`volume_grad_cam`). Built-in scalar functions: a region's mean
  (:func:`region_mean`), the reprojection loss against measured projections
  (:func:`reprojection_loss`) and a 2D/3D registration loss (:func:`registration_loss`).

Everything takes and returns arrays; ``jaxmedrf explain`` writes them as NIfTI, PNG overlays
and a JSON summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree

from jaxmedrf.chunking import chunked_map
from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.projectors import project
from jaxmedrf.rays import pixel_rays
from jaxmedrf.recon.naf import NAFConfig, NAFResult, field_volume, train_naf
from jaxmedrf.render import render_rays

__all__ = [
    "IG_RULES",
    "Provenance",
    "box_mask",
    "detector_tiles",
    "ensemble_std",
    "field_provenance",
    "grad_cam",
    "gradient_x_input",
    "integrated_gradients",
    "naf_provenance",
    "provenance",
    "provenance_fractions",
    "region_mean",
    "registration_loss",
    "reprojection_loss",
    "single_view",
    "train_ensemble",
    "view_sectors",
    "volume_grad_cam",
]

ScalarFn = Callable[[Array], Array]


# =============================================================================== provenance
class Provenance(NamedTuple):
    """Provenance maps of one reconstruction (voxel grid ``(nx, ny, nz)``).

    Attributes:
      total: ``Aᵀ 1``, the voxel's coverage by every ray (mm of intersection length for Siddon;
        for a field, ``J_μ J_Rᵀ 1``).
      views: ``(groups, …)``: the part of ``total`` from each view group (:func:`view_sectors`).
      regions: ``(regions, …)``: the part from each detector region (:func:`detector_tiles`),
        over all views.
      effective_views: ``(Σ_v P_v)² / Σ_v P_v²`` with ``P_v`` the single views' maps: the
        participation ratio, between 1 (one view sees the voxel) and the number of views (all
        see it equally); 0 where no ray passes.
    """

    total: Float[Array, "nx ny nz"]
    views: Float[Array, "groups nx ny nz"]
    regions: Float[Array, "regions nx ny nz"]
    effective_views: Float[Array, "nx ny nz"]


def view_sectors(n_views: int, n_sectors: int) -> Int[np.ndarray, " views"]:
    """Group index of each view: ``n_sectors`` runs of consecutive views (angular sectors of a
    circular scan), as even as the counts allow; ``n_sectors = n_views``: one group per view."""
    if not 1 <= n_sectors <= n_views:
        raise ValueError(f"n_sectors must be in [1, {n_views}] (the views), got {n_sectors}")
    return (np.arange(n_views) * n_sectors // n_views).astype(np.int32)


def detector_tiles(n_detector: tuple[int, int], grid: tuple[int, int] = (2, 2)) -> Int[np.ndarray, "nv nu"]:
    """Region index of each detector pixel: a ``grid = (rows, cols)`` of tiles, numbered row-major
    from detector row 0 / column 0."""
    nv, nu = n_detector
    gr, gc = grid
    if not (1 <= gr <= nv and 1 <= gc <= nu):
        raise ValueError(f"detector grid must be within 1 x 1 and {nv} x {nu}, got {gr} x {gc}")
    rows = np.arange(nv) * gr // nv
    cols = np.arange(nu) * gc // nu
    return (rows[:, None] * gc + cols[None, :]).astype(np.int32)


def single_view(geometry: Geometry, view: Int[ArrayLike, ""]) -> Geometry:
    """The one-view geometry of view ``view`` (an int, or traced inside ``lax.scan``)."""

    return geometry.take_views(jnp.reshape(view, (1,)))


def _labels(geometry, view_groups, n_groups, regions, n_regions):
    n_views, nv, nu = geometry.projection_shape
    view_groups = np.arange(n_views) if view_groups is None else view_groups
    regions = np.zeros((nv, nu), np.int32) if regions is None else regions
    if np.shape(view_groups) != (n_views,):
        raise ValueError(f"view_groups must have shape ({n_views},), got {np.shape(view_groups)}")
    if np.shape(regions) != (nv, nu):
        raise ValueError(f"regions must have the detector's shape {(nv, nu)}, got {np.shape(regions)}")

    def count(labels, n, what):
        if not isinstance(labels, jax.core.Tracer):
            labels = np.asarray(labels)
        if n is None:
            if not isinstance(labels, np.ndarray):
                raise ValueError(f"traced {what} need their count (n_groups / n_regions)")
            n = int(labels.max()) + 1
        if isinstance(labels, np.ndarray) and (labels.min() < 0 or labels.max() >= n):
            raise ValueError(f"{what} must be in [0, {n}), got values in [{labels.min()}, {labels.max()}]")
        return int(n)

    n_groups = count(view_groups, n_groups, "view_groups")
    n_regions = count(regions, n_regions, "regions")
    return jnp.asarray(view_groups, jnp.int32), n_groups, jnp.asarray(regions, jnp.int32), n_regions


def _provenance_scan(back_view, pull, zero_tangent, geometry, view_groups, n_groups, regions, n_regions):
    """The engine of both provenances. ``back_view(v, cots (R, nv, nu))`` → the ``R`` tangents
    ``J_vᵀ c`` (a pytree with a leading ``R`` axis) of view ``v``; ``pull(t)`` → its voxel map.
    Sums are taken in tangent space (linear), then pulled: one pull per output map, plus one per
    view for the effective number of views."""
    onehot = (regions[None] == jnp.arange(n_regions)[:, None, None]).astype(jnp.float32)  # (R, nv, nu)
    zeros = lambda n: jax.tree.map(lambda z: jnp.zeros((n, *z.shape), z.dtype), zero_tangent)  # noqa: E731

    def body(carry, v):
        acc_g, acc_r, s1, s2 = carry
        t = back_view(v, onehot)  # (R, …) tangents
        t_view = jax.tree.map(lambda a: jnp.sum(a, 0), t)
        acc_g = jax.tree.map(lambda a, b: a.at[view_groups[v]].add(b), acc_g, t_view)
        acc_r = jax.tree.map(jnp.add, acc_r, t)
        p_v = pull(t_view)
        return (acc_g, acc_r, s1 + p_v, s2 + p_v**2), None

    shape = jax.eval_shape(pull, zero_tangent).shape
    init = (zeros(n_groups), zeros(n_regions), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))
    (acc_g, acc_r, s1, s2), _ = jax.lax.scan(body, init, jnp.arange(geometry.n_views))
    views = jax.lax.map(pull, acc_g)
    regions_map = jax.lax.map(pull, acc_r)
    ok = s2 > 0
    eff = jnp.where(ok, s1**2 / jnp.where(ok, s2, 1.0), 0.0)
    return Provenance(jnp.sum(regions_map, 0), views, regions_map, eff)


def provenance(
    geometry: Geometry,
    *,
    view_groups: Int[ArrayLike, " views"] | None = None,
    n_groups: int | None = None,
    regions: Int[ArrayLike, "nv nu"] | None = None,
    n_regions: int | None = None,
    method: str = "siddon",
    step: float = 0.5,
    chunk_size: int | None = None,
) -> Provenance:
    """Provenance of a voxel reconstruction: ``Aᵀ 1`` split by view group and detector region.

    For view ``v`` and region ``r``, ``P_{v,r} = A_vᵀ 1_r`` is the backprojection of region
    ``r``'s indicator through view ``v`` alone (a one-view geometry, so all maps together cost one
    backprojection per region); view groups and regions are its sums over ``r`` and over ``v``.
    Every part is linear in its indicator, so ``Σ_groups = Σ_regions = Aᵀ 1``.

    Args:
      geometry: the scan.
      view_groups: group index of each view (default: each view its own group).
      n_groups: number of view groups (needed when ``view_groups`` is traced).
      regions: region index of each detector pixel (default: one region).
      n_regions: number of regions (needed when ``regions`` is traced).
      method, step, chunk_size: the projector's (:func:`jaxmedrf.project`).

    Returns:
      :class:`Provenance` in mm of ray length per voxel (Siddon), float32.
    """
    vg, n_groups, reg, n_regions = _labels(geometry, view_groups, n_groups, regions, n_regions)
    zero = jnp.zeros(geometry.n_voxel, jnp.float32)

    def back_view(v, cots):
        gv = single_view(geometry, v)
        _, vjp = jax.vjp(lambda x: project(x, gv, method=method, step=step, chunk_size=chunk_size), zero)
        return jax.vmap(lambda c: vjp(c[None])[0])(cots)

    return _provenance_scan(back_view, lambda t: t, zero, geometry, vg, n_groups, reg, n_regions)


def field_provenance(
    render_view: Callable[[PyTree, Array], Float[Array, "nv nu"]],
    volume_fn: Callable[[PyTree], Float[Array, "nx ny nz"]],
    params: PyTree,
    geometry: Geometry,
    *,
    view_groups: Int[ArrayLike, " views"] | None = None,
    n_groups: int | None = None,
    regions: Int[ArrayLike, "nv nu"] | None = None,
    n_regions: int | None = None,
    tangent_mask: PyTree | None = None,
) -> Provenance:
    """Provenance of a neural-field reconstruction through the field's Jacobian.

    ``P_{v,r}(x) = J_μ(x) J_{R_v}ᵀ 1_r``: the renderer's VJP (``jax.vjp`` of ``render_view``)
    carries view ``v``'s region indicator to a parameter tangent, and the JVP of ``volume_fn``
    (a Jacobian-vector product, taken as the VJP of the VJP) carries that tangent to the voxel
    grid — the tangent kernel between each voxel and the pixel set (see the module docstring).
    Tangents are summed per group before the JVP, so the cost is one VJP per view and region and
    one JVP per output map and per view.

    Args:
      render_view: ``(params, v) → (nv, nu)`` the field's projection of view ``v`` (``v`` traced).
      volume_fn: ``params → (nx, ny, nz)`` the reconstruction on the voxel grid.
      params: the field's parameters (a pytree of float arrays).
      geometry: the scan (views and detector).
      view_groups, n_groups, regions, n_regions: as :func:`provenance`.
      tangent_mask: optional pytree like ``params`` of 0/1 factors: the kernel through those
        parameters only (``Σ_{θ_k ∈ mask} ∂μ/∂θ_k ∂p/∂θ_k``), e.g. the hash table alone, whose
        entries are local, without the MLP, whose weights every point shares.

    Returns:
      :class:`Provenance`, in units of μ per unit projection value per unit step (mm⁻¹).
    """
    vg, n_groups, reg, n_regions = _labels(geometry, view_groups, n_groups, regions, n_regions)
    zero = jax.tree.map(jnp.zeros_like, params)

    def back_view(v, cots):
        _, vjp = jax.vjp(lambda p: render_view(p, v), params)
        t = jax.vmap(lambda c: vjp(c)[0])(cots)
        return t if tangent_mask is None else jax.tree.map(lambda a, m: a * m, t, tangent_mask)

    def pull(t):
        # J_μ t as the VJP of the (linear) VJP, u ↦ J_μᵀ u: forward mode would be one pass, but
        # the hash grid's gather is a custom_vjp, which JAX cannot push a JVP through.
        out = jax.eval_shape(volume_fn, params)
        u0 = jnp.zeros(out.shape, out.dtype)
        _, vjp = jax.vjp(volume_fn, params)
        return jax.vjp(lambda u: vjp(u)[0], u0)[1](t)[0]

    return _provenance_scan(back_view, pull, zero, geometry, vg, n_groups, reg, n_regions)


def naf_provenance(
    params: PyTree,
    config: NAFConfig,
    geometry: Geometry,
    *,
    view_groups: Int[ArrayLike, " views"] | None = None,
    n_groups: int | None = None,
    regions: Int[ArrayLike, "nv nu"] | None = None,
    n_regions: int | None = None,
    chunk_rays: int = 1 << 14,
    parameters: str = "all",
) -> Provenance:
    """:func:`field_provenance` of a trained NAF field (:func:`jaxmedrf.train_naf`'s ``params``
    and resolved ``config``, or :func:`jaxmedrf.load_field`'s): each view rendered with the
    training's deterministic sampling in chunks of ``chunk_rays`` rays (rematerialised in the
    VJP, so memory is one chunk's), the volume as the reconstruction's voxel means (its VJP holds
    the residuals of the whole grid's evaluation).

    ``parameters="encoding"`` takes the kernel through the hash table only. Through all
    parameters the shared MLP weights dominate it: every voxel then draws on every view and tile
    equally (a 16³ Shepp–Logan field, 8 views: every voxel's fraction of each of 4 sectors and 4
    tiles 0.250 to three digits; through the table alone, tiles 0.006–0.495), which says
    that the network couples the whole volume, not where a voxel's value comes from.
    """
    if parameters not in ("all", "encoding"):
        raise ValueError(f"parameters must be 'all' or 'encoding', got {parameters!r}")
    mask = None
    if parameters == "encoding":
        mask = {"encoding": jax.tree.map(lambda a: jnp.ones((), a.dtype), params["encoding"]),
                "mlp": jax.tree.map(lambda a: jnp.zeros((), a.dtype), params["mlp"])}
    config = config.for_geometry(geometry)
    lo, hi = volume_box(geometry)
    _, nv, nu = geometry.projection_shape

    from jaxmedrf.fields.field import field_apply

    def render_view(p, v):
        field = lambda x: field_apply(p, x, config.field, lo=lo, hi=hi)  # noqa: E731

        def one(ids):
            rays = pixel_rays(geometry, jnp.full_like(ids, v), ids // nu, ids % nu)
            return render_rays(field, rays, lo, hi, n_samples=config.n_samples, n_importance=config.n_importance)

        return chunked_map(one, nv * nu, int(chunk_rays), remat=True).reshape(nv, nu)

    return field_provenance(render_view, lambda p: field_volume(p, config, geometry), params, geometry,
                            view_groups=view_groups, n_groups=n_groups, regions=regions, n_regions=n_regions,
                            tangent_mask=mask)


def provenance_fractions(maps: Float[ArrayLike, "groups *shape"]) -> Float[Array, "groups *shape"]:
    """Each map's share of the voxel, ``|P_k| / Σ_k |P_k|`` (0 where every map is 0); sums to 1
    over ``k`` wherever a ray passes."""
    a = jnp.abs(jnp.asarray(maps, jnp.float32))
    s = jnp.sum(a, 0)
    ok = s > 0
    return jnp.where(ok, a / jnp.where(ok, s, 1.0), 0.0)


# ============================================================================== uncertainty
def train_ensemble(
    key: Array,
    projections: Float[ArrayLike, "views nv nu"],
    geometry: Geometry,
    config: NAFConfig = NAFConfig(),
    *,
    n_members: int = 4,
    **train_kwargs: Any,
) -> NAFResult:
    """``n_members`` NAF fields of one scan, trained together (``vmap`` over a case axis) from the
    keys ``jax.random.split(key, n_members)``: each member its own initialisation and rays.

    Args:
      key: PRNG key of the ensemble.
      projections: the scan's line integrals.
      geometry: the scan.
      config: the members' settings.
      n_members: ensemble size.
      **train_kwargs: passed to :func:`jaxmedrf.train_naf` (``mesh``, ``progress``, …).

    Returns:
      :class:`~jaxmedrf.recon.naf.NAFResult` with ``volume`` ``(members, nx, ny, nz)`` mm⁻¹.
    """
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    proj = np.asarray(projections, np.float32)
    if proj.ndim != 3:
        raise ValueError(f"projections must be (views, nv, nu), got shape {proj.shape}")
    stack = np.broadcast_to(proj[None], (n_members, *proj.shape))
    return train_naf(stack, geometry, config, case_keys=jax.random.split(key, n_members), **train_kwargs)


def ensemble_std(members: Float[ArrayLike, "members *shape"]) -> Float[Array, "*shape"]:
    """Per-element standard deviation over the ensemble axis (population, ``ddof = 0``).

    Computed from deviations from the first member (the shifted-data algorithm), so identical
    members give exactly 0 and near-identical ones lose no digits to cancellation.
    """
    m = jnp.asarray(members, jnp.float32)
    d = m - m[:1]
    mean_d = jnp.mean(d, 0)
    var = jnp.maximum(jnp.mean(d**2, 0) - mean_d**2, 0.0)
    return jnp.sqrt(var)


# ============================================================================== attribution
IG_RULES = ("gauss-legendre", "trapezoid", "riemann-right")


def _ig_nodes(n_steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes α ∈ [0, 1] and weights for ∫₀¹ g(α) dα."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if rule == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return (x + 1) / 2, w / 2
    if rule == "trapezoid":
        if n_steps < 2:
            raise ValueError("the trapezoid rule needs n_steps >= 2")
        a = np.linspace(0.0, 1.0, n_steps)
        w = np.full(n_steps, 1.0 / (n_steps - 1))
        w[[0, -1]] /= 2
        return a, w
    if rule == "riemann-right":  # Sundararajan et al.'s Eq. 3
        return np.arange(1, n_steps + 1) / n_steps, np.full(n_steps, 1.0 / n_steps)
    raise ValueError(f"rule must be one of {IG_RULES}, got {rule!r}")


def _check_scalar(fn, x):
    out = jax.eval_shape(fn, x)
    if out.shape != ():
        raise ValueError(f"the function must return a scalar, got shape {out.shape}")


def integrated_gradients(
    f: ScalarFn,
    x: Float[ArrayLike, "*shape"],
    *,
    baseline: Float[ArrayLike, "*shape"] | None = None,
    n_steps: int = 64,
    rule: str = "gauss-legendre",
) -> Float[Array, "*shape"]:
    """Integrated Gradients of a scalar function (Sundararajan et al. 2017, Eq. 1).

    .. math:: \\mathrm{IG}_i(x) = (x_i - x'_i) \\int_0^1 \\partial_i f(x' + \\alpha (x - x'))\\, d\\alpha

    The integral is taken by quadrature over ``n_steps`` points of the straight path (one
    gradient each, accumulated in a ``lax.scan``: memory of one gradient). Completeness,
    ``Σ_i IG_i = f(x) − f(x')``, holds up to the quadrature error: exponentially small in
    ``n_steps`` with ``"gauss-legendre"`` for a smooth ``f``, ``O(n⁻²)`` with ``"trapezoid"``,
    ``O(n⁻¹)`` with the paper's right Riemann sum ``"riemann-right"``.

    Args:
      f: ``x → scalar``, differentiable (a JAX function).
      x: the input (a volume, a DRR, …).
      baseline: ``x'`` (default: zeros, i.e. air for a μ volume).
      n_steps: quadrature points.
      rule: one of :data:`IG_RULES`.

    Returns:
      Attributions, ``x``'s shape, in ``f``'s units.
    """
    x = jnp.asarray(x, jnp.float32)
    base = jnp.zeros_like(x) if baseline is None else jnp.asarray(baseline, jnp.float32)
    if base.shape != x.shape:
        raise ValueError(f"baseline has shape {base.shape}, the input {x.shape}")
    _check_scalar(f, x)
    alphas, weights = _ig_nodes(n_steps, rule)
    grad = jax.grad(f)
    delta = x - base

    def body(acc, aw):
        a, w = aw
        return acc + w * grad(base + a * delta), None

    nodes = (jnp.asarray(alphas, jnp.float32), jnp.asarray(weights, jnp.float32))
    total, _ = jax.lax.scan(body, jnp.zeros_like(x), nodes)
    return total * delta


def gradient_x_input(
    f: ScalarFn, x: Float[ArrayLike, "*shape"], *, baseline: Float[ArrayLike, "*shape"] | None = None
) -> Float[Array, "*shape"]:
    """``(x − x') ⊙ ∇f(x)`` (gradient × input; Shrikumar et al. 2016): Integrated Gradients
    with the gradient taken at ``x`` only, exact for a linear ``f``."""
    x = jnp.asarray(x, jnp.float32)
    base = jnp.zeros_like(x) if baseline is None else jnp.asarray(baseline, jnp.float32)
    _check_scalar(f, x)
    return (x - base) * jax.grad(f)(x)


def _resize(cam, shape):
    if cam.shape == tuple(shape):
        return cam
    return jax.image.resize(cam, tuple(shape), method="linear")


def grad_cam(
    features_fn: Callable[[Array], Float[Array, "*spatial channels"]],
    head_fn: Callable[[Array], Float[Array, ""]],
    x: Float[ArrayLike, "*shape"],
    *,
    relu: bool = True,
) -> Float[Array, "*shape"]:
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1–2) of a model split as ``head_fn(features_fn(x))``.

    With ``A = features_fn(x)`` of shape ``(*spatial, C)`` (channels last, as many spatial axes
    as ``x``) and ``y = head_fn(A)`` a scalar (a class score, a loss), the channel weights are
    the spatial means of the gradient, ``α_c = mean_s ∂y/∂A_{s,c}``, and the map is
    ``ReLU(Σ_c α_c A_{·,c})``, resized linearly (``jax.image.resize``, half-pixel centres) to
    ``x``'s shape when the feature map is coarser.

    Args:
      features_fn: the model up to the chosen layer.
      head_fn: the rest of the model, to a scalar.
      x: the input.
      relu: keep only positive evidence (the paper's map); ``False`` keeps the sign.

    Returns:
      The map, ``x``'s shape, in ``A``'s units × ``y``'s per unit ``A``.
    """
    x = jnp.asarray(x, jnp.float32)
    a = features_fn(x)
    if a.ndim != x.ndim + 1:
        raise ValueError(f"features_fn must return (*spatial, channels) with {x.ndim} spatial axes, got shape {a.shape}")
    _check_scalar(head_fn, a)
    g = jax.grad(head_fn)(a)
    alpha = jnp.mean(g, axis=tuple(range(x.ndim)))
    cam = jnp.sum(a * alpha, -1)
    if relu:
        cam = jax.nn.relu(cam)
    return _resize(cam, x.shape)


def volume_grad_cam(
    f: ScalarFn, x: Float[ArrayLike, "*shape"], *, block: int = 4, relu: bool = True
) -> Float[Array, "*shape"]:
    """Grad-CAM for a function without a layer split: the input is the (one-channel) feature map.

    Grad-CAM's single global weight would reduce to ``ReLU(mean(∇f) · x)``, a rescaled input;
    here the weight is local instead: over each block ``b`` of ``block`` voxels per axis,
    ``cam_b = ReLU(mean_b(∂f/∂x) · mean_b(x))``, spread back over the block's voxels. At
    ``block = 1`` it is ``ReLU(∇f ⊙ x)`` (gradient × input); larger blocks trade resolution for
    a smoother map, as Grad-CAM's coarse layer does. Ragged edge blocks average what they hold.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    x = jnp.asarray(x, jnp.float32)
    _check_scalar(f, x)
    g = jax.grad(f)(x)
    win = (block,) * x.ndim

    pad = [(0, (-n) % block) for n in x.shape]  # ragged edge blocks: padded, then divided by their count

    def block_mean(a):
        s = jax.lax.reduce_window(a, 0.0, jax.lax.add, win, win, pad)
        return s / jax.lax.reduce_window(jnp.ones_like(a), 0.0, jax.lax.add, win, win, pad)

    cam = block_mean(g) * block_mean(x)
    if relu:
        cam = jax.nn.relu(cam)
    for axis, n in enumerate(x.shape):
        cam = jnp.repeat(cam, block, axis=axis)[(slice(None),) * axis + (slice(0, n),)]
    return cam


# ========================================================================= built-in targets
def box_mask(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> Bool[np.ndarray, "*shape"]:
    """A boolean mask of the index box ``lo ≤ i < hi`` (per axis) in an array of ``shape``."""
    if not len(shape) == len(lo) == len(hi):
        raise ValueError(f"box corners {lo}, {hi} must have one index per axis of {shape}")
    if any(not 0 <= a < b <= n for a, b, n in zip(lo, hi, shape)):
        raise ValueError(f"box [{lo}, {hi}) must satisfy 0 <= lo < hi <= shape {tuple(shape)}")
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def region_mean(mask: Bool[ArrayLike, "*shape"]) -> ScalarFn:
    """``x → Σ mask·x / Σ mask``: the mean of a region (a box, a segmentation)."""
    m = jnp.asarray(mask, jnp.float32)
    n = float(np.sum(np.asarray(mask)))
    if n == 0:
        raise ValueError("the region is empty")
    return lambda x: jnp.sum(m * x) / n


def reprojection_loss(
    projections: Float[ArrayLike, "views nv nu"], geometry: Geometry, *, method: str = "siddon", step: float = 0.5
) -> ScalarFn:
    """``μ → mean((A μ − p)²)``: the mean squared residual of a volume against the scan's
    projections (the data term every reconstruction minimises)."""
    geometry.check_projections(projections)
    p = jnp.asarray(projections, jnp.float32)
    return lambda vol: jnp.mean((project(vol, geometry, method=method, step=step) - p) ** 2)


def registration_loss(
    image: Float[ArrayLike, "nv nu"], geometry: Geometry, *, loss: str = "ncc", method: str = "siddon",
    step: float = 0.5,
) -> ScalarFn:
    """``μ → loss(DRR(μ), image)`` for a one-view ``geometry``: the similarity a 2D/3D
    registration optimises (:mod:`jaxmedrf.registration.losses`: ``ncc``, ``mncc``, ``gncc``,
    ``mi``, ``mse``), here as a function of the volume at a fixed pose."""
    from jaxmedrf.registration.losses import get_loss

    fn = get_loss(loss)
    if geometry.n_views != 1:
        raise ValueError(f"registration_loss needs a one-view geometry, got {geometry.n_views} views "
                         "(jaxmedrf.explain.single_view)")
    img = jnp.asarray(image, jnp.float32)
    if img.shape != geometry.n_detector:
        raise ValueError(f"image has shape {img.shape}, the detector {geometry.n_detector}")
    return lambda vol: fn(project(vol, geometry, method=method, step=step)[0], img)
