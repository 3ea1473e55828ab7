"""Scan geometry as data, in TIGRE's conventions.

A :class:`Geometry` is a frozen dataclass registered as a JAX pytree: the real-valued
fields (distances, sizes, offsets, angles and the optional per-view pose) are leaves, so a
geometry can be traced, differentiated and ``vmap``-ed; the integer sizes and the beam type
are static metadata.

The convention (a contract, tested in ``tests/test_geometry.py``):

* Volume arrays are indexed ``(x, y, z)``; voxel ``(i, j, k)`` has its centre at
  ``((i - (nx-1)/2) dx, (j - (ny-1)/2) dy, (k - (nz-1)/2) dz) + off_origin`` (mm).
* At angle ``θ`` the source is at ``S = (DSO cos θ, DSO sin θ, 0)`` and the detector centre
  at ``D = ((DSO - DSD) cos θ, (DSO - DSD) sin θ, 0)``.
* Detector axes ``u = (-sin θ, cos θ, 0)`` and ``v = (0, 0, 1)``. Projections have shape
  ``(n_views, nv, nu)``; pixel ``(r, c)`` has its centre at
  ``D + u ((c - (nu-1)/2) du + off_u) + v ((r - (nv-1)/2) dv + off_v)``.
* A projection value is the line integral of the linear attenuation μ (mm⁻¹) from ``S`` to
  that pixel centre (dimensionless). Parallel beam: the ray through each pixel centre runs
  along ``-(cos θ, sin θ, 0)`` over the whole volume, the detector plane passes through the
  origin, and ``DSD``/``DSO`` are not used.
* Optional per-view pose: a rotation ``R`` (3×3) and translation ``t`` (mm) move the whole
  source–detector rig after the orbit has placed it: ``S' = R S + t``, ``D' = R D + t``,
  ``u' = R u``, ``v' = R v``. Identity when absent. A helical scan (:func:`helical_beam`) is a
  circular orbit whose rig moves along ``z`` by the per-view translation.
* Cylindrical (curved) detector (``detector="cylindrical"``, cone beam only): the columns lie on
  a cylinder of radius ``DSD`` around the source, its axis along ``v`` through ``S``. Column
  ``c`` sits at the fan angle ``γ = ((c - (nu-1)/2) du + off_u) / DSD`` (``du`` is the arc
  length of a column, mm) and pixel ``(r, c)`` at
  ``S + DSD (cos γ n̂ + sin γ u) + v ((r - (nv-1)/2) dv + off_v)`` with ``n̂ = (D - S)/DSD``;
  ``γ = 0`` is the detector centre ``D`` as for the flat panel.
* Per-view detector (TIGRE's own form: its ``geo.DSD``, ``geo.DSO`` and ``geo.offDetector`` may
  have one entry per angle): ``DSD`` and ``DSO`` may be ``(n_views,)`` arrays and
  ``off_detector`` an ``(n_views, 2)`` array; view ``k`` then uses its own values in every
  equation above. With the per-view translation this places any source position in front of a
  panel of fixed orientation: digital tomosynthesis (:func:`tomosynthesis`) is a rig that moves
  with the source (``t_k``) while ``off_detector`` shifts the panel back by as much, so that the
  panel stays put and ``DSD_k`` is the perpendicular distance from the source to it.

Field names follow TIGRE (Biguri et al., "TIGRE: a MATLAB-GPU toolbox for CBCT image
reconstruction", Biomed. Phys. Eng. Express 2016): ``DSD``, ``DSO``, ``n_detector`` (nv, nu),
``d_detector`` (dv, du), ``off_detector`` (v, u), ``n_voxel`` (nx, ny, nz), ``d_voxel``
(dx, dy, dz), ``off_origin`` (x, y, z), ``angles`` (rad).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "BEAMS",
    "DETECTORS",
    "Frames",
    "Geometry",
    "Sweep",
    "ViewDetector",
    "axial_travel",
    "circular_angles",
    "cone_beam",
    "detector_per_view",
    "fan_angles",
    "helical_beam",
    "parallel_beam",
    "short_scan_arc",
    "tomosynthesis",
    "tomosynthesis_sweep",
    "view_frames",
    "volume_box",
    "voxel_centers",
]

BEAMS = ("cone", "parallel")
DETECTORS = ("flat", "cylindrical")
_LEAVES = (
    "DSD",
    "DSO",
    "d_detector",
    "off_detector",
    "d_voxel",
    "off_origin",
    "angles",
    "rotation",
    "translation",
)
_STATIC = ("n_detector", "n_voxel", "beam", "detector")
_Real = np.ndarray | Array  # a geometry leaf: float64 NumPy when built, a jax.Array when traced


def _is_concrete(x: Any) -> bool:
    """True for values that can be validated now (not a tracer, not a pytree placeholder)."""
    if x is None or isinstance(x, jax.core.Tracer):
        return False
    try:
        np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return isinstance(x, (str, bytes, list, tuple))  # bad user input: let the check report it
    return True


def _as_float_array(name: str, value: Any, shape: tuple[int, ...] | None, broadcast: bool = False) -> Any:
    """Converts a concrete leaf to a float64 NumPy array and checks its shape and finiteness.

    With ``broadcast`` a scalar is repeated to ``shape`` (``d_voxel=2.0`` means 2 mm cubes).
    """
    if not _is_concrete(value):
        return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {value!r}") from e
    if broadcast and arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {arr.shape}: {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def _as_per_view(name: str, value: Any, shape: tuple[int, ...], n: int) -> Any:
    """:func:`_as_float_array` for a field given for all views (``shape``) or one per view
    (``(n, *shape)``)."""
    arr = _as_float_array(name, value, None)
    if _is_concrete(value) and arr.shape not in (shape, (n, *shape)):
        raise ValueError(f"{name} must have shape {shape} (all views) or {(n, *shape)} (one per view of the"
                         f" {n}), got shape {arr.shape}: {_short(value)}")
    return arr


def _short(value: Any) -> str:
    """``repr`` of a field's value, cut to a readable length."""
    text = repr(np.asarray(value).tolist()) if not isinstance(value, (str, bytes)) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _as_counts(name: str, value: Any, n: int) -> tuple[int, ...]:
    try:
        seq = tuple(value) if np.ndim(value) else (value,) * n
    except TypeError as e:
        raise ValueError(f"{name} must be {n} positive integers, got {value!r}") from e
    if len(seq) != n:
        raise ValueError(f"{name} must be {n} positive integers, got {value!r}")
    out = []
    for s in seq:
        if isinstance(s, (bool, np.bool_)) or float(s) != int(s) or int(s) <= 0:
            raise ValueError(f"{name} must be {n} positive integers, got {value!r}")
        out.append(int(s))
    return tuple(out)


