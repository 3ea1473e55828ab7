"""A trained NAF field out of its checkpoint folder, and its DRRs along any geometry.

:func:`load_field` reads what :func:`~jaxmedrf.recon.naf.train_naf` writes with a
``checkpoint_dir`` (orbax ``step_*`` folders and ``config.json``) and returns the field's
parameters, its :class:`~jaxmedrf.recon.naf.NAFConfig` (with the ``mu_scale`` the training
used) and the training geometry (whose voxel box bounds the field).
:func:`render_projections` integrates the field along every pixel ray of a geometry with the
training's sampling (midpoints of ``n_samples`` cells, plus ``n_importance`` points drawn
deterministically from the coarse pass), in chunks of rays.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
from jaxtyping import Array, Float

from jaxmedrf.chunking import chunked_map
from jaxmedrf.fields.encodings import FrequencyConfig, HashGridConfig
from jaxmedrf.fields.field import FieldConfig, field_apply
from jaxmedrf.fields.lineformer import LineformerConfig, lineformer_apply
from jaxmedrf.geometry import Geometry, volume_box
from jaxmedrf.rays import pixel_rays
from jaxmedrf.recon.mlg import MLGConfig
from jaxmedrf.recon.naf import NAFConfig, _ckpt_dirs, init_state, restore_checkpoint
from jaxmedrf.render import render_rays

__all__ = ["load_field", "naf_config_from_dict", "render_projections"]

_ENCODINGS = {"HashGridConfig": HashGridConfig, "FrequencyConfig": FrequencyConfig}


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def naf_config_from_dict(d: dict) -> NAFConfig:
    """Inverse of ``json.loads(NAFConfig.to_json())``."""
    d = dict(d)
    field = dict(d.pop("field"))
    ray_sampling = d.pop("ray_sampling", None)
    enc_type = field.pop("encoding_type", "HashGridConfig")
    if enc_type not in _ENCODINGS:
        raise ValueError(f"unknown encoding type {enc_type!r} in the saved configuration")
    names = {f.name for f in dataclasses.fields(_ENCODINGS[enc_type])}
    enc = _ENCODINGS[enc_type](**{k: v for k, v in _tuples(field.pop("encoding")).items() if k in names})
    field_cls = LineformerConfig if "segment_length" in field else FieldConfig
    return NAFConfig(field=field_cls(encoding=enc, **_tuples(field)),
                     ray_sampling=None if ray_sampling is None else MLGConfig(**ray_sampling), **d)


def load_field(checkpoint_dir: str | Path, *, case: int = 0):
    """``(params, config, geometry)`` of the newest checkpoint in ``checkpoint_dir``.

    Args:
      checkpoint_dir: the folder given to ``train_naf(checkpoint_dir=…)`` or
        ``jaxmedrf reconstruct --checkpoint-dir``.
      case: which case of a multi-case run.

    Raises:
      FileNotFoundError: no such folder.
      ValueError: no ``config.json`` or no checkpoint in it, or ``case`` out of range.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    cfg_file = root / "config.json"
    if not cfg_file.exists() or not _ckpt_dirs(root):
        raise ValueError(f"{root}: not a NAF checkpoint folder (needs config.json and step_* folders)")
    saved = json.loads(cfg_file.read_text())
    config = naf_config_from_dict(saved["config"])
    geometry = Geometry.from_json(json.dumps(saved["geometry"]))
    n_cases = int(saved.get("cases", 1))
    if not 0 <= case < n_cases:
        raise ValueError(f"case must be in [0, {n_cases}), got {case}")
    like = init_state(config, jax.random.split(jax.random.key(0), n_cases), geometry)
    state, _ = restore_checkpoint(root, like)
    params = jax.tree_util.tree_map(lambda x: x[case], state.params)
    return params, config, geometry


def render_projections(
    params,
    config: NAFConfig,
    field_geometry: Geometry,
    geometry: Geometry,
    *,
    chunk_rays: int = 1 << 16,
) -> Float[Array, "views nv nu"]:
    """DRRs (line integrals, dimensionless) of the field for every pixel of ``geometry``.

    Args:
      params: the field's parameters.
      config: its :class:`NAFConfig` (field, ``n_samples``, ``n_importance``).
      field_geometry: the training geometry: its voxel box is the field's domain.
      geometry: where to look from (any views, detector and poses).
      chunk_rays: rays rendered together (memory ∝ ``chunk_rays × samples``; each chunk's rays
        are made from their pixel ids, so no array of every ray is built).
    """
    config = config.for_geometry(field_geometry)
    lo, hi = volume_box(field_geometry)
    n_views, nv, nu = geometry.projection_shape
    ray_field = isinstance(config.field, LineformerConfig)
    apply = lineformer_apply if ray_field else field_apply
    field = lambda x: apply(params, x, config.field, lo=lo, hi=hi)  # noqa: E731

    def one(ids):  # the rays of a chunk, made from their pixel ids
        view, pixel = ids // (nv * nu), ids % (nv * nu)
        rays = pixel_rays(geometry, view, pixel // nu, pixel % nu)
        return render_rays(field, rays, lo, hi, n_samples=config.n_samples, n_importance=config.n_importance,
                           ray_field=ray_field)

    return chunked_map(one, n_views * nv * nu, int(chunk_rays)).reshape(n_views, nv, nu)
