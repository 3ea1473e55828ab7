"""Differentiable X-ray projectors and their exact adjoints.

``project(volume, geometry)`` returns the line integrals of μ (mm⁻¹) for every detector pixel
of every view, shape ``(n_views, nv, nu)`` (dimensionless). Two interchangeable methods:

* ``"siddon"``: exact intersection lengths with the piecewise-constant voxels
  (:mod:`jaxmedrf.projectors.siddon`).
* ``"trilinear"``: ray marching through the trilinearly interpolated volume with a step of
  ``step`` voxels (:mod:`jaxmedrf.projectors.trilinear`).

Both are differentiable in the volume and in every real field of the geometry (angles,
distances, offsets, per-view pose) and work under ``jit`` and ``vmap``. Rays are processed in
chunks of ``chunk_size`` by ``lax.map`` with the chunk body rematerialised
(``jax.checkpoint``), so memory for the forward pass, its gradient and the backprojection is
bounded by one chunk plus the volume and the projections, whatever the number of views.
``backproject`` is the exact adjoint (the transpose of the linear map ``project(·, geometry)``,
obtained by ``jax.vjp``), so ``<A x, y> = <x, Aᵀ y>`` to rounding.

``implementation="pallas"`` runs either method as one fused Pallas kernel on GPU
(:mod:`jaxmedrf.kernels.projector`: same values and gradients, float32 accumulation, half
volumes accepted); elsewhere, and with a mesh, it warns and runs the XLA code.

With ``mesh`` the rays of each chunk are sharded over the mesh's devices (``NamedSharding``)
while the volume is replicated: the compiler partitions the work and sums the adjoint.

Peak device memory, measured by ``benchmarks/projector.py`` on an H100 (JAX 0.11.2,
``benchmarks/results/projector_nvidia-h100-80gb-hbm3_2026-11-25.json``), projecting a 256³
float32 volume to 360 views of 256²: 0.36 GB with Siddon (chunks of 16384 rays) and 1.30 GB
with trilinear (chunks of 32768 rays), volume and projections included.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, Float

from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.parallel import constrain
from jaxmedrf.projectors.siddon import siddon_integrals
from jaxmedrf.projectors.trilinear import n_samples_for_step, trilinear_integrals
from jaxmedrf.rays import pixel_rays

__all__ = ["METHODS", "backproject", "project", "project_rays"]

METHODS = ("siddon", "trilinear")
IMPLEMENTATIONS = ("xla", "pallas")
DEFAULT_CHUNK = {"siddon": 1 << 14, "trilinear": 1 << 15}


def _check(method: str, step: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number of voxels, got {step!r}")


def project_rays(volume, rays, geometry: Geometry, *, method: str = "siddon", step: float = 0.5):
    """Line integrals of ``volume`` along a flat batch of ``(R, 3)`` rays of ``geometry``'s grid."""
    _check(method, step)
    lo, _ = volume_box(geometry)
    d = jnp.asarray(geometry.d_voxel)
    if method == "siddon":
        return siddon_integrals(volume, rays, lo, d)
    return trilinear_integrals(volume, rays, lo, d, n_samples=n_samples_for_step(geometry.n_voxel, step))


@functools.partial(jax.jit, static_argnames=("method", "step", "chunk_size", "mesh"))
def _project(volume, geometry, *, method, step, chunk_size, mesh):
    n_views, nv, nu = geometry.projection_shape
    total = n_views * nv * nu
    chunk = min(chunk_size, total)
    if mesh is not None:
        chunk = -(-chunk // mesh.size) * mesh.size
    n_chunks = -(-total // chunk)
    ids = jnp.minimum(jnp.arange(n_chunks * chunk, dtype=jnp.int32), total - 1).reshape(n_chunks, chunk)
    if mesh is not None:
        ids = constrain(ids, mesh, axis=1)

    def body(idx):
        view, rem = idx // (nv * nu), idx % (nv * nu)
        rays = pixel_rays(geometry, view, rem // nu, rem % nu)
        return project_rays(volume, rays, geometry, method=method, step=step)

    out = jax.lax.map(jax.checkpoint(body), ids)
    return out.reshape(-1)[:total].reshape(n_views, nv, nu)


def project(
    volume: Float[Array, "nx ny nz"],
    geometry: Geometry,
    *,
    method: str = "siddon",
    step: float = 0.5,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    implementation: str = "xla",
) -> Float[Array, "views nv nu"]:
    """Forward projection: line integrals of μ through ``volume`` for every pixel.

    Args:
      volume: μ in mm⁻¹, shape ``geometry.n_voxel``, indexed (x, y, z).
      geometry: the scan.
      method: ``"siddon"`` (exact, piecewise-constant voxels) or ``"trilinear"``.
      step: trilinear sampling step in voxels (ignored by Siddon).
      chunk_size: rays per chunk (bounds memory); default 16384 (Siddon), 32768 (trilinear).
      mesh: optional device mesh (:func:`jaxmedrf.parallel.make_mesh`); rays of each chunk
        are sharded over all its axes.
      implementation: ``"xla"`` or ``"pallas"`` (the fused GPU kernel, float32 output).

    Returns:
      Projections ``(n_views, nv, nu)``, dimensionless, in ``volume``'s dtype.

    Raises:
      ValueError: a volume whose shape is not ``n_voxel``, an unknown method or a bad step.
    """
    _check(method, step)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "pallas":
        from jaxmedrf.kernels.projector import project_pallas

        return project_pallas(volume, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh)
    geometry.check_volume(volume)
    chunk = int(chunk_size or DEFAULT_CHUNK[method])
    if chunk <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    return _project(jnp.asarray(volume), geometry, method=method, step=float(step), chunk_size=chunk, mesh=mesh)


def backproject(
    projections: Float[Array, "views nv nu"],
    geometry: Geometry,
    *,
    method: str = "siddon",
    step: float = 0.5,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    dtype=jnp.float32,
    implementation: str = "xla",
) -> Float[Array, "nx ny nz"]:
    """The exact adjoint ``Aᵀ y`` of :func:`project` (same arguments), shape ``n_voxel``."""
    geometry.check_projections(projections)
    projections = jnp.asarray(projections, dtype)
    zeros = jnp.zeros(geometry.n_voxel, dtype)
    fn = lambda v: project(v, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh,  # noqa: E731
                           implementation=implementation)
    _, vjp = jax.vjp(fn, zeros)
    return vjp(projections)[0]
