"""Thin NumPy batch loaders for training: rays from (projections, poses), or (slices, coordinates).

Batches are plain NumPy dicts, ready for ``jax.device_put`` onto a mesh (e.g. with a
``NamedSharding`` over the batch axis); nothing framework-specific. Shuffling takes an explicit
JAX ``key`` (one permutation per epoch, ``jax.random.fold_in(key, epoch)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np

from jaxmedrf.geometry import Geometry

__all__ = ["ray_batches", "slice_batches", "ray_table"]


def ray_table(projections, geometry: Geometry) -> dict[str, np.ndarray]:
    """Every pixel of every view as a ray: ``origins``, ``directions`` ``(N, 3)`` mm, ``values`` ``(N,)``.

    Rays follow :func:`jaxmedrf.pixel_rays` (cone beam: origin = source, direction = pixel − source,
    segment ``t ∈ [0, 1]``); ``values`` are the measured line integrals; ``index`` holds
    ``(view, row, col)``. N = views·nv·nu.
    """
    from jaxmedrf.rays import geometry_rays

    proj = np.asarray(projections, np.float32)
    geometry.check_projections(proj)
    rays = geometry_rays(geometry)
    v, r, c = np.meshgrid(*(np.arange(n) for n in proj.shape), indexing="ij")
    return {
        "origins": np.asarray(rays.origins, np.float32).reshape(-1, 3),
        "directions": np.asarray(rays.directions, np.float32).reshape(-1, 3),
        "values": proj.reshape(-1),
        "index": np.stack([v, r, c], -1).reshape(-1, 3).astype(np.int32),
    }


def _batches(key, n: int, batch_size: int, shuffle: bool, drop_remainder: bool, epochs: int | None):
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if drop_remainder and batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} items available (drop_remainder=True)")
    epoch = 0
    while epochs is None or epoch < epochs:
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n)) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_remainder else n
        for s in range(0, stop, batch_size):
            yield order[s:s + batch_size]
        epoch += 1


def ray_batches(key, projections, geometry: Geometry, *, batch_size: int, shuffle: bool = True,
                drop_remainder: bool = True, epochs: int | None = 1) -> Iterator[dict[str, np.ndarray]]:
    """Random batches of rays ``{"origins", "directions", "values", "index"}`` (see :func:`ray_table`).

    Args:
        key: JAX PRNG key for the shuffles.
        projections: ``(views, nv, nu)`` line integrals.
        geometry: their scan geometry (poses included).
        batch_size: rays per batch.
        shuffle: shuffle each epoch.
        drop_remainder: skip the last incomplete batch (fixed shapes: no recompilation).
        epochs: number of passes (``None``: forever).
    """
    table = ray_table(projections, geometry)
    n = table["values"].shape[0]
    for idx in _batches(key, n, batch_size, shuffle, drop_remainder, epochs):
        yield {k: v[idx] for k, v in table.items()}


def slice_batches(key, volume, *, spacing, affine=None, axis: int = 2, batch_size: int, shuffle: bool = True,
                  drop_remainder: bool = True, epochs: int | None = 1) -> Iterator[dict[str, np.ndarray]]:
    """Batches of 2D slices with the patient coordinates of their pixels.

    Args:
        key: JAX PRNG key for the shuffles.
        volume: ``(x, y, z)`` array (e.g. ``VolumeData.array``).
        spacing: voxel size, mm (used with a centred grid when ``affine`` is None).
        affine: ``(4, 4)`` voxel → mm (e.g. ``VolumeData.affine``).
        axis: slicing axis (2: axial in LPS).
        batch_size, shuffle, drop_remainder, epochs: as in :func:`ray_batches`.

    Yields:
        ``{"slices": (B, a, b), "coords": (B, a, b, 3) mm, "index": (B,)}``.
    """
    from jaxmedrf.io.volume import _centred_affine

    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {vol.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    A = _centred_affine(vol.shape, spacing) if affine is None else np.asarray(affine, np.float64)
    moved = np.moveaxis(vol, axis, 0)
    others = [a for a in range(3) if a != axis]
    ia, ib = np.meshgrid(np.arange(vol.shape[others[0]]), np.arange(vol.shape[others[1]]), indexing="ij")
    for idx in _batches(key, vol.shape[axis], batch_size, shuffle, drop_remainder, epochs):
        ijk = np.zeros((len(idx), *ia.shape, 3))
        ijk[..., others[0]] = ia
        ijk[..., others[1]] = ib
        ijk[..., axis] = idx[:, None, None]
        coords = ijk @ A[:3, :3].T + A[:3, 3]
        yield {"slices": moved[idx], "coords": coords.astype(np.float32), "index": idx.astype(np.int32)}
