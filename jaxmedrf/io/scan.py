"""The scan ``.npz`` that ``jaxmedrf simulate`` and ``jaxmedrf preprocess`` write and
``jaxmedrf reconstruct`` reads (:func:`jaxmedrf.cli.reconstruct.load_scan`).

Keys: ``projections`` float32 ``(n_views, nv, nu)`` line integrals (dimensionless), ``angles``
float64 (rad), ``geometry`` (JSON of :meth:`jaxmedrf.Geometry.to_json`) and, when the ground truth
is known, ``volume`` float32 ``n_voxel`` in mm⁻¹; when ``simulate`` modelled the physics
(:mod:`jaxmedrf.physics`), ``physics``: JSON of its settings (spectrum, detector, materials,
scatter, blur), read back by :func:`load_physics`.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["load_physics", "save_scan"]


def save_scan(path: str | os.PathLike, projections: np.ndarray, geometry, *, volume: np.ndarray | None = None,
              physics: dict | None = None) -> None:
    """Writes the scan ``.npz`` atomically (no half-written file survives an error).

    Args:
        path: output ``.npz``.
        projections: line integrals ``(n_views, nv, nu)``, the geometry's projection shape.
        geometry: a :class:`jaxmedrf.Geometry`.
        volume: optional ground truth, μ in mm⁻¹, shape ``n_voxel``.
        physics: optional settings of the physics model (JSON-able), stored as ``physics``.

    Raises:
        ValueError: shapes that do not match the geometry.
    """
    from jaxmedrf._files import atomic_path

    projections = np.asarray(projections, np.float32)
    geometry.check_projections(projections)
    arrays = {"projections": projections, "angles": np.asarray(geometry.angles, np.float64),
              "geometry": np.asarray(geometry.to_json())}
    if volume is not None:
        geometry.check_volume(volume)
        arrays["volume"] = np.asarray(volume, np.float32)
    if physics is not None:
        arrays["physics"] = np.asarray(json.dumps(physics))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_physics(scan: dict, *, what: str = "input") -> dict | None:
    """The physics settings of a scan's arrays (``read_npz``'s dict), or ``None`` if it has none.

    Raises:
        ValueError: a ``physics`` entry that is not a JSON object.
    """
    if "physics" not in scan:
        return None
    try:
        d = json.loads(str(scan["physics"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: 'physics' is not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{what}: 'physics' must be a JSON object")
    return d
