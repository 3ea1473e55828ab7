"""Bounded-memory evaluation: a function of index chunks under ``lax.map``.

The one loop behind every "evaluate N things ``chunk`` at a time" in the package (projection
rays, field queries on a voxel grid, rendered pixels, PSF-weighted slice samples): pad the
index range to whole chunks (repeating the last index, so no padded value is out of range),
map the chunks, keep the first ``total`` results.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Integer, PyTree

__all__ = ["chunked_map"]


def chunked_map(
    fn: Callable[[Integer[Array, " chunk"]], PyTree[Array]],
    total: int,
    chunk: int,
    *,
    remat: bool = False,
    multiple_of: int = 1,
    constrain: Callable[[Array], Array] | None = None,
) -> PyTree[Array]:
    """``fn`` over the indices ``0 … total − 1``, ``chunk`` at a time (``jax.lax.map``).

    Args:
      fn: ``(chunk,)`` int32 indices → an array (or pytree of arrays) with leading axis
        ``chunk``. The last chunk repeats index ``total − 1`` past the end; those rows are dropped.
      total: number of indices (static).
      chunk: indices per call (static; at most ``total``, rounded up to ``multiple_of``).
      remat: rematerialise ``fn`` in the backward pass (``jax.checkpoint``): memory of one chunk.
      multiple_of: round ``chunk`` up to a multiple of this (e.g. the devices it is sharded over).
      constrain: applied to the ``(n_chunks, chunk)`` index array, e.g. a sharding constraint.

    Returns:
      ``fn``'s outputs concatenated along axis 0, first ``total`` rows.
    """
    if total < 1:
        raise ValueError(f"chunked_map: total must be >= 1, got {total}")
    if chunk < 1:
        raise ValueError(f"chunked_map: chunk must be >= 1, got {chunk}")
    chunk = min(int(chunk), int(total))
    chunk = -(-chunk // multiple_of) * multiple_of
    n_chunks = -(-total // chunk)
    ids = jnp.minimum(jnp.arange(n_chunks * chunk, dtype=jnp.int32), total - 1).reshape(n_chunks, chunk)
    if constrain is not None:
        ids = constrain(ids)
    out = jax.lax.map(jax.checkpoint(fn) if remat else fn, ids)
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:total], out)
