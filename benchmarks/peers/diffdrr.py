"""DiffDRR 0.6.1 (Siddon and trilinear renderers) as a DRR peer.

**Geometry mapping** (frames: :mod:`benchmarks.peers.common`): pose (camera → world)
``[u | −v | w | S]`` with ``reverse_x_axis=False`` (a proper rotation), ``x0 = off_u``,
``y0 = −off_v``, ``reorient`` = identity; a duck-typed subject (``volume.affine``,
``density.data``, ``mask=None``, ``reorient``) replaces its torchio ``Subject``, and the volume
keeps jaxmedrf's ``(nx, ny, nz)`` layout (DiffDRR's own). The trilinear renderer takes
``n_points`` samples between the *batch's* first entry and last exit (DiffDRR's rule), so fewer
of them fall inside the volume than for nanodrr or jaxmedrf.
"""

from __future__ import annotations

import types

import numpy as np

from benchmarks.peers.common import (frames, import_peer, matrices, rel_l2, torch_cases, torch_device, version,
                                     voxel_to_world)


def time_diffdrr(volume: np.ndarray, geometry, *, renderer: str = "siddon", n_samples: int = 512,
                 device: str | None = None, warmup: int = 3, repeats: int = 10,
                 reference: np.ndarray | None = None) -> dict:
    """DiffDRR's ``DRR`` (``renderer`` ``"siddon"`` or ``"trilinear"`` with ``n_points=n_samples``)
    on ``geometry``'s views; see the module docstring."""
    try:
        diffdrr, stubs = import_peer("diffdrr")
        import torch
        from diffdrr.drr import DRR
        from diffdrr.pose import RigidTransform
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"diffdrr not importable: {type(e).__name__}: {e}"}
    dev = torch_device(device)
    out = {"peer": "diffdrr", "version": version("diffdrr", diffdrr), "renderer": renderer, "stubs": stubs,
           "device": str(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "n_samples": n_samples if renderer == "trilinear" else "exact (Siddon)",
           "views": geometry.n_views, "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector)}
    try:
        fr = frames(geometry)
        nv, nu = geometry.n_detector
        subject = types.SimpleNamespace(
            volume=types.SimpleNamespace(affine=voxel_to_world(fr)),
            density=types.SimpleNamespace(data=torch.as_tensor(np.array(volume, np.float32))[None]),
            mask=None, reorient=torch.eye(4))
        drr = DRR(subject, sdd=float(geometry.DSD), height=nv, width=nu, delx=fr["du"], dely=fr["dv"],
                  x0=fr["off_u"], y0=-fr["off_v"], reverse_x_axis=False, renderer=renderer).to(dev)
        base = torch.as_tensor(matrices(fr, flip_v=True), dtype=torch.float32, device=dev)
        kw = {"n_points": n_samples} if renderer == "trilinear" else {}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        render = lambda m: drr(RigidTransform(m), **kw)  # noqa: E731
        img = torch_cases(render, base, drr.density, warmup=warmup, repeats=repeats, views=geometry.n_views, out=out)
        out["rel_l2_vs_jaxmedrf"] = rel_l2(img, reference)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    return out
