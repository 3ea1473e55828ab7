"""Projection and backprojection with the volume sharded along z over a device mesh.

For a volume too large for one device (a 1024³–2048³ micro-CT scan is 4–32 GiB in float32)
the volume is split into z-slabs, one per device (``NamedSharding`` ``P(None, None, axes)``).
Each device computes, for every ray, the exact Siddon line integral through its own slab
(the slab is a box of voxels in its own right, so the partial integrals of the slabs sum to the
integral through the whole volume: Siddon, "Fast calculation of the exact radiological path
for a three-dimensional CT array", Med. Phys. 12(2), 1985), and the partial projections are
summed across devices with one ``psum``. This is written with ``shard_map`` + ``psum`` rather
than left to ``jit`` + sharding constraints because the projector reads the volume by gather
(data-dependent voxel indices): under automatic partitioning the compiler all-gathers the
volume onto every device, which defeats the purpose. ``backproject_sharded`` is the exact
adjoint (``jax.vjp`` of the sharded forward map): the cotangent projections are replicated
and each device writes only its slab, so the result stays sharded along z.

Memory per device: one slab (``nz / n_devices`` planes), the projections (replicated) and one
chunk of rays. Work per device: every ray is still traced through each slab, so the time
does not fall as 1/n (Siddon's cost per ray is ∝ nx + ny + nz/n planes): this mode buys
memory, ray sharding (``shard="rays"``, :func:`jaxmedrf.project` with ``mesh``) buys speed.

A z size that does not divide over the devices is zero-padded up to the next multiple (zero
voxels add nothing to a line integral) and the backprojection is cropped back to ``nz``.
Only ``method="siddon"`` is volume-sharded: the trilinear projector clamps its interpolation
to the edge voxels of the whole box, which a slab cannot reproduce exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.parallel import pad_to_mesh, shard_map
from jaxmedrf.projectors import backproject, project
from jaxmedrf.projectors.xla import DEFAULT_CHUNK, check_method
from jaxmedrf.projectors.siddon import siddon_integrals
from jaxmedrf.rays import pixel_rays

__all__ = ["SHARD_MODES", "backproject_sharded", "project_sharded"]

SHARD_MODES = ("rays", "volume")


def _check_mode(shard: str, method: str, mesh) -> None:
    if shard not in SHARD_MODES:
        raise ValueError(f"shard must be one of {SHARD_MODES}, got {shard!r}")
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh (jaxmedrf.parallel.make_mesh), got {mesh!r}")
    if shard == "volume" and method != "siddon":
        raise ValueError(f"shard='volume' supports method='siddon' only, got method={method!r}")


@functools.partial(jax.jit, static_argnames=("chunk_size", "mesh"))
def _project_volume(volume, geometry, *, chunk_size, mesh):
    axes = tuple(mesh.axis_names)
    nx, ny, nz = volume.shape
    nz_pad = pad_to_mesh(nz, mesh)
    if nz_pad != nz:
        volume = jnp.pad(volume, ((0, 0), (0, 0), (0, nz_pad - nz)))
    n_views, nv, nu = geometry.projection_shape
    total = n_views * nv * nu
    chunk = min(chunk_size, total)
    n_chunks = -(-total // chunk)
    ids = jnp.minimum(jnp.arange(n_chunks * chunk, dtype=jnp.int32), total - 1).reshape(n_chunks, chunk)

    def local(slab, geometry, ids):
        lo, _ = volume_box(geometry)
        d = jnp.asarray(geometry.d_voxel, lo.dtype)
        lo = lo.at[2].add(jax.lax.axis_index(axes) * slab.shape[2] * d[2])

        def body(idx):
            view, rem = idx // (nv * nu), idx % (nv * nu)
            return siddon_integrals(slab, pixel_rays(geometry, view, rem // nu, rem % nu), lo, d)

        return jax.lax.psum(jax.lax.map(jax.checkpoint(body), ids), axes)

    f = shard_map(local, mesh=mesh, in_specs=(P(None, None, axes), P(), P()), out_specs=P())
    out = f(volume, geometry, ids)
    return out.reshape(-1)[:total].reshape(n_views, nv, nu)


def project_sharded(
    volume: Float[ArrayLike, "nx ny nz"],
    geometry: Geometry,
    *,
    mesh: Mesh,
    shard: str = "volume",
    method: str = "siddon",
    step: float = 0.5,
    chunk_size: int | None = None,
) -> Float[Array, "views nv nu"]:
    """:func:`jaxmedrf.project` over a device mesh.

    Args:
      volume: μ in mm⁻¹, shape ``geometry.n_voxel``; ideally already placed with
        :func:`jaxmedrf.parallel.volume_sharding` so that no device ever holds all of it.
      geometry: the scan.
      mesh: the devices (:func:`jaxmedrf.parallel.make_mesh`).
      shard: ``"volume"``: z-slabs per device, partial line integrals summed (``psum``);
        ``"rays"``: volume replicated, each chunk's rays split (:func:`jaxmedrf.project`).
      method, step, chunk_size: as :func:`jaxmedrf.project` (``"volume"``: Siddon only).

    Returns:
      Projections ``(n_views, nv, nu)``, dimensionless, replicated over the mesh.

    Raises:
      ValueError: an unknown ``shard``, trilinear with ``shard="volume"``, a wrong volume shape.
    """
    check_method(method, step)
    _check_mode(shard, method, mesh)
    geometry.check_volume(volume)
    if shard == "rays":
        return project(volume, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh)
    chunk = int(chunk_size or DEFAULT_CHUNK[method])
    if chunk <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    return _project_volume(jnp.asarray(volume), geometry, chunk_size=chunk, mesh=mesh)


def backproject_sharded(
    projections: Float[ArrayLike, "views nv nu"],
    geometry: Geometry,
    *,
    mesh: Mesh,
    shard: str = "volume",
    method: str = "siddon",
    step: float = 0.5,
    chunk_size: int | None = None,
    dtype=jnp.float32,
) -> Float[Array, "nx ny nz"]:
    """The exact adjoint of :func:`project_sharded` (same arguments), shape ``n_voxel``.

    With ``shard="volume"`` the result is sharded along z (when ``nz`` divides over the mesh;
    otherwise the padded planes are cropped and the compiler chooses the layout).
    """
    check_method(method, step)
    _check_mode(shard, method, mesh)
    geometry.check_projections(projections)
    if shard == "rays":
        return backproject(projections, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh,
                           dtype=dtype)
    zeros = jnp.zeros(geometry.n_voxel, dtype)
    fn = lambda v: project_sharded(v, geometry, mesh=mesh, method=method, chunk_size=chunk_size)  # noqa: E731
    _, vjp = jax.vjp(fn, zeros)
    return vjp(jnp.asarray(projections, dtype))[0]
