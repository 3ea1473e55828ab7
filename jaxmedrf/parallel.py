"""Device meshes and sharding helpers (jit + NamedSharding; no pmap).

Every device JAX sees joins one mesh; batches are sharded on their leading (ray or case)
axis and parameters replicated, and the compiler inserts the collectives. Across hosts,
call :func:`jax.distributed.initialize` first; the same code then sees every host's devices.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "batch_sharding", "constrain", "make_mesh", "pad_to_mesh", "replicated", "shard_batch", "shard_map",
    "volume_sharding",
]


def make_mesh(*, n_devices: int | None = None, axis_name: str = "batch") -> Mesh:
    """A 1-D mesh over the first ``n_devices`` devices (all by default), automatic sharding."""
    devices = jax.devices()
    n = len(devices) if n_devices is None else int(n_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"n_devices must be between 1 and {len(devices)}, got {n_devices!r}")
    kw = {}
    if hasattr(jax.sharding, "AxisType"):
        kw["axis_types"] = (jax.sharding.AxisType.Auto,)
    return jax.make_mesh((n,), (axis_name,), devices=devices[:n], **kw)


def batch_sharding(mesh: Mesh, ndim: int = 1, axis: int = 0) -> NamedSharding:
    """Sharding of an ``ndim`` array split along ``axis`` over all mesh axes."""
    spec: list = [None] * ndim
    spec[axis] = tuple(mesh.axis_names)
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def constrain(x: jax.Array, mesh: Mesh, axis: int = 0) -> jax.Array:
    """Inside ``jit``: ask for ``x`` to be split along ``axis`` over the mesh."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim, axis))


def shard_batch(tree, mesh: Mesh, axis: int = 0):
    """Places every array of ``tree`` on the mesh, split along ``axis``.

    Raises:
      ValueError: when that axis's size does not divide over the mesh's devices.
    """

    def put(x):
        if x.shape[axis] % mesh.size:
            raise ValueError(
                f"batch axis of size {x.shape[axis]} does not divide over {mesh.size} devices; "
                f"use a multiple of {mesh.size}"
            )
        return jax.device_put(x, batch_sharding(mesh, x.ndim, axis))

    return jax.tree_util.tree_map(put, tree)



def volume_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of an ``(nx, ny, nz)`` volume split along z over all mesh axes: ``P(None, None, axes)``."""
    return batch_sharding(mesh, 3, 2)


def pad_to_mesh(n: int, mesh: Mesh) -> int:
    """The smallest multiple of ``mesh.size`` that is ≥ ``n`` (sizes are padded up to it)."""
    return -(-int(n) // mesh.size) * mesh.size


def shard_map(f, *, mesh: Mesh, in_specs, out_specs):
    """``jax.shard_map`` (JAX ≥ 0.6), or ``jax.experimental.shard_map`` on older JAX."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map as _sm  # pragma: no cover - old JAX

    return _sm(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
