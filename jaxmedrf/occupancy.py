"""Empty-space skipping: an occupancy grid over the volume box, and a ray marcher that puts
its samples only inside occupied cells.

The grid holds, per cell, an exponential moving maximum of μ (mm⁻¹) measured at random points
of the cell, and a boolean ``occupied`` mask (Müller et al., "Instant Neural Graphics
Primitives", SIGGRAPH 2022, Sec. 4 / App. E.2; nerfacc's ``OccGridEstimator``, Li et al.
2023). Unlike those, which march with a fixed step and drop the samples that fall in empty
cells (a variable number per ray), the marcher here keeps a *fixed* number of samples per ray
(static shapes for ``jit``): every ray is cut at its exact crossings of the grid planes into
segments lying in one cell each, the occupied segments are laid end to end into a
coordinate ``s ∈ [0, L]`` (``L``: occupied length of the ray, in units of ``t``), and the
samples are placed stratified (or at bin midpoints) in ``s`` and mapped back to ``t``. The
quadrature weights are bins of ``s``, so :func:`jaxmedrf.render.integrate` gives

.. math::  \\int_{\\text{occupied}} \\mu(x(t))\\,\\lVert d \\rVert\\,dt \\approx
           \\frac{L}{n}\\sum_i \\mu(x(t(s_i)))\\,\\lVert d \\rVert ,

which is the full line integral of a field that is zero outside the occupied cells (up to the
quadrature error only; exact for a field constant on the occupied part of each ray).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from jaxmedrf.rays import Rays, box_intersect
from jaxmedrf.samples import sample_uniform

__all__ = [
    "OccupancyGrid",
    "OccupiedSegments",
    "occupancy_init",
    "occupancy_update",
    "occupied_fraction",
    "occupied_segments",
    "sample_occupied",
    "segments_to_t",
]


# Not checked by the jaxtyping import hook of the test run: JAX rebuilds a registered dataclass
# through __init__ with whatever leaves a transformation carries (a stack of grids for vmap,
# NumPy arrays from a checkpoint, placeholders), so the annotations describe one built grid.
@typing.no_type_check
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OccupancyGrid:
    """Occupancy of ``(rx, ry, rz)`` equal cells tiling the box ``[lo, hi]`` (a pytree).

    Attributes:
      density: moving maximum of μ per cell, mm⁻¹ (:func:`occupancy_update`).
      occupied: cells the marcher samples.
      lo, hi: the box corners, mm.
    """

    density: Float[Array, "rx ry rz"]
    occupied: Bool[Array, "rx ry rz"]
    lo: Float[Array, "3"]
    hi: Float[Array, "3"]

    @property
    def resolution(self) -> tuple[int, int, int]:
        return tuple(self.occupied.shape[-3:])


def _resolution(resolution) -> tuple[int, int, int]:
    r = (resolution,) * 3 if isinstance(resolution, int) else tuple(resolution)
    if len(r) != 3 or any(int(v) != v or v < 1 for v in r):
        raise ValueError(f"resolution must be a positive integer or three of them, got {resolution!r}")
    return tuple(int(v) for v in r)


def occupancy_init(
    lo: Float[ArrayLike, "3"], hi: Float[ArrayLike, "3"], *, resolution: int | tuple[int, int, int]
) -> OccupancyGrid:
    """A grid of ``resolution`` cells (per axis) over ``[lo, hi]`` (mm), every cell occupied."""
    r = _resolution(resolution)
    lo = jnp.asarray(lo, jnp.float32)
    hi = jnp.asarray(hi, jnp.float32)
    if lo.shape != (3,) or hi.shape != (3,):
        raise ValueError(f"lo and hi must be 3-vectors, got shapes {lo.shape} and {hi.shape}")
    return OccupancyGrid(jnp.zeros(r, jnp.float32), jnp.ones(r, bool), lo, hi)


def _cell_size(grid: OccupancyGrid) -> Array:
    return (grid.hi - grid.lo) / jnp.asarray(grid.resolution, grid.lo.dtype)


def occupancy_update(
    key: PRNGKeyArray,
    grid: OccupancyGrid,
    field: Callable[[Float[Array, "n 3"]], Float[Array, " n"]],
    *,
    decay: float = 0.95,
    threshold: float = 0.01,
    points_per_cell: int = 1,
    dilate: int = 1,
) -> OccupancyGrid:
    """Measures ``field`` at random points of every cell and refreshes the mask.

    ``density ← max(decay · density, max_k μ(x_k))`` over ``points_per_cell`` uniform points
    ``x_k`` per cell (Instant-NGP Sec. 4, nerfacc ``OccGridEstimator``); a cell is occupied
    when its density exceeds ``threshold`` × the grid's largest density (scale-free: μ may be
    in mm⁻¹ of water, ≈ 0.02, or of a unit phantom), then the mask is dilated by ``dilate``
    cells (a safety margin for thin structures a random point missed). ``threshold = 0``
    marks every cell where μ > 0 was seen; an all-zero field leaves no cell occupied.

    No gradient flows into ``field``'s parameters.

    Args:
      key: PRNG key for the points.
      grid: the grid to update.
      field: μ (mm⁻¹) at ``(N, 3)`` points in mm.
      decay: per-update factor of the moving maximum, in [0, 1] (0: the latest value only).
      threshold: fraction of the largest density below which a cell is empty.
      points_per_cell: random points per cell per update.
      dilate: cells added around every occupied one.

    Returns:
      The updated grid.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay!r}")
    if not threshold >= 0.0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    if int(points_per_cell) != points_per_cell or points_per_cell < 1:
        raise ValueError(f"points_per_cell must be a positive integer, got {points_per_cell!r}")
    if int(dilate) != dilate or dilate < 0:
        raise ValueError(f"dilate must be a non-negative integer, got {dilate!r}")
    r = grid.resolution
    idx = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=grid.lo.dtype) for n in r], indexing="ij"), -1)
    u = jax.random.uniform(key, (points_per_cell, *r, 3), grid.lo.dtype)
    pts = grid.lo + (idx + u) * _cell_size(grid)
    mu = jax.lax.stop_gradient(field(pts.reshape(-1, 3))).reshape(points_per_cell, *r)
    density = jnp.maximum(decay * grid.density, jnp.max(mu, 0).astype(grid.density.dtype))
    occupied = density > threshold * jnp.max(density)
    if dilate:
        w = 2 * dilate + 1
        occupied = jax.lax.reduce_window(occupied, False, jax.lax.bitwise_or, (w, w, w), (1, 1, 1), "SAME")
    return OccupancyGrid(density, occupied, grid.lo, grid.hi)


