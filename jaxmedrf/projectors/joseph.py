r"""Joseph's projector: line integrals through the bilinearly interpolated slices of a volume.

Joseph ("An improved algorithm for reprojecting rays through pixel images", IEEE Trans. Med.
Imaging 1(3), 1982) marches each ray one voxel plane at a time along its *dominant* axis ``a``
(the largest ``|r_a| / d_a`` of its direction ``r``, in voxels): at the plane through the voxel
centres ``c_i = lo_a + (i + ½) d_a`` it reads the slice ``i`` of the volume by bilinear
interpolation between voxel centres (zero outside the volume) and weights the read by the ray
length between neighbouring planes, ``d_a |r| / |r_a|`` (mm):

.. math::  p = \sum_{i=0}^{n_a - 1} \frac{d_a \lVert r\rVert}{|r_a|}\;
           \mu_i\bigl(o + t_i r\bigr), \qquad t_i = \frac{c_i - o_a}{r_a},

with the sample kept when ``0 ≤ t_i ≤ 1`` (the ray's segment: source to pixel in cone beam).
It is exact for a volume constant along the dominant axis, like TIGRE's interpolated projector
at one sample per voxel, and costs 4 reads per plane instead of trilinear marching's 8 per
half-voxel step.

Why it exists: on a CPU the plane-by-plane loop reads one 2-D slice at a time, which stays in
cache, so a pass over all rays runs far faster than the Siddon ray marcher (64³, 180 views of 96²,
2 CPU cores: a CGLS iteration, one forward and one adjoint pass, 2.85 s against 119 s with Siddon;
``benchmarks/results/cpu_baselines_v3_cpu_2026-12-04.json`` and ``cpu_baselines_cpu_2026-12-04.json``).
Each ray walks its planes by one multiply-add per plane (:func:`_plane_walk`). Its adjoint is written by
hand (:func:`joseph_integrals`'s ``custom_vjp``): the transpose scatters each plane's reads back
into that one slice, four scatters of the rays' length, which is the exact transpose of the
forward (``<A x, y> = <x, Aᵀ y>`` to rounding, tested); it replaced JAX's own transpose of the
loop, which was slower. Rays are differentiable too (pose gradients), by
JAX's derivative of the forward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxmedrf.rays import Rays

__all__ = ["joseph_integrals"]


def _plane_stack(volume: Array) -> tuple[Array, tuple]:
    """The volume's slices along x, y and z, each zero-padded by one voxel in-plane, flattened
    and concatenated per plane index: shape ``(N, S)``, ``N = max(n)``; and the layout."""
    nx, ny, nz = volume.shape
    n = max(volume.shape)
    parts, layout, off = [], [], 0
    for axis, (b, c) in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):
        s = jnp.moveaxis(volume, axis, 0)  # (n_a, n_b, n_c)
        s = jnp.pad(s, ((0, n - volume.shape[axis]), (1, 1), (1, 1)))
        parts.append(s.reshape(n, -1))
        layout.append((off, volume.shape[b] + 2, volume.shape[c] + 2))
        off += (volume.shape[b] + 2) * (volume.shape[c] + 2)
    return jnp.concatenate(parts, axis=1), tuple(layout)


def _unstack(g: Array, shape: tuple[int, int, int], layout: tuple) -> Array:
    """Transpose of :func:`_plane_stack`: sums the three slice stacks back into a volume."""
    out = jnp.zeros(shape, g.dtype)
    for axis, (off, wb, wc) in enumerate(layout):
        s = g[: shape[axis], off: off + wb * wc].reshape(shape[axis], wb, wc)[:, 1:-1, 1:-1]
        out = out + jnp.moveaxis(s, 0, axis)
    return out


def _ray_setup(rays: Rays, shape, lo, d_voxel, layout):
    """Per ray: dominant axis and the constants of its plane walk."""
    o, r = rays.origins, rays.directions
    n = jnp.asarray(shape, o.dtype)
    a = jnp.argmax(jnp.abs(r) / d_voxel, axis=-1)  # dominant axis, in voxels
    b = jnp.where(a == 0, 1, 0)
    c = jnp.where(a == 2, 1, 2)
    take = lambda x, k: jnp.take_along_axis(x, k[:, None], axis=-1)[:, 0]  # noqa: E731
    ra = take(r, a)
    safe_ra = jnp.where(ra == 0, 1.0, ra)
    offs = jnp.asarray([lay[0] for lay in layout], jnp.int32)[a]
    width = jnp.asarray([lay[2] for lay in layout], jnp.int32)[a]
    return dict(
        a=a, o_a=take(o, a), ra=safe_ra, o_b=take(o, b), r_b=take(r, b), o_c=take(o, c), r_c=take(r, c),
        lo_a=lo[a], d_a=d_voxel[a], lo_b=lo[b], d_b=d_voxel[b], lo_c=lo[c], d_c=d_voxel[c],
        n_a=n[a], n_b=n[b], n_c=n[c], offs=offs, width=width,
        w=jnp.where(ra == 0, 0.0, d_voxel[a] * jnp.linalg.norm(r, axis=-1) / jnp.abs(safe_ra)),
    )


def _plane_walk(k):
    """The affine walk of :func:`_plane_reads` per ray: ``t``, and the padded in-plane indices
    ``fb``, ``fc``, at plane ``i`` are ``x0 + i · dx`` (one multiply-add a plane instead of the
    divisions of the plane equation)."""
    inv = 1.0 / k["ra"]
    t0 = (k["lo_a"] + 0.5 * k["d_a"] - k["o_a"]) * inv
    dt = k["d_a"] * inv
    fb0 = (k["o_b"] + t0 * k["r_b"] - k["lo_b"]) / k["d_b"] + 0.5
    fc0 = (k["o_c"] + t0 * k["r_c"] - k["lo_c"]) / k["d_c"] + 0.5
    return dict(k, t0=t0, dt=dt, fb0=fb0, dfb=dt * k["r_b"] / k["d_b"], fc0=fc0, dfc=dt * k["r_c"] / k["d_c"])


def _plane_reads(k, i):
    """Flat indices of the 4 neighbours and their bilinear weights (0 where not read) of every
    ray's sample on plane ``i``."""
    t = k["t0"] + i * k["dt"]  # the plane through the voxel centres c_i (:func:`_plane_walk`)
    fb = k["fb0"] + i * k["dfb"]  # padded index of the centre below
    fc = k["fc0"] + i * k["dfc"]
    ok = (t >= 0) & (t <= 1) & (i < k["n_a"]) & (fb >= 0) & (fb < k["n_b"] + 1) & (fc >= 0) & (fc < k["n_c"] + 1)
    jb = jnp.clip(jnp.floor(fb), 0, k["n_b"])
    jc = jnp.clip(jnp.floor(fc), 0, k["n_c"])
    wb, wc = fb - jb, fc - jc
    w = jnp.where(ok, k["w"], 0.0)
    base = k["offs"] + jb.astype(jnp.int32) * k["width"] + jc.astype(jnp.int32)
    idx = (base, base + 1, base + k["width"], base + k["width"] + 1)
    wts = (w * (1 - wb) * (1 - wc), w * (1 - wb) * wc, w * wb * (1 - wc), w * wb * wc)
    return idx, wts


