"""Rigid poses SE(3) as pure functions: exp/log maps, quaternions, Euler angles, C-arm intrinsics.

A pose is a :class:`Pose` ``(rotation R (..., 3, 3), translation t (..., 3) mm)`` acting on
points as ``x ↦ R x + t``. Every function broadcasts over leading batch dimensions and works
under ``jit``, ``vmap`` and ``grad``.

Conventions (a contract, tested against ``scipy.spatial.transform.Rotation``):

* **se(3) vectors** are ``ξ = (ω, ρ)``: rotation vector ``ω`` (rad) first, then ``ρ`` (mm);
  ``exp(ξ) = (exp(ω̂), V(ω) ρ)`` (Barfoot, *State Estimation for Robotics*, 2017, Eq. 7.86,
  with the rotation block first; Rodrigues' formula Eq. 7.14).
* **Quaternions** are scalar first, ``(w, x, y, z)``, unit norm, returned with ``w ≥ 0``.
  (scipy's ``as_quat()`` is scalar last; ``as_quat(scalar_first=True)`` matches.)
* **Euler angles** are *intrinsic ZYX* (yaw ``α`` about z, then pitch ``β`` about the new y,
  then roll ``γ`` about the newest x): ``R = R_z(α) R_y(β) R_x(γ)``, returned as
  ``(α, β, γ)`` in rad; scipy's ``Rotation.from_euler("ZYX", [α, β, γ])``.
* **Axis–angle / rotation vector**: ``ω = θ n``, ``θ ∈ [0, π]``.
* **Composition** ``compose(a, b)`` is ``a ∘ b`` (apply ``b`` first).

**Geometry pose.** :class:`jaxmedrf.Geometry`'s per-view ``rotation``/``translation`` move the
source–detector rig: ``S' = R S + t``, ``D' = R D + t``, ``u' = R u``, ``v' = R v``, where
``S, D, u, v`` are the rig at gantry angle θ. A :class:`Pose` given to :func:`to_geometry` is
this *rig pose* (rig frame → CT frame); registration estimates it. Equivalently the CT moves
by the inverse pose in the rig's frame: a CT point ``p`` has rig coordinates ``R⁻¹ (p − t)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "Pose",
    "apply",
    "axis_angle_to_matrix",
    "c_arm_geometry",
    "c_arm_intrinsics",
    "compose",
    "euler_to_matrix",
    "from_geometry",
    "from_json_dict",
    "hat",
    "identity",
    "inverse",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "pose_to_dict",
    "quaternion_to_matrix",
    "rotation_distance_deg",
    "rotation_z",
    "se3_exp",
    "se3_log",
    "so3_exp",
    "so3_log",
    "to_geometry",
    "translation_distance",
]

_HI = jax.lax.Precision.HIGHEST


class Pose(NamedTuple):
    """A rigid transform ``x ↦ R x + t``: rotation ``(..., 3, 3)``, translation ``(..., 3)`` mm."""

    rotation: Float[Array, "*batch 3 3"]
    translation: Float[Array, "*batch 3"]

    def matrix(self) -> Float[Array, "*batch 4 4"]:
        """The homogeneous 4×4 matrix."""
        r, t = jnp.asarray(self.rotation), jnp.asarray(self.translation)
        top = jnp.concatenate([r, t[..., :, None]], -1)
        bottom = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 0.0, 1.0], r.dtype), (*r.shape[:-2], 1, 4))
        return jnp.concatenate([top, bottom], -2)


def identity(dtype=jnp.float32) -> Pose:
    """The identity pose."""
    return Pose(jnp.eye(3, dtype=dtype), jnp.zeros(3, dtype))


def _mv(m, x):
    return jnp.einsum("...ij,...j->...i", m, x, precision=_HI)


def _mm(a, b):
    return jnp.einsum("...ij,...jk->...ik", a, b, precision=_HI)


def _safe_norm(x, axis=-1):
    sq = jnp.sum(x * x, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def hat(w: Float[ArrayLike, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """The skew matrix ``ŵ`` with ``ŵ x = w × x``."""
    w = jnp.asarray(w)
    z = jnp.zeros_like(w[..., 0])
    x, y, zz = w[..., 0], w[..., 1], w[..., 2]
    return jnp.stack(
        [jnp.stack([z, -zz, y], -1), jnp.stack([zz, z, -x], -1), jnp.stack([-y, x, z], -1)], -2
    )


def _coefficients(theta):
    """``A = sin θ/θ``, ``B = (1−cos θ)/θ²``, ``C = (θ−sin θ)/θ³`` with Taylor series near 0."""
    small = theta < 1e-2
    t = jnp.where(small, 1.0, theta)
    t2 = theta * theta
    a = jnp.where(small, 1 - t2 / 6 + t2 * t2 / 120, jnp.sin(t) / t)
    b = jnp.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - jnp.cos(t)) / (t * t))
    c = jnp.where(small, 1 / 6 - t2 / 120 + t2 * t2 / 5040, (t - jnp.sin(t)) / (t * t * t))
    return a, b, c


def so3_exp(w: Float[ArrayLike, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """Rotation matrix of the rotation vector ``w`` (rad): Rodrigues ``I + A ŵ + B ŵ²``."""
    w = jnp.asarray(w)
    k = hat(w)
    a, b, _ = _coefficients(_safe_norm(w))
    eye = jnp.eye(3, dtype=w.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * _mm(k, k)


def matrix_to_quaternion(r: Float[ArrayLike, "*batch 3 3"]) -> Float[Array, "*batch 4"]:
    """Unit quaternion ``(w, x, y, z)`` with ``w ≥ 0`` of a rotation matrix.

    Shepperd's method (J. Guidance Control 1978): the formula built on the largest of
    ``w², x², y², z²`` is used, so it is accurate at every angle including 180°.
    """
    r = jnp.asarray(r)
    r00, r11, r22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    tr = r00 + r11 + r22
    # 4 q_i² for i = w, x, y, z
    d = jnp.stack([1 + tr, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1)
    i = jnp.argmax(d, -1)
    s = jnp.sqrt(jnp.maximum(jnp.take_along_axis(d, i[..., None], -1)[..., 0], 1e-30))  # = 4|q_i|/2·2
    a = r[..., 2, 1] - r[..., 1, 2]  # 4 w x
    b = r[..., 0, 2] - r[..., 2, 0]  # 4 w y
    c = r[..., 1, 0] - r[..., 0, 1]  # 4 w z
    e = r[..., 0, 1] + r[..., 1, 0]  # 4 x y
    f = r[..., 0, 2] + r[..., 2, 0]  # 4 x z
    g = r[..., 1, 2] + r[..., 2, 1]  # 4 y z
    cands = jnp.stack(
        [
            jnp.stack([s * s, a, b, c], -1),
            jnp.stack([a, s * s, e, f], -1),
            jnp.stack([b, e, s * s, g], -1),
            jnp.stack([c, f, g, s * s], -1),
        ],
        -2,
    ) / (2 * s[..., None, None])
    q = jnp.take_along_axis(cands, i[..., None, None], -2)[..., 0, :]
    q = q / _safe_norm(q)[..., None]
    return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch 3 3"]:
    """Rotation matrix of a quaternion ``(w, x, y, z)`` (normalised first)."""
    q = jnp.asarray(q)
    q = q / _safe_norm(q)[..., None]
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def so3_log(r: Float[ArrayLike, "*batch 3 3"]) -> Float[Array, "*batch 3"]:
    """Rotation vector ``θ n`` (rad, ``θ ∈ [0, π]``) of a rotation matrix.

    Computed from the quaternion, ``θ = 2 atan2(‖q_xyz‖, w)``, which stays accurate near the
    identity (series for ``θ/sin(θ/2)``) and near 180° (no division by ``sin θ``).
    """
    q = matrix_to_quaternion(r)
    w, v = q[..., 0], q[..., 1:]
    n = _safe_norm(v)
    small = n < 1e-4
    n_safe = jnp.where(small, 1.0, n)
    w_safe = jnp.where(small, jnp.maximum(w, 0.5), 1.0)
    scale = jnp.where(small, 2 / w_safe * (1 - n * n / (3 * w_safe * w_safe)), 2 * jnp.arctan2(n_safe, w) / n_safe)
    return scale[..., None] * v


def se3_exp(xi: Float[ArrayLike, "*batch 6"]) -> Pose:
    """Pose of a twist ``ξ = (ω [rad], ρ [mm])``: ``R = exp(ω̂)``, ``t = V(ω) ρ``.

    ``V = I + B ω̂ + C ω̂²`` (Barfoot 2017, Eq. 7.86); series near ``θ = 0``.
    """
    xi = jnp.asarray(xi)
    w, rho = xi[..., :3], xi[..., 3:]
    k = hat(w)
    k2 = _mm(k, k)
    a, b, c = _coefficients(_safe_norm(w))
    eye = jnp.eye(3, dtype=xi.dtype)
    r = eye + a[..., None, None] * k + b[..., None, None] * k2
    v = eye + b[..., None, None] * k + c[..., None, None] * k2
    return Pose(r, _mv(v, rho))


def se3_log(pose: Pose) -> Float[Array, "*batch 6"]:
    """Twist ``ξ = (ω, ρ)`` of a pose, the inverse of :func:`se3_exp` (θ ∈ [0, π]).

    ``ρ = V⁻¹ t`` with ``V⁻¹ = I − ω̂/2 + D ω̂²``, ``D = (1 − A/(2B))/θ²`` (series near 0).
    """
    r, t = jnp.asarray(pose.rotation), jnp.asarray(pose.translation)
    w = so3_log(r)
    theta = _safe_norm(w)
    a, b, _ = _coefficients(theta)
    small = theta < 1e-2
    th = jnp.where(small, 1.0, theta)
    t2 = theta * theta
    d = jnp.where(small, 1 / 12 + t2 / 720 + t2 * t2 / 30240, (1 - a / (2 * b)) / (th * th))
    k = hat(w)
    vinv = jnp.eye(3, dtype=r.dtype) - 0.5 * k + d[..., None, None] * _mm(k, k)
    return jnp.concatenate([w, _mv(vinv, t)], -1)


def axis_angle_to_matrix(
    axis: Float[ArrayLike, "*batch 3"], angle: Float[ArrayLike, "*batch"]
) -> Float[Array, "*batch 3 3"]:
    """Rotation by ``angle`` (rad) about ``axis`` (normalised first; right-hand rule)."""
    axis = jnp.asarray(axis)
    n = axis / jnp.maximum(_safe_norm(axis), jnp.finfo(axis.dtype).tiny)[..., None]
    return so3_exp(n * jnp.asarray(angle, axis.dtype)[..., None])


def _rx(a):
    c, s, o, z = jnp.cos(a), jnp.sin(a), jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([o, z, z], -1), jnp.stack([z, c, -s], -1), jnp.stack([z, s, c], -1)], -2)


def _ry(a):
    c, s, o, z = jnp.cos(a), jnp.sin(a), jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1), jnp.stack([-s, z, c], -1)], -2)


def rotation_z(angle: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch 3 3"]:
    """Rotation by ``angle`` (rad) about z: the gantry rotation of view angle θ."""
    a = jnp.asarray(angle)
    c, s, o, z = jnp.cos(a), jnp.sin(a), jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2)


def euler_to_matrix(angles: Float[ArrayLike, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """Intrinsic ZYX Euler angles ``(α, β, γ)`` (rad) → ``R_z(α) R_y(β) R_x(γ)``."""
    angles = jnp.asarray(angles)
    return _mm(_mm(rotation_z(angles[..., 0]), _ry(angles[..., 1])), _rx(angles[..., 2]))


def matrix_to_euler(r: Float[ArrayLike, "*batch 3 3"]) -> Float[Array, "*batch 3"]:
    """Intrinsic ZYX Euler angles ``(α, β, γ)`` (rad), ``β ∈ [−π/2, π/2]``.

    At gimbal lock (``|β| = π/2``) ``γ`` is set to 0 and ``α`` absorbs the rotation, as scipy does.
    """
    r = jnp.asarray(r)
    sb = jnp.clip(-r[..., 2, 0], -1.0, 1.0)
    beta = jnp.arcsin(sb)
    lock = jnp.abs(sb) > 1 - 1e-7
    alpha = jnp.where(lock, jnp.arctan2(-r[..., 0, 1], r[..., 1, 1]), jnp.arctan2(r[..., 1, 0], r[..., 0, 0]))
    gamma = jnp.where(lock, 0.0, jnp.arctan2(r[..., 2, 1], r[..., 2, 2]))
    return jnp.stack([alpha, beta, gamma], -1)


def compose(a: Pose, b: Pose) -> Pose:
    """``a ∘ b``: ``x ↦ R_a (R_b x + t_b) + t_a``."""
    return Pose(_mm(a.rotation, b.rotation), _mv(a.rotation, b.translation) + a.translation)


def inverse(p: Pose) -> Pose:
    """``p⁻¹``: ``x ↦ Rᵀ (x − t)``."""
    rt = jnp.swapaxes(jnp.asarray(p.rotation), -1, -2)
    return Pose(rt, -_mv(rt, p.translation))


def apply(p: Pose, points: Float[ArrayLike, "*batch n 3"]) -> Float[Array, "*batch n 3"]:
    """``R x + t`` for points ``(..., N, 3)`` (mm); the pose may carry the same leading batch."""
    r = jnp.asarray(p.rotation)
    return jnp.einsum("...ij,...nj->...ni", r, points, precision=_HI) + jnp.asarray(p.translation)[..., None, :]


def rotation_distance_deg(r1: Float[ArrayLike, "*batch 3 3"], r2: Float[ArrayLike, "*batch 3 3"]) -> Float[Array, "*batch"]:
    """Geodesic distance ``‖log(R₁ᵀ R₂)‖`` in degrees, ∈ [0, 180]."""
    rel = _mm(jnp.swapaxes(jnp.asarray(r1), -1, -2), jnp.asarray(r2))
    return jnp.degrees(_safe_norm(so3_log(rel)))


def translation_distance(t1: Float[ArrayLike, "*batch 3"], t2: Float[ArrayLike, "*batch 3"]) -> Float[Array, "*batch"]:
    """Euclidean distance of two translations, mm."""
    return _safe_norm(jnp.asarray(t1) - jnp.asarray(t2))


# ----------------------------------------------------------------------------- geometry


def to_geometry(pose: Pose, geometry):
    """A single-view copy of ``geometry`` whose rig has the given pose.

    ``geometry`` supplies the detector, distances and volume grid (one view's, when they are
    given per view: ``geometry.take_views([i])``); the result has
    ``angles=[0]``, ``rotation=R[None]``, ``translation=t[None]``, so its source sits at
    ``R (DSO, 0, 0) + t``. Differentiable in ``pose`` (usable under ``jit``/``vmap``/``grad``).
    """
    _one_detector(geometry)
    r = jnp.asarray(pose.rotation)
    t = jnp.asarray(pose.translation)
    return geometry.replace(angles=jnp.zeros((1,), r.dtype), rotation=r[None], translation=t[None])


def _one_detector(geometry) -> None:
    """Refuses a geometry of several views whose DSD/DSO/detector offset differ per view: which
    view's detector a single pose should carry is then ambiguous."""
    if geometry.per_view_detector and geometry.n_views != 1:
        raise ValueError("this geometry gives DSD, DSO or the detector offset per view (e.g. tomosynthesis): take the "
                         "view whose detector the pose should use first, geometry.take_views([view])")