def occupied_fraction(grid: OccupancyGrid) -> Float[Array, ""]:
    """Fraction of the cells that are occupied."""
    return jnp.mean(grid.occupied.astype(jnp.float32))


class OccupiedSegments(NamedTuple):
    """Rays cut at the grid planes into one-cell segments ``[edges[j], edges[j+1]]``;
    ``cum[j]`` is the occupied length (in ``t``) before edge ``j``, ``cum[-1]`` the total."""

    edges: Float[Array, "rays m"]
    cum: Float[Array, "rays m"]

    @property
    def length(self) -> Float[Array, " rays"]:
        """Occupied length of each ray, in units of ``t`` (× ‖direction‖ for mm)."""
        return self.cum[:, -1]


def occupied_segments(
    rays: Rays,
    grid: OccupancyGrid,
    *,
    t_near: Float[Array, " rays"] | None = None,
    t_far: Float[Array, " rays"] | None = None,
) -> OccupiedSegments:
    """Cuts ``(R, 3)`` rays at their exact crossings of the grid planes and measures the
    occupied length along each.

    Every segment between consecutive crossings lies in one cell (the one holding its
    midpoint). The rays are limited to ``[t_near, t_far]`` (default ``[0, 1]``) and to the
    grid's box. ``5 + Σ resolution`` edges per ray: the three axes' plane crossings (each
    list already in order along the ray) merged into one ascending list — Amanatides & Woo's
    traversal ("A fast voxel traversal algorithm", Eurographics 1987) with all its steps
    taken at once.
    """
    o, d = rays.origins, rays.directions
    b_near, b_far = box_intersect(rays, grid.lo, grid.hi)
    if t_near is not None:
        b_near = jnp.maximum(b_near, t_near)
    if t_far is not None:
        b_far = jnp.minimum(b_far, t_far)
    b_far = jnp.maximum(b_far, b_near)
    cell = _cell_size(grid)
    tiny = jnp.finfo(d.dtype).tiny
    cuts = []
    for a, n in enumerate(grid.resolution):
        planes = grid.lo[a] + jnp.arange(n + 1, dtype=d.dtype) * cell[a]
        da = d[:, a:a + 1]
        nz = jnp.abs(da) > tiny
        t = (planes[None, :] - o[:, a:a + 1]) / jnp.where(nz, da, 1.0)
        t = jnp.where(da < 0, t[:, ::-1], t)  # ascending
        cuts.append(jnp.clip(jnp.where(nz, t, b_near[:, None]), b_near[:, None], b_far[:, None]))
    edges = jnp.concatenate([b_near[:, None], _merge_sorted(cuts), b_far[:, None]], -1)
    mid = 0.5 * (edges[:, 1:] + edges[:, :-1])
    x = o[:, None, :] + mid[..., None] * d[:, None, :]
    ijk = jnp.floor((x - grid.lo) / cell).astype(jnp.int32)
    ijk = jnp.clip(ijk, 0, jnp.asarray(grid.resolution, jnp.int32) - 1)
    occ = grid.occupied[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
    seg = jnp.where(occ, edges[:, 1:] - edges[:, :-1], 0.0)
    cum = jnp.concatenate([jnp.zeros_like(seg[:, :1]), jnp.cumsum(seg, -1)], -1)
    return OccupiedSegments(jax.lax.stop_gradient(edges), jax.lax.stop_gradient(cum))


def _merge_sorted(lists: list[Array]) -> Array:
    """Merges rows of ascending ``(R, n_i)`` arrays: each element's rank is its index plus the
    count of smaller elements in the other lists (binary search; ties go to the earlier list),
    then one scatter. O(n log n) per row, and some 2–6× faster than sorting the concatenation
    on CPU."""
    vals, ranks = [], []
    for a, la in enumerate(lists):
        rank = jnp.arange(la.shape[-1])[None, :]
        for b, lb in enumerate(lists):
            if b != a:
                search = partial(jnp.searchsorted, side="right" if b < a else "left", method="scan_unrolled")
                rank = rank + jax.vmap(search)(lb, la)
        vals.append(la)
        ranks.append(rank)
    vals, ranks = jnp.concatenate(vals, -1), jnp.concatenate(ranks, -1)
    rows = jnp.arange(vals.shape[0])[:, None]
    return jnp.zeros_like(vals).at[rows, ranks].set(vals, unique_indices=True)


def segments_to_t(segments: OccupiedSegments, s: Float[Array, "rays samples"]) -> Float[Array, "rays samples"]:
    """Maps occupied-length coordinates ``s ∈ [0, L]`` (sorted or not) to ray parameters ``t``."""
    m = segments.cum.shape[-1] - 1
    j = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right", method="scan_unrolled"))(segments.cum, s)
    j = jnp.clip(j - 1, 0, m - 1)
    return jnp.take_along_axis(segments.edges, j, -1) + (s - jnp.take_along_axis(segments.cum, j, -1))


def sample_occupied(
    key: PRNGKeyArray | None,
    rays: Rays,
    grid: OccupancyGrid,
    *,
    n_samples: int,
    t_near: Float[Array, " rays"] | None = None,
    t_far: Float[Array, " rays"] | None = None,
) -> tuple[Float[Array, "rays samples"], Float[Array, "rays samples"]]:
    """``n_samples`` points per ray spread over its occupied length only.

    Equal bins of the occupied length ``L`` (bin midpoints, or one uniform point per bin with
    a ``key``) mapped to ``t``. ``integrate(μ(t), dt, rays.lengths)`` is then the line integral
    over the occupied cells (module doc); a ray through no occupied cell gets ``dt = 0``.

    Returns:
      ``(t, dt)``, each ``(R, n_samples)``: sample parameters and quadrature weights (in t).
    """
    seg = occupied_segments(rays, grid, t_near=t_near, t_far=t_far)
    s, ds = sample_uniform(key, jnp.zeros_like(seg.length), seg.length, n_samples=n_samples)
    return segments_to_t(seg, s), ds