# Not checked by the jaxtyping import hook of the test run: the constructor takes numbers,
# sequences or arrays and ``__post_init__`` converts and validates them itself (a ValueError
# that names the field, tested), so the annotations below are the types a built geometry holds.
@typing.no_type_check
@dataclasses.dataclass(frozen=True, kw_only=True)
class Geometry:
    """A tomographic scan: source, detector and volume grid (TIGRE field names).

    The constructor takes Python numbers, sequences or arrays for the real-valued fields
    (``d_voxel=2.0`` means 2 mm cubes) and stores each as a float64 NumPy array of the shape
    below; inside a JAX transformation the leaves are traced arrays (``jax.Array``) instead.

    Attributes:
      DSD: distance source → detector, mm (cone beam; ignored for parallel beam): a number, or
        one per view ``(n_views,)`` (cone beam).
      DSO: distance source → origin (rotation axis), mm (cone beam only): a number, or one per
        view ``(n_views,)``.
      n_detector: (nv, nu) detector rows and columns. Static.
      d_detector: (dv, du) detector pixel size, mm.
      off_detector: (v, u) detector offset along its axes, mm: ``(2,)``, or one pair per view
        ``(n_views, 2)``.
      n_voxel: (nx, ny, nz) voxels. Static.
      d_voxel: (dx, dy, dz) voxel size, mm.
      off_origin: (x, y, z) position of the volume centre, mm.
      angles: (n_views,) gantry angles θ, rad.
      rotation: optional (n_views, 3, 3) rotation of the rig per view.
      translation: optional (n_views, 3) translation of the rig per view, mm.
      beam: ``"cone"`` or ``"parallel"``. Static.
      detector: ``"flat"`` (a plane panel) or ``"cylindrical"`` (columns on a cylinder of radius
        ``DSD`` around the source, ``du`` the arc length of a column; cone beam only). Static.
    """

    DSD: Float[_Real, ""] | Float[_Real, " views"]
    DSO: Float[_Real, ""] | Float[_Real, " views"]
    n_detector: tuple[int, int]
    d_detector: Float[_Real, "2"]
    off_detector: Float[_Real, "2"] | Float[_Real, "views 2"] = (0.0, 0.0)
    n_voxel: tuple[int, int, int]
    d_voxel: Float[_Real, "3"]
    off_origin: Float[_Real, "3"] = (0.0, 0.0, 0.0)
    angles: Float[_Real, " views"]
    rotation: Float[_Real, "views 3 3"] | None = None
    translation: Float[_Real, "views 3"] | None = None
    beam: Literal["cone", "parallel"] = "cone"
    detector: Literal["flat", "cylindrical"] = "flat"

    def __post_init__(self):
        if self.beam not in BEAMS:
            raise ValueError(f"beam must be one of {BEAMS}, got {self.beam!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.detector == "cylindrical" and self.beam != "cone":
            raise ValueError("a cylindrical detector needs a cone beam (its columns lie on a cylinder around the source)")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("n_detector", _as_counts("n_detector", self.n_detector, 2))
        set_("n_voxel", _as_counts("n_voxel", self.n_voxel, 3))
        angles = self.angles
        if _is_concrete(angles):
            angles = np.atleast_1d(np.asarray(angles, dtype=np.float64))
            if angles.ndim != 1 or angles.size == 0:
                raise ValueError(f"angles must be a non-empty 1-D array, got shape {angles.shape}")
            angles = _as_float_array("angles", angles, None)
        set_("angles", angles)
        n = np.shape(angles)[0]
        set_("DSD", _as_per_view("DSD", self.DSD, (), n))
        set_("DSO", _as_per_view("DSO", self.DSO, (), n))
        set_("d_detector", _as_float_array("d_detector", self.d_detector, (2,), broadcast=True))
        set_("off_detector", _as_per_view("off_detector", self.off_detector, (2,), n))
        set_("d_voxel", _as_float_array("d_voxel", self.d_voxel, (3,), broadcast=True))
        set_("off_origin", _as_float_array("off_origin", self.off_origin, (3,)))
        if self.rotation is not None:
            set_("rotation", _as_float_array("rotation", self.rotation, (n, 3, 3)))
        if self.translation is not None:
            set_("translation", _as_float_array("translation", self.translation, (n, 3)))
        for name in ("d_detector", "d_voxel"):
            val = getattr(self, name)
            if _is_concrete(val) and np.any(val <= 0):
                raise ValueError(f"{name} must be positive, got {val.tolist()}")
        if self.beam != "cone" and (np.ndim(self.DSD) or np.ndim(self.DSO)):
            raise ValueError("a per-view DSD or DSO needs a cone beam (a parallel beam uses neither)")
        if self.beam == "cone" and _is_concrete(self.DSO) and _is_concrete(self.DSD):
            dso, dsd = np.broadcast_arrays(self.DSO, self.DSD)
            if np.any(dso <= 0):
                raise ValueError(f"DSO must be positive for cone beam, got {_short(self.DSO)}")
            if np.any(dsd <= dso):
                k = int(np.argmax(dsd <= dso))
                where = f" in view {k}" if dso.ndim else ""
                raise ValueError(
                    f"DSD must exceed DSO for cone beam (the detector lies beyond the rotation"
                    f" axis), got DSD={float(dsd.flat[k])}, DSO={float(dso.flat[k])}{where}"
                )

    # ----------------------------------------------------------------- pytree plumbing
    def tree_flatten(self):
        return tuple(getattr(self, k) for k in _LEAVES), tuple(getattr(self, k) for k in _STATIC)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for k, v in zip(_LEAVES, children):
            object.__setattr__(obj, k, v)
        for k, v in zip(_STATIC, aux):
            object.__setattr__(obj, k, v)
        return obj

    # ----------------------------------------------------------------- conveniences
    @property
    def n_views(self) -> int:
        return int(np.shape(self.angles)[0])

    @property
    def projection_shape(self) -> tuple[int, int, int]:
        """``(n_views, nv, nu)``."""
        return (self.n_views, *self.n_detector)

    @property
    def per_view_detector(self) -> bool:
        """Whether ``DSD``, ``DSO`` or ``off_detector`` is given per view (e.g. tomosynthesis)."""
        return bool(np.ndim(self.DSD) or np.ndim(self.DSO) or np.ndim(self.off_detector) > 1)

    def take_views(self, idx: Any) -> "Geometry":
        """The scan restricted to views ``idx`` (an integer array or slice; traced indices work):
        ``angles``, ``rotation``, ``translation`` and any per-view ``DSD``, ``DSO`` and
        ``off_detector`` are indexed, the rest is shared."""
        per_view = {"angles": 1, "rotation": 3, "translation": 2, "DSD": 1, "DSO": 1, "off_detector": 2}
        concrete = isinstance(idx, slice) or _is_concrete(idx)
        key = idx if isinstance(idx, slice) or not concrete else np.asarray(idx)

        def pick(v):
            return v[key] if isinstance(v, np.ndarray) and concrete else jnp.asarray(v)[idx]

        leaves, aux = self.tree_flatten()
        new = [pick(v) if (v is not None and k in per_view and np.ndim(v) == per_view[k]) else v
               for k, v in zip(_LEAVES, leaves)]
        return Geometry.tree_unflatten(aux, new)

    def replace(self, **changes) -> "Geometry":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def check_volume(self, volume: Any, name: str = "volume") -> None:
        """Raises ``ValueError`` when ``volume``'s shape differs from ``n_voxel``."""
        if tuple(np.shape(volume)) != self.n_voxel:
            raise ValueError(
                f"{name} has shape {tuple(np.shape(volume))} but the geometry's n_voxel is {self.n_voxel}"
            )

    def check_projections(self, projections: Any, name: str = "projections") -> None:
        if tuple(np.shape(projections)) != self.projection_shape:
            raise ValueError(
                f"{name} has shape {tuple(np.shape(projections))} but the geometry expects"
                f" (n_views, nv, nu) = {self.projection_shape}"
            )

    def to_dict(self) -> dict:
        """JSON-ready dict with every field under its TIGRE name plus ``"beam"`` (and ``"detector"``
        when it is not flat)."""
        out = {"beam": self.beam, "n_detector": list(self.n_detector), "n_voxel": list(self.n_voxel)}
        if self.detector != "flat":
            out["detector"] = self.detector
        for k in _LEAVES:
            v = getattr(self, k)
            if v is not None:
                out[k] = np.asarray(v, dtype=np.float64).tolist()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        known = set(_LEAVES) | set(_STATIC)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown geometry fields: {sorted(unknown)}")
        missing = {"n_detector", "n_voxel", "d_detector", "d_voxel", "angles"} - set(d)
        if missing:
            raise ValueError(f"geometry is missing fields: {sorted(missing)}")
        kw = dict(d)
        kw.setdefault("DSD", 0.0)
        kw.setdefault("DSO", 0.0)
        kw["n_detector"] = tuple(kw["n_detector"])
        kw["n_voxel"] = tuple(kw["n_voxel"])
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> "Geometry":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"geometry is not valid JSON: {e}") from e
        return cls.from_dict(d)


