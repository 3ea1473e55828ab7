"""Registration error measures: mTRE, landmark reprojection distance, rotation/translation error.

Poses are *rig poses* (see :mod:`jaxmedrf.pose`): rig frame → CT frame. A CT landmark ``p``
has rig-frame coordinates ``T⁻¹ p``; the target registration error compares these under the
estimated and the true pose (DiffPose, Gopalakrishnan et al., CVPR 2024, §4: mTRE of
landmarks in the camera frame). All functions broadcast over a leading batch of poses.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf import pose as P
from jaxmedrf.geometry import Geometry, view_frames, volume_box

__all__ = [
    "default_landmarks",
    "mean_target_registration_error",
    "project_points",
    "reprojection_error",
    "rotation_error_deg",
    "success_rate",
    "translation_error_mm",
]


def default_landmarks(geometry: Geometry) -> Float[Array, "9 3"]:
    """Nine CT landmarks (mm): the volume centre and the corners of the central half box."""
    lo, hi = volume_box(geometry)
    c, h = 0.5 * (lo + hi), 0.25 * (hi - lo)
    s = jnp.asarray([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], h.dtype)
    return jnp.concatenate([c[None], c + s * h], 0)


def mean_target_registration_error(
    estimate: P.Pose, truth: P.Pose, landmarks: Float[ArrayLike, "n 3"]
) -> Float[Array, "*batch"]:
    """mTRE (mm): ``mean_i ‖T_est⁻¹ p_i − T_true⁻¹ p_i‖`` over CT landmarks ``p_i`` (mm)."""
    a = P.apply(P.inverse(estimate), landmarks)
    b = P.apply(P.inverse(truth), landmarks)
    return jnp.mean(jnp.sqrt(jnp.sum((a - b) ** 2, -1)), -1)


def project_points(
    points: Float[ArrayLike, "n 3"], geometry: Geometry, pose: P.Pose | None = None
) -> tuple[Float[Array, "*batch n 2"], Float[Array, "*batch n 2"]]:
    """Detector coordinates of CT points seen by view 0 of ``geometry`` (or by ``pose``).

    With ``pose`` the rig is placed by :func:`jaxmedrf.pose.to_geometry` (angle 0). Cone beam:
    the ray from the source through the point meets the detector plane (or cylinder, for a
    cylindrical detector); parallel beam: the point is moved along the beam.

    Returns:
      ``(vu_mm, rc_px)``: ``(v, u)`` in mm from the detector centre along its axes, and the
      fractional pixel ``(row, col)`` (pixel centres at integers).
    """
    if pose is not None:
        r, t = jnp.asarray(pose.rotation), jnp.asarray(pose.translation)
        if r.ndim > 2:  # a batch of poses
            import jax

            return jax.vmap(lambda rr, tt: project_points(points, geometry, P.Pose(rr, tt)))(r, t)
        geometry = P.to_geometry(P.Pose(r, t), geometry)
    f = view_frames(geometry)
    s, d, u, v = f.source[0], f.center[0], f.u[0], f.v[0]
    n = jnp.cross(u, v)
    points = jnp.asarray(points, d.dtype)
    if geometry.beam == "cone":
        ray = points - s
        lam = jnp.dot(d - s, n) / (ray @ n)
        x = s + lam[:, None] * ray
    else:
        x = points
    a = (x - d) @ u
    b = (x - d) @ v
    if geometry.detector == "cylindrical":  # arc length at the fan angle, height where the ray meets the cylinder
        ray = points - s
        dsd = jnp.linalg.norm(d - s)
        depth, side = ray @ ((d - s) / dsd), ray @ u
        a = dsd * jnp.arctan2(side, depth)
        b = (ray @ v) * dsd / jnp.sqrt(depth**2 + side**2)
    dv, du = jnp.asarray(geometry.d_detector)[0], jnp.asarray(geometry.d_detector)[1]
    off = jnp.asarray(geometry.off_detector).reshape(-1, 2)[0]  # view 0's (v, u), given once or per view
    ov, ou = off[0], off[1]
    nv, nu = geometry.n_detector
    rows = (b - ov) / dv + (nv - 1) / 2
    cols = (a - ou) / du + (nu - 1) / 2
    return jnp.stack([b, a], -1), jnp.stack([rows, cols], -1)


def reprojection_error(
    estimate: P.Pose, truth: P.Pose, landmarks: Float[ArrayLike, "n 3"], geometry: Geometry
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Mean landmark reprojection distance ``‖x_true − x_est‖`` on the detector: ``(mm, px)``."""
    mm_e, px_e = project_points(landmarks, geometry, estimate)
    mm_t, px_t = project_points(landmarks, geometry, truth)
    dist = lambda a, b: jnp.mean(jnp.sqrt(jnp.sum((a - b) ** 2, -1)), -1)  # noqa: E731
    return dist(mm_e, mm_t), dist(px_e, px_t)


def rotation_error_deg(estimate: P.Pose, truth: P.Pose) -> Float[Array, "*batch"]:
    """Geodesic angle between the estimated and true rotations, degrees ∈ [0, 180]."""
    return P.rotation_distance_deg(estimate.rotation, truth.rotation)


def translation_error_mm(estimate: P.Pose, truth: P.Pose) -> Float[Array, "*batch"]:
    """``‖t_est − t_true‖`` (mm): distance between the estimated and true rig origins
    (the isocentre) in the CT frame."""
    return P.translation_distance(estimate.translation, truth.translation)


def success_rate(errors, threshold: float) -> float:
    """Fraction of ``errors`` strictly below ``threshold`` (NaN counts as failure), ∈ [0, 1]."""
    e = np.asarray(errors, np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("errors is empty")
    return float(np.mean(np.where(np.isfinite(e), e < threshold, False)))
