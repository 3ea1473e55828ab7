"""SE(3) maps against scipy.spatial.transform.Rotation, round trips, geometry conversion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import jaxmedrf as jm
from jaxmedrf import pose as P

# The maps under ``jit``: one compiled program per function, shape and dtype, instead of one per
# primitive when run op by op (the same functions; eager dispatch compiled ~100 small programs a test).
so3_exp, so3_log, se3_exp, se3_log = (jax.jit(f) for f in (P.so3_exp, P.so3_log, P.se3_exp, P.se3_log))


def _rotvecs(rng, n=50):
    """Random rotation vectors plus the hard cases: identity, tiny, near and at 180°."""
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, n - 8), [0.0, 1e-9, 1e-6, 1e-3, np.pi - 1e-3, np.pi - 1e-6, np.pi, 0.5]])
    return axes * angles[:, None]


def test_so3_exp_log_match_scipy(rng, x64):
    w = _rotvecs(rng)
    r_ref = Rotation.from_rotvec(w).as_matrix()
    r = np.asarray(so3_exp(jnp.asarray(w)))
    np.testing.assert_allclose(r, r_ref, atol=1e-12)
    w_back = np.asarray(so3_log(jnp.asarray(r_ref)))
    # At exactly 180° ω and −ω are the same rotation: compare the rotations and the angle.
    np.testing.assert_allclose(np.linalg.norm(w_back, axis=1), np.linalg.norm(w, axis=1), atol=1e-7)
    np.testing.assert_allclose(Rotation.from_rotvec(np.array(w_back)).as_matrix(), r_ref, atol=1e-7)
    keep = np.linalg.norm(w, axis=1) < np.pi - 1e-4
    np.testing.assert_allclose(w_back[keep], w[keep], atol=1e-9)


def test_so3_float32_near_identity_and_180(rng):
    w = _rotvecs(rng).astype(np.float32)
    r = so3_exp(jnp.asarray(w))
    back = np.asarray(so3_log(r))
    ok = np.linalg.norm(w, axis=1) < np.pi - 1e-2
    np.testing.assert_allclose(back[ok], w[ok], atol=2e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(P.rotation_distance_deg)(so3_exp(jnp.asarray(back)), r)), 0.0, atol=0.05)
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.vmap(jax.grad(lambda x: jnp.sum(P.so3_log(P.so3_exp(x))))))(jnp.asarray(w)))))


def test_se3_round_trip(rng, x64):
    xi = np.concatenate([_rotvecs(rng), rng.normal(scale=50, size=(50, 3))], 1)
    keep = np.linalg.norm(xi[:, :3], axis=1) < np.pi - 1e-4
    back = np.asarray(se3_log(se3_exp(jnp.asarray(xi))))
    np.testing.assert_allclose(back[keep], xi[keep], atol=1e-8)
    # exp∘log on poses, including the 180° ones
    pose = P.Pose(jnp.asarray(Rotation.from_rotvec(xi[:, :3]).as_matrix()), jnp.asarray(xi[:, 3:]))
    again = se3_exp(se3_log(pose))
    np.testing.assert_allclose(np.asarray(again.rotation), np.asarray(pose.rotation), atol=1e-7)
    np.testing.assert_allclose(np.asarray(again.translation), np.asarray(pose.translation), atol=1e-6)


def test_se3_exp_matches_matrix_exponential(rng, x64):
    from scipy.linalg import expm

    xi = rng.normal(size=6)
    m = np.zeros((4, 4))
    m[:3, :3] = P.hat(jnp.asarray(xi[:3]))
    m[:3, 3] = xi[3:]
    np.testing.assert_allclose(np.asarray(P.se3_exp(jnp.asarray(xi)).matrix()), expm(m), atol=1e-12)


def test_quaternion_and_euler_match_scipy(rng, x64):
    rot = Rotation.random(40, random_state=int(rng.integers(1 << 31)))
    q_ref = rot.as_quat(scalar_first=True)
    q_ref = np.where(q_ref[:, :1] < 0, -q_ref, q_ref)
    np.testing.assert_allclose(np.asarray(jax.jit(P.matrix_to_quaternion)(jnp.asarray(rot.as_matrix()))), q_ref, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jit(P.quaternion_to_matrix)(jnp.asarray(q_ref))), rot.as_matrix(), atol=1e-12)
    eul = rot.as_euler("ZYX")
    np.testing.assert_allclose(np.asarray(jax.jit(P.euler_to_matrix)(jnp.asarray(eul))), rot.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jit(P.matrix_to_euler)(jnp.asarray(rot.as_matrix()))), eul, atol=1e-9)
    axis, angle = rng.normal(size=3), 0.7
    np.testing.assert_allclose(
        np.asarray(jax.jit(P.axis_angle_to_matrix)(jnp.asarray(axis), angle)),
        Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix(), atol=1e-12,
    )


def test_compose_inverse_apply_distance(rng, x64):
    a = P.se3_exp(jnp.asarray(rng.normal(size=6) * [1, 1, 1, 30, 30, 30]))
    b = P.se3_exp(jnp.asarray(rng.normal(size=6) * [1, 1, 1, 30, 30, 30]))
    x = jnp.asarray(rng.normal(size=(7, 3)) * 40)
    np.testing.assert_allclose(np.asarray(P.apply(P.compose(a, b), x)), np.asarray(P.apply(a, P.apply(b, x))), atol=1e-10)
    np.testing.assert_allclose(np.asarray(P.apply(P.inverse(a), P.apply(a, x))), np.asarray(x), atol=1e-10)
    np.testing.assert_allclose(np.asarray(P.compose(a, b).matrix()), np.asarray(a.matrix() @ b.matrix()), atol=1e-10)
    ref = np.degrees((Rotation.from_matrix(np.asarray(a.rotation)).inv() * Rotation.from_matrix(np.asarray(b.rotation))).magnitude())
    np.testing.assert_allclose(float(P.rotation_distance_deg(a.rotation, b.rotation)), ref, atol=1e-8)
    assert float(P.rotation_distance_deg(a.rotation, a.rotation)) == pytest.approx(0.0, abs=1e-6)
    assert float(P.translation_distance(jnp.zeros(3), jnp.asarray([3.0, 4.0, 0.0]))) == pytest.approx(5.0)


def test_geometry_conversion_renders_the_view():
    g = jm.cone_beam(n_voxel=(8, 8, 8), d_voxel=4.0, n_detector=(6, 7), d_detector=8.0, DSD=400, DSO=250, n_views=5)
    g = g.replace(rotation=Rotation.from_rotvec(np.full((5, 3), 0.05)).as_matrix(), translation=np.full((5, 3), 2.0))
    vol = np.random.default_rng(0).uniform(size=(8, 8, 8)).astype(np.float32)
    full = jm.project(vol, g)
    for i in (0, 3):
        one = jm.project(vol, P.to_geometry(P.from_geometry(g, i), g))
        np.testing.assert_allclose(np.asarray(one[0]), np.asarray(full[i]), rtol=1e-4, atol=1e-4)


def test_c_arm_intrinsics():
    d = P.c_arm_intrinsics(sdd=1020.0, pixel_spacing=0.5, n_detector=(100, 200), principal_point=(49.5, 101.5))
    assert d["DSD"] == 1020.0 and d["d_detector"] == (0.5, 0.5)
    assert d["off_detector"] == pytest.approx((0.0, -1.0))
    g = P.c_arm_geometry(sdd=1020.0, pixel_spacing=(0.4, 0.5), n_detector=(10, 20), n_voxel=(8, 8, 8), d_voxel=1.0)
    assert g.n_views == 1 and float(g.DSO) == 510.0
    with pytest.raises(ValueError, match="sdd"):
        P.c_arm_intrinsics(sdd=-1.0, pixel_spacing=1.0, n_detector=(4, 4))
    with pytest.raises(ValueError, match="pixel_spacing"):
        P.c_arm_intrinsics(sdd=1.0, pixel_spacing=0.0, n_detector=(4, 4))


def test_pose_json_round_trip(rng):
    p = P.se3_exp(jnp.asarray(rng.normal(size=6) * [0.5, 0.5, 0.5, 10, 10, 10], jnp.float32))
    d = P.pose_to_dict(p)
    for key in ("matrix", "rotation", "quaternion_wxyz", "euler_zyx_intrinsic_deg", "rotation_vector_deg"):
        sub = {key: d[key], "translation_mm": d["translation_mm"]}
        back = P.from_json_dict(sub)
        np.testing.assert_allclose(np.asarray(back.rotation), np.asarray(p.rotation), atol=1e-5)
        np.testing.assert_allclose(np.asarray(back.translation), np.asarray(p.translation), atol=1e-4)
    with pytest.raises(ValueError, match="rotation"):
        P.from_json_dict({"translation_mm": [0, 0, 0]})
    with pytest.raises(ValueError, match="proper rotation"):
        P.from_json_dict({"rotation": np.diag([1.0, 1.0, -1.0]).tolist()})
