"""Clinical orbits and detectors (#21): short scans and limited angles, helical cone beam and the
cylindrical detector, each against an independent reference (NumPy pixel positions, the
phantom's analytic line integrals, the voxelised truth)."""

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
from jaxmedrf.geometry import axial_travel, fan_angles
from jaxmedrf.recon import cgls, fdk, sart


def _psnr(v, ref):
    return 10 * np.log10((ref.max() - ref.min()) ** 2 / np.mean((np.asarray(v) - ref) ** 2))


def _phantom(g):
    """Sphere of 0.02 mm⁻¹ (radius 0.6 of the half-width) with an off-centre insert of 0.01 mm⁻¹."""
    xs, ys, zs = (np.asarray(a) for a in jm.voxel_centers(g))
    X, Y, Z = np.meshgrid(xs, ys, zs, indexing="ij")
    r = 0.6 * g.n_voxel[0] * float(g.d_voxel[0]) / 2
    vol = 0.02 * (X**2 + Y**2 + Z**2 < r**2) + 0.01 * ((X - r / 3) ** 2 + Y**2 + Z**2 < (r / 3) ** 2)
    return vol.astype(np.float32)


def _wide(n=24, n_views=48, **kw):
    """n³ volume of 2 mm voxels in a wide fan (DSO 50 mm, DSD 80 mm; the phantom within ±0.3 rad)."""
    return jm.cone_beam(n_voxel=(n,) * 3, d_voxel=2.0, n_detector=(n, 40 * n // 24), d_detector=4.0, DSD=80.0,
                        DSO=50.0, n_views=n_views, **kw)


def _numpy_pixels(g):
    """Pixel centres straight from the module's equations (circular orbit, optional z translation)."""
    nv, nu = g.n_detector
    dv, du = np.asarray(g.d_detector)
    ov, ou = np.asarray(g.off_detector)
    DSD, DSO = float(g.DSD), float(g.DSO)
    th = np.asarray(g.angles)[:, None, None]
    a = ((np.arange(nu) - (nu - 1) / 2) * du + ou)[None, None, :]
    b = ((np.arange(nv) - (nv - 1) / 2) * dv + ov)[None, :, None]
    src = np.stack(np.broadcast_arrays(DSO * np.cos(th), DSO * np.sin(th), 0 * th), -1)
    if g.detector == "cylindrical":
        gam = a / DSD
        x = DSO * np.cos(th) - DSD * (np.cos(gam) * np.cos(th) + np.sin(gam) * np.sin(th))
        y = DSO * np.sin(th) - DSD * (np.cos(gam) * np.sin(th) - np.sin(gam) * np.cos(th))
    else:
        x = (DSO - DSD) * np.cos(th) - a * np.sin(th)
        y = (DSO - DSD) * np.sin(th) + a * np.cos(th)
    pix = np.stack(np.broadcast_arrays(x, y, b + 0 * th), -1)
    src = np.broadcast_to(src, pix.shape)
    if g.translation is not None:
        t = np.asarray(g.translation)[:, None, None, :]
        src, pix = src + t, pix + t
    return src, pix


@pytest.mark.parametrize("detector", ["flat", "cylindrical"])
@pytest.mark.parametrize("orbit", ["circular", "helical"])
def test_rays_match_numpy_reference(detector, orbit):
    kw = dict(n_voxel=(8,) * 3, d_voxel=2.0, n_detector=(5, 7), d_detector=(2.0, 3.0), DSD=150.0, DSO=90.0,
              off_detector=(1.5, -2.0), detector=detector)
    if orbit == "helical":
        g = jm.helical_beam(pitch=1.3, n_turns=1.5, views_per_turn=4, **kw)
    else:
        g = jm.cone_beam(n_views=5, arc=4.0, **kw)
    rays = jm.geometry_rays(g)
    src, pix = _numpy_pixels(g)
    np.testing.assert_allclose(np.broadcast_to(rays.origins, pix.shape), src, atol=1e-4)
    np.testing.assert_allclose(rays.origins + rays.directions, pix, atol=1e-3)
    if detector == "cylindrical":  # every column at distance DSD from the source in the fan's plane
        np.testing.assert_allclose(np.linalg.norm(np.asarray(rays.directions)[..., :2], axis=-1), 150.0, rtol=1e-6)


def test_helical_pitch_and_table_feed():
    g = jm.helical_beam(pitch=0.8, n_turns=3, views_per_turn=10, n_voxel=(8,) * 3, d_voxel=2.0, n_detector=(6, 8),
                        d_detector=2.5, DSD=300.0, DSO=200.0, off_origin=(0.0, 0.0, 5.0))
    feed = 0.8 * 6 * 2.5 * 200.0 / 300.0  # pitch × detector height at the isocentre, mm per turn
    z = np.asarray(g.translation)[:, 2]
    assert g.n_views == 30 and np.allclose(np.diff(z), feed / 10) and np.isclose(z.mean(), 5.0)
    np.testing.assert_allclose(np.diff(np.asarray(g.angles)), 2 * math.pi / 10)
    assert axial_travel(g) == pytest.approx(feed * 29 / 10) and axial_travel(g.replace(translation=None)) == 0.0
    for bad in (dict(pitch=0.0, n_turns=1), dict(pitch=1.0, n_turns=-1), dict(pitch=1.0, n_turns=1, views_per_turn=0)):
        with pytest.raises(ValueError, match="pitch|n_turns|views_per_turn"):
            jm.helical_beam(**bad)


def test_geometry_fields_round_trip_and_transform():
    g = jm.helical_beam(pitch=1.0, n_turns=1, views_per_turn=4, n_voxel=(8,) * 3, d_voxel=2.0, n_detector=(4, 6),
                        d_detector=2.0, DSD=150.0, DSO=90.0, detector="cylindrical")
    back = jm.Geometry.from_json(g.to_json())
    assert back.detector == "cylindrical" and json.loads(g.to_json())["detector"] == "cylindrical"
    chex.assert_trees_all_close(back, g)
    assert "detector" not in jm.cone_beam(n_views=2).to_dict()  # flat files unchanged
    with pytest.raises(ValueError, match="detector must be one of"):
        g.replace(detector="spherical")
    with pytest.raises(ValueError, match="cylindrical detector needs a cone beam"):
        jm.parallel_beam(n_views=2).replace(detector="cylindrical")
    # the detector kind is static: jit, vmap over a batch of DSDs and grad w.r.t. DSD go through
    end = lambda gg: jm.pixel_rays(gg, 1, 2, 5).directions  # noqa: E731
    end_jit = jax.jit(end)
    chex.assert_trees_all_close(end_jit(g), end(g), atol=1e-4)
    # vmap and grad under jit too (op by op, eager dispatch compiled one program per primitive)
    batch = jax.jit(jax.vmap(lambda d: end(g.replace(DSD=d))))(jnp.array([150.0, 160.0]))
    assert batch.shape == (2, 3)
    grad = jax.jit(jax.grad(lambda d: jnp.sum(end(jax.tree_util.tree_map(jnp.asarray, g).replace(DSD=d)) ** 2)))(150.0)
    fd = (np.sum(np.asarray(end_jit(g.replace(DSD=150.5))) ** 2) - np.sum(np.asarray(end_jit(g.replace(DSD=149.5))) ** 2))
    assert np.isfinite(grad) and grad == pytest.approx(fd, rel=1e-3)


@pytest.mark.parametrize("detector", ["flat", "cylindrical"])
def test_projection_matches_analytic_line_integrals(detector):
    g = jm.helical_beam(pitch=1.0, n_turns=1, views_per_turn=4, n_voxel=(32,) * 3, d_voxel=2.0, n_detector=(12, 16),
                        d_detector=(4.0, 6.0), DSD=200.0, DSO=120.0, detector=detector)
    ph = phantoms.spheres(radius=24.0, mu_scale=1.0)
    exact = np.asarray(phantoms.analytic_projections(ph, g))
    approx = np.asarray(jm.project(phantoms.voxelize(ph, g, supersample=3), g))
    assert exact.max() > 0.5
    # voxelisation error only: 3 % of the largest integral on average, 15 % at worst (edges)
    assert np.mean(np.abs(approx - exact)) < 0.03 * exact.max() and np.max(np.abs(approx - exact)) < 0.15 * exact.max()


def test_fdk_cylindrical_detector_matches_the_flat_panel():
    """Curved-detector FDK of a phantom equals flat-panel FDK of it (the same cone-beam artefacts): closer than
    the curved data read as a flat panel, and the same mean μ (the cos γ and (γ/sin γ)² weights)."""
    g = _wide(n_views=32, detector="cylindrical")
    vol = _phantom(g)
    p = jm.project(vol, g)
    curved = np.asarray(fdk(p, g).volume)
    wrong = np.asarray(fdk(p, g.replace(detector="flat")).volume)
    flat = _wide(n_views=32)
    ref = np.asarray(fdk(jm.project(vol, flat), flat).volume)
    assert _psnr(curved, vol) > 23.0
    assert _psnr(curved, ref) > 36.0 and _psnr(curved, ref) > _psnr(wrong, ref) + 0.5, (_psnr(curved, ref), _psnr(wrong, ref))
    inside = vol > 0.015
    assert curved[inside].mean() == pytest.approx(ref[inside].mean(), rel=0.01)


@pytest.mark.parametrize("detector", ["flat", "cylindrical"])
def test_fdk_short_scan_equals_full_scan_quality(detector):
    """A Parker-weighted short scan (180° + fan angle = 292°) loses < 2.5 dB to the full circle, and without
    the weights it is far worse."""
    full = _wide(detector=detector)
    short = _wide(detector=detector, arc="short")
    assert np.asarray(short.angles)[-1] + 2 * math.pi / 48 < 2 * math.pi
    fan = float(np.max(np.abs(fan_angles(short))))
    arc = float(np.ptp(short.angles)) * 48 / 47
    assert arc == pytest.approx(jm.short_scan_arc(short)) and arc == pytest.approx(math.pi + 2 * fan)
    vol = _phantom(full)
    a = _psnr(fdk(jm.project(vol, full), full).volume, vol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete short scan: no warning
        p = jm.project(vol, short)
        b = _psnr(fdk(p, short).volume, vol)
    c = _psnr(fdk(p, short, short_scan=False).volume, vol)
    assert b > 22.0 and b > a - 2.5 and b > c + 1.5, (a, b, c)


def test_limited_angle_fdk_refuses_and_iterative_methods_reconstruct():
    g = _wide(n=16, n_views=12, arc=math.radians(120))
    vol = _phantom(g)
    p = jm.project(vol, g)
    with pytest.raises(ValueError, match="limited-angle.*SART, CGLS or NAF"):
        fdk(p, g)
    between = _wide(n=16, n_views=12, arc=math.pi + 0.1)  # above 180°, below the short scan
    with pytest.warns(UserWarning, match="below 180° \\+ fan angle"):
        fdk(jm.project(vol, between), between)
    rec = sart(p, g, n_iters=4, n_subsets=4, progress=False)
    res = np.asarray(jm.project(rec.volume, g) - p)
    # the data are fitted (residual < 10 % of the data) and the volume is far nearer the truth than zero
    assert np.linalg.norm(res) < 0.1 * np.linalg.norm(p)
    assert np.linalg.norm(np.asarray(rec.volume) - vol) < 0.6 * np.linalg.norm(vol)


def test_helical_fdk_refuses_and_cgls_reconstructs():
    g = jm.helical_beam(pitch=1.0, n_turns=3, views_per_turn=8, n_voxel=(12,) * 3, d_voxel=2.0, n_detector=(6, 20),
                        d_detector=(3.0, 3.0), DSD=200.0, DSO=120.0)
    vol = _phantom(g)
    p = jm.project(vol, g)
    with pytest.raises(ValueError, match="circular orbit.*helical.*SART, CGLS or NAF"):
        fdk(p, g)
    rec = cgls(p, g, n_iters=8, method="siddon", progress=False)  # the data's own model: a sharp check of the orbit
    # the helix covers the volume (3 turns of 6 rows, ≥ 12 voxels tall): the iterative result is close
    assert _psnr(rec.volume, vol) > 22.0
    assert np.linalg.norm(np.asarray(jm.project(rec.volume, g) - p)) < 0.1 * np.linalg.norm(p)


def test_pallas_kernel_takes_the_new_geometries():
    """The kernel reads the rays of :func:`jaxmedrf.pixel_rays`, so it needs no fallback for them."""
    from jaxmedrf.projectors.pallas import project_pallas

    g = jm.helical_beam(pitch=1.0, n_turns=1, views_per_turn=2, n_voxel=(8,) * 3, d_voxel=2.0, n_detector=(4, 8),
                        d_detector=(3.0, 3.0), DSD=100.0, DSO=60.0, detector="cylindrical")
    vol = jnp.asarray(_phantom(g)) + 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = project_pallas(vol, g, method="siddon", block_rays=32, interpret=True)
    np.testing.assert_allclose(got, jm.project(vol, g, method="siddon"), rtol=1e-4, atol=1e-5)


def test_interop_holds_helical_and_refuses_curved():
    g = jm.helical_beam(pitch=1.0, n_turns=1, views_per_turn=4, n_voxel=(8,) * 3, d_voxel=2.0, n_detector=(4, 6),
                        d_detector=2.0, DSD=150.0, DSO=90.0)
    back = interop.from_astra(interop.to_astra(g))
    r0, r1 = jm.geometry_rays(g), jm.geometry_rays(back)
    np.testing.assert_allclose(np.broadcast_to(r1.origins, r1.directions.shape),
                               np.broadcast_to(r0.origins, r0.directions.shape), atol=1e-3)
    np.testing.assert_allclose(r1.directions, r0.directions, atol=1e-3)
    for fmt in interop.FORMATS:
        with pytest.raises(ValueError, match="cylindrical detector has no equivalent"):
            interop.to_format(g.replace(detector="cylindrical"), fmt)


def test_cli_orbits_detectors_and_clear_refusals(tmp_path, capsys):
    sim = ["simulate", "--n-voxel", "8", "--n-views", "6", "--n-detector", "4", "10", "--no-png"]
    hel = tmp_path / "hel.npz"
    assert main([*sim, "--orbit", "helical", "--pitch", "1.2", "--turns", "2", "--detector", "cylindrical",
                 "--out", str(hel)]) == 0
    g = jm.Geometry.from_json(str(np.load(hel)["geometry"]))
    assert g.detector == "cylindrical" and g.n_views == 12 and axial_travel(g) > 0
    capsys.readouterr()
    assert main(["info", str(hel)]) == 0
    text = capsys.readouterr().out
    assert "helical" in text and "pitch 1.2" in text and "cylindrical" in text
    out = tmp_path / "rec.npz"
    assert main(["reconstruct", str(hel), "--method", "fdk", "--no-png", "--out", str(out)]) == 2
    assert "helical" in capsys.readouterr().err and not out.exists() and not out.with_suffix(".json").exists()
    short = tmp_path / "short.npz"
    assert main([*sim, "--orbit", "short-scan", "--out", str(short)]) == 0
    gs = jm.Geometry.from_json(str(np.load(short)["geometry"]))
    assert float(np.ptp(gs.angles)) * 6 / 5 == pytest.approx(jm.short_scan_arc(gs))
    png = tmp_path / "g.png"
    assert main(["geometry", str(hel), "--plot", str(png)]) == 0 and png.stat().st_size > 0
    for bad in (["--pitch", "1"], ["--orbit", "helical", "--beam", "parallel"], ["--orbit", "short-scan", "--arc", "200"],
                ["--detector", "cylindrical", "--beam", "parallel"]):
        capsys.readouterr()
        assert main([*sim, *bad, "--out", str(tmp_path / "bad.npz")]) == 2
        assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "bad.npz").exists()



@pytest.mark.parametrize("detector", ["flat", "cylindrical"])
def test_project_points_lands_on_the_pixel_whose_ray_holds_the_point(detector):
    from jaxmedrf.registration.errors import project_points

    g = jm.cone_beam(n_views=1, n_voxel=(8,) * 3, d_voxel=2.0, n_detector=(5, 9), d_detector=(2.0, 3.0), DSD=60.0,
                     DSO=40.0, off_detector=(1.0, -2.0), detector=detector)
    rays = jm.pixel_rays(g, 0, jnp.array([1, 3, 4]), jnp.array([0, 5, 8]))
    points = rays.origins + 0.6 * rays.directions
    _, rc = project_points(points, g)
    np.testing.assert_allclose(rc, [[1, 0], [3, 5], [4, 8]], atol=1e-3)
