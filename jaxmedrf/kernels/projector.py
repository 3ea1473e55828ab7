"""Fused ray-marching trilinear projector: a Pallas kernel (Triton lowering on GPU).

One program marches a tile of ``block_rays`` rays (a small 2-D patch of the detector, so
neighbouring rays read neighbouring voxels from cache) through the volume: ``n_samples``
bin midpoints between each ray's box entry and exit, eight gathers per sample from the
flat volume, trilinear weights and the running sum kept in registers (float32 whatever
the storage dtype). The XLA projector (:func:`jaxmedrf.projectors.trilinear.trilinear_integrals`)
is the reference: same samples, same interpolant, same quadrature

.. math:: p = \\lVert d \\rVert \\, \\frac{t_f - t_n}{N} \\sum_{i=0}^{N-1}
   \\mu\\big(o + (t_n + \\tfrac{i + 1/2}{N} (t_f - t_n))\\, d\\big),

with ``(t_n, t_f)`` from :func:`jaxmedrf.rays.box_intersect`, computed (like the ray
generation) in XLA so that the pose gradient flows through it by ordinary autodiff.

The kernel itself maps ``(volume, start, segment)`` (in voxel units, per ray) to the sum
``S = Σ_i μ(start + a_i segment)``, ``a_i = (i + ½)/N``, under :func:`jax.custom_vjp`:

* ``∂S/∂start = Σ_i ∇μ_i`` and ``∂S/∂segment = Σ_i a_i ∇μ_i``: the spatial gradient of the
  trilinear interpolant, accumulated per ray in the *forward* pass when the rays are being
  differentiated (the eight gathers serve value and gradient), so a pose gradient costs one
  march.
* ``∂S/∂volume``: the exact adjoint, a second march that adds ``weight × cotangent`` with
  relaxed atomic adds (:mod:`jaxmedrf.kernels._atomics`; run only when the volume is being
  differentiated): the four (y, z) corners of each x face in one 16-byte add into a float32
  buffer of four columns per voxel, summed onto the voxels afterwards (the buffer is four times
  the volume; ``adjoint="corners"`` adds into the volume, eight adds a sample). By default
  (``adjoint="runs"``) a ray's consecutive samples in one cell are summed in registers first, so
  the two adds are issued once per cell the ray crosses rather than once per sample
  (``"quads"``: once per sample).

Sample placement, clamping and the zero outside the box follow
:func:`jaxmedrf.projectors.trilinear.interpolate_trilinear`. On a machine without GPU the
kernel runs in Pallas interpret mode when asked (``interpret=True``, for tests); otherwise,
and for unsupported inputs (float64 volume, volumes of 2³¹ voxels or more, a device mesh),
the XLA projector runs instead, with one warning.

A Siddon kernel (:func:`siddon_integrals_pallas`, an Amanatides–Woo voxel walk with the same
custom-VJP structure: pose gradient in the forward walk, one atomic per segment for the
volume gradient) sits beside it.

The trilinear forward is bound by the gathers (eight scattered loads per sample: L1
transactions rather than DRAM bandwidth, so bfloat16 storage alone changes little and halving
the loads with ``pack="z"`` helps most); its volume gradient by the float32 atomic adds, which
``adjoint="quads"`` issues four corners at a time (:func:`_quad_scatter_kernel`) and ``"runs"`` (the
default) once per cell crossed (:func:`_quad_scatter_kernel` with ``runs``: 16–21 % faster than ``"quads"``
on an H200, ``projector_kernels_nvidia-h200_2026-12-04_runs.json``).
``benchmarks/projector.py --kernels`` times every layout against the XLA projector, and
``benchmarks/kernel_asm.py`` reads the loads and atomics off the sm_90 SASS; the figures are in
``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jaxtyping import Array, Float

from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.kernels._atomics import scatter_add
from jaxmedrf.rays import Rays, box_intersect, pixel_rays

__all__ = ["ADJOINTS", "KERNEL_DTYPES", "check_adjoint", "check_block", "check_pack", "default_tile", "project_kernel",
           "siddon_kernel", "trilinear_kernel", "unsupported"]

KERNEL_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
_ROWS = 8  # ray table rows: start (3), segment (3), unused (2); a power of two for Triton
# Measured best on an H100 at 256³ → 8 × 256², 512 samples (benchmarks/results/projector_kernels_*):
# 32 rays (a 4 × 8 detector tile, lanes along rows) per one-warp program, two samples per iteration.
DEFAULT_BLOCK = 32
DEFAULT_WARPS = 1
DEFAULT_CHUNK = 1 << 19  # rays per kernel launch in project_pallas (8 views of 256²)
DEFAULT_ADJOINT = "runs"  # the trilinear volume gradient: two 16-byte atomic adds a cell crossed


# --------------------------------------------------------------------------- the kernels
def _axis(g, n: int):
    """Per axis: inside flag, lower corner, fraction and d(fraction)/dg ≠ 0 (as in XLA's clip)."""
    inside = (g >= 0.0) & (g <= float(n))
    x = g - 0.5
    c = jnp.clip(x, 0.0, float(n - 1))
    i0 = jnp.clip(jnp.floor(c), 0.0, float(max(n - 2, 0)))
    return inside, i0.astype(jnp.int32), c - i0, (x > 0.0) & (x < float(n - 1))


PACKS = (None, "z", "yz")


def _pack_z(volume):
    """16-bit volume → uint32 words holding voxel (x, y, z) low and (x, y, z+1) high: one
    gather then reads both z corners of a cell."""
    bits = jax.lax.bitcast_convert_type(volume, jnp.uint16).astype(jnp.uint32)
    nxt = jnp.concatenate([bits[..., 1:], bits[..., -1:]], axis=-1)
    return (bits | (nxt << jnp.uint32(16))).reshape(-1)


def _unpack_z(word, dtype):
    if dtype == jnp.bfloat16:  # bfloat16 is the high half of a float32
        lo = jax.lax.bitcast_convert_type(word << jnp.uint32(16), jnp.float32)
        return lo, jax.lax.bitcast_convert_type(word & jnp.uint32(0xFFFF0000), jnp.float32)
    half = lambda w: jax.lax.bitcast_convert_type(w.astype(jnp.uint16), jnp.float16).astype(jnp.float32)  # noqa: E731
    return half(word & jnp.uint32(0xFFFF)), half(word >> jnp.uint32(16))


def _pack_columns(volume, pack: str):
    """Flat ``(N·K,)`` copy holding, per voxel, its ``K`` cell corners in the storage dtype:
    ``"z"``: (z, z+1); ``"yz"``: (y z, y z+1, y+1 z, y+1 z+1) (edge voxels repeated), so that
    one ``K``-wide load (8 or 16 bytes) replaces ``K`` scattered ones."""
    nxt = lambda v, axis: jnp.concatenate(  # noqa: E731
        [jax.lax.slice_in_dim(v, 1, None, axis=axis), jax.lax.slice_in_dim(v, -1, None, axis=axis)], axis=axis)
    cols = [volume, nxt(volume, 2)]
    if pack == "yz":
        cols += [nxt(c, 1) for c in cols]
    return jnp.stack(cols, axis=-1).reshape(-1)


def _pack_layout(dtype, pack):
    """``(K, bit-packed)``: corners per gathered row, and whether they are 16-bit z-pairs in
    one uint32 word (:func:`_pack_z`) rather than ``K`` values of the storage dtype."""
    if pack is None:
        return 1, False
    if pack == "z" and jnp.dtype(dtype).itemsize == 2:
        return 1, True
    return (2 if pack == "z" else 4), False


def _sample(vol_ref, ray, a, shape, *, need_grad, columns=1, bits=None):
    """μ (and ∇μ in voxel units) at ``start + a · segment`` for a tile of rays.

    ``columns``: corners per gathered row (:func:`_pack_columns`; 1: the plain volume);
    ``bits``: the storage dtype when ``vol_ref`` holds 16-bit z-pairs in words (:func:`_pack_z`).
    Per x corner the y-z bilinear value and its two fraction derivatives are formed, then
    ``μ = c0 + fx (c1 − c0)``."""
    nx, ny, nz = shape
    sx, sy, sz, ex, ey, ez = ray
    ix_in, i0x, fx, kx = _axis(sx + a * ex, nx)
    iy_in, i0y, fy, ky = _axis(sy + a * ey, ny)
    iz_in, i0z, fz, kz = _axis(sz + a * ez, nz)
    inside = ix_in & iy_in & iz_in
    ox, oy, oz = (ny * nz if nx > 1 else 0), (nz if ny > 1 else 0), (1 if nz > 1 else 0)
    base = (i0x * ny + i0y) * nz + i0z
    if columns > 1:  # column k holds corner (dy, dz) = (k >> 1, k & 1)
        k = jnp.arange(columns, dtype=jnp.int32)[None, :]
        hz = (k & 1) == 1
        wz = jnp.where(hz, fz[:, None], 1.0 - fz[:, None])
        sgz = jnp.where(hz, 1.0, -1.0)
        if columns == 4:
            hy = (k & 2) == 2
            wy = jnp.where(hy, fy[:, None], 1.0 - fy[:, None])
            sgy = jnp.where(hy, 1.0, -1.0)

    def along_z(idx):
        """The z-lerp at corner row ``idx`` (flat voxel index) and its d/dfz."""
        if columns == 2:
            pair = vol_ref[(idx * 2)[:, None] + k].astype(jnp.float32)
            return jnp.sum(pair * wz, axis=1), jnp.sum(pair * sgz, axis=1)
        if bits is not None:
            v0, v1 = _unpack_z(vol_ref[idx], bits)
        else:
            v0, v1 = (vol_ref[idx + dz * oz].astype(jnp.float32) for dz in (0, 1))
        return v0 + fz * (v1 - v0), v1 - v0

    c, dcy, dcz = [], [], []  # per x corner: bilinear value in (y, z), d/dfy, d/dfz
    for dx in (0, 1):
        row = base + dx * ox
        if columns == 4:
            quad = vol_ref[(row * 4)[:, None] + k].astype(jnp.float32)
            c.append(jnp.sum(quad * (wy * wz), axis=1))
            dcy.append(jnp.sum(quad * (sgy * wz), axis=1))
            dcz.append(jnp.sum(quad * (wy * sgz), axis=1))
            continue
        (c_0, d_0), (c_1, d_1) = along_z(row), along_z(row + oy)
        c.append(c_0 + fy * (c_1 - c_0))
        dcy.append(c_1 - c_0)
        dcz.append((1.0 - fy) * d_0 + fy * d_1)
    mu = jnp.where(inside, c[0] + fx * (c[1] - c[0]), 0.0)
    if not need_grad:
        return mu, None
    gx = c[1] - c[0]
    gy = (1.0 - fx) * dcy[0] + fx * dcy[1]
    gz = (1.0 - fx) * dcz[0] + fx * dcz[1]
    grad = tuple(jnp.where(inside & kk, gk, 0.0) for gk, kk in ((gx, kx), (gy, ky), (gz, kz)))
    return mu, grad


def _march(body, carry, n_samples: int, unroll: int):
    """``carry = body(i, carry)`` for i in range(n_samples), ``unroll`` samples per iteration."""
    unroll = max(1, min(unroll, n_samples))
    n_main = n_samples // unroll

    def step(j, c):
        for u in range(unroll):
            c = body(j * unroll + u, c)
        return c

    carry = jax.lax.fori_loop(0, n_main, step, carry)
    for i in range(n_main * unroll, n_samples):
        carry = body(i, carry)
    return carry


def _load_rays(ray_ref):
    return tuple(ray_ref[k] for k in range(6))


def _forward_kernel(vol_ref, ray_ref, out_ref, *grad_refs, shape, n_samples, unroll, columns, bits):
    ray = _load_rays(ray_ref)
    need_grad = bool(grad_refs)
    zero = jnp.zeros_like(ray[0])
    inv_n = 1.0 / n_samples

    def body(i, carry):
        a = (jnp.asarray(i, jnp.float32) + 0.5) * inv_n
        mu, g = _sample(vol_ref, ray, a, shape, need_grad=need_grad, columns=columns, bits=bits)
        if not need_grad:
            return (carry[0] + mu,)
        acc, gx, gy, gz, ax, ay, az = carry
        return (acc + mu, gx + g[0], gy + g[1], gz + g[2], ax + a * g[0], ay + a * g[1], az + a * g[2])

    carry = _march(body, (zero,) * (7 if need_grad else 1), n_samples, unroll)
    out_ref[...] = carry[0]
    if need_grad:
        (grad_ref,) = grad_refs
        for k in range(6):
            grad_ref[k] = carry[1 + k]
        grad_ref[6] = zero
        grad_ref[7] = zero


def _cell(ray, a, shape):
    """The sample at ``start + a · segment``: inside the box, its cell's lower corner (flat index)
    and the fractions ``(fx, fy, fz)`` (the clamping of :func:`_axis`)."""
    nx, ny, nz = shape
    sx, sy, sz, ex, ey, ez = ray
    ix_in, i0x, fx, _ = _axis(sx + a * ex, nx)
    iy_in, i0y, fy, _ = _axis(sy + a * ey, ny)
    iz_in, i0z, fz, _ = _axis(sz + a * ez, nz)
    return ix_in & iy_in & iz_in, (i0x * ny + i0y) * nz + i0z, (fx, fy, fz)


def _scatter_kernel(ray_ref, ct_ref, _, gvol_ref, *, shape, n_samples, unroll, interpret):
    """Adjoint: ``gvol[corner] += weight · ct`` for every sample of every ray of the tile."""
    nx, ny, nz = shape
    ray = _load_rays(ray_ref)
    ct = ct_ref[...]
    inv_n = 1.0 / n_samples
    ox, oy, oz = (ny * nz if nx > 1 else 0), (nz if ny > 1 else 0), (1 if nz > 1 else 0)

    def body(i, carry):
        inside, base, (fx, fy, fz) = _cell(ray, (jnp.asarray(i, jnp.float32) + 0.5) * inv_n, shape)
        c = jnp.where(inside, ct, 0.0)
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            cx = c * wx
            for dy, wy in ((0, 1.0 - fy), (1, fy)):
                cxy = cx * wy
                for dz, wz in ((0, 1.0 - fz), (1, fz)):
                    scatter_add(gvol_ref, base + (dx * ox + dy * oy + dz * oz), cxy * wz, inside, interpret)
        return carry

    _march(body, 0, n_samples, unroll)


def _quad_scatter_kernel(ray_ref, ct_ref, _, gbuf_ref, *, shape, n_samples, unroll, interpret, runs=False):
    """Adjoint into a ``(N, 4)`` buffer: row = a cell's lower corner, column ``k`` = its corner
    ``(dy, dz) = (k >> 1, k & 1)``; two 16-byte adds a sample (one per x corner) instead of eight
    4-byte ones. :func:`_sum_quads` folds the columns back onto the voxels.

    ``runs``: a lane's consecutive samples in one cell are summed in registers and the two adds
    issued only when the ray leaves the cell (and once at the end). At ``n_samples`` about twice
    the voxels a ray crosses, most cells hold two or more samples of a ray; the sums are the same."""
    nx, ny, nz = shape
    ray = _load_rays(ray_ref)
    ct = ct_ref[...]
    inv_n = 1.0 / n_samples
    ox = ny * nz if nx > 1 else 0
    k = jnp.arange(4, dtype=jnp.int32)[None, :]
    hy, hz = (k & 2) == 2, (k & 1) == 1

    def quads(i):
        """Sample ``i``: inside, its cell, and the weighted cotangents of the two x faces' corners."""
        inside, base, (fx, fy, fz) = _cell(ray, (jnp.asarray(i, jnp.float32) + 0.5) * inv_n, shape)
        c = jnp.where(inside, ct, 0.0)
        wyz = jnp.where(hy, fy[:, None], 1.0 - fy[:, None]) * jnp.where(hz, fz[:, None], 1.0 - fz[:, None])
        return inside, base, (c * (1.0 - fx))[:, None] * wyz, (c * fx)[:, None] * wyz

    def add(base, q0, q1, mask):
        mask = jnp.broadcast_to(mask[:, None], q0.shape)  # Triton wants the mask in the values' shape
        scatter_add(gbuf_ref, (base * 4)[:, None] + k, q0, mask, interpret)
        scatter_add(gbuf_ref, ((base + ox) * 4)[:, None] + k, q1, mask, interpret)

    if not runs:
        def body(i, carry):
            inside, base, q0, q1 = quads(i)
            add(base, q0, q1, inside)
            return carry

        _march(body, 0, n_samples, unroll)
        return

    def run_body(i, carry):
        cur, a0, a1 = carry  # the cell held (-1: none) and its sums
        inside, base, q0, q1 = quads(i)
        base = jnp.where(inside, base, cur)  # outside: adds nothing, the cell held stays
        changed = base != cur
        add(cur, a0, a1, changed & (cur >= 0))
        keep = ~changed[:, None]
        return base, jnp.where(keep, a0 + q0, q0), jnp.where(keep, a1 + q1, q1)

    zeros = jnp.zeros((ct.shape[0], 4), jnp.float32)
    cur, a0, a1 = _march(run_body, (jnp.full(ct.shape, -1, jnp.int32), zeros, zeros), n_samples, unroll)
    add(cur, a0, a1, cur >= 0)


def _sum_quads(buf, shape):
    """Voxel sums of a :func:`_quad_scatter_kernel` buffer: ``g[x, y, z] = b[x, y, z, 0] +
    b[x, y, z−1, 1] + b[x, y−1, z, 2] + b[x, y−1, z−1, 3]`` (a corner past the edge of a
    one-voxel axis has weight 0, so nothing is lost at the border)."""
    b = buf.reshape(*shape, 4)
    down = lambda v, axis: jnp.concatenate(  # noqa: E731 - v shifted by one towards +axis, zero first
        [jnp.zeros_like(jax.lax.slice_in_dim(v, 0, 1, axis=axis)), jax.lax.slice_in_dim(v, 0, -1, axis=axis)],
        axis=axis)
    return (b[..., 0] + down(b[..., 1], 2) + down(b[..., 2] + down(b[..., 3], 2), 1)).reshape(-1)


ADJOINTS = ("corners", "quads", "runs")


def _build_op(fwd_kernel, adj_kernel, *, shape, dtype, block, num_warps, interpret, name, prepare=None,
              n_vox_in=None, adj_width=1):
    """The custom-VJP op ``(flat volume, (8, R) ray table) → (R,) sums`` from a forward
    kernel (optionally writing the per-ray gradient table) and an atomic adjoint kernel.
    ``prepare`` maps the flat volume to the forward kernel's input (``n_vox_in`` entries);
    ``adj_width``: 1, the adjoint adds into the volume, or 4, into :func:`_quad_scatter_kernel`'s buffer."""
    n_vox = math.prod(shape)
    params = None if interpret else plgpu.CompilerParams(num_warps=num_warps, num_stages=1)
    adj_spec = pl.BlockSpec((n_vox * adj_width,), lambda i: (0,))
    in_spec = pl.BlockSpec((n_vox_in or n_vox,), lambda i: (0,))
    ray_spec = pl.BlockSpec((_ROWS, block), lambda i: (0, i))
    row_spec = pl.BlockSpec((block,), lambda i: (i,))

    def forward(vol, table, need_grad):
        r = table.shape[1]
        out_shape = [jax.ShapeDtypeStruct((r,), jnp.float32)]
        out_specs = [row_spec]
        if need_grad:
            out_shape.append(jax.ShapeDtypeStruct((_ROWS, r), jnp.float32))
            out_specs.append(ray_spec)
        res = pl.pallas_call(
            fwd_kernel, grid=(r // block,), in_specs=[in_spec, ray_spec], out_specs=out_specs, out_shape=out_shape,
            interpret=interpret, compiler_params=params, name=f"{name}_grad" if need_grad else name,
        )(vol if prepare is None else prepare(vol), table)
        return res if need_grad else (res[0], None)

    def scatter(table, ct):
        r = table.shape[1]
        out = pl.pallas_call(
            adj_kernel, grid=(r // block,), in_specs=[ray_spec, row_spec, adj_spec], out_specs=adj_spec,
            out_shape=jax.ShapeDtypeStruct((n_vox * adj_width,), jnp.float32), input_output_aliases={2: 0},
            interpret=interpret, compiler_params=params, name=f"{name}_adjoint",
        )(table, ct, jnp.zeros((n_vox * adj_width,), jnp.float32))
        return out if adj_width == 1 else _sum_quads(out, shape)

    return _custom_vjp_op(forward, scatter, dtype)


@functools.lru_cache(maxsize=None)
def _fused_op(shape, dtype, n_samples, block, unroll, num_warps, interpret, pack, adjoint):
    """The trilinear march for one configuration."""
    columns, bit_packed = _pack_layout(dtype, pack)
    quads = adjoint in ("quads", "runs") and 4 * math.prod(shape) < 2**31  # else 32-bit buffer offsets would overflow
    kw = dict(shape=shape, n_samples=n_samples, unroll=unroll)
    if pack is None:
        prepare = None
    elif bit_packed:
        prepare = lambda v: _pack_z(v.reshape(shape))  # noqa: E731
    else:
        prepare = lambda v: _pack_columns(v.reshape(shape), pack)  # noqa: E731
    return _build_op(
        functools.partial(_forward_kernel, columns=columns, bits=dtype if bit_packed else None, **kw),
        functools.partial(_quad_scatter_kernel, runs=adjoint == "runs", interpret=interpret, **kw) if quads
        else functools.partial(_scatter_kernel, interpret=interpret, **kw),
        shape=shape, dtype=dtype, block=block, num_warps=num_warps, interpret=interpret, name="trilinear_march",
        prepare=prepare, n_vox_in=math.prod(shape) * columns, adj_width=4 if quads else 1)


# --------------------------------------------------------------------------- Siddon
_FAR = 2.0  # a crossing parameter beyond any segment (t ≤ 1)


def _siddon_setup(ray, shape):
    """Per axis: step direction, first plane beyond t_near, and whether the ray moves."""
    ox, oy, oz, dx, dy, dz, tn, tf = ray
    out = []
    for o, d in ((ox, dx), (oy, dy), (oz, dz)):
        p = o + tn * d
        moving = jnp.abs(d) > 1e-30
        k = jnp.where(d > 0, jnp.floor(p) + 1.0, jnp.ceil(p) - 1.0)
        out.append((jnp.where(d > 0, 1.0, -1.0), k, moving, o, jnp.where(moving, d, 1.0)))
    return out


def _siddon_step(ray, axes, carry, shape):
    """One segment of the voxel walk: from ``t`` to the next plane crossing (or ``t_far``).

    Returns the new carry, the segment length (in t), the voxel's flat index and μ, the
    axis whose plane ends the segment (0-2, or 3 for t_far) and the segment's ends."""
    nx, ny, nz = shape
    ox, oy, oz, dx, dy, dz, tn, tf = ray
    t, kx, ky, kz, start_axis = carry
    ks = (kx, ky, kz)
    alphas = [jnp.where(m, (k - o) / d, _FAR) for (_, _, m, o, d), k in zip(axes, ks)]
    ax = jnp.where(alphas[1] < alphas[0], 1, 0)
    a_min = jnp.minimum(alphas[0], alphas[1])
    ax = jnp.where(alphas[2] < a_min, 2, ax)
    a_min = jnp.minimum(a_min, alphas[2])
    active = t < tf
    at_far = a_min >= tf
    end = jnp.where(active, jnp.minimum(a_min, tf), t)
    seg = end - t
    mid = 0.5 * (t + end)
    idx = []
    for (o, d), n in zip(((ox, dx), (oy, dy), (oz, dz)), shape):
        idx.append(jnp.clip(jnp.floor(o + mid * d), 0.0, float(n - 1)).astype(jnp.int32))
    flat = (idx[0] * ny + idx[1]) * nz + idx[2]
    end_axis = jnp.where(at_far, 3, ax)
    new_ks = tuple(jnp.where(active & ~at_far & (ax == a), k + step, k)
                   for a, ((step, *_), k) in enumerate(zip(axes, ks)))
    new_carry = (end, *new_ks, jnp.where(active, end_axis, start_axis))
    return new_carry, seg, flat, active, start_axis, end_axis, t, end


def _siddon_forward_kernel(vol_ref, ray_ref, out_ref, *grad_refs, shape, n_steps):
    ray = tuple(ray_ref[k] for k in range(8))
    axes = _siddon_setup(ray, shape)
    need_grad = bool(grad_refs)
    zero = jnp.zeros_like(ray[0])
    start = (ray[6], axes[0][1], axes[1][1], axes[2][1], jnp.full(zero.shape, -1, jnp.int32))

    def body(_, c):
        walk, acc, *g = c
        walk, seg, flat, active, s_ax, e_ax, t0, t1 = _siddon_step(ray, axes, walk, shape)
        mu = jnp.where(active, vol_ref[flat].astype(jnp.float32), 0.0)
        acc = acc + seg * mu
        if need_grad:
            # dS = Σ_k μ_k (dα_end - dα_start); a plane α = (k - o_a)/d_a has ∂/∂o_a = -1/d_a,
            # ∂/∂d_a = -α/d_a; t_near and t_far enter with -μ_first and +μ_last.
            go, gd, gn, gf = g[0:3], g[3:6], g[6], g[7]
            go, gd = list(go), list(gd)
            for a in range(3):
                inv = 1.0 / axes[a][4]
                w = jnp.where(e_ax == a, mu, 0.0) - jnp.where(s_ax == a, mu, 0.0)
                wt = jnp.where(e_ax == a, mu * t1, 0.0) - jnp.where(s_ax == a, mu * t0, 0.0)
                go[a] = go[a] - w * inv
                gd[a] = gd[a] - wt * inv
            gn = gn - jnp.where(s_ax == -1, mu, 0.0)
            gf = gf + jnp.where(e_ax == 3, mu, 0.0)
            return (walk, acc, *go, *gd, gn, gf)
        return (walk, acc)

    carry = (start, zero) + ((zero,) * 8 if need_grad else ())
    carry = jax.lax.fori_loop(0, n_steps, body, carry)
    out_ref[...] = carry[1]
    if need_grad:
        (grad_ref,) = grad_refs
        for k in range(8):
            grad_ref[k] = carry[2 + k]


def _siddon_scatter_kernel(ray_ref, ct_ref, _, gvol_ref, *, shape, n_steps, interpret):
    ray = tuple(ray_ref[k] for k in range(8))
    axes = _siddon_setup(ray, shape)
    ct = ct_ref[...]
    start = (ray[6], axes[0][1], axes[1][1], axes[2][1], jnp.full(ct.shape, -1, jnp.int32))

    def body(_, walk):
        walk, seg, flat, active, *_ = _siddon_step(ray, axes, walk, shape)
        scatter_add(gvol_ref, flat, jnp.where(active, seg * ct, 0.0), active, interpret)
        return walk

    jax.lax.fori_loop(0, n_steps, body, start)


@functools.lru_cache(maxsize=None)
def _siddon_op(shape, dtype, block, num_warps, interpret):
    """The Siddon walk; ray table: o, d in voxel units, t_near, t_far."""
    kw = dict(shape=shape, n_steps=sum(shape) + 3)  # every plane crossed once, plus the last segment
    return _build_op(
        functools.partial(_siddon_forward_kernel, **kw),
        functools.partial(_siddon_scatter_kernel, interpret=interpret, **kw),
        shape=shape, dtype=dtype, block=block, num_warps=num_warps, interpret=interpret, name="siddon_walk")


def _custom_vjp_op(forward, scatter, dtype):
    """``op(volume, table)`` whose VJP runs the per-ray gradient only for perturbed rays and
    the atomic adjoint only for a perturbed volume."""

    @jax.custom_vjp
    def op(vol, table):
        return forward(vol, table, False)[0]

    def op_fwd(vol, table):
        s, ga = forward(vol.value, table.value, table.perturbed)
        return s, (table.value if vol.perturbed else None, ga)

    def op_bwd(res, ct):
        table, ga = res
        if isinstance(ct, SymbolicZero):
            return None, None
        ct_vol = None if table is None else scatter(table, ct).astype(dtype)
        ct_table = None if ga is None else ga * ct[None, :]
        return ct_vol, ct_table

    op.defvjp(op_fwd, op_bwd, symbolic_zeros=True)
    return op


# --------------------------------------------------------------------------- wrappers
def unsupported(volume, interpret) -> str | None:
    """Why the kernel cannot run here (None when it can)."""
    if jnp.dtype(volume.dtype) not in [jnp.dtype(d) for d in KERNEL_DTYPES]:
        return f"volume dtype {volume.dtype} is not float32/bfloat16/float16"
    if math.prod(volume.shape) >= 2**31:
        return f"volume of {math.prod(volume.shape)} voxels needs 64-bit indices"
    if not interpret and jax.default_backend() != "gpu":
        return f"no GPU (backend {jax.default_backend()!r}; pass interpret=True to run the kernel interpreted)"
    return None


def check_block(block_rays: int, unroll: int) -> None:
    if not (isinstance(block_rays, int) and block_rays >= 1 and block_rays & (block_rays - 1) == 0):
        raise ValueError(f"block_rays must be a power of two, got {block_rays!r}")
    if not (isinstance(unroll, int) and unroll >= 1):
        raise ValueError(f"unroll must be a positive integer, got {unroll!r}")


def check_pack(pack) -> None:
    if pack not in PACKS:
        raise ValueError(f"pack must be one of {PACKS}, got {pack!r}")


def check_adjoint(adjoint) -> None:
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}")


def trilinear_kernel(volume, rays, lo, d_voxel, n_samples, block_rays, unroll, num_warps, interpret, pack,
                     adjoint=DEFAULT_ADJOINT):
    """Line integrals by the fused trilinear kernel; inputs checked by :func:`jaxmedrf.projectors.pallas.trilinear_integrals_pallas`."""
    f32 = jnp.float32
    o, d = rays.origins.astype(f32), rays.directions.astype(f32)
    lo, d_voxel = jnp.asarray(lo, f32), jnp.asarray(d_voxel, f32)
    hi = lo + jnp.asarray(volume.shape, f32) * d_voxel
    t_near, t_far = box_intersect(Rays(o, d), lo, hi)
    span = t_far - t_near
    start = (o + t_near[:, None] * d - lo) / d_voxel  # voxel units, 0 at the lower box face
    seg = span[:, None] * d / d_voxel
    r = o.shape[0]
    r_pad = -(-r // block_rays) * block_rays
    table = jnp.concatenate([start.T, seg.T, jnp.zeros((2, r), f32)], axis=0)
    # Padding rays start outside the box (-1 voxel) with a zero segment: they add nothing.
    table = jnp.pad(table, ((0, 0), (0, r_pad - r)), constant_values=-1.0).at[3:, r:].set(0.0)
    op = _fused_op(tuple(volume.shape), jnp.dtype(volume.dtype), n_samples, block_rays, unroll, num_warps, interpret,
                   pack, adjoint)
    s = op(volume.reshape(-1), table)[:r]
    return s * (span / n_samples) * Rays(o, d).lengths


def siddon_kernel(volume, rays, lo, d_voxel, block_rays, num_warps, interpret):
    """Exact line integrals by the fused Siddon walk; inputs checked by :func:`jaxmedrf.projectors.pallas.siddon_integrals_pallas`."""
    f32 = jnp.float32
    o, d = rays.origins.astype(f32), rays.directions.astype(f32)
    lo, d_voxel = jnp.asarray(lo, f32), jnp.asarray(d_voxel, f32)
    hi = lo + jnp.asarray(volume.shape, f32) * d_voxel
    t_near, t_far = box_intersect(Rays(o, d), lo, hi)
    r = o.shape[0]
    r_pad = -(-r // block_rays) * block_rays
    table = jnp.concatenate([((o - lo) / d_voxel).T, (d / d_voxel).T, t_near[None], t_far[None]], axis=0)
    table = jnp.pad(table, ((0, 0), (0, r_pad - r)))  # padding rays: t_near = t_far, no segment
    op = _siddon_op(tuple(volume.shape), jnp.dtype(volume.dtype), block_rays, num_warps, interpret)
    return op(volume.reshape(-1), table)[:r] * Rays(o, d).lengths


def _tile_order(nv: int, nu: int, tile: tuple[int, int], lanes: str) -> tuple[np.ndarray, np.ndarray]:
    """Detector (row, col) of each ray in kernel order.

    Tiles of ``tv × tu`` pixels (one program each, so its rays read neighbouring voxels
    from cache); inside a tile consecutive rays (the lanes of a warp) go along a row
    (``lanes="u"``) or down a column (``lanes="v"``, the rotation axis z of a circular orbit,
    the volume's contiguous axis). Plain row- or column-major order when the detector is not
    a whole number of tiles.
    """
    tv, tu = tile
    row, col = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    if nv % tv or nu % tu:
        return (row.reshape(-1), col.reshape(-1)) if lanes == "u" else (row.T.reshape(-1), col.T.reshape(-1))
    axes = (0, 2, 1, 3) if lanes == "u" else (0, 2, 3, 1)
    order = lambda a: a.reshape(nv // tv, tv, nu // tu, tu).transpose(axes).reshape(-1)  # noqa: E731
    return order(row), order(col)


def default_tile(block_rays: int) -> tuple[int, int]:
    """Near-square: ``tu`` the power of two at or above √block_rays."""
    tu = min(1 << math.ceil(math.log2(math.sqrt(block_rays))), block_rays)
    return block_rays // tu, tu


@functools.partial(jax.jit, static_argnames=("method", "n_samples", "chunk", "block_rays", "tile", "lanes", "unroll",
                                             "num_warps", "interpret", "pack", "adjoint"))
def project_kernel(volume, geometry, *, method, n_samples, chunk, block_rays, tile, lanes, unroll, num_warps, interpret,
                   pack, adjoint=DEFAULT_ADJOINT):
    n_views, nv, nu = geometry.projection_shape
    rows, cols = _tile_order(nv, nu, tile, lanes)
    inverse = np.argsort(rows * nu + cols)
    per = max(1, min(n_views, chunk // (nv * nu)))
    n_chunks = -(-n_views // per)
    views = jnp.minimum(jnp.arange(n_chunks * per), n_views - 1).reshape(n_chunks, per)
    lo, _ = volume_box(geometry)

    def body(view):
        rays = pixel_rays(geometry, view[:, None], jnp.asarray(rows)[None], jnp.asarray(cols)[None])
        shape = rays.directions.shape  # cone-beam origins are one source per view: broadcast
        flat = Rays(jnp.broadcast_to(rays.origins, shape).reshape(-1, 3), rays.directions.reshape(-1, 3))
        d_voxel = jnp.asarray(geometry.d_voxel)
        if method == "siddon":
            out = siddon_kernel(volume, flat, lo, d_voxel, block_rays, num_warps, interpret)
        else:
            out = trilinear_kernel(volume, flat, lo, d_voxel, n_samples, block_rays, unroll, num_warps, interpret, pack,
                                   adjoint)
        return out.reshape(per, nv * nu)

    out = body(views[0]) if n_chunks == 1 else jax.lax.map(body, views).reshape(-1, nv * nu)
    return out[:n_views][:, inverse].reshape(n_views, nv, nu)


