"""Filtered backprojection: FDK for circular cone beam, FBP for parallel beam.

Cone beam (Feldkamp, Davis & Kress, "Practical cone-beam algorithm", J. Opt. Soc. Am. A 1(6),
1984; Kak & Slaney, *Principles of Computerized Tomographic Imaging*, 1988, ch. 3.4.2 eq. (3.xx)
for equally spaced collinear detectors, extended to 3D in ch. 3.6). With the detector scaled
to the rotation axis (``a = u·DSO/DSD``, ``b = v·DSO/DSD``, pixel ``Δa = Δu·DSO/DSD``):

.. math::

    q_β(a, b) = \\Big(p_β(a, b) \\frac{DSO}{\\sqrt{DSO^2 + a^2 + b^2}}\\Big) * h(a), \\qquad
    μ(\\mathbf x) = \\sum_β Δβ\\, w_β(γ)\\, \\frac{DSO^2}{U(\\mathbf x, β)^2}\\, q_β(a(\\mathbf x), b(\\mathbf x))

where ``h`` is the ramp filter (Kak & Slaney eq. 3.61: ``h(0) = 1/(4Δa²)``, ``h(nΔa) =
-1/(nπΔa)²`` for odd ``n``, 0 for even ``n``) times a window, ``U = (x − S)·n̂`` is the
distance from the source to the voxel along the central ray and ``(a, b)`` is where the ray
from the source through the voxel meets the (scaled) detector. ``w = 1/2`` for a full 360°
scan (each ray measured twice); for a short scan (``arc < 360°``) ``w`` are Parker's weights
(Parker, "Optimal short scan convolution reconstruction for fan beam CT", Med. Phys. 9(2),
1982), generalised to any arc ≥ 180° + fan angle as in Wesarg et al. 2002.

Cylindrical (curved) detector, columns equally spaced in the fan angle ``γ`` (step ``α =
du/DSD``; Kak & Slaney ch. 3.4.1, equiangular rays, with Feldkamp's cone weight):

.. math::

    q_β(γ, v) = \\Big(p_β(γ, v) \\frac{DSO\\, DSD \\cos γ}{\\sqrt{DSD^2 + v^2}}\\Big) * \\Big(\\frac{γ}{\\sin γ}\\Big)^2 h(γ),
    \\qquad μ(\\mathbf x) = \\sum_β Δβ\\, w_β(γ)\\, \\frac{1}{L(\\mathbf x, β)^2}\\, q_β(γ(\\mathbf x), v(\\mathbf x))

with ``L`` the distance from the source to the voxel in the plane of the fan (normal to ``v``).

Short scans and limited angles: an arc of at least 180° plus the fan angle
(:func:`jaxmedrf.geometry.short_scan_arc`) is reconstructed exactly (to discretisation) with
Parker's weights; between 180° and that it is reconstructed with a warning (the weights then
miss some rays); below 180° (limited angle) FBP cannot recover the volume and :func:`fdk`
refuses, pointing to SART, CGLS or NAF, which take any arc. A helical scan (the source moving
along the rotation axis, :func:`jaxmedrf.geometry.helical_beam`) is refused the same way.

Tomosynthesis (a flat panel that stays put while the source sweeps along its rows,
:func:`jaxmedrf.geometry.tomosynthesis`; told by :func:`jaxmedrf.geometry.tomosynthesis_sweep`):
:func:`fdk` runs the filtered backprojection of tomosynthesis instead, the fan-beam FBP of a
source path in the plane of the rows (the measure ``|a′·n| dλ dα`` of the rays, each measured
once; :func:`_planar_fbp`, which is FDK on a circle), with FDK's cone weight and the ramp along the
panel's rows (Lauritsch & Härer, "A theoretical framework for filtered backprojection in
tomosynthesis", Proc. SPIE 3338, 1998). Its volume is what the sweep measures: the Fourier
components within the sweep's double wedge, so sharp slices parallel to the panel and little
depth resolution (an apodising ``filter`` such as ``"hann"`` tempers the noise). Other geometries
with a per-view ``DSD``/``DSO``/detector offset are refused (SART, CGLS or NAF take them).

Parallel beam (Kak & Slaney eq. 3.44/3.61): ``μ(x) = Σ_θ Δθ (π/arc) q_θ(x·u_θ, z)`` with
``q = p * h`` in detector units.

Backprojection is voxel-driven: every voxel is projected onto each view's detector (the
geometry's frames, so detector offsets, ``off_origin`` and per-view poses are honoured) and
the filtered projection is read there by bilinear interpolation (zero outside the detector).
Views are processed in chunks with ``lax.scan`` so memory is bounded by ``chunk_views``
volumes whatever the number of views. With ``mesh`` the volume is sharded along z (each
device backprojects into its own slab).
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf.geometry import (Geometry, _frames64, axial_travel, detector_per_view, fan_angles, tomosynthesis_sweep,
                               view_frames, voxel_centers)
from jaxmedrf.parallel import pad_to_mesh, shard_map
from jaxmedrf.recon._result import Result

__all__ = ["FILTERS", "fdk", "parker_weights", "ramp_filter", "voxel_backproject"]

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
_FULL_SCAN_TOL = 1e-3  # rad: an arc within this of 2π counts as a full scan


def _window(name: str, w: np.ndarray) -> np.ndarray:
    """Apodisation window at angular frequency ``w`` ∈ [0, π] (rad/sample), TIGRE's definitions."""
    if name == "ram-lak":
        return np.ones_like(w)
    if name == "shepp-logan":
        return np.sinc(w / (2 * np.pi))  # sin(w/2)/(w/2)
    if name == "cosine":
        return np.cos(w / 2)
    if name == "hamming":
        return 0.54 + 0.46 * np.cos(w)
    if name == "hann":
        return 0.5 * (1 + np.cos(w))
    raise ValueError(f"filter must be one of {FILTERS}, got {name!r}")