jax.tree_util.register_pytree_node(Geometry, Geometry.tree_flatten, Geometry.tree_unflatten)


def circular_angles(n_views: int, *, arc: float = 2 * math.pi, start: float = 0.0) -> np.ndarray:
    """``n_views`` equally spaced angles over ``arc`` radians (endpoint excluded), rad."""
    if int(n_views) != n_views or n_views <= 0:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if not np.isfinite(arc) or arc <= 0:
        raise ValueError(f"arc must be positive and finite, got {arc!r}")
    return start + np.arange(int(n_views)) * (arc / int(n_views))


def cone_beam(
    *,
    n_voxel=(128, 128, 128),
    d_voxel=2.0,
    n_detector=(256, 256),
    d_detector=1.6,
    DSD: float = 1500.0,
    DSO: float = 1000.0,
    n_views: int = 50,
    arc: float | Literal["short"] = 2 * math.pi,
    angles=None,
    off_detector=(0.0, 0.0),
    off_origin=(0.0, 0.0, 0.0),
    detector: Literal["flat", "cylindrical"] = "flat",
) -> Geometry:
    """A circular cone-beam scan; defaults are NAF's 128³ setup (2 mm voxels, 1.6 mm pixels).

    ``arc`` is the angular range in rad, or ``"short"`` for a short scan of 180° plus the fan
    angle (:func:`short_scan_arc`), the least that FDK with Parker weights reconstructs exactly.
    """
    kw = dict(DSD=DSD, DSO=DSO, n_detector=n_detector, d_detector=d_detector, off_detector=off_detector,
              n_voxel=n_voxel, d_voxel=d_voxel, off_origin=off_origin, beam="cone", detector=detector)
    if angles is None:
        if isinstance(arc, str):
            if arc != "short":
                raise ValueError(f"arc must be a number of radians or 'short', got {arc!r}")
            arc = short_scan_arc(Geometry(angles=[0.0], **kw))
        angles = circular_angles(n_views, arc=arc)
    return Geometry(angles=angles, **kw)


