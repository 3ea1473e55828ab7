"""Projectors: exactness against analytic phantoms and an independent slow reference,
adjointness, gradients, and jit / vmap / 8-device sharding.

Tolerances (float32): Siddon vs the float64 NumPy voxel walk 1e-5 relative; adjointness
1e-5 relative; jit/vmap/sharded equality 1e-6 relative. check_grads runs in float64.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

import jaxmedrf as jm
from jaxmedrf import phantoms
from jaxmedrf.parallel import make_mesh


def voxel_walk_reference(volume, lo, d, o, e):
    """Amanatides & Woo (1987) traversal in float64 Python: ∫ μ along the segment o → e."""
    volume, lo, d, o, e = (np.asarray(a, np.float64) for a in (volume, lo, d, o, e))
    n = np.array(volume.shape)
    direction = e - o
    length = np.linalg.norm(direction)
    hi = lo + n * d
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(direction != 0, (lo - o) / direction, -np.inf)
        t1 = np.where(direction != 0, (hi - o) / direction, np.inf)
    tmin = np.max(np.minimum(t0, t1).clip(min=0.0)) if np.all((direction != 0) | ((o > lo) & (o < hi))) else 1.0
    tmax = min(np.min(np.maximum(t0, t1)), 1.0)
    if tmax <= tmin:
        return 0.0
    t = tmin
    p = o + (t + 1e-12) * direction
    idx = np.clip(np.floor((p - lo) / d).astype(int), 0, n - 1)
    step = np.sign(direction).astype(int)
    total = 0.0
    while t < tmax - 1e-15:
        nxt = []
        for a in range(3):
            if step[a] == 0:
                nxt.append(np.inf)
            else:
                plane = lo[a] + (idx[a] + (step[a] > 0)) * d[a]
                nxt.append((plane - o[a]) / direction[a])
        a = int(np.argmin(nxt))
        t_next = min(nxt[a], tmax)
        total += volume[tuple(idx)] * (t_next - t) * length
        t = t_next
        idx[a] += step[a]
        if idx[a] < 0 or idx[a] >= n[a]:
            break
    return total


def test_siddon_matches_independent_voxel_walk(rng):
    g = jm.cone_beam(n_voxel=(7, 6, 5), d_voxel=(1.0, 1.3, 0.9), n_detector=(5, 6), d_detector=(2.1, 1.9),
                     DSD=40.0, DSO=25.0, n_views=3, off_detector=(0.4, -0.3), off_origin=(0.3, -0.2, 0.1),
                     angles=rng.uniform(0, 2 * np.pi, 3))
    vol = rng.uniform(0.0, 1.0, g.n_voxel).astype(np.float32)
    proj = np.asarray(jm.project(vol, g, method="siddon"))
    rays = jm.geometry_rays(g)
    lo, _ = jm.volume_box(g)
    ref = np.zeros(g.projection_shape)
    for i, r, c in itertools.product(*map(range, g.projection_shape)):
        o = np.asarray(rays.origins[i, r, c])
        ref[i, r, c] = voxel_walk_reference(vol, lo, g.d_voxel, o, o + np.asarray(rays.directions[i, r, c]))
    assert np.count_nonzero(ref) > 40
    np.testing.assert_allclose(proj, ref, rtol=1e-5, atol=1e-5 * ref.max())


def joseph_reference(volume, lo, d, o, r):
    """Joseph (1982) in float64 Python: one zero-padded bilinear read per voxel plane along the
    ray's dominant axis (in voxels), weighted by the ray length between planes."""
    volume, lo, d, o, r = (np.asarray(a, np.float64) for a in (volume, lo, d, o, r))
    a = int(np.argmax(np.abs(r) / d))
    b, c = [k for k in range(3) if k != a]
    total = 0.0
    for i in range(volume.shape[a]):
        t = (lo[a] + (i + 0.5) * d[a] - o[a]) / r[a]
        if not 0 <= t <= 1:
            continue
        p = o + t * r
        fb, fc = (p[b] - lo[b]) / d[b] - 0.5, (p[c] - lo[c]) / d[c] - 0.5  # voxel-centre coordinates
        plane = np.take(volume, i, axis=a)
        val = 0.0
        for jb, jc in itertools.product((np.floor(fb), np.floor(fb) + 1), (np.floor(fc), np.floor(fc) + 1)):
            w = (1 - abs(fb - jb)) * (1 - abs(fc - jc))
            if 0 <= jb < plane.shape[0] and 0 <= jc < plane.shape[1]:
                val += w * plane[int(jb), int(jc)]
        total += val * d[a] * np.linalg.norm(r) / abs(r[a])
    return total


