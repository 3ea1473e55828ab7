"""The XLA projector: chunks of rays under ``lax.map`` (rematerialised), optionally sharded.

Conventions and memory figures: :mod:`jaxmedrf.projectors`; the per-ray integrals:
:mod:`jaxmedrf.projectors.siddon`, :mod:`jaxmedrf.projectors.trilinear`,
:mod:`jaxmedrf.projectors.joseph`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf.chunking import chunked_map
from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.parallel import constrain
from jaxmedrf.projectors.joseph import joseph_integrals
from jaxmedrf.projectors.siddon import siddon_integrals
from jaxmedrf.projectors.trilinear import n_samples_for_step, trilinear_integrals
from jaxmedrf.rays import pixel_rays

__all__ = ["DEFAULT_CHUNK", "METHODS", "check_method", "project_rays", "project_xla"]

METHODS = ("siddon", "trilinear", "joseph")
DEFAULT_CHUNK = {"siddon": 1 << 14, "trilinear": 1 << 15, "joseph": 1 << 18}


def check_method(method: str, step: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number of voxels, got {step!r}")


def project_rays(volume, rays, geometry: Geometry, *, method: str = "siddon", step: float = 0.5):
    """Line integrals of ``volume`` along a flat batch of ``(R, 3)`` rays of ``geometry``'s grid."""
    check_method(method, step)
    lo, _ = volume_box(geometry)
    d = jnp.asarray(geometry.d_voxel)
    if method == "siddon":
        return siddon_integrals(volume, rays, lo, d)
    if method == "joseph":
        return joseph_integrals(volume, rays, lo, d)
    return trilinear_integrals(volume, rays, lo, d, n_samples=n_samples_for_step(geometry.n_voxel, step))


@functools.partial(jax.jit, static_argnames=("method", "step", "chunk_size", "mesh"))
def _project(volume, geometry, *, method, step, chunk_size, mesh):
    n_views, nv, nu = geometry.projection_shape

    def body(idx):
        view, rem = idx // (nv * nu), idx % (nv * nu)
        rays = pixel_rays(geometry, view, rem // nu, rem % nu)
        return project_rays(volume, rays, geometry, method=method, step=step)

    out = chunked_map(body, n_views * nv * nu, chunk_size, remat=True, multiple_of=mesh.size if mesh else 1,
                      constrain=None if mesh is None else lambda ids: constrain(ids, mesh, axis=1))
    return out.reshape(n_views, nv, nu)


def project_xla(
    volume: Float[ArrayLike, "nx ny nz"],
    geometry: Geometry,
    *,
    method: str = "siddon",
    step: float = 0.5,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> Float[Array, "views nv nu"]:
    """:func:`jaxmedrf.project` with ``implementation="xla"`` (same arguments)."""
    check_method(method, step)
    geometry.check_volume(volume)
    chunk = int(chunk_size or DEFAULT_CHUNK[method])
    if chunk <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    return _project(jnp.asarray(volume), geometry, method=method, step=float(step), chunk_size=chunk, mesh=mesh)