def fan_angles(geometry: Geometry) -> np.ndarray:
    """Fan angle ``γ`` of each detector column of a cone-beam scan, rad, shape ``(nu,)``.

    ``γ = atan(u / DSD)`` on a flat panel and ``u / DSD`` on a cylindrical one, with
    ``u = (c - (nu-1)/2) du + off_u`` (mm); positive towards ``+u``.
    """
    if geometry.beam != "cone":
        raise ValueError("fan angles are defined for a cone beam only")
    if geometry.per_view_detector:
        raise ValueError("fan angles need one DSD and detector offset for all views; this geometry sets them per view"
                         " (e.g. tomosynthesis)")
    nu = geometry.n_detector[1]
    du, off_u, dsd = float(np.asarray(geometry.d_detector)[1]), float(np.asarray(geometry.off_detector)[1]), float(geometry.DSD)
    u = (np.arange(nu) - (nu - 1) / 2) * du + off_u
    return u / dsd if geometry.detector == "cylindrical" else np.arctan(u / dsd)


def short_scan_arc(geometry: Geometry) -> float:
    """The short-scan arc ``π + 2 max|γ|`` of a cone-beam geometry (its detector), rad.

    Every line through the field of view is measured at least once over this arc (Parker,
    "Optimal short scan convolution reconstruction for fan beam CT", Med. Phys. 9(2), 1982).
    """
    return float(math.pi + 2 * np.max(np.abs(fan_angles(geometry))))


