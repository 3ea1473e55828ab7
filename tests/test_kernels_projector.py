"""Fused Pallas trilinear projector (interpret mode on CPU) against the XLA projector and a
float64 NumPy ray march: values, volume gradient, ray origin/direction gradients, pose
gradient through the geometry, float32 and half volumes, packed corner gathers, jit and vmap,
fallbacks.

Tolerances, relative to the largest magnitude: values 1e-5 (float32 arithmetic in both; the
kernel places samples as start + a·segment in voxel units, XLA as o + t·d in mm); volume
gradient 1e-5 (float32 volume) and, for a bfloat16 volume, one unit in the last place per
element (2⁻⁷ relative: both round a float32 sum to the volume's dtype, and sums that differ
in the last float32 bits can round to neighbouring bfloat16 values); origin/direction/pose
gradients 1e-4 (the gradient of the trilinear interpolant jumps at cell faces, so a sample
that rounding moves across a face changes it). Half volumes are compared with XLA on the same
rounded volume in float32.
Siddon kernel against the XLA Siddon projector: values 1e-5, volume gradient 1e-4 (one
segment length per voxel, summed in a different order), origin/direction gradients 1e-4 on
rays that pass no voxel edge within 1e-3 mm (at an edge the gradient jumps).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf.geometry import volume_box
from jaxmedrf.projectors.pallas import project_pallas, siddon_integrals_pallas, trilinear_integrals_pallas
from jaxmedrf.parallel import make_mesh
from jaxmedrf.projectors.siddon import siddon_integrals
from jaxmedrf.projectors.trilinear import trilinear_integrals
from jaxmedrf.rays import Rays, geometry_rays

N_SAMPLES = 24


def _geometry(views=2):
    g = jm.cone_beam(n_voxel=(16, 16, 16), d_voxel=1.0, n_detector=(8, 8), d_detector=3.0, DSD=60.0, DSO=40.0,
                     n_views=views)
    return g.replace(rotation=np.broadcast_to(np.eye(3), (views, 3, 3)).copy(), translation=np.zeros((views, 3)))


def _rays(g, rng):
    r = geometry_rays(g)
    o = jnp.broadcast_to(r.origins, r.directions.shape).reshape(-1, 3)
    d = r.directions.reshape(-1, 3)
    o = o + jnp.asarray(rng.normal(size=o.shape) * 2.0)  # rays off the source: varied entries
    return o.astype(jnp.float32), d.astype(jnp.float32)


def _close(a, b, rtol, *, per_element=0.0):
    """|a − b| ≤ rtol · max|b| + per_element · |b|, elementwise."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    np.testing.assert_allclose(a, b, rtol=per_element, atol=rtol * float(np.max(np.abs(b))))


def _march_reference(volume, lo, d_voxel, o, e, n):
    """float64 NumPy: midpoint rule over the box chord, trilinear clamped to edge voxels."""
    volume, lo, d_voxel, o, e = (np.asarray(a, np.float64) for a in (volume, lo, d_voxel, o, e))
    shape = np.array(volume.shape)
    hi = lo + shape * d_voxel
    with np.errstate(divide="ignore"):
        t0, t1 = (lo - o) / e, (hi - o) / e
    tn = np.clip(np.max(np.minimum(t0, t1)), 0, 1)
    tf = max(np.clip(np.min(np.maximum(t0, t1)), 0, 1), tn)
    total = 0.0
    for i in range(n):
        g = (o + (tn + (i + 0.5) / n * (tf - tn)) * e - lo) / d_voxel
        if np.any(g < 0) or np.any(g > shape):
            continue
        c = np.clip(g - 0.5, 0, shape - 1)
        i0 = np.clip(np.floor(c), 0, shape - 2).astype(int)
        f = c - i0
        for corner in np.ndindex(2, 2, 2):
            w = np.prod(np.where(corner, f, 1 - f))
            total += w * volume[tuple(i0 + corner)]
    return total * (tf - tn) / n * np.linalg.norm(e)


