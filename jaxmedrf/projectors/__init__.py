"""Differentiable X-ray projectors and their exact adjoints.

``project(volume, geometry)`` returns the line integrals of μ (mm⁻¹) for every detector pixel
of every view, shape ``(n_views, nv, nu)`` (dimensionless). Three interchangeable methods:

* ``"siddon"``: exact intersection lengths with the piecewise-constant voxels
  (:mod:`jaxmedrf.projectors.siddon`).
* ``"trilinear"``: ray marching through the trilinearly interpolated volume with a step of
  ``step`` voxels (:mod:`jaxmedrf.projectors.trilinear`).
* ``"joseph"``: one bilinear read per voxel plane along each ray's dominant axis (Joseph
  1982; :mod:`jaxmedrf.projectors.joseph`), with a hand-written exact adjoint: the fast pair on
  a CPU.

Both are differentiable in the volume and in every real field of the geometry (angles,
distances, offsets, per-view pose) and work under ``jit`` and ``vmap``. Rays are processed in
chunks of ``chunk_size`` by ``lax.map`` with the chunk body rematerialised
(``jax.checkpoint``), so memory for the forward pass, its gradient and the backprojection is
bounded by one chunk plus the volume and the projections, whatever the number of views.
``backproject`` is the exact adjoint (the transpose of the linear map ``project(·, geometry)``,
obtained by ``jax.vjp``), so ``<A x, y> = <x, Aᵀ y>`` to rounding.

``implementation="pallas"`` runs either method as one fused Pallas kernel on GPU
(:mod:`jaxmedrf.projectors.pallas` over :mod:`jaxmedrf.kernels.projector`: same values and gradients, float32 accumulation, half
volumes accepted); elsewhere, and with a mesh, it warns and runs the XLA code.

With ``mesh`` the rays of each chunk are sharded over the mesh's devices (``NamedSharding``)
while the volume is replicated: the compiler partitions the work and sums the adjoint.

``benchmarks/projector.py`` measures time and peak device memory (figures in the README).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf.geometry import Geometry
from jaxmedrf.projectors.xla import DEFAULT_CHUNK, METHODS, check_method, project_rays, project_xla  # noqa: F401

__all__ = ["METHODS", "auto_method", "backproject", "project", "project_rays", "project_xla"]

IMPLEMENTATIONS = ("xla", "pallas")


def auto_method(method: str, *, otherwise: str, mesh: Mesh | None = None) -> str:
    """``method`` with ``"auto"`` resolved: Joseph's projector on a single CPU (its plane-by-plane
    reads stay in cache: a CGLS iteration 2.85 s against Siddon's 119 s there, ``benchmarks/cpu_baselines.py``),
    ``otherwise`` on an accelerator or a device mesh (where the fused kernels and the z-slab pair
    are Siddon or trilinear)."""
    if method != "auto":
        return method
    return "joseph" if mesh is None and jax.default_backend() == "cpu" else otherwise


def project(
    volume: Float[ArrayLike, "nx ny nz"],
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
    check_method(method, step)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "pallas":
        from jaxmedrf.projectors.pallas import project_pallas  # lazy: loads Pallas

        return project_pallas(volume, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh)
    return project_xla(volume, geometry, method=method, step=step, chunk_size=chunk_size, mesh=mesh)


def backproject(
    projections: Float[ArrayLike, "views nv nu"],
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