def axial_travel(geometry: Geometry) -> float:
    """How far the source moves along the detector's ``v`` axis over the scan, mm.

    ``max − min`` over views of ``S·v``: 0 for a circular orbit (tilted or not), the table feed
    times the number of turns for a helical scan.
    """
    f = view_frames(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), geometry))
    return float(np.ptp(np.einsum("vi,vi->v", np.asarray(f.source, np.float64), np.asarray(f.v, np.float64))))


def helical_beam(
    *,
    pitch: float,
    n_turns: float,
    views_per_turn: int = 50,
    n_voxel=(128, 128, 128),
    d_voxel=2.0,
    n_detector=(64, 256),
    d_detector=1.6,
    DSD: float = 1500.0,
    DSO: float = 1000.0,
    start: float = 0.0,
    off_detector=(0.0, 0.0),
    off_origin=(0.0, 0.0, 0.0),
    detector: Literal["flat", "cylindrical"] = "flat",
) -> Geometry:
    """A helical cone-beam scan: the circular orbit with the rig moving along ``z``.

    The pitch is the table feed per turn over the detector height at the isocentre,
    ``pitch = F / (nv dv DSO / DSD)`` (the clinical definition, collimation at the isocentre).
    View ``k`` of ``N = round(n_turns · views_per_turn)`` is at ``θ_k = start + 2π k /
    views_per_turn`` with the per-view translation ``t_k = (0, 0, z₀ + F (k − (N−1)/2) /
    views_per_turn)``, ``z₀`` the volume centre's z: the source climbs along ``+z`` (the patient
    table moving along ``−z``), centred on the volume.

    Args:
      pitch: table feed per turn over the detector height at the isocentre (> 0).
      n_turns: number of turns (> 0, need not be an integer).
      views_per_turn: views per 360°.
      start: angle of the first view, rad.
      others: as :func:`cone_beam` (the default detector is 64 rows, 256 columns).
    """
    if not (math.isfinite(pitch) and pitch > 0):
        raise ValueError(f"pitch must be positive, got {pitch!r}")
    if not (math.isfinite(n_turns) and n_turns > 0):
        raise ValueError(f"n_turns must be positive, got {n_turns!r}")
    if int(views_per_turn) != views_per_turn or views_per_turn <= 0:
        raise ValueError(f"views_per_turn must be a positive integer, got {views_per_turn!r}")
    n = max(1, round(n_turns * views_per_turn))
    g = cone_beam(n_voxel=n_voxel, d_voxel=d_voxel, n_detector=n_detector, d_detector=d_detector, DSD=DSD, DSO=DSO,
                  angles=start + 2 * math.pi * np.arange(n) / views_per_turn, off_detector=off_detector,
                  off_origin=off_origin, detector=detector)
    height = g.n_detector[0] * float(g.d_detector[0]) * float(g.DSO) / float(g.DSD)
    feed = pitch * height
    z = float(g.off_origin[2]) + feed * (np.arange(n) - (n - 1) / 2) / views_per_turn
    return g.replace(translation=np.stack([np.zeros(n), np.zeros(n), z], -1))