def _off_voxel_edges(lo, d_voxel, shape, o, e, margin_mm=1e-3):
    """Rays whose Siddon integral is differentiable in origin and direction with room to spare:
    no two plane crossings of different axes within ``margin_mm`` inside the box. Where they
    meet the ray passes a voxel edge, the gradient jumps, and float32 rounding picks a side."""
    lo, d_voxel, o, e = (np.asarray(a, np.float64) for a in (lo, d_voxel, o, e))
    keep = []
    for oi, ei in zip(o, e):
        with np.errstate(divide="ignore", invalid="ignore"):
            alphas = [(lo[k] + np.arange(shape[k] + 1) * d_voxel[k] - oi[k]) / ei[k] for k in range(3)]
        a_in = max(np.min(a) for a in alphas)
        a_out = min(np.max(a) for a in alphas)
        marks = sorted((a, k) for k, a_k in enumerate(alphas) for a in a_k if a_in <= a <= a_out)
        gaps = [(b - a) * np.linalg.norm(ei) for (a, j), (b, k) in zip(marks, marks[1:]) if j != k]
        keep.append(min(gaps, default=np.inf) > margin_mm)
    return np.array(keep)


def _weighted(fn, vol, o, d, w, lo, dv, n_samples=N_SAMPLES):
    """``Σ w · integrals`` and the integrals: the loss whose gradients the tests compare."""
    s = fn(vol, Rays(o, d), lo, dv, n_samples=n_samples)
    return jnp.sum(w * s), s


@jax.jit
def _xla_reference(vol32, o, d, w, lo, dv):
    """The XLA trilinear integrals and the gradients of their weighted sum in the float32 volume and
    the rays: the reference of every dtype (module level, every array an argument, so that each
    parametrisation and test with these shapes reuses the one compiled program)."""
    (_, s), grads = jax.value_and_grad(functools.partial(_weighted, trilinear_integrals), argnums=(0, 1, 2),
                                       has_aux=True)(vol32, o, d, w, lo, dv)
    return s, grads


@functools.partial(jax.jit, static_argnames=("pack",))
def _kernel_value_and_grads(vol, o, d, w, lo, dv, *, pack=None):
    """The fused kernel's integrals (with ``pack``) and the gradients of their weighted sum in the
    volume and the rays: one program per dtype and ``pack``, shared by the tests (the plain
    gathers' is both test_values_and_gradients_equal_xla's and test_packed_gathers_equal_plain's)."""
    fn = functools.partial(trilinear_integrals_pallas, pack=pack, interpret=True)
    (_, s), grads = jax.value_and_grad(functools.partial(_weighted, fn), argnums=(0, 1, 2), has_aux=True)(
        vol, o, d, w, lo, dv)
    return s, grads


