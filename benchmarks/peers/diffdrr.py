"""DiffDRR 0.6.1 (Siddon and trilinear renderers) as a DRR peer.

**Geometry mapping**: :func:`jaxmedrf.interop.to_diffdrr`, pose (camera → world)
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

from benchmarks.peers.common import import_peer, rel_l2, torch_cases, torch_device, version


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
        from jaxmedrf.interop import to_diffdrr

        if geometry.beam != "cone":
            raise ValueError(f"geometry.beam must be 'cone' for the DRR peers, got {geometry.beam!r}")
        cam = to_diffdrr(geometry)
        subject = types.SimpleNamespace(
            volume=types.SimpleNamespace(affine=cam["affine"]),
            density=types.SimpleNamespace(data=torch.as_tensor(np.array(volume, np.float32))[None]),
            mask=None, reorient=torch.as_tensor(cam["reorient"], dtype=torch.float32))
        drr = DRR(subject, sdd=cam["sdd"], height=cam["height"], width=cam["width"], delx=cam["delx"],
                  dely=cam["dely"], x0=cam["x0"], y0=cam["y0"], reverse_x_axis=cam["reverse_x_axis"],
                  renderer=renderer).to(dev)
        base = torch.as_tensor(cam["pose"], dtype=torch.float32, device=dev)
        kw = {"n_points": n_samples} if renderer == "trilinear" else {}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        render = lambda m: drr(RigidTransform(m), **kw)  # noqa: E731
        img = torch_cases(render, base, drr.density, warmup=warmup, repeats=repeats, views=geometry.n_views, out=out)
        out["rel_l2_vs_jaxmedrf"] = rel_l2(img, reference)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    return out
