"""mbirjax 0.7.3 (JAX/Pallas separable-footprint cone-beam projector) as a DRR peer.

``ConeBeamModel((views, nv, nu), angles, source_detector_dist=DSD, source_iso_dist=DSO)`` with the
same pixel and voxel sizes (as in ``benchmarks/baselines.py``, which also stubs its GUI
dependency easygui). Its angle origin, axis order and footprint (not sampled) projector differ
from ours, so no ``rel_l2`` is reported; it has no pose gradient, and its volume figure is its
forward projection followed by its back projection (the adjoint ``Aᵀ``) of the residual.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.peers.common import time_jax, version


def time_mbirjax(volume: np.ndarray, geometry, *, warmup: int = 2, repeats: int = 10, **_) -> dict:
    """mbirjax's cone-beam ``forward_project`` and ``forward_project`` + ``back_project``."""
    try:
        from benchmarks.baselines import _import_mbirjax

        mj, stubbed = _import_mbirjax()
        import jax
        import jax.numpy as jnp
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"mbirjax not importable: {type(e).__name__}: {e}"}
    out = {"peer": "mbirjax", "version": version("mbirjax", mj),
           "stubs": ["easygui"] if stubbed else [], "device": jax.devices()[0].device_kind,
           "views": geometry.n_views, "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector),
           "projector": "mbirjax cone-beam (footprint) model", "pose_gradient": "not supported (no pose parameters)"}
    try:
        nv, nu = geometry.n_detector
        model = mj.ConeBeamModel((geometry.n_views, nv, nu), np.asarray(geometry.angles, np.float32),
                                 source_detector_dist=float(geometry.DSD), source_iso_dist=float(geometry.DSO))
        model.set_params(delta_det_channel=float(np.asarray(geometry.d_detector)[1]),
                         delta_det_row=float(np.asarray(geometry.d_detector)[0]),
                         delta_voxel=float(np.asarray(geometry.d_voxel)[0]), recon_shape=tuple(geometry.n_voxel))
        vol = jnp.asarray(volume)
        t0 = time.perf_counter()
        sino = jax.block_until_ready(model.forward_project(vol))
        out["forward_first_call_s"] = time.perf_counter() - t0
        out["forward"] = time_jax(lambda: model.forward_project(vol), warmup=warmup, repeats=repeats, views=geometry.n_views)
        out["forward_ms_per_drr"] = out["forward"]["ms_per_drr"]
        sino = sino * 1.01
        fb = lambda: model.back_project(model.forward_project(vol) - sino)  # noqa: E731
        out["forward_backward_volume"] = time_jax(fb, warmup=warmup, repeats=repeats, views=geometry.n_views)
        out["forward_backward_volume"]["what"] = "forward_project then back_project (adjoint) of the residual"
        out["forward_backward_volume_ms_per_drr"] = out["forward_backward_volume"]["ms_per_drr"]
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    return out