def _forward(volume, rays, lo, d_voxel):
    stack, layout = _plane_stack(volume)
    k = _plane_walk(_ray_setup(rays, volume.shape, lo, d_voxel, layout))

    def body(acc, xs):
        i, plane = xs
        idx, wts = _plane_reads(k, i.astype(volume.dtype))
        return acc + sum(jnp.take(plane, j, mode="clip") * w for j, w in zip(idx, wts)), None

    acc0 = jnp.zeros(rays.origins.shape[:1], volume.dtype)
    out, _ = jax.lax.scan(body, acc0, (jnp.arange(stack.shape[0]), stack))
    return out


@jax.custom_vjp
def _joseph(volume, rays, lo, d_voxel):
    return _forward(volume, rays, lo, d_voxel)


def _joseph_fwd(volume, rays, lo, d_voxel):
    return _forward(volume, rays, lo, d_voxel), (volume, rays, lo, d_voxel)


def _joseph_bwd(res, g):
    volume, rays, lo, d_voxel = res
    stack, layout = _plane_stack(volume)
    k = _plane_walk(_ray_setup(rays, volume.shape, lo, d_voxel, layout))
    size = stack.shape[1]

    def body(_, i):  # the transpose of one plane's reads: a scatter into that slice only
        idx, wts = _plane_reads(k, i.astype(volume.dtype))
        plane = jnp.zeros(size, g.dtype)
        for j, w in zip(idx, wts):  # four scatters: cheaper on a CPU than one of four times the length
            plane = plane.at[j].add(g * w, mode="drop")
        return None, plane

    _, planes = jax.lax.scan(body, None, jnp.arange(stack.shape[0]))
    g_volume = _unstack(planes, volume.shape, layout)
    # rays, box corner and voxel size: JAX's derivative of the forward (dropped by XLA when unused)
    _, vjp = jax.vjp(lambda r, a, b: _forward(volume, r, a, b), rays, lo, d_voxel)
    return (g_volume, *vjp(g))


_joseph.defvjp(_joseph_fwd, _joseph_bwd)


def joseph_integrals(
    volume: Float[Array, "nx ny nz"],
    rays: Rays,
    lo: Float[Array, "3"],
    d_voxel: Float[Array, "3"],
) -> Float[Array, " rays"]:
    """Line integrals of ``volume`` (μ, mm⁻¹) along ``(R, 3)`` rays by Joseph's method.

    Args:
      volume: μ on the voxel grid, indexed (x, y, z).
      rays: origins and directions, mm; the segment ``origin + t · direction``, ``t ∈ [0, 1]``.
      lo: lower corner of the volume box, mm.
      d_voxel: voxel size, mm.

    Returns:
      ``(R,)`` dimensionless line integrals in ``volume``'s dtype.
    """
    dtype = volume.dtype
    rays = Rays(rays.origins.astype(dtype), rays.directions.astype(dtype))
    return _joseph(volume, rays, jnp.asarray(lo, dtype), jnp.asarray(d_voxel, dtype))