def test_joseph_matches_independent_reference(rng):
    # per-view poses tilt some views so that every axis is some ray's dominant one
    rot = np.stack([np.eye(3), np.eye(3), jm.pose.so3_exp(np.array([0.1, 1.4, 0.2]))])  # view 2 looks along z
    g = jm.cone_beam(n_voxel=(7, 6, 5), d_voxel=(1.0, 1.3, 0.9), n_detector=(5, 6), d_detector=(2.1, 1.9),
                     DSD=40.0, DSO=25.0, n_views=3, off_detector=(0.4, -0.3), off_origin=(0.3, -0.2, 0.1),
                     angles=np.array([0.3, 1.9, 0.1]) + rng.uniform(-0.1, 0.1, 3))
    g = g.replace(rotation=np.asarray(rot))
    vol = rng.uniform(0.0, 1.0, g.n_voxel).astype(np.float32)
    proj = np.asarray(jm.project(vol, g, method="joseph", chunk_size=29))
    rays = jm.geometry_rays(g)
    lo, _ = jm.volume_box(g)
    ref = np.zeros(g.projection_shape)
    axes = set()
    for i, r, c in itertools.product(*map(range, g.projection_shape)):
        o, dr = np.asarray(rays.origins[i, r, c]), np.asarray(rays.directions[i, r, c])
        axes.add(int(np.argmax(np.abs(dr) / np.asarray(g.d_voxel))))
        ref[i, r, c] = joseph_reference(vol, lo, g.d_voxel, o, dr)
    assert axes == {0, 1, 2} and np.count_nonzero(ref) > 40
    np.testing.assert_allclose(proj, ref, rtol=1e-5, atol=1e-5 * ref.max())


def test_joseph_is_close_to_siddon_on_a_smooth_volume():
    g = jm.cone_beam(n_voxel=(24, 24, 24), d_voxel=1.0, n_detector=(16, 16), d_detector=2.0, DSD=90.0, DSO=60.0, n_views=6)
    x, y, z = np.meshgrid(*[np.arange(24) - 11.5] * 3, indexing="ij")
    vol = np.exp(-(x**2 + y**2 + z**2) / 40.0).astype(np.float32)
    jo, si = jm.project(vol, g, method="joseph"), jm.project(vol, g, method="siddon")
    # piecewise-constant vs bilinear voxels of a Gaussian 4.5 voxels wide: 0.9 % apart (O(h²))
    assert _relative_error(jo, si) < 1.5e-2


def test_joseph_has_no_kernel_and_falls_back_with_a_warning(rng):
    g = jm.cone_beam(n_voxel=(6, 6, 6), d_voxel=1.0, n_detector=(4, 4), d_detector=2.0, DSD=40.0, DSO=25.0, n_views=2)
    vol = rng.uniform(size=g.n_voxel).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="Joseph"):
        out = jm.project(vol, g, method="joseph", implementation="pallas")
    np.testing.assert_allclose(out, jm.project(vol, g, method="joseph"), rtol=1e-6)