def from_geometry(geometry, view: int = 0) -> Pose:
    """The rig pose of view ``view`` of ``geometry`` relative to angle 0: ``(R_v R_z(θ_v), t_v)``.

    With it, ``to_geometry(from_geometry(g, i), g)`` renders exactly view ``i`` of ``g``.
    """
    n = geometry.n_views
    if not 0 <= int(view) < n:
        raise ValueError(f"view must be in [0, {n}), got {view}")
    theta = np.asarray(geometry.angles, np.float64)[view]
    rz = _rz_np(theta)
    r = rz if geometry.rotation is None else np.asarray(geometry.rotation, np.float64)[view] @ rz
    t = np.zeros(3) if geometry.translation is None else np.asarray(geometry.translation, np.float64)[view]
    return Pose(r, t)


def _rz_np(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def c_arm_intrinsics(
    *,
    sdd: float,
    pixel_spacing,
    n_detector: tuple[int, int],
    principal_point=None,
) -> dict:
    """C-arm intrinsics mapped onto :class:`~jaxmedrf.Geometry` detector fields.

    Args:
      sdd: source-to-detector distance (mm) → ``DSD``.
      pixel_spacing: ``(dv, du)`` or one number, mm per pixel (rows, columns) → ``d_detector``.
      n_detector: ``(nv, nu)`` rows and columns.
      principal_point: ``(row, col)`` in pixels (0-based, pixel centres) where the
        perpendicular from the source meets the detector; default the image centre
        ``((nv−1)/2, (nu−1)/2)``. Mapped to ``off_detector = (((nv−1)/2 − row) dv,
        ((nu−1)/2 − col) du)`` (mm), since pixel ``(r, c)`` lies at
        ``D + u ((c − (nu−1)/2) du + off_u) + v ((r − (nv−1)/2) dv + off_v)``.

    Returns:
      ``{"DSD", "d_detector", "off_detector", "n_detector"}``.

    The pinhole matrix is ``K = [[DSD/du, 0, col], [0, DSD/dv, row], [0, 0, 1]]``.
    """
    if not (np.isfinite(sdd) and sdd > 0):
        raise ValueError(f"sdd must be a positive distance in mm, got {sdd!r}")
    ps = np.broadcast_to(np.asarray(pixel_spacing, np.float64), (2,)).copy()
    if not np.all(np.isfinite(ps)) or np.any(ps <= 0):
        raise ValueError(f"pixel_spacing must be positive (mm), got {pixel_spacing!r}")
    nv, nu = (int(n) for n in n_detector)
    if principal_point is None:
        off = (0.0, 0.0)
    else:
        row, col = (float(x) for x in principal_point)
        off = (((nv - 1) / 2 - row) * ps[0], ((nu - 1) / 2 - col) * ps[1])
    return {"DSD": float(sdd), "d_detector": tuple(ps.tolist()), "off_detector": off, "n_detector": (nv, nu)}


def c_arm_geometry(
    *,
    sdd: float,
    pixel_spacing,
    n_detector: tuple[int, int],
    n_voxel: tuple[int, int, int],
    d_voxel,
    sod: float | None = None,
    principal_point=None,
    off_origin=(0.0, 0.0, 0.0),
):
    """A single-view cone-beam :class:`~jaxmedrf.Geometry` from C-arm intrinsics.

    ``sod`` (source-to-isocentre distance, mm → ``DSO``) places the identity pose's source at
    ``(sod, 0, 0)`` relative to the CT origin; default ``sdd / 2``. Other arguments as in
    :func:`c_arm_intrinsics`; the volume grid from ``n_voxel``, ``d_voxel`` (mm), ``off_origin``.
    """
    from jaxmedrf.geometry import Geometry

    intr = c_arm_intrinsics(sdd=sdd, pixel_spacing=pixel_spacing, n_detector=n_detector, principal_point=principal_point)
    sod = 0.5 * sdd if sod is None else float(sod)
    return Geometry(
        DSD=intr["DSD"], DSO=sod, n_detector=intr["n_detector"], d_detector=intr["d_detector"],
        off_detector=intr["off_detector"], n_voxel=n_voxel, d_voxel=d_voxel, off_origin=off_origin,
        angles=np.zeros(1), beam="cone",
    )


# ----------------------------------------------------------------------------- JSON


def pose_to_dict(pose: Pose) -> dict:
    """Every parameterisation of a pose as JSON-ready lists (angles in degrees, lengths in mm)."""
    r = np.asarray(pose.rotation, np.float64)
    t = np.asarray(pose.translation, np.float64)
    rj = jnp.asarray(r, jnp.float32)
    q = np.asarray(matrix_to_quaternion(rj), np.float64)
    eul = np.degrees(np.asarray(matrix_to_euler(rj), np.float64))
    rv = np.asarray(so3_log(rj), np.float64)
    xi = np.asarray(se3_log(Pose(rj, jnp.asarray(t, jnp.float32))), np.float64)
    angle = float(np.linalg.norm(rv))
    axis = (rv / angle).tolist() if angle > 0 else [1.0, 0.0, 0.0]
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, t
    return {
        "convention": "rig pose (rig frame -> CT frame): S' = R S + t; the CT moves by the inverse",
        "matrix": m.tolist(),
        "rotation": r.tolist(),
        "translation_mm": t.tolist(),
        "quaternion_wxyz": q.tolist(),
        "euler_zyx_intrinsic_deg": eul.tolist(),
        "rotation_vector_deg": np.degrees(rv).tolist(),
        "axis": axis,
        "angle_deg": math.degrees(angle),
        "se3_log": xi.tolist(),
    }


def from_json_dict(d: dict) -> Pose:
    """A pose from a dict written by :func:`pose_to_dict` or holding one of: ``"matrix"`` (4×4),
    ``"rotation"`` (3×3), ``"quaternion_wxyz"``, ``"euler_zyx_intrinsic_deg"``,
    ``"rotation_vector_deg"``, plus ``"translation_mm"`` (default 0). A ``"pose"`` key is unwrapped."""
    if "pose" in d and isinstance(d["pose"], dict):
        d = d["pose"]
    t = np.asarray(d.get("translation_mm", d.get("translation", [0.0, 0.0, 0.0])), np.float64)
    if "matrix" in d:
        m = np.asarray(d["matrix"], np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"pose matrix must be 4x4, got shape {m.shape}")
        r, t = m[:3, :3], m[:3, 3]
    elif "rotation" in d:
        r = np.asarray(d["rotation"], np.float64)
    elif "quaternion_wxyz" in d:
        r = np.asarray(quaternion_to_matrix(jnp.asarray(d["quaternion_wxyz"], jnp.float32)), np.float64)
    elif "euler_zyx_intrinsic_deg" in d:
        r = np.asarray(euler_to_matrix(jnp.radians(jnp.asarray(d["euler_zyx_intrinsic_deg"], jnp.float32))), np.float64)
    elif "rotation_vector_deg" in d:
        r = np.asarray(so3_exp(jnp.radians(jnp.asarray(d["rotation_vector_deg"], jnp.float32))), np.float64)
    else:
        raise ValueError(
            "pose JSON needs one of 'matrix', 'rotation', 'quaternion_wxyz', 'euler_zyx_intrinsic_deg',"
            f" 'rotation_vector_deg'; got keys {sorted(d)}"
        )
    if r.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"pose rotation must be 3x3 and translation 3, got {r.shape} and {t.shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(t))):
        raise ValueError("pose must be finite")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
        raise ValueError("pose rotation is not a proper rotation matrix (RᵀR ≠ I or det < 0)")
    return Pose(r, t)
