"""jaxmedrf's own projectors, timed beside the peers: the XLA ``jm.project`` (trilinear or
Siddon) and the fused Pallas kernel, with the same figures as the torch peers."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.peers.common import time_jax


def step_for(n_voxel, n_samples: int) -> float:
    """jaxmedrf's trilinear ``step`` (voxels) that gives exactly ``n_samples`` per ray."""
    chord = math.sqrt(sum(n * n for n in n_voxel))
    return chord / n_samples * (1.0 + 1e-9)


def jaxmedrf_reference(volume: np.ndarray, geometry, *, n_samples: int = 512, method: str = "trilinear") -> np.ndarray:
    """Our DRRs ``(views, nv, nu)``: trilinear with exactly ``n_samples`` midpoints per ray, or Siddon."""
    import jaxmedrf as jm

    return np.asarray(jm.project(volume, geometry, method=method, step=step_for(geometry.n_voxel, n_samples)),
                      np.float64)


def time_jaxmedrf(volume: np.ndarray, geometry, *, n_samples: int = 512, warmup: int = 2, repeats: int = 10,
                  method: str = "trilinear", implementation: str = "xla", dtype: str = "float32", pack: str | None = None,
                  **_) -> dict:
    """jaxmedrf's projector (``jm.project``, or the fused Pallas kernel with ``implementation="pallas"``:
    ``dtype`` storage, ``pack``ed gathers), same figures as the torch peers plus the volume gradient."""
    import jax
    import jax.numpy as jnp

    import jaxmedrf as jm
    from jaxmedrf import pose as P

    step = step_for(geometry.n_voxel, n_samples)
    views = geometry.n_views
    label = f"{'Pallas' if implementation == 'pallas' else 'XLA'} {method} {dtype}" + (f" pack={pack}" if pack else "")
    out = {"peer": "jaxmedrf", "version": getattr(jm, "__version__", "dev"), "projector": label,
           "device": jax.devices()[0].device_kind, "jax": jax.__version__, "n_samples": n_samples, "step_voxels": step,
           "views": views, "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector)}
    if implementation == "pallas":
        from jaxmedrf.projectors.pallas import project_pallas

        project = lambda v, g, **_: project_pallas(v, g, method=method, n_samples=n_samples, pack=pack)  # noqa: E731
    else:
        project = jm.project
    vol = jnp.asarray(volume).astype(dtype)
    fwd = jax.jit(lambda v: project(v, geometry, method=method, step=step))
    target = jax.jit(lambda v: jm.project(v, geometry, method=method, step=step))(jnp.asarray(volume)) * 1.01
    out["max_rel_diff_vs_xla"] = float(jnp.max(jnp.abs(fwd(vol) - target / 1.01)) / jnp.max(jnp.abs(target / 1.01)))
    out["forward"] = time_jax(lambda: fwd(vol), warmup=warmup, repeats=repeats, views=views)
    r0 = np.stack([np.asarray(P.from_geometry(geometry, i).rotation) for i in range(views)]).astype(np.float32)

    def loss_pose(p):
        d = P.se3_exp(p)
        g = geometry.replace(angles=jnp.zeros((views,), jnp.float32), rotation=d.rotation @ r0, translation=d.translation)
        return jnp.sum((project(vol, g, method=method, step=step) - target) ** 2)

    gp = jax.jit(jax.grad(loss_pose))
    p0 = jnp.full((views, 6), 1e-4, jnp.float32)
    out["forward_backward_pose"] = time_jax(lambda: gp(p0), warmup=warmup, repeats=repeats, views=views)
    out["pose_gradient_finite"] = bool(jnp.all(jnp.isfinite(gp(p0))))
    gv = jax.jit(jax.grad(lambda v: jnp.sum((project(v, geometry, method=method, step=step) - target) ** 2)))
    out["forward_backward_volume"] = time_jax(lambda: gv(vol), warmup=warmup, repeats=repeats, views=views)
    for k in ("forward", "forward_backward_pose", "forward_backward_volume"):
        out[f"{k}_ms_per_drr"] = out[k]["ms_per_drr"]
    return out