def _relative_error(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_projections_converge_to_analytic_line_integrals(beam):
    ph = phantoms.shepp_logan(radius=60.0, mu_scale=0.1)
    errors, exact = {}, None
    for n in (32, 64):
        common = dict(n_voxel=(n, n, n), d_voxel=128.0 / n, n_detector=(24, 32), off_detector=(1.3, -2.1),
                      off_origin=(0.0, 0.0, 0.0), n_views=4)
        if beam == "cone":
            g = jm.cone_beam(d_detector=(7.0, 7.0), DSD=500.0, DSO=300.0, **common)
        else:
            g = jm.parallel_beam(d_detector=(4.5, 4.5), **common)
        if exact is None:  # the rays depend on the detector and the 128 mm box, the same for both grids
            exact, box = phantoms.analytic_projections(ph, g), jm.volume_box(g)
        np.testing.assert_array_equal(np.asarray(jm.volume_box(g)), np.asarray(box))
        vol = phantoms.voxelize(ph, g, supersample=3)
        for m in ("siddon", "trilinear"):
            errors[m, n] = _relative_error(jm.project(vol, g, method=m), exact)
    print(errors)
    for m in ("siddon", "trilinear"):
        # First-order convergence: the thin skull dominates (edge voxels are partial volumes).
        assert errors[m, 32] < 0.20, errors
        assert errors[m, 64] < 0.11, errors
        assert errors[m, 64] < 0.7 * errors[m, 32], errors


def test_offset_volume_and_detector_against_analytic():
    # A shifted sphere phantom inside a shifted grid, seen by a shifted detector.
    ph = phantoms.spheres(radius=20.0)
    ph = ph._replace(centers=np.asarray(ph.centers) + np.array([6.0, -4.0, 3.0]))
    g = jm.cone_beam(n_voxel=(48, 48, 48), d_voxel=1.0, off_origin=(6.0, -4.0, 3.0), n_detector=(20, 24),
                     d_detector=4.0, off_detector=(3.0, -5.0), DSD=300.0, DSO=200.0, n_views=3)
    exact = phantoms.analytic_projections(ph, g)
    vol = phantoms.voxelize(ph, g, supersample=3)
    for m in ("siddon", "trilinear"):
        assert _relative_error(jm.project(vol, g, method=m), exact) < 0.045  # 2.5 voxels per radius-20 mm: ~3 %


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_single_bright_voxel_lands_where_the_formulas_say(beam):
    # Pixels much finer than the voxel's footprint (~8 px): the sampled footprint's centroid marks
    # the projected voxel centre to within half a pixel (sampling), while the offsets used here
    # are 3.5–9 px, so a sign or offset error in the convention would move it by several pixels.
    n = 21
    common = dict(n_voxel=(n, n, n), d_voxel=0.5, off_origin=(0.4, -0.3, 0.2), n_detector=(181, 191),
                  off_detector=(0.35, -0.55), angles=np.deg2rad([0.0, 37.0, 90.0, 211.0]))
    if beam == "cone":
        g = jm.cone_beam(d_detector=0.1, DSD=100.0, DSO=60.0, **common)
    else:
        g = jm.parallel_beam(d_detector=0.06, **common)
    du, dv = np.asarray(g.d_detector)[1], np.asarray(g.d_detector)[0]
    xs, ys, zs = (np.asarray(a) for a in jm.voxel_centers(g))
    for ijk in [(10, 10, 10), (3, 15, 7), (17, 4, 14)]:
        vol = np.zeros(g.n_voxel, np.float32)
        vol[ijk] = 1.0
        proj = np.asarray(jm.project(vol, g, method="siddon"))
        P = np.array([xs[ijk[0]], ys[ijk[1]], zs[ijk[2]]])
        for i, th in enumerate(np.asarray(g.angles)):
            radial = np.array([np.cos(th), np.sin(th), 0.0])
            u = np.array([-np.sin(th), np.cos(th), 0.0])
            if beam == "cone":
                S, D = 60.0 * radial, (60.0 - 100.0) * radial
                hit = S + np.dot(D - S, radial) / np.dot(P - S, radial) * (P - S)
                a, b = np.dot(hit - D, u), hit[2]
            else:
                a, b = np.dot(P, u), P[2]
            col = (a - (-0.55)) / du + (191 - 1) / 2
            row = (b - 0.35) / dv + (181 - 1) / 2
            img = proj[i]
            w = img / img.sum()
            r_mean = (w.sum(1) * np.arange(img.shape[0])).sum()
            c_mean = (w.sum(0) * np.arange(img.shape[1])).sum()
            assert abs(r_mean - row) < 0.55 and abs(c_mean - col) < 0.55, (ijk, i, r_mean, row, c_mean, col)


CHUNK = 37  # rays per chunk: 42 pixels a view, so chunks straddle views and the last one is partial


def _small_scan(beam):
    """A small scan with an off-centre grid (the adjoint test's, and TransformationsTest's cone beam:
    the projections and backprojections of both are the same programs)."""
    common = dict(n_voxel=(9, 8, 7), d_voxel=1.0, n_detector=(6, 7), n_views=5, off_origin=(0.5, 0, -0.3))
    if beam == "cone":
        return jm.cone_beam(d_detector=2.5, DSD=60.0, DSO=35.0, **common)
    return jm.parallel_beam(d_detector=1.7, **common)


@pytest.mark.parametrize("method", ["siddon", "trilinear", "joseph"])
@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_backprojection_is_the_exact_adjoint(method, beam, rng):
    g = _small_scan(beam)
    x = rng.normal(size=g.n_voxel).astype(np.float32)
    y = rng.normal(size=g.projection_shape).astype(np.float32)
    ax = jm.project(x, g, method=method, chunk_size=CHUNK)
    aty = jm.backproject(y, g, method=method, chunk_size=CHUNK)
    lhs, rhs = float(jnp.vdot(ax, y)), float(jnp.vdot(x, aty))
    scale = float(jnp.linalg.norm(ax) * np.linalg.norm(y))
    assert abs(lhs - rhs) < 1e-5 * scale, (lhs, rhs)


@pytest.mark.parametrize("method", ["siddon", "trilinear", "joseph"])
def test_gradients_in_volume_and_pose(method, x64, rng):
    g = jm.cone_beam(n_voxel=(6, 6, 6), d_voxel=1.0, n_detector=(4, 5), d_detector=2.0, DSD=40.0, DSO=25.0,
                     angles=np.array([0.3, 1.9]))
    vol = jnp.asarray(rng.uniform(0.1, 1.0, g.n_voxel))

    def posed(tvec, angle):
        """``g`` with view 1's rig rotated by ``angle`` about z and moved by ``tvec`` (view 0 fixed)."""
        rot = jnp.stack([jnp.eye(3), jnp.array([[jnp.cos(angle), -jnp.sin(angle), 0.0],
                                                 [jnp.sin(angle), jnp.cos(angle), 0.0], [0.0, 0.0, 1.0]])])
        return g.replace(rotation=rot, translation=jnp.stack([jnp.zeros(3), tvec]))

    tvec, angle = jnp.array([0.31, -0.17, 0.23]), jnp.array(0.05)
    # The volume gradient on the posed scan: the projections the pose check's differences take
    # are then the same compiled program.
    g_posed = posed(tvec, angle)
    check_grads(lambda v: jm.project(v, g_posed, method=method), (vol,), order=1, modes=["rev"], eps=1e-4)

    def by_pose(tvec, angle):
        return jm.project(vol, posed(tvec, angle), method=method)

    check_grads(by_pose, (tvec, angle), order=1, modes=["rev"], eps=1e-5, atol=2e-3, rtol=2e-3)


class TransformationsTest(chex.TestCase):
    """The projector jitted and not (chex variants): with the geometry closed over or an
    argument (traced under jit), vmapped over volumes, sharded over the 8 CPU devices; each
    equal to the plain eager projection to 1e-6 relative (the sharded adjoint to 1e-5).

    Every method runs jitted; not jitted, Siddon's only: outside ``jit`` it is the wrappers
    (``project``, ``backproject``) that run differently, and they are the same for every method,
    whose own code runs inside the projector's ``jit`` either way. The scan is the adjoint
    test's cone beam, so the plain projections and backprojections are its programs."""

    @pytest.fixture(autouse=True)
    def _rng(self, rng):
        self.rng = rng

    @chex.variants(with_jit=True, without_jit=True)
    def test_closed_over_traced_vmapped_and_sharded_agree_siddon(self):
        self._agree("siddon")

    @chex.variants(with_jit=True)
    @parameterized.named_parameters(("_trilinear", "trilinear"), ("_joseph", "joseph"))
    def test_closed_over_traced_vmapped_and_sharded_agree(self, method):
        self._agree(method)

    def _agree(self, method):
        assert len(jax.devices()) == 8
        g = _small_scan("cone")
        vols = jnp.asarray(self.rng.uniform(size=(2, *g.n_voxel)).astype(np.float32))
        want = jnp.stack([jm.project(v, g, method=method, chunk_size=CHUNK) for v in vols])
        mesh = make_mesh()
        got = (
            self.variant(lambda v: jm.project(v, g, method=method))(vols[0]),
            self.variant(lambda v, geo: jm.project(v, geo, method=method))(vols[0], g),
            self.variant(jax.vmap(lambda v: jm.project(v, g, method=method)))(vols),
            self.variant(lambda v: jm.project(v, g, method=method, mesh=mesh, chunk_size=64))(vols[0]),
        )
        chex.assert_trees_all_close(got, (want[0], want[0], want, want[0]), rtol=1e-6, atol=1e-6 * float(jnp.abs(want).max()))
        y = jnp.asarray(self.rng.normal(size=g.projection_shape).astype(np.float32))
        sharded = self.variant(lambda y: jm.backproject(y, g, method=method, mesh=mesh, chunk_size=64))(y)
        chex.assert_trees_all_close(sharded, jm.backproject(y, g, method=method, chunk_size=CHUNK), rtol=1e-5, atol=1e-5)


def test_chunk_size_does_not_change_the_result(rng):
    g = jm.parallel_beam(n_voxel=(8, 8, 8), d_voxel=1.0, n_detector=(5, 7), d_detector=1.5, n_views=3)
    vol = rng.uniform(size=g.n_voxel).astype(np.float32)
    chex.assert_trees_all_close(jm.project(vol, g, chunk_size=13), jm.project(vol, g, chunk_size=10_000), rtol=1e-6)