def tomosynthesis(
    *,
    path: Literal["linear", "arc"] = "linear",
    sweep: float | None = None,
    travel: float | None = None,
    n_views: int = 25,
    DSO: float = 600.0,
    DSD: float = 650.0,
    n_voxel=(32, 128, 128),
    d_voxel=1.0,
    n_detector=(160, 192),
    d_detector=1.0,
    off_detector=(0.0, 0.0),
    off_origin=(0.0, 0.0, 0.0),
) -> Geometry:
    """Digital tomosynthesis: the source sweeps over a flat panel that stays put.

    Dobbins & Godfrey, "Digital x-ray tomosynthesis: current state of the art and clinical
    potential", Phys. Med. Biol. 48(19), R65–R106, 2003. The panel lies in the ``y``–``z`` plane
    at ``x = DSO − DSD`` (``u = ŷ``, ``v = ẑ``, its centre at ``(DSO − DSD, off_u, off_v)``),
    facing the source on the ``+x`` side; the isocentre is the origin. The source sweeps along
    ``y`` (the panel's ``u`` axis, so its rows), views ordered from ``−y`` to ``+y``:

    * ``path="linear"``: ``S_k = (DSO, y_k, 0)`` with ``y_k`` equally spaced over ``travel``
      (mm), or over ``±DSO tan(sweep/2)`` (the sweep angle seen from the isocentre);
    * ``path="arc"``: ``S_k = DSO (cos φ_k, sin φ_k, 0)`` about the isocentre with ``φ_k``
      equally spaced over ``sweep`` (rad), or over ``travel / DSO`` (the arc length, mm).

    Stored as the rig at ``θ = 0`` moved by ``t_k = (0, S_k·ŷ, 0)``, with the panel shifted back
    by ``off_detector_k = (off_v, off_u − S_k·ŷ)``, ``DSD_k = S_k·x̂ + DSD − DSO`` the
    perpendicular distance from the source to the panel and ``DSO_k = S_k·x̂`` (per view for the
    arc, one value for the line). A tomosynthesis volume is not a true 3-D reconstruction: the
    narrow sweep leaves the depth (``x``) resolution poor (Dobbins & Godfrey, sec. 2).

    Args:
      path: ``"linear"`` or ``"arc"``.
      sweep: total sweep angle seen from the isocentre, rad, in ``(0, π)`` (default 40°).
      travel: length of the source path instead of ``sweep``, mm.
      n_views: number of projections (≥ 2).
      DSO: source–isocentre distance at the centre of the sweep, mm.
      DSD: source–panel distance (perpendicular) at the centre of the sweep, mm (> DSO).
      n_voxel, d_voxel, off_origin: the volume grid (``x`` is the depth, normal to the panel).
      n_detector, d_detector, off_detector: the panel (``(nv, nu)`` pixels of ``(dv, du)`` mm, its
        centre's offset ``(v, u)``, mm).
    """
    if path not in ("linear", "arc"):
        raise ValueError(f"path must be 'linear' or 'arc', got {path!r}")
    if sweep is not None and travel is not None:
        raise ValueError("give the sweep angle or the travel, not both")
    if int(n_views) != n_views or n_views < 2:
        raise ValueError(f"n_views must be an integer of at least 2, got {n_views!r}")
    DSO, DSD = float(DSO), float(DSD)
    if not (math.isfinite(DSO) and math.isfinite(DSD) and 0 < DSO < DSD):
        raise ValueError(f"need 0 < DSO < DSD (mm), got DSO={DSO}, DSD={DSD}")
    n = int(n_views)
    if travel is not None:
        if not (math.isfinite(travel) and travel > 0):
            raise ValueError(f"travel must be positive (mm), got {travel!r}")
        sweep = 2 * math.atan(travel / (2 * DSO)) if path == "linear" else travel / DSO
    elif sweep is None:
        sweep = math.radians(40.0)
    if not (math.isfinite(sweep) and 0 < sweep < math.pi):
        raise ValueError(f"the sweep must be between 0 and 180° (rad), got {math.degrees(sweep):.6g}°")
    if path == "linear":
        y = DSO * math.tan(sweep / 2) * np.linspace(-1.0, 1.0, n)
        dso, dsd = DSO, DSD
    else:
        phi = np.linspace(-sweep / 2, sweep / 2, n)
        y = DSO * np.sin(phi)
        dso = DSO * np.cos(phi)
        dsd = dso + (DSD - DSO)
    off = np.asarray(off_detector, np.float64)
    if off.shape != (2,):
        raise ValueError(f"off_detector must be (v, u), mm, got {off_detector!r}")
    zeros = np.zeros(n)
    return Geometry(DSD=dsd, DSO=dso, n_detector=n_detector, d_detector=d_detector,
                    off_detector=np.stack([zeros + off[0], off[1] - y], -1), n_voxel=n_voxel, d_voxel=d_voxel,
                    off_origin=off_origin, angles=zeros, translation=np.stack([zeros, y, zeros], -1), beam="cone")


