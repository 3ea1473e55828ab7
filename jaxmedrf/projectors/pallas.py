"""The fused Pallas projectors behind :func:`jaxmedrf.project`'s ``implementation="pallas"``:
argument checks, batching over views, and the fallback to the XLA projector (with one warning)
where a kernel cannot run. The kernels themselves (:mod:`jaxmedrf.kernels.projector`) take
rays and know nothing of this. The rays come from :func:`jaxmedrf.pixel_rays`, so every orbit and
detector of a :class:`~jaxmedrf.Geometry` (short scans, helical translations, cylindrical
panels, tomosynthesis's per-view detector distances and offsets) runs in the kernel as it does in
XLA: none needs a fallback.
"""

from __future__ import annotations

import math
import warnings

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf.geometry import Geometry
from jaxmedrf.kernels import projector as K
from jaxmedrf.projectors.siddon import siddon_integrals
from jaxmedrf.projectors.trilinear import n_samples_for_step, trilinear_integrals
from jaxmedrf.projectors.xla import METHODS, project_xla
from jaxmedrf.rays import Rays

__all__ = ["project_pallas", "siddon_integrals_pallas", "trilinear_integrals_pallas"]


def _warn(reason: str) -> None:
    warnings.warn(f"Pallas projector: {reason}; using the XLA projector instead.", RuntimeWarning, stacklevel=3)


def trilinear_integrals_pallas(
    volume: Float[Array, "nx ny nz"],
    rays: Rays,
    lo: Float[Array, "3"],
    d_voxel: Float[Array, "3"],
    *,
    n_samples: int,
    block_rays: int = K.DEFAULT_BLOCK,
    unroll: int = 2,
    num_warps: int = K.DEFAULT_WARPS,
    pack: str | None = None,
    adjoint: str = K.DEFAULT_ADJOINT,
    interpret: bool | None = None,
) -> Float[Array, " rays"]:
    """Line integrals of the trilinear field along ``(R, 3)`` rays, by the fused kernel.

    Same values and gradients (volume, ray origins and directions, ``lo``, ``d_voxel``) as
    :func:`jaxmedrf.projectors.trilinear.trilinear_integrals`, computed in float32 whatever
    the volume's storage dtype (float32, bfloat16 or float16).

    Args:
      volume: μ in mm⁻¹, indexed (x, y, z).
      rays: ``(R, 3)`` segments (mm), ``t ∈ [0, 1]``.
      lo: lower corner of the volume box, mm.
      d_voxel: voxel size, mm.
      n_samples: samples per ray (bin midpoints between box entry and exit).
      block_rays: rays per program (a power of two).
      unroll: samples per loop iteration.
      num_warps: Triton warps per program (GPU).
      pack: gather several cell corners with one load from a packed copy of the volume
        made per call: ``"z"`` the (z, z+1) pairs (half the loads; a 16-bit pair is one
        32-bit word, a float32 pair 8 bytes; the copy is twice the volume), ``"yz"`` the four
        (y, z) corners (a quarter of the loads, 8 or 16 bytes each; the copy is four times
        the volume). ``None``: the volume itself, eight loads a sample.
      adjoint: how the volume gradient adds each sample's eight weights: ``"corners"``, eight
        4-byte atomic adds into the gradient; ``"quads"``, two 16-byte adds (the four (y, z)
        corners of each x face) into a buffer four times the volume, summed onto the voxels
        afterwards; ``"runs"`` (default), as ``"quads"`` but a ray's consecutive samples in one
        cell summed first, two adds per cell crossed. Same values either way (up to the order
        of float32 sums).
      interpret: run the kernel in Pallas interpret mode (any backend, slow; for tests).
        ``None``: compiled on GPU; elsewhere the XLA projector runs, with a warning.

    Returns:
      ``(R,)`` line integrals, dimensionless, float32.

    Raises:
      ValueError: a bad ``n_samples``, ``block_rays``, ``unroll``, ``pack`` or ``adjoint``.
    """
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    K.check_block(block_rays, unroll)
    K.check_pack(pack)
    K.check_adjoint(adjoint)
    reason = K.unsupported(volume, interpret)
    if reason:
        _warn(reason)
        return trilinear_integrals(volume, rays, lo, d_voxel, n_samples=int(n_samples))
    return K.trilinear_kernel(volume, rays, lo, d_voxel, int(n_samples), block_rays, unroll, num_warps, bool(interpret), pack,
                              adjoint)