@jax.jit
def _xla_volume_grad(vol32, o, d, w, lo, dv):
    """The gradient in the float32 volume alone of :func:`_xla_reference`'s weighted sum."""
    return jax.grad(lambda v: _weighted(trilinear_integrals, v, o, d, w, lo, dv)[0])(vol32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_xla(rng, dtype):
    g = _geometry()
    volume = jnp.asarray(rng.random(g.n_voxel), dtype)
    o, d = _rays(g, rng)
    lo, _ = volume_box(g)
    dv = jnp.asarray(g.d_voxel, jnp.float32)
    w = jnp.asarray(rng.normal(size=o.shape[0]), jnp.float32)

    def loss(fn, vol, o, d):
        return _weighted(fn, vol, o, d, w, lo, dv)[0]

    kernel = lambda *a, **k: trilinear_integrals_pallas(*a, interpret=True, **k)  # noqa: E731
    got = jax.jit(lambda v, o, d: kernel(v, Rays(o, d), lo, dv, n_samples=N_SAMPLES))(volume, o, d)
    # XLA on the volume rounded to ``dtype``, in float32 (as the kernel computes). The integrals are
    # linear in the volume, so its float32 gradient cast to ``dtype`` is the gradient in a ``dtype``
    # volume of ``trilinear_integrals(v.astype(float32))`` (the transpose of the cast is that cast).
    vol32 = volume.astype(jnp.float32)
    want, (rv, ro, rd) = _xla_reference(vol32, o, d, w, lo, dv)
    rv = rv.astype(dtype)
    assert got.dtype == jnp.float32 and got.shape == (o.shape[0],)
    _close(got, want, 1e-5)
    ref = [_march_reference(vol32, lo, dv, o[k], d[k], N_SAMPLES) for k in range(0, o.shape[0], 16)]
    _close(got[::16], ref, 1e-5)

    _, (gv, go, gd) = _kernel_value_and_grads(volume, o, d, w, lo, dv)
    assert gv.dtype == volume.dtype
    _close(gv, rv, 1e-5, per_element=0.0 if dtype == jnp.float32 else 2.0**-7)  # one bfloat16 ulp
    _close(go, ro, 1e-4)
    _close(gd, rd, 1e-4)
    if dtype == jnp.float32:  # only the rays, only the volume: the unused half of the backward is skipped
        go2, gd2 = jax.jit(jax.grad(lambda *a: loss(kernel, volume, *a), argnums=(0, 1)))(o, d)
        _close(go2, ro, 1e-4)
        _close(gd2, rd, 1e-4)
        _close(jax.jit(jax.grad(lambda v: loss(kernel, v, o, d)))(volume), rv, 1e-5)


# (16, 16, 16) ran here too, for both adjoints: no code path of the kernels depends on the sizes
# beyond an axis being one voxel long (and the 2³¹ index limit), so (5, 7, 9) covers the general
# box (with more samples per cell, which "runs" sums) at a third of the cost.
@pytest.mark.parametrize("shape, adjoint", [((5, 7, 9), "quads"), ((6, 1, 4), "quads"), ((4, 5, 1), "quads"),
                                            ((5, 7, 9), "runs"), ((6, 1, 4), "runs")])
def test_quad_adjoint_equals_xla(rng, shape, adjoint):
    """``adjoint="quads"`` (four (y, z) corners per 16-byte add into a 4-column buffer, folded
    onto the voxels after): the XLA volume gradient to 1e-5, also with one-voxel axes (the
    buffer's corners past the edge carry weight 0) and with a bfloat16 volume (one ulp).
    ``"runs"`` (a ray's consecutive samples in one cell summed before the adds; at
    ``N_SAMPLES`` over the few voxels a ray crosses, most cells hold several samples): the same."""
    g = jm.cone_beam(n_voxel=shape, d_voxel=(1.0, 1.3, 0.9), n_detector=(8, 8), d_detector=3.0, DSD=60.0, DSO=40.0,
                     n_views=2)
    g = g.replace(rotation=np.broadcast_to(np.eye(3), (2, 3, 3)).copy(), translation=np.zeros((2, 3)))
    o, d = _rays(g, rng)
    lo, _ = volume_box(g)
    dv = jnp.asarray(g.d_voxel, jnp.float32)
    w = jnp.asarray(rng.normal(size=o.shape[0]), jnp.float32)
    # The XLA volume gradient, in float32: the integrals are linear in the volume, so it does not
    # depend on the volume, and in a bfloat16 volume it is this cast to bfloat16 (the transpose of
    # ``v.astype(float32)``): one reference program for both dtypes.
    want32 = _xla_volume_grad(jnp.asarray(rng.random(shape), jnp.float32), o, d, w, lo, dv)
    # bfloat16 at (5, 7, 9) only: the adjoints add float32 into a float32 buffer whatever the volume's
    # dtype (cast at the end), so the one-voxel axes are the float32 code again
    for dtype in (jnp.float32, jnp.bfloat16) if shape == (5, 7, 9) else (jnp.float32,):
        volume = jnp.asarray(rng.random(shape), dtype)
        got = jax.jit(jax.grad(lambda v: jnp.sum(w * trilinear_integrals_pallas(
            v, Rays(o, d), lo, dv, n_samples=N_SAMPLES, adjoint=adjoint, interpret=True))))(volume)
        want = want32.astype(dtype)
        assert got.dtype == volume.dtype and float(jnp.max(jnp.abs(want))) > 0
        _close(got, want, 1e-5, per_element=0.0 if dtype == jnp.float32 else 2.0**-7)
    with pytest.raises(ValueError, match="adjoint"):
        project_pallas(volume, g, adjoint="atomic", interpret=True)


# float16 runs "z" only: its 16-bit words unpack by their own branch of ``_unpack_z``, while its
# "yz" gathers are bfloat16's code with another storage dtype (the values are cast to float32 alike).
@pytest.mark.parametrize("dtype, packs", [(jnp.float32, ("z", "yz")), (jnp.bfloat16, ("z", "yz")),
                                          (jnp.float16, ("z",))], ids=["float32", "bfloat16", "float16"])
def test_packed_gathers_equal_plain(rng, dtype, packs):
    """``pack="z"`` (16-bit pairs in one word, float32 pairs side by side) and ``"yz"`` (four
    corners side by side): the same values and volume/origin/direction gradients as the
    plain gathers (1e-5: the corners are weighted in another order)."""
    g = _geometry()
    volume = jnp.asarray(rng.random(g.n_voxel), dtype)
    o, d = _rays(g, rng)
    lo, _ = volume_box(g)
    dv = jnp.asarray(g.d_voxel, jnp.float32)
    w = jnp.asarray(rng.normal(size=o.shape[0]), jnp.float32)
    want, want_grads = _kernel_value_and_grads(volume, o, d, w, lo, dv)
    for pack in packs:
        got, got_grads = _kernel_value_and_grads(volume, o, d, w, lo, dv, pack=pack)
        _close(got, want, 1e-5)  # per ray: the weighted sum cancels, so its own size is no scale
        for a, b in zip(got_grads, want_grads):
            _close(a, b, 1e-5)
    with pytest.raises(ValueError, match="pack"):
        project_pallas(volume, g, pack="x", interpret=True)


def test_project_and_pose_gradient_equal_xla(rng):
    g = _geometry()
    volume = jnp.asarray(rng.random(g.n_voxel), jnp.float32)
    kernel = lambda v, geo: project_pallas(v, geo, n_samples=N_SAMPLES, block_rays=16, lanes="v",  # noqa: E731
                                           interpret=True)
    step = float(np.sqrt(3 * 16**2)) / (N_SAMPLES - 0.5)
    xla = lambda v, geo: jm.project(v, geo, method="trilinear", step=step)  # noqa: E731
    want = xla(volume, g)
    target = want * 1.1

    def pose_grad(fn):
        def loss(rot, tr):
            p = fn(volume, g.replace(rotation=rot, translation=tr))
            return jnp.sum((p - target) ** 2), p
        return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(jnp.asarray(g.rotation), jnp.asarray(g.translation))

    (grads, got), (ref, _) = pose_grad(kernel), pose_grad(xla)
    # the kernel's projections, from the program that also takes its gradient (the forward alone,
    # through project_pallas: test_vmap_over_volumes_and_tiles)
    _close(got, want, 1e-5)
    for a, b in zip(grads, ref):
        _close(a, b, 1e-4)


def test_vmap_over_volumes_and_tiles(rng):
    g = _geometry(views=1)
    vols = jnp.asarray(rng.random((2, *g.n_voxel)), jnp.float32)
    fn = lambda v: project_pallas(v, g, n_samples=8, block_rays=32, interpret=True)  # noqa: E731
    batched = jax.vmap(fn)(vols)
    _close(batched, jnp.stack([fn(v) for v in vols]), 1e-6)
    # A detector that is not a whole number of tiles, and several chunks of views.
    g2 = jm.cone_beam(n_voxel=(16, 16, 16), d_voxel=1.0, n_detector=(6, 5), d_detector=3.0, DSD=60.0, DSO=40.0,
                      n_views=3)
    got = project_pallas(vols[0], g2, n_samples=8, block_rays=16, chunk_size=30, lanes="v", interpret=True)
    want = jm.project(vols[0], g2, method="trilinear", step=float(np.sqrt(3 * 16**2)) / 7.5)
    _close(got, want, 1e-5)


def test_fallbacks_and_bad_input(rng):
    g = _geometry(views=1)
    volume = jnp.asarray(rng.random(g.n_voxel), jnp.float32)
    want = jm.project(volume, g, method="trilinear")
    with pytest.warns(RuntimeWarning, match="no GPU"):
        got = jm.project(volume, g, method="trilinear", implementation="pallas")  # CPU: XLA runs
    _close(got, want, 1e-6)
    with pytest.warns(RuntimeWarning, match="mesh"):
        project_pallas(volume, g, mesh=make_mesh(), interpret=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # under jit (one program; the fallback's XLA march op by op compiled one per primitive): the
        # warning comes from Python, once, as eagerly
        jax.jit(lambda v: trilinear_integrals_pallas(v, Rays(jnp.zeros((4, 3)), jnp.ones((4, 3))), jnp.zeros(3),
                                                     jnp.ones(3), n_samples=4))(volume)
    assert len(caught) == 1
    with pytest.raises(ValueError, match="implementation"):
        jm.project(volume, g, implementation="cuda")
    with pytest.raises(ValueError, match="block_rays"):
        project_pallas(volume, g, block_rays=48, interpret=True)
    with pytest.raises(ValueError, match="tile"):
        project_pallas(volume, g, block_rays=32, tile=(4, 4), interpret=True)
    with pytest.raises(ValueError, match="n_samples"):
        project_pallas(volume, g, n_samples=0, interpret=True)
    with pytest.raises(ValueError, match="volume"):
        project_pallas(volume[:8], g, interpret=True)


def test_siddon_kernel_equals_xla(rng):
    g = _geometry()
    g = g.replace(d_voxel=np.array([1.0, 1.2, 0.9]))
    volume = jnp.asarray(rng.random(g.n_voxel), jnp.float32)
    o, d = _rays(g, rng)
    lo, _ = volume_box(g)
    dv = jnp.asarray(g.d_voxel, jnp.float32)
    w = jnp.asarray(rng.normal(size=o.shape[0]), jnp.float32)
    kernel = lambda v, r, lo, dv: siddon_integrals_pallas(v, r, lo, dv, block_rays=16, interpret=True)  # noqa: E731

    def value_and_grads(fn):  # the integrals and the gradients of their weighted sum, one program each
        def loss(v, o, d):
            s = fn(v, Rays(o, d), lo, dv)
            return jnp.sum(w * s), s
        (_, s), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(volume, o, d)
        return s, grads

    # the values from the programs that also take the gradients (the forward alone: project_pallas below)
    (got, (kv, ko, kd)), (want, (xv, xo, xd)) = value_and_grads(kernel), value_and_grads(siddon_integrals)
    _close(got, want, 1e-5)
    _close(kv, xv, 1e-4)
    smooth = _off_voxel_edges(lo, dv, g.n_voxel, o, d)
    assert smooth.mean() > 0.9
    _close(ko[smooth], xo[smooth], 1e-4)
    _close(kd[smooth], xd[smooth], 1e-4)
    got = project_pallas(volume, g, method="siddon", block_rays=16, interpret=True)
    _close(got, jm.project(volume, g, method="siddon"), 1e-5)