def ramp_filter(n: int, *, filter: str = "ram-lak", pad: int | None = None,
                fan_step: float | None = None) -> tuple[np.ndarray, int]:
    """Frequency response of the windowed ramp filter for rows of ``n`` samples.

    The ramp is built from the band-limited spatial kernel (Kak & Slaney eq. 3.61, unit sample
    spacing), zero-padded to ``pad`` samples (default: the next power of two ≥ 2n, which
    avoids the interperiod interference of circular convolution) and Fourier transformed, so
    its DC term is correct (not zero). Divide the filtered result by the sample spacing in mm.

    With ``fan_step`` (``α``, rad) the samples are equiangular (a cylindrical detector): the
    kernel at lag ``k`` is multiplied by ``(kα / sin kα)²`` (Kak & Slaney ch. 3.4.1; then divide
    by ``α``).

    Returns:
      ``(H, pad)``: the real response of length ``pad`` (FFT order) and the padded length.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    if pad is None:
        pad = max(64, 1 << math.ceil(math.log2(2 * n)))
    if pad < n:
        raise ValueError(f"pad must be at least the row length {n}, got {pad}")
    k = np.arange(pad)
    k = np.minimum(k, pad - k)
    h = np.zeros(pad)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    if fan_step is not None:
        x = k * float(fan_step)
        ok = (k > 0) & (x < 0.9 * np.pi)  # lags past the row are multiplied by padding zeros
        h[ok] *= (x[ok] / np.sin(x[ok])) ** 2
    H = np.real(np.fft.fft(h))
    w = 2 * np.pi * np.abs(np.fft.fftfreq(pad))
    return H * _window(filter, w), pad


def _arc(angles: np.ndarray) -> tuple[float, float]:
    """(covered arc, Δβ per view) of a circular scan, rad; equal spacing assumed."""
    n = angles.size
    if n == 1:
        return 2 * math.pi, 2 * math.pi
    span = abs(float(angles[-1] - angles[0]))
    step = span / (n - 1)
    return min(span + step, 2 * math.pi), step


def parker_weights(beta: np.ndarray, gamma: np.ndarray, arc: float) -> np.ndarray:
    """Parker's short-scan weights ``w(β, γ)`` (Parker 1982, eq. 12; Wesarg 2002 for any arc).

    Args:
      beta: angle since the first view, rad, ``(V, 1)``, in ``[0, arc]``.
      gamma: fan angle of each detector column, rad, ``(1, nu)``, positive towards ``+u``.
      arc: covered arc, rad; ``δ = (arc − π)/2`` plays the role of the half fan angle.

    In this geometry the ray ``(β, γ)`` is measured again as ``(β + π − 2γ, −γ)``, so the
    weights of a ray and its conjugate sum to 1.
    """
    delta = max((arc - np.pi) / 2, 1e-6)
    w = np.ones(np.broadcast_shapes(beta.shape, gamma.shape))
    b = beta + 0 * gamma
    g = gamma + 0 * beta
    lo = 2 * (delta + g)
    with np.errstate(divide="ignore", invalid="ignore"):
        start = np.sin(np.pi / 4 * b / np.maximum(delta + g, 1e-12)) ** 2
        end = np.sin(np.pi / 4 * (np.pi + 2 * delta - b) / np.maximum(delta - g, 1e-12)) ** 2
    w = np.where(b < lo, start, w)
    w = np.where(b > np.pi + 2 * g, end, w)
    return np.clip(w, 0.0, 1.0)


def _padded_index(x, n: int):
    """Index into a 1-zero-padded axis of length ``n + 2`` and the weight of the next entry, for a
    fractional (unpadded) position ``x``: the bilinear read of :func:`_bilinear`, 0 outside."""
    x = jnp.clip(x, -1.0, float(n))
    x0 = jnp.clip(jnp.floor(x), -1, n - 1)
    return x0.astype(jnp.int32) + 1, x - x0


def _bilinear(img, r, c):
    """Bilinear read of ``img`` (nv, nu) at fractional (row, col) indices; 0 outside."""
    nv, nu = img.shape
    pad = jnp.pad(img, 1)
    i0, fr = _padded_index(r, nv)
    j0, fc = _padded_index(c, nu)
    flat = pad.reshape(-1)
    w_ = nu + 2
    at = lambda i, j: jnp.take(flat, i * w_ + j, mode="clip")  # noqa: E731
    top = at(i0, j0) * (1 - fc) + at(i0, j0 + 1) * fc
    bot = at(i0 + 1, j0) * (1 - fc) + at(i0 + 1, j0 + 1) * fc
    return top * (1 - fr) + bot * fr


@functools.partial(jax.jit, static_argnames=("chunk_views", "mesh"))
def _backproject(q, weights, geometry: Geometry, *, chunk_views: int, mesh=None):
    """Σ_views weights[view] · (DSO/U)² · q_view(a(x), b(x)) for every voxel (cone) or ``q(t, z)`` (parallel).

    With ``mesh`` every device computes its own z-slab of voxels (``shard_map``; the filtered
    projections are replicated), ``nz`` zero-padded up to a multiple of the device count and
    the result cropped back.
    """
    zs = voxel_centers(geometry)[2]
    if mesh is None:
        return _backproject_slab(q, weights, geometry, zs, chunk_views)
    axes = tuple(mesh.axis_names)
    nz = zs.shape[0]
    extra = pad_to_mesh(nz, mesh) - nz
    if extra:
        dz = jnp.asarray(geometry.d_voxel, zs.dtype)[2]
        zs = jnp.concatenate([zs, zs[-1] + dz * jnp.arange(1, extra + 1, dtype=zs.dtype)])
    f = shard_map(lambda q, w, g, z: _backproject_slab(q, w, g, z, chunk_views), mesh=mesh,
                  in_specs=(P(), P(), P(), P(axes)), out_specs=P(None, None, axes))
    out = f(q, weights, geometry, zs)
    return out[:, :, :nz] if extra else out


def voxel_backproject(projections: Float[ArrayLike, "views nv nu"], geometry: Geometry, *, chunk_views: int = 8,
                      mesh=None) -> Float[Array, "nx ny nz"]:
    """Voxel-driven backprojection without filtering or view weights: every voxel sums each
    view's bilinear detector read at its projection, times ``(DSO/U)²`` in cone beam
    (``(DSO/L)²`` on a cylindrical detector, ``L`` the source–voxel distance in the fan plane).

    It is FDK's backprojector, and the unmatched ``Aᵀ`` of ``sart(backprojector="voxel")``.
    """
    w = jnp.ones((projections.shape[0],), projections.dtype)
    return _backproject(projections, w, geometry, chunk_views=int(min(chunk_views, projections.shape[0])), mesh=mesh)


def _backproject_separable(q, weights, geometry: Geometry, zs):
    """:func:`_backproject_slab` for a geometry without per-view rotations.

    Every view's detector column axis ``u`` and central ray are then horizontal and its row axis
    ``v`` is z, so a voxel's column (and its distance ``U`` to the source) depends on its
    ``(x, y)`` only and its row is affine in ``z``. Each view is read in two 1-D passes: the
    detector columns at every ``(x, y)`` (whole rows of the transposed projection), then each
    column at the voxels' rows: the same bilinear read as the general path (flat or cylindrical
    detector), for about a tenth of its cost on a CPU.
    """
    n_views, nv, nu = q.shape
    fr = view_frames(geometry)
    xs, ys, _ = voxel_centers(geometry)
    xs, ys, zs = (a.astype(q.dtype) for a in (xs, ys, zs))
    dv, du = (jnp.asarray(geometry.d_detector, q.dtype)[i] for i in (0, 1))
    cone = geometry.beam == "cone"
    curved = geometry.detector == "cylindrical"
    det = detector_per_view(geometry)  # DSO and offsets of every view (one value, or one per view)
    qt = jnp.pad(jnp.swapaxes(q, 1, 2), ((0, 0), (1, 1), (1, 1)))  # (views, nu + 2, nv + 2)
    frames = tuple(f.astype(q.dtype) for f in fr[:4])
    per_det = tuple(a.astype(q.dtype) for a in (det.DSO, det.off_detector[:, 0], det.off_detector[:, 1]))

    def one_view(acc, a):
        qi, wi, S, D, u, v, DSO, off_v, off_u = a
        plane = lambda vec: xs[:, None] * vec[0] + ys[None, :] * vec[1]  # noqa: E731  (x, y) part of vec · x
        if cone:
            axis = D - S
            dsd = jnp.linalg.norm(axis)
            n = axis / dsd
            U = plane(n) - jnp.dot(S, n)  # (nx, ny): source → voxel along the central ray, mm
            if curved:  # the column at fan angle γ, the row where the ray meets the cylinder
                w = plane(u) - jnp.dot(S, u)
                L2 = U * U + w * w  # squared distance source → voxel in the fan's plane, mm²
                pu = dsd * jnp.arctan2(w, U)
                pv = (dsd * jax.lax.rsqrt(L2))[..., None] * (zs * v[2] - S[2] * v[2])
                scale = wi * DSO**2 / L2
            else:
                lam = dsd / U
                pu = jnp.dot(S - D, u) + lam * (plane(u) - jnp.dot(S, u))
                pv = jnp.dot(S - D, v) + lam[..., None] * (zs * v[2] - S[2] * v[2])
                scale = wi * (DSO / U) ** 2
        else:
            pu = plane(u) - jnp.dot(D, u)
            pv = jnp.broadcast_to(zs * v[2] - D[2] * v[2], (*pu.shape, zs.shape[0]))
            scale = jnp.broadcast_to(wi, pu.shape)
        c0, fc = _padded_index((pu - off_u) / du + (nu - 1) / 2, nu)
        col = qi[c0] * (1 - fc)[..., None] + qi[c0 + 1] * fc[..., None]  # (nx, ny, nv + 2)
        r0, fr_ = _padded_index((pv - off_v) / dv + (nv - 1) / 2, nv)
        val = jnp.take_along_axis(col, r0, -1) * (1 - fr_) + jnp.take_along_axis(col, r0 + 1, -1) * fr_
        return acc + scale[..., None] * val, None

    acc0 = jnp.zeros((xs.shape[0], ys.shape[0], 1), q.dtype) * zs[None, None, :]
    out, _ = jax.lax.scan(one_view, acc0, (qt, weights.astype(q.dtype), *frames, *per_det))
    return out


def _backproject_slab(q, weights, geometry: Geometry, zs, chunk_views: int):
    """:func:`_backproject` for the voxels with z centres ``zs`` (mm), shape ``(nx, ny, len(zs))``."""
    if geometry.rotation is None:
        return _backproject_separable(q, weights, geometry, zs)
    n_views, nv, nu = q.shape
    fr = view_frames(geometry)
    xs, ys, _ = voxel_centers(geometry)
    xs, ys, zs = (a.astype(q.dtype) for a in (xs, ys, zs))
    dv, du = (jnp.asarray(geometry.d_detector, q.dtype)[i] for i in (0, 1))
    cone = geometry.beam == "cone"
    curved = geometry.detector == "cylindrical"
    det = detector_per_view(geometry)  # DSO and offsets of every view (one value, or one per view)

    n_chunks = -(-n_views // chunk_views)
    total = n_chunks * chunk_views
    pad = total - n_views
    padv = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]) if pad else a  # noqa: E731
    per_view = (q, weights.astype(q.dtype), *(f.astype(q.dtype) for f in fr),
                *(a.astype(q.dtype) for a in (det.DSO, det.off_detector[:, 0], det.off_detector[:, 1])))
    per_view = tuple(padv(a).reshape(n_chunks, chunk_views, *a.shape[1:]) for a in per_view)
    valid = (jnp.arange(total) < n_views).reshape(n_chunks, chunk_views)

    def dot(vec):  # (3,) · voxel centre − origin-free part, broadcast to the grid
        return xs[:, None, None] * vec[0] + ys[None, :, None] * vec[1] + zs[None, None, :] * vec[2]

    def one_view(qi, wi, S, D, u, v, d, DSO, off_v, off_u, ok):
        if cone:
            axis = D - S
            dsd = jnp.linalg.norm(axis)
            n = axis / dsd
            U = dot(n) - jnp.dot(S, n)  # distance source → voxel along the central ray, mm
            if curved:  # the column at fan angle γ, the row where the ray meets the cylinder
                w = dot(u) - jnp.dot(S, u)
                L2 = U * U + w * w  # squared distance source → voxel in the fan's plane, mm²
                pu = dsd * jnp.arctan2(w, U)
                pv = (dot(v) - jnp.dot(S, v)) * dsd * jax.lax.rsqrt(L2)
                scale = DSO**2 / L2
            else:
                lam = dsd / U
                # P − D = S + λ(x − S) − D; its u and v coordinates
                pu = jnp.dot(S - D, u) + lam * (dot(u) - jnp.dot(S, u))
                pv = jnp.dot(S - D, v) + lam * (dot(v) - jnp.dot(S, v))
                scale = (DSO / U) ** 2
        else:
            pu = dot(u) - jnp.dot(D, u)
            pv = dot(v) - jnp.dot(D, v)
            scale = 1.0
        c = (pu - off_u) / du + (nu - 1) / 2
        r = (pv - off_v) / dv + (nv - 1) / 2
        return jnp.where(ok, wi, 0.0) * scale * _bilinear(qi, r, c)

    def body(acc, xs_):
        contrib = jax.vmap(one_view)(*xs_)
        return acc + contrib.sum(0), None

    # derived from zs so that inside shard_map the carry is "varying" like the slab it sums
    acc0 = jnp.zeros((xs.shape[0], ys.shape[0], 1), q.dtype) * zs[None, None, :]
    out, _ = jax.lax.scan(body, acc0, (*per_view, valid))
    return out


@functools.partial(jax.jit, static_argnames=("pad",))
def _filter_rows(p, H, pad: int):
    nu = p.shape[-1]
    P = jnp.fft.rfft(p, n=pad, axis=-1)
    Hr = H[: pad // 2 + 1]
    return jnp.fft.irfft(P * Hr, n=pad, axis=-1)[..., :nu].astype(p.dtype)


def _planar_fbp(p, geometry: Geometry, steps: np.ndarray, *, filter: str, pad: int | None, chunk_views: int, dtype,
                mesh, redundancy: float = 1.0):
    r"""Filtered backprojection for a source that moves in the plane of the detector rows, one
    flat detector per view (the tomosynthesis FBP of :func:`fdk`; ``steps`` ``(views, 3)``, mm:
    the source's displacement per view, ``ΔS_k``).

    Fan-beam FBP rebinned from parallel beam for any planar source path ``a(λ)``: the measure
    ``dθ ds = |a′·n| dλ dα`` of the rays (``n`` the ray's normal, ``α`` its direction), with the
    ramp's homogeneity ``h(c t) = h(t)/c²``, gives for a detector at distance ``DSD_k`` (its
    normal ``n̂``, towards the source; ``(u, v)`` from the foot of the perpendicular from the
    source, mm)

    .. math::

        μ(\mathbf x) = \sum_k \frac{ρ}{U_k(\mathbf x)^2}\, \Big(p_k(u, v)\,
        |ΔS_k\!\cdot\! n̂\; u + ΔS_k\!\cdot\! \hat u\; DSD_k|\,
        \frac{DSD_k}{\sqrt{DSD_k^2 + u^2 + v^2}}\Big) * h(u)

    with ``U_k`` the distance from the source to ``x`` along ``n̂``, ``ρ`` the redundancy weight (1
    for tomosynthesis, each ray measured once; ½ for a full circle) and the filter along ``u`` in
    mm. On a circle (``ΔS = DSO Δβ û``) it is FDK; the cone weight ``DSD/√(DSD² + u² + v²)`` is
    Feldkamp's extension to rows off the source's plane.
    """
    n_views, nv, nu = geometry.projection_shape
    f, det = _frames64(geometry)
    dv, du = np.asarray(geometry.d_detector, np.float64)
    normal = np.cross(f.u, f.v)  # from the detector towards the source
    H = np.einsum("vi,vi->v", f.source - f.center, normal)  # DSD_k, mm
    uu = (np.arange(nu) - (nu - 1) / 2) * du + det.off_detector[:, 1:2]  # (views, nu), mm
    vv = (np.arange(nv) - (nv - 1) / 2) * dv + det.off_detector[:, 0:1]  # (views, nv), mm
    step_n = np.einsum("vi,vi->v", steps, normal)
    step_u = np.einsum("vi,vi->v", steps, f.u)
    jac = np.abs(step_n[:, None] * uu + (step_u * H)[:, None])  # |ΔS·n̂ u + ΔS·û DSD|, mm²
    cosw = H[:, None, None] / np.sqrt(H[:, None, None] ** 2 + uu[:, None, :] ** 2 + vv[:, :, None] ** 2)
    pre = jnp.asarray(redundancy * jac[:, None, :] * cosw, dtype)
    Hf, pad = ramp_filter(nu, filter=filter, pad=pad)
    q = _filter_rows(p * pre, jnp.asarray(Hf, dtype), pad) / du
    weights = jnp.asarray(1.0 / det.DSO**2, dtype)  # the backprojector weighs view k by (DSO_k / U)²
    return _backproject(q, weights, geometry, chunk_views=int(min(chunk_views, n_views)), mesh=mesh)


def _tomosynthesis_fbp(p, geometry: Geometry, *, filter: str, pad: int | None, chunk_views: int, dtype, mesh):
    """:func:`_planar_fbp` of a tomosynthesis scan: ``ΔS_k`` the central differences of the source
    positions (one-sided at the ends, so each view stands for one step, as ``Δβ`` on a circle)."""
    f, _ = _frames64(geometry)
    steps = np.gradient(f.source, axis=0)
    across = float(np.max(np.abs(np.einsum("vi,vi->v", steps, f.v))))
    if across > 1e-3 * float(np.max(np.linalg.norm(steps, axis=-1))):
        raise ValueError("tomosynthesis FBP filters along the panel's rows (u): it needs the source to sweep along u, "
                         f"but it moves up to {across:.3g} mm per view along v; transpose the scan (swap the panel's "
                         "axes), or reconstruct it with SART, CGLS or NAF")
    return _planar_fbp(p, geometry, steps, filter=filter, pad=pad, chunk_views=chunk_views, dtype=dtype, mesh=mesh)


def fdk(
    projections: Float[ArrayLike, "views nv nu"],
    geometry: Geometry,
    *,
    filter: str = "ram-lak",
    pad: int | None = None,
    short_scan: bool | None = None,
    chunk_views: int = 8,
    dtype=jnp.float32,
    mesh: Mesh | None = None,
) -> Result:
    """FDK (cone beam) or FBP (parallel beam) reconstruction of μ (mm⁻¹).

    Args:
      projections: line integrals of μ, ``(n_views, nv, nu)``, dimensionless.
      geometry: the scan; cone beam must be a circular orbit (poses are honoured by the
        backprojection but the filtering assumes a circle; a helical orbit is refused); angles
        equally spaced, increasing or decreasing; flat or cylindrical detector. A tomosynthesis
        scan (:func:`jaxmedrf.geometry.tomosynthesis_sweep` is not ``None``) gets the
        tomosynthesis FBP (module docstring).
      filter: ramp window, one of :data:`FILTERS` (``"ram-lak"`` = plain ramp).
      pad: zero-padded row length for the FFT (default next power of two ≥ 2·nu).
      short_scan: apply Parker weights (cone beam). Default: when the arc is < 360°.
      chunk_views: views backprojected together (memory ∝ ``chunk_views`` volumes).
      dtype: computation dtype.
      mesh: optional device mesh (:func:`jaxmedrf.parallel.make_mesh`): the volume is
        sharded along z, each device backprojecting into its own slab (``nz`` is padded to a
        multiple of the device count internally and cropped).

    Returns:
      :class:`Result` with ``volume`` in mm⁻¹ (shape ``n_voxel``) and an empty history.

    Raises:
      ValueError: wrong projection shape, unknown filter, non-positive ``chunk_views``, an arc
        below 180° (limited angle), a helical orbit or a per-view detector that is not a
        tomosynthesis scan, which FBP cannot reconstruct (the message names SART, CGLS and NAF,
        which can); ``short_scan=True`` on a tomosynthesis scan.

    Warns:
      UserWarning: a cone-beam arc between 180° and 180° + fan angle (an incomplete short scan).
    """
    geometry.check_projections(projections)
    if int(chunk_views) != chunk_views or chunk_views <= 0:
        raise ValueError(f"chunk_views must be a positive integer, got {chunk_views!r}")
    other = "reconstruct it with SART, CGLS or NAF (any orbit)"
    if tomosynthesis_sweep(geometry) is not None:
        if short_scan:
            raise ValueError("short_scan (Parker's weights) is for circular orbits; a tomosynthesis scan measures "
                             "each ray once and takes no redundancy weights")
        vol = _tomosynthesis_fbp(jnp.asarray(projections, dtype), geometry, filter=filter, pad=pad,
                                 chunk_views=chunk_views, dtype=dtype, mesh=mesh)
        return Result(vol, {})
    if geometry.per_view_detector:
        raise ValueError("FDK needs one DSD, DSO and detector offset for all views (a circular orbit); this geometry "
                         f"gives them per view and is not a tomosynthesis scan (a panel that stays put): {other}")
    n_views, nv, nu = geometry.projection_shape
    angles = np.asarray(geometry.angles, dtype=np.float64)
    arc, step = _arc(angles)
    dv, du = np.asarray(geometry.d_detector, np.float64)
    off_v, off_u = np.asarray(geometry.off_detector, np.float64)
    p = jnp.asarray(projections, dtype)
    full = arc >= 2 * math.pi - _FULL_SCAN_TOL
    cone = geometry.beam == "cone"
    if cone:
        travel, row = axial_travel(geometry), dv * float(geometry.DSO) / float(geometry.DSD)
        if travel > row:
            raise ValueError(f"FDK needs a circular orbit; the source travels {travel:.1f} mm along the rotation axis"
                             f" (a helical scan, more than one detector row at the isocentre, {row:.2f} mm): {other}")
    fan = float(np.max(np.abs(fan_angles(geometry)))) if cone else 0.0
    if arc < math.pi - 1e-6:
        raise ValueError(f"arc must be at least 180° for {'FDK' if cone else 'FBP'}, got {np.degrees(arc):.1f}° (a limited-"
                         f"angle scan, below the {np.degrees(math.pi + 2 * fan):.1f}° short scan): {other}")
    curved = geometry.detector == "cylindrical"
    H, pad = ramp_filter(nu, filter=filter, pad=pad, fan_step=du / float(geometry.DSD) if curved else None)

    if cone:
        DSD, DSO = float(geometry.DSD), float(geometry.DSO)
        uu = (np.arange(nu) - (nu - 1) / 2) * du + off_u
        vv = (np.arange(nv) - (nv - 1) / 2) * dv + off_v
        gamma = fan_angles(geometry)  # fan angle of each column
        if curved:  # DSO cos(ray, central ray) / DSO² (the backprojector weighs by (DSO/L)²)
            cosw = np.cos(gamma)[None, :] * DSD / np.sqrt(DSD**2 + vv[:, None] ** 2) / DSO
            spacing = du / DSD  # α, rad
        else:
            cosw = DSD / np.sqrt(DSD**2 + uu[None, :] ** 2 + vv[:, None] ** 2)
            spacing = du * DSO / DSD  # Δa, mm at the rotation axis
        use_parker = (not full) if short_scan is None else bool(short_scan)
        if use_parker:
            if arc < math.pi + 2 * fan - 1e-6:
                warnings.warn(
                    f"arc {np.degrees(arc):.1f}° is below 180° + fan angle ({np.degrees(math.pi + 2 * fan):.1f}°):"
                    " the short scan is incomplete and the FDK volume will have artefacts",
                    stacklevel=2,
                )
            sign = 1.0 if angles[-1] >= angles[0] else -1.0
            beta = sign * (angles - angles[0])[:, None]
            w = parker_weights(beta, sign * gamma[None, :], arc)  # (V, nu)
            row_w = w[:, None, :] * step  # applied before filtering (Parker 1982)
        else:
            row_w = np.full((n_views, 1, 1), 0.5 * (2 * math.pi / n_views if full else step))
        pre = jnp.asarray(cosw[None] * row_w, dtype)
        q = _filter_rows(p * pre, jnp.asarray(H, dtype), pad) / spacing
    else:
        dtheta = 2 * math.pi / n_views if full else step
        q = _filter_rows(p, jnp.asarray(H, dtype), pad) / du * (dtheta * math.pi / arc)
    weights = jnp.ones((n_views,), dtype)
    vol = _backproject(q, weights, geometry, chunk_views=int(min(chunk_views, n_views)), mesh=mesh)
    return Result(vol, {})
