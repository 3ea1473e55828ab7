"""DRR sets for the generative field: read MedNeRF-layout folders, and augment volumes.

A DRR set is a folder written by :func:`jaxmedrf.io.drr.export_drr_pngs` (``jaxmedrf simulate
--preset mednerf --export-png DIR``: ``drr_XXXX.png`` with a ``poses.json`` holding the geometry
and each PNG's ``value_range``) or an ``.npz`` of ``jaxmedrf simulate`` (``projections`` and
``geometry``). :func:`augment_volume` makes more training volumes out of few (flips, a small
rotation about the vertical axis, intensity scaling, a sub-region zoomed back to the grid).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxmedrf.geometry import Geometry

__all__ = ["augment_volume", "load_drr_set", "load_drr_sets"]


def load_drr_set(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """``(projections (views, nv, nu) line integrals, geometry)`` of one DRR folder or ``.npz``."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"DRR set {path} not found")
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"{path}: expected a folder with poses.json or an .npz of `jaxmedrf simulate`")
        with np.load(path) as z:
            if "projections" not in z or "geometry" not in z:
                raise ValueError(f"{path}: an .npz needs the keys 'projections' and 'geometry'")
            proj = np.asarray(z["projections"], np.float32)
            geo = Geometry.from_json(str(z["geometry"]))
        geo.check_projections(proj)
        return proj, geo
    poses = path / "poses.json"
    if not poses.exists():
        raise ValueError(f"{path} holds no poses.json (write DRR sets with `jaxmedrf simulate --export-png`)")
    meta = json.loads(poses.read_text())
    geo = Geometry.from_dict(meta["geometry"])
    out = []
    for view in meta["views"]:
        img = np.asarray(Image.open(path / view["file"]), np.float64)
        top = (1 << int(view.get("bits", 16))) - 1
        lo, hi = view["value_range"]
        out.append((img[::-1] / top * (hi - lo) + lo).astype(np.float32))
    proj = np.stack(out)
    geo.check_projections(proj)
    return proj, geo


def load_drr_sets(paths) -> tuple[np.ndarray, Geometry]:
    """``(images (cases, views, nv, nu), geometry)`` of several DRR sets of one geometry.

    Raises:
      ValueError: the sets' geometries differ (the field's domain and the rays must be shared).
    """
    sets = [load_drr_set(p) for p in paths]
    if not sets:
        raise ValueError("no DRR sets given")
    geo = sets[0][1]
    ref = json.loads(geo.to_json())
    for p, (proj, g) in zip(paths, sets):
        d = json.loads(g.to_json())
        same = set(d) == set(ref) and all(
            np.allclose(np.asarray(d[k], float), np.asarray(ref[k], float), rtol=1e-3, atol=1e-3)
            if not isinstance(d[k], str) and d[k] is not None and ref[k] is not None else d[k] == ref[k]
            for k in d)
        if not same:
            raise ValueError(f"DRR set {p} has another geometry than {paths[0]}: all sets must share one "
                             "(same volume size: `jaxmedrf simulate --preset mednerf` on volumes of one shape)")
    return np.stack([s[0] for s in sets]), geo


def augment_volume(seed: int, volume: np.ndarray, *, max_angle_deg: float = 10.0, scale_range=(0.85, 1.15),
                   min_crop: float = 0.8) -> np.ndarray:
    """One random variant of a μ volume (mm⁻¹) on the same grid: left–right / front–back flips,
    a rotation about the vertical (z) axis of at most ``max_angle_deg``, an intensity scale in
    ``scale_range`` and a centred-at-random sub-region of at least ``min_crop`` of each in-plane
    side, zoomed back to the grid (linear). Seeded by ``seed`` (NumPy; data preparation only)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    v = np.asarray(volume, np.float32)
    if rng.random() < 0.5:
        v = v[::-1]
    if rng.random() < 0.5:
        v = v[:, ::-1]
    ang = rng.uniform(-max_angle_deg, max_angle_deg)
    v = ndimage.rotate(v, ang, axes=(0, 1), reshape=False, order=1, mode="constant", cval=0.0)
    f = rng.uniform(min_crop, 1.0)
    nx, ny, nz = v.shape
    cx, cy = int(round(nx * f)), int(round(ny * f))
    x0, y0 = rng.integers(0, nx - cx + 1), rng.integers(0, ny - cy + 1)
    sub = v[x0:x0 + cx, y0:y0 + cy]
    v = ndimage.zoom(sub, (nx / cx, ny / cy, 1.0), order=1)[:nx, :ny]
    v = np.pad(v, ((0, nx - v.shape[0]), (0, ny - v.shape[1]), (0, 0)), mode="edge")
    return np.maximum(v * rng.uniform(*scale_range), 0.0).astype(np.float32)
