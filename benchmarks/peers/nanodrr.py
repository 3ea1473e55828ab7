"""nanodrr 0.1.7 (fused Triton kernel and pure-torch ``grid_sample`` backends) as a DRR peer.

**Geometry mapping**: :func:`jaxmedrf.interop.to_nanodrr` (camera → world
``rt_inv = [u | v | w | S]``; its camera has the source at the origin and pixel ``(r, c)`` at
``SDD · K⁻¹ (c + ½, r + ½, 1)``; ``K`` from ``make_k_inv(SDD, du, dv, x0=−off_u, y0=−off_v)``).
``(u, v, w)`` is left-handed in jaxmedrf, so ``rt_inv`` is a reflection: nanodrr only assumes an
affine ``rt_inv``. The volume is given as ``(1, 1, nz, ny, nx)`` with the converter's
``voxel_to_world`` (``diag(d)`` shifted to ``lo + d/2``), ``convert_to_mu=False`` (already μ) and
one label class. ``n_samples``
midpoints over each ray's clipped segment: the same rule as jaxmedrf's trilinear projector.
"""

from __future__ import annotations

import numpy as np

from benchmarks.peers.common import import_peer, rel_l2, torch_cases, torch_device, version


def camera(geometry) -> dict:
    """:func:`jaxmedrf.interop.to_nanodrr` of a cone-beam geometry (the peer's perspective camera)."""
    from jaxmedrf.interop import to_nanodrr

    if geometry.beam != "cone":
        raise ValueError(f"geometry.beam must be 'cone' for the DRR peers, got {geometry.beam!r}")
    return to_nanodrr(geometry)


def time_nanodrr(volume: np.ndarray, geometry, *, backend: str = "triton", n_samples: int = 512,
                 device: str | None = None, warmup: int = 3, repeats: int = 10,
                 reference: np.ndarray | None = None) -> dict:
    """nanodrr's ``render`` (``backend`` ``"triton"``: its fused kernel, CUDA only; ``"torch"``:
    its ``grid_sample`` path) on ``geometry``'s views; see the module docstring."""
    try:
        nanodrr, stubs = import_peer("nanodrr")
        import torch
        from nanodrr.data import Subject
        from nanodrr.drr import DRR
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"nanodrr not importable: {type(e).__name__}: {e}"}
    dev = torch_device(device)
    if backend == "triton" and dev.type != "cuda":
        return {"skipped": f"nanodrr's Triton backend needs CUDA; device is {dev.type}", "stubs": stubs}
    out = {"peer": "nanodrr", "version": version("nanodrr", nanodrr), "backend": backend, "stubs": stubs,
           "device": str(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "n_samples": n_samples, "views": geometry.n_views,
           "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector)}
    try:
        cam = camera(geometry)
        vol = torch.as_tensor(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))), device=dev)[None, None]
        v2w = cam["voxel_to_world"]
        t32 = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
        subject = Subject(vol, torch.zeros_like(vol), t32(v2w), t32(np.linalg.inv(v2w)),
                          Subject._make_voxel_to_grid(vol.shape).to(dev), t32(np.asarray(geometry.off_origin)),
                          max_label=0, convert_to_mu=False)
        drr = DRR.from_carm_intrinsics(cam["sdd"], cam["delx"], cam["dely"], cam["x0"], cam["y0"], cam["height"],
                                       cam["width"], dtype=torch.float32, device=dev)
        base = t32(cam["rt_inv"])
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        render = lambda m: drr(subject, m, n_samples=n_samples, backend=backend)  # noqa: E731
        img = torch_cases(render, base, subject._image_hu, warmup=warmup, repeats=repeats, views=geometry.n_views, out=out)
        out["rel_l2_vs_jaxmedrf"] = rel_l2(img, reference)
    except Exception as e:  # noqa: BLE001 - record, keep the other peers going
        out["error"] = f"{type(e).__name__}: {e}"
    return out