class Sweep(NamedTuple):
    """The source path of a tomosynthesis scan (:func:`tomosynthesis_sweep`).

    Attributes:
      path: ``"linear"`` (the sources on a line), ``"arc"`` (on a circle) or ``"curved"``.
      angle: range of the source's direction seen from the volume centre, in the plane of the
        panel's normal and ``u`` axis, rad.
      travel: length of the source path (the sum of the steps between views), mm.
    """

    path: str
    angle: float
    travel: float


def _frames64(geometry: Geometry) -> tuple[Frames, ViewDetector]:
    """:func:`view_frames` and :func:`detector_per_view` in float64 NumPy (concrete geometries)."""
    # fresh float64 copies (as in jaxmedrf.interop): JAX may reuse a float32 copy of the same leaf
    g = jax.tree_util.tree_map(lambda x: np.array(x, np.float64, copy=True), geometry)
    with jax.enable_x64(True):
        f, d = view_frames(g), detector_per_view(g)
        return (Frames(*(np.asarray(x, np.float64) for x in f)), ViewDetector(*(np.asarray(x, np.float64) for x in d)))


def tomosynthesis_sweep(geometry: Geometry, *, rtol: float = 1e-5) -> Sweep | None:
    """The source sweep when ``geometry`` is a tomosynthesis scan, else ``None``.

    A tomosynthesis scan here is a cone beam whose flat panel (its pixel grid: centre with
    offsets, ``u`` and ``v``) is the same in every view, within ``rtol`` of the geometry's size,
    while the source moves: :func:`tomosynthesis`'s scans, and any geometry with the same rays
    (e.g. read back from ASTRA ``cone_vec`` vectors).
    """
    if geometry.beam != "cone" or geometry.detector != "flat" or geometry.n_views < 2:
        return None
    f, det = _frames64(geometry)
    S, u, v = f.source, f.u, f.v
    P = f.center + det.off_detector[:, 1:2] * u + det.off_detector[:, 0:1] * v
    tol = rtol * max(1.0, float(np.abs(S).max()), float(np.abs(P).max()))
    if np.abs(P - P[0]).max() > tol or np.abs(u - u[0]).max() > rtol or np.abs(v - v[0]).max() > rtol:
        return None
    travel = float(np.linalg.norm(np.diff(S, axis=0), axis=-1).sum())
    if travel <= tol:
        return None
    normal = np.cross(u[0], v[0])  # from the panel towards the source
    rel = S - np.asarray(geometry.off_origin, np.float64)
    phi = np.arctan2(rel @ u[0], rel @ normal)
    X = S - S.mean(0)
    basis = np.linalg.svd(X, full_matrices=False)[2]
    local = X @ basis.T  # coordinates along the principal directions of the path
    rms = lambda a: float(np.sqrt(np.mean(np.sum(a * a, -1))))  # noqa: E731  (n, k) → RMS length
    if rms(local[:, 1:]) <= tol:
        kind = "linear"
    else:
        kind = "curved"
        if rms(local[:, 2:]) <= tol:  # planar: fit a circle (Kåsa's algebraic fit)
            x, y = local[:, 0], local[:, 1]
            (a, b, c), *_ = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], -1), x * x + y * y, rcond=None)
            r = math.sqrt(max(c + a * a / 4 + b * b / 4, 0.0))
            if rms((np.hypot(x - a / 2, y - b / 2) - r)[:, None]) <= tol:
                kind = "arc"
    return Sweep(kind, float(np.ptp(phi)), travel)