def siddon_integrals_pallas(
    volume: Float[Array, "nx ny nz"],
    rays: Rays,
    lo: Float[Array, "3"],
    d_voxel: Float[Array, "3"],
    *,
    block_rays: int = K.DEFAULT_BLOCK,
    num_warps: int = K.DEFAULT_WARPS,
    interpret: bool | None = None,
) -> Float[Array, " rays"]:
    """Exact line integrals through the voxels along ``(R, 3)`` rays, by a fused voxel walk.

    Same values and gradients as :func:`jaxmedrf.projectors.siddon.siddon_integrals`
    (Siddon 1985; Amanatides & Woo 1987 traversal: one segment per plane crossing, the voxel
    taken at the segment's midpoint), in float32. The pose gradient uses
    ``dS = Σ_k μ_k (dα_{k+1} − dα_k)`` with ``∂α/∂o_a = −1/d_a`` and ``∂α/∂d_a = −α/d_a`` for a
    plane of axis ``a``; the volume gradient is one ``atomic_add`` per segment. Where a ray
    crosses two planes at once (the diagonal pixels of a symmetric set-up) the line integral
    has no derivative; there the two implementations return different one-sided values
    (rounding decides the voxel of the zero-length segment).

    Args, returns: as :func:`trilinear_integrals_pallas` (no samples).
    """
    K.check_block(block_rays, 1)
    reason = K.unsupported(volume, interpret)
    if reason:
        _warn(reason)
        return siddon_integrals(volume, rays, lo, d_voxel)
    return K.siddon_kernel(volume, rays, lo, d_voxel, block_rays, num_warps, bool(interpret))


def project_pallas(
    volume: Float[ArrayLike, "nx ny nz"],
    geometry: Geometry,
    *,
    method: str = "trilinear",
    step: float = 0.5,
    n_samples: int | None = None,
    chunk_size: int | None = None,
    mesh=None,
    block_rays: int = K.DEFAULT_BLOCK,
    tile: tuple[int, int] | None = None,
    lanes: str = "u",
    unroll: int = 2,
    num_warps: int = K.DEFAULT_WARPS,
    pack: str | None = None,
    adjoint: str = K.DEFAULT_ADJOINT,
    interpret: bool | None = None,
) -> Float[Array, "views nv nu"]:
    """:func:`jaxmedrf.project` by the fused trilinear kernel (same values and gradients).

    Views are batched: ``chunk_size`` rays (default 2¹⁹, whole views) go to one kernel
    launch; more views are marched chunk by chunk (``lax.map``).

    Args:
      volume: μ in mm⁻¹, shape ``geometry.n_voxel``; float32, bfloat16 or float16 storage.
      geometry: the scan (differentiable: the pose gradient flows through the rays).
      method: ``"trilinear"`` or ``"siddon"`` (:func:`siddon_integrals_pallas`); ``"joseph"`` runs
        the XLA projector, with a warning.
      step: sampling step in voxels (as :func:`jaxmedrf.project`), unless ``n_samples``.
      n_samples: samples per ray (overrides ``step``).
      chunk_size: rays per kernel launch.
      mesh: not supported by the kernel (the XLA projector runs, with a warning).
      block_rays, unroll, num_warps, pack, adjoint, interpret: see :func:`trilinear_integrals_pallas`.
      tile: ``(tv, tu)`` detector pixels marched by one program (``tv · tu == block_rays``);
        default near-square, ``(4, 8)`` for 32 rays.
      lanes: consecutive rays of a tile along a detector row (``"u"``) or column (``"v"``).

    Returns:
      Projections ``(n_views, nv, nu)``, dimensionless, float32.

    Raises:
      ValueError: a volume of the wrong shape, an unknown method, a bad step or size.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    geometry.check_volume(volume)
    volume = jnp.asarray(volume)
    n = n_samples_for_step(geometry.n_voxel, step) if n_samples is None else n_samples
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    K.check_block(block_rays, unroll)
    K.check_pack(pack)
    K.check_adjoint(adjoint)
    tile = K.default_tile(block_rays) if tile is None else tuple(int(t) for t in tile)
    if len(tile) != 2 or min(tile) < 1 or tile[0] * tile[1] != block_rays:
        raise ValueError(f"tile must be two positive integers with tv * tu == block_rays ({block_rays}), got {tile!r}")
    if lanes not in ("u", "v"):
        raise ValueError(f"lanes must be 'u' or 'v', got {lanes!r}")
    chunk = int(chunk_size or K.DEFAULT_CHUNK)
    if chunk <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    reason = ("a device mesh is not supported" if mesh is not None
              else "Joseph's method has no kernel" if method == "joseph" else K.unsupported(volume, interpret))
    if reason:
        _warn(reason)
        if n_samples is not None:  # the step for which the XLA projector takes exactly n samples
            step = math.sqrt(sum(k * k for k in geometry.n_voxel)) / (n - 0.5)
        return project_xla(volume, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh)
    return K.project_kernel(volume, geometry, method=method, n_samples=int(n), chunk=chunk, block_rays=block_rays, tile=tile,
                    lanes=lanes, unroll=unroll, num_warps=num_warps, interpret=bool(interpret), pack=pack,
                    adjoint=adjoint)