def parallel_beam(
    *,
    n_voxel=(128, 128, 128),
    d_voxel=2.0,
    n_detector=(128, 128),
    d_detector=2.0,
    n_views: int = 180,
    arc: float = math.pi,
    angles=None,
    off_detector=(0.0, 0.0),
    off_origin=(0.0, 0.0, 0.0),
) -> Geometry:
    """A parallel-beam scan over ``arc`` (default 180°)."""
    if angles is None:
        angles = circular_angles(n_views, arc=arc)
    return Geometry(
        DSD=0.0, DSO=0.0, n_detector=n_detector, d_detector=d_detector, off_detector=off_detector,
        n_voxel=n_voxel, d_voxel=d_voxel, off_origin=off_origin, angles=angles, beam="parallel",
    )


class Frames(NamedTuple):
    """Per-view source/detector frame, all in mm, shapes ``(n_views, 3)``.

    For parallel beam ``source`` is unused and ``direction`` is the unit ray direction.
    """

    source: Float[Array, "views 3"]
    center: Float[Array, "views 3"]
    u: Float[Array, "views 3"]
    v: Float[Array, "views 3"]
    direction: Float[Array, "views 3"]


def view_frames(geometry: Geometry) -> Frames:
    """Source position, detector centre and axes for every view (equations in the module doc)."""
    th = jnp.asarray(geometry.angles)
    c, s = jnp.cos(th), jnp.sin(th)
    zeros, ones = jnp.zeros_like(th), jnp.ones_like(th)
    radial = jnp.stack([c, s, zeros], -1)
    u = jnp.stack([-s, c, zeros], -1)
    v = jnp.stack([zeros, zeros, ones], -1)
    if geometry.beam == "cone":  # [..., None]: a number, or one per view
        dso, dsd = jnp.asarray(geometry.DSO)[..., None], jnp.asarray(geometry.DSD)[..., None]
        source = dso * radial
        center = (dso - dsd) * radial
    else:
        source = radial * 0.0
        center = radial * 0.0
    direction = -radial
    if geometry.rotation is not None:
        rot = jnp.asarray(geometry.rotation)
        apply = lambda x: jnp.einsum("vij,vj->vi", rot, x, precision=jax.lax.Precision.HIGHEST)  # noqa: E731
        source, center, u, v, direction = map(apply, (source, center, u, v, direction))
    if geometry.translation is not None:
        t = jnp.asarray(geometry.translation)
        source, center = source + t, center + t
    return Frames(source, center, u, v, direction)


class ViewDetector(NamedTuple):
    """Per-view detector distances and offsets, broadcast to every view (mm)."""

    DSD: Float[Array, " views"]
    DSO: Float[Array, " views"]
    off_detector: Float[Array, "views 2"]


def detector_per_view(geometry: Geometry) -> ViewDetector:
    """``DSD``, ``DSO`` ``(n_views,)`` and ``off_detector`` ``(n_views, 2)`` of every view, whether
    the geometry gives them once or per view (mm)."""
    n = geometry.n_views
    return ViewDetector(jnp.broadcast_to(jnp.asarray(geometry.DSD), (n,)),
                        jnp.broadcast_to(jnp.asarray(geometry.DSO), (n,)),
                        jnp.broadcast_to(jnp.asarray(geometry.off_detector), (n, 2)))


def volume_box(geometry: Geometry) -> tuple[Float[Array, "3"], Float[Array, "3"]]:
    """Lower and upper corners of the volume box (outer voxel faces), mm."""
    n = jnp.asarray(geometry.n_voxel, dtype=jnp.float32)
    half = 0.5 * n * jnp.asarray(geometry.d_voxel)
    off = jnp.asarray(geometry.off_origin)
    return off - half, off + half


def voxel_centers(geometry: Geometry) -> tuple[Array, Array, Array]:
    """1-D arrays of voxel-centre coordinates along x, y and z, mm."""
    out = []
    for a in range(3):
        n = geometry.n_voxel[a]
        d = jnp.asarray(geometry.d_voxel)[a]
        out.append((jnp.arange(n) - (n - 1) / 2) * d + jnp.asarray(geometry.off_origin)[a])
    return tuple(out)
