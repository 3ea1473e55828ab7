"""Peer DRR projectors timed in the same process as jaxmedrf's (issue 8, items 4 and 6).

Peers: nanodrr 0.1.7 (fused Triton kernel and pure-torch ``grid_sample`` backends), DiffDRR
0.6.1 (Siddon and trilinear), mbirjax 0.7.3 (JAX/Pallas footprint projector) and, for
reference in the same process, jaxmedrf's own XLA trilinear projector. Each ``time_*`` function
takes a NumPy float32 volume ``(nx, ny, nz)`` (μ, mm⁻¹) and a cone-beam
:class:`jaxmedrf.Geometry` (DSD, DSO, detector ``(nv, nu)`` and pixel size, voxel size, view
angles) and returns a dict of figures, or ``{"skipped": reason}`` when the peer cannot be
imported or does not support the device; never an invented figure.

Figures per peer (all views in one batch, medians of ``repeats`` after ``warmup`` calls; torch
peers timed with CUDA events around each call and ``torch.cuda.synchronize``, JAX with
``block_until_ready``):

* ``forward_ms_per_drr``: the DRRs alone;
* ``forward_backward_pose_ms_per_drr``: DRRs + backward of a squared-error loss to six pose
  parameters per view (rotation vector, rad; translation, mm);
* ``forward_backward_volume_ms_per_drr``: the same loss differentiated w.r.t. the volume
  (the gradient a reconstruction needs); for mbirjax, which is not written for autodiff, its
  forward projection followed by its back projection (the adjoint ``Aᵀ``, the same cost);
* ``rel_l2_vs_jaxmedrf``: ``‖peer − ours‖ / ‖ours‖`` on the forward DRRs (ours: trilinear with
  the same sample count, or Siddon for DiffDRR's Siddon), which shows that the geometry mapping
  below is right.

**Geometry mapping** (jaxmedrf's view ``i``: source ``S``, detector axes ``u`` (columns) and
``v`` (rows), unit direction ``w`` from source to detector centre, pixel ``(r, c)`` at
``S + DSD·w + a·u + b·v`` with ``a = (c − (nu−1)/2)·du + off_u``, ``b = (r − (nv−1)/2)·dv + off_v``;
volume box ``[lo, hi]``, voxel ``(i, j, k)`` centred at ``lo + (i + ½)·d``):

* nanodrr: camera → world ``rt_inv = [u | v | w | S]`` (its camera has the source at the
  origin and pixel ``(r, c)`` at ``SDD · K⁻¹ (c + ½, r + ½, 1)``); ``K`` from
  ``make_k_inv(SDD, du, dv, x0=−off_u, y0=−off_v)``. ``(u, v, w)`` is left-handed in jaxmedrf,
  so ``rt_inv`` is a reflection: nanodrr only assumes an affine ``rt_inv``. The volume is given
  as ``(1, 1, nz, ny, nx)`` with ``voxel_to_world = diag(d)`` shifted to ``lo + d/2``,
  ``convert_to_mu=False`` (already μ) and one label class. ``n_samples`` midpoints over each
  ray's clipped segment: the same rule as jaxmedrf's trilinear projector.
* DiffDRR: pose (camera → world) ``[u | −v | w | S]`` with ``reverse_x_axis=False`` (a proper
  rotation), ``x0 = off_u``, ``y0 = −off_v``, ``reorient`` = identity; a duck-typed subject
  (``volume.affine``, ``density.data``, ``mask=None``, ``reorient``) replaces its torchio
  ``Subject``, and the volume keeps jaxmedrf's ``(nx, ny, nz)`` layout (DiffDRR's own). The
  trilinear renderer takes ``n_points`` samples between the *batch's* first entry and last exit
  (DiffDRR's rule), so fewer of them fall inside the volume than for nanodrr or jaxmedrf.
* mbirjax: ``ConeBeamModel((views, nv, nu), angles, source_detector_dist=DSD,
  source_iso_dist=DSO)`` with the same pixel and voxel sizes (as in ``benchmarks/baselines.py``).
  Its angle origin, axis order and footprint (separable-footprint, not sampled) projector differ
  from ours, so no ``rel_l2`` is reported and it has no pose gradient.

Stubs: torchio (a heavy import both torch peers make at import time, only for file loading
that this benchmark does not use) and easygui (mbirjax's GUI) are replaced by empty modules in
``sys.modules`` when they do not import; each peer's ``stubs`` lists those it needed.

    python -m benchmarks.projector_peers                 # 256³, 256² detector, 8 views, 512 samples
    python -m benchmarks.projector_peers --small         # CPU smoke run (32³, 32², 4 views)

Run it in a fresh process: jaxmedrf and the torch peers share the GPU, so JAX's
preallocation is switched off here (``XLA_PYTHON_CLIENT_PREALLOCATE=false``) before JAX starts.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch peers share the GPU

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

__all__ = [
    "PEERS",
    "jaxmedrf_reference",
    "make_case",
    "run_all",
    "time_diffdrr",
    "time_jaxmedrf",
    "time_mbirjax",
    "time_nanodrr",
]


# ----------------------------------------------------------------------------- set-up


def make_case(*, n_voxel: int = 256, n_detector: int = 256, n_views: int = 8):
    """``(volume, geometry)``: benchmarks/projector.py's case (256 mm field of view, DSD 1500 mm,
    DSO 1000 mm, 409.6 mm detector, Shepp–Logan phantom), with ``n_views`` views on a circle."""
    import jaxmedrf as jm
    from jaxmedrf import phantoms

    g = jm.cone_beam(n_voxel=(n_voxel,) * 3, d_voxel=256.0 / n_voxel, n_detector=(n_detector,) * 2,
                     d_detector=409.6 / n_detector, DSD=1500.0, DSO=1000.0, n_views=n_views)
    vol = np.asarray(phantoms.voxelize(phantoms.shepp_logan(radius=128.0), g, supersample=1), np.float32)
    return vol, g


def _frames(geometry) -> dict:
    """Per-view source ``S``, detector axes ``u``, ``v`` and unit direction ``w`` (NumPy, mm)."""
    from jaxmedrf.geometry import view_frames, volume_box

    if geometry.beam != "cone":
        raise ValueError(f"geometry.beam must be 'cone' for the DRR peers, got {geometry.beam!r}")
    f = view_frames(geometry)
    lo, hi = volume_box(geometry)
    return {"S": np.asarray(f.source, np.float64), "u": np.asarray(f.u, np.float64),
            "v": np.asarray(f.v, np.float64), "w": np.asarray(f.direction, np.float64),
            "lo": np.asarray(lo, np.float64), "hi": np.asarray(hi, np.float64),
            "d": np.asarray(geometry.d_voxel, np.float64), "du": float(np.asarray(geometry.d_detector)[1]),
            "dv": float(np.asarray(geometry.d_detector)[0]), "off_u": float(np.asarray(geometry.off_detector)[1]),
            "off_v": float(np.asarray(geometry.off_detector)[0])}


def _matrices(fr: dict, flip_v: bool) -> np.ndarray:
    """``(views, 4, 4)`` camera → world matrices ``[u | ±v | w | S]``."""
    n = fr["S"].shape[0]
    m = np.zeros((n, 4, 4))
    m[:, :3, 0] = fr["u"]
    m[:, :3, 1] = -fr["v"] if flip_v else fr["v"]
    m[:, :3, 2] = fr["w"]
    m[:, :3, 3] = fr["S"]
    m[:, 3, 3] = 1.0
    return m


def _step_for(n_voxel, n_samples: int) -> float:
    """jaxmedrf's trilinear ``step`` (voxels) that gives exactly ``n_samples`` per ray."""
    chord = math.sqrt(sum(n * n for n in n_voxel))
    return chord / n_samples * (1.0 + 1e-9)


def _stub(name: str, **attrs) -> bool:
    """Imports ``name``; where that fails, puts an empty module in its place. True if stubbed
    (now or by an earlier call)."""
    if getattr(sys.modules.get(name), "__jaxmedrf_stub__", False):
        return True
    try:
        __import__(name)
        return False
    except Exception:  # noqa: BLE001 - any import failure: the stub stands in
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__jaxmedrf_stub__ = True
        sys.modules[name] = mod
        return True


class _Unavailable:
    """Stands in for a class of a stubbed module; using it says so."""

    def __init__(self, *args, **kwargs):
        raise ImportError("this class belongs to a module stubbed by benchmarks.projector_peers")


def _stub_torchio() -> bool:
    stubbed = _stub("torchio", LabelMap=_Unavailable, ScalarImage=_Unavailable, Subject=_Unavailable)
    if stubbed and "torchio.transforms" not in sys.modules:
        tr = types.ModuleType("torchio.transforms")
        tr.Resample = _Unavailable
        sys.modules["torchio.transforms"] = tr
        sys.modules["torchio"].transforms = tr
    return stubbed


def _import_peer(name: str):
    """``(module, stubs)`` of a torch peer, or raises with the reason."""
    stubs = ["torchio"] if _stub_torchio() else []
    mod = __import__(name)
    return mod, stubs


# ----------------------------------------------------------------------------- timing


def _summary(times_s: list[float], views: int) -> dict:
    med = statistics.median(times_s)
    return {"median_ms": 1e3 * med, "min_ms": 1e3 * min(times_s), "max_ms": 1e3 * max(times_s),
            "repeats": len(times_s), "ms_per_drr": 1e3 * med / views}


def _time_torch(fn: Callable[[], object], *, warmup: int, repeats: int, views: int) -> dict:
    import torch

    for _ in range(warmup):
        fn()
    cuda = torch.cuda.is_available()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return _summary(times, views)


def _time_jax(fn: Callable[[], object], *, warmup: int, repeats: int, views: int) -> dict:
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return _summary(times, views)


def _rodrigues_torch(p):
    """``(B, 6)`` → ``(B, 4, 4)`` rigid transforms ``(exp(ω̂), ρ)``; ω in rad, ρ in mm."""
    import torch

    w, t = p[:, :3], p[:, 3:]
    th2 = (w * w).sum(-1)[:, None, None]
    th = torch.sqrt(th2 + 1e-24)
    z = torch.zeros_like(w[:, 0])
    k = torch.stack([torch.stack([z, -w[:, 2], w[:, 1]], -1), torch.stack([w[:, 2], z, -w[:, 0]], -1),
                     torch.stack([-w[:, 1], w[:, 0], z], -1)], -2)
    eye = torch.eye(3, dtype=p.dtype, device=p.device).expand_as(k)
    r = eye + torch.sin(th) / th * k + (1 - torch.cos(th)) / (th2 + 1e-24) * (k @ k)
    m = torch.eye(4, dtype=p.dtype, device=p.device).repeat(p.shape[0], 1, 1)
    return torch.cat([torch.cat([r, t[:, :, None]], -1), m[:, 3:]], -2)


def _torch_cases(render: Callable, base, volume_param, *, warmup: int, repeats: int, views: int, out: dict) -> np.ndarray:
    """Times forward, forward+backward (pose) and forward+backward (volume) of
    ``render(pose_matrices)`` (which reads the volume from ``volume_param``); fills ``out``,
    returns the forward DRRs."""
    import torch

    dev = base.device
    with torch.no_grad():
        img = render(base)
    target = (img * 1.01).detach()
    out["forward"] = _time_torch(lambda: render(base), warmup=warmup, repeats=repeats, views=views)

    def no_grad_forward():
        with torch.no_grad():
            return render(base)

    out["forward_no_grad"] = _time_torch(no_grad_forward, warmup=warmup, repeats=repeats, views=views)
    p = torch.full((views, 6), 1e-4, device=dev, dtype=torch.float32, requires_grad=True)

    def fb_pose():
        p.grad = None
        loss = (render(base @ _rodrigues_torch(p)) - target).square().sum()
        loss.backward()
        return p.grad

    out["forward_backward_pose"] = _time_torch(fb_pose, warmup=warmup, repeats=repeats, views=views)
    g = fb_pose()
    out["pose_gradient_finite"] = bool(torch.isfinite(g).all())
    volume_param.requires_grad_(True)

    def fb_volume():
        volume_param.grad = None
        loss = (render(base) - target).square().sum()
        loss.backward()

    try:
        out["forward_backward_volume"] = _time_torch(fb_volume, warmup=warmup, repeats=repeats, views=views)
    except Exception as e:  # noqa: BLE001 - a backend without volume gradients: say so
        out["forward_backward_volume"] = {"skipped": f"{type(e).__name__}: {e}"}
    finally:
        volume_param.requires_grad_(False)
        volume_param.grad = None
    for k in ("forward", "forward_no_grad", "forward_backward_pose", "forward_backward_volume"):
        if "ms_per_drr" in out[k]:
            out[f"{k}_ms_per_drr"] = out[k]["ms_per_drr"]
    if dev.type == "cuda":
        out["peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
    return img.detach().reshape(views, *img.shape[-2:]).float().cpu().numpy()


def _rel_l2(a: np.ndarray, ref: np.ndarray | None) -> float | None:
    if ref is None:
        return None
    return float(np.linalg.norm(a.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


def _torch_device(device: str | None):
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ----------------------------------------------------------------------------- peers


def time_nanodrr(volume: np.ndarray, geometry, *, backend: str = "triton", n_samples: int = 512,
                 device: str | None = None, warmup: int = 3, repeats: int = 10,
                 reference: np.ndarray | None = None) -> dict:
    """nanodrr's ``render`` (``backend`` ``"triton"``: its fused kernel, CUDA only; ``"torch"``:
    its ``grid_sample`` path) on ``geometry``'s views; see the module docstring."""
    try:
        nanodrr, stubs = _import_peer("nanodrr")
        import torch
        from nanodrr.data import Subject
        from nanodrr.drr import DRR
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"nanodrr not importable: {type(e).__name__}: {e}"}
    dev = _torch_device(device)
    if backend == "triton" and dev.type != "cuda":
        return {"skipped": f"nanodrr's Triton backend needs CUDA; device is {dev.type}", "stubs": stubs}
    out = {"peer": "nanodrr", "version": _version("nanodrr", nanodrr), "backend": backend, "stubs": stubs,
           "device": str(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "n_samples": n_samples, "views": geometry.n_views,
           "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector)}
    try:
        fr = _frames(geometry)
        nv, nu = geometry.n_detector
        vol = torch.as_tensor(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))), device=dev)[None, None]
        v2w = np.eye(4)
        v2w[:3, :3] = np.diag(fr["d"])
        v2w[:3, 3] = fr["lo"] + fr["d"] / 2
        t32 = lambda a: torch.as_tensor(a, dtype=torch.float32, device=dev)  # noqa: E731
        subject = Subject(vol, torch.zeros_like(vol), t32(v2w), t32(np.linalg.inv(v2w)),
                          Subject._make_voxel_to_grid(vol.shape).to(dev), t32(0.5 * (fr["lo"] + fr["hi"])),
                          max_label=0, convert_to_mu=False)
        drr = DRR.from_carm_intrinsics(float(geometry.DSD), fr["du"], fr["dv"], -fr["off_u"], -fr["off_v"], nv, nu,
                                       dtype=torch.float32, device=dev)
        base = t32(_matrices(fr, flip_v=False))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        render = lambda m: drr(subject, m, n_samples=n_samples, backend=backend)  # noqa: E731
        img = _torch_cases(render, base, subject._image_hu, warmup=warmup, repeats=repeats, views=geometry.n_views, out=out)
        out["rel_l2_vs_jaxmedrf"] = _rel_l2(img, reference)
    except Exception as e:  # noqa: BLE001 - record, keep the other peers going
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def time_diffdrr(volume: np.ndarray, geometry, *, renderer: str = "siddon", n_samples: int = 512,
                 device: str | None = None, warmup: int = 3, repeats: int = 10,
                 reference: np.ndarray | None = None) -> dict:
    """DiffDRR's ``DRR`` (``renderer`` ``"siddon"`` or ``"trilinear"`` with ``n_points=n_samples``)
    on ``geometry``'s views; see the module docstring."""
    try:
        diffdrr, stubs = _import_peer("diffdrr")
        import torch
        from diffdrr.drr import DRR
        from diffdrr.pose import RigidTransform
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"diffdrr not importable: {type(e).__name__}: {e}"}
    dev = _torch_device(device)
    out = {"peer": "diffdrr", "version": _version("diffdrr", diffdrr), "renderer": renderer, "stubs": stubs,
           "device": str(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "n_samples": n_samples if renderer == "trilinear" else "exact (Siddon)",
           "views": geometry.n_views, "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector)}
    try:
        fr = _frames(geometry)
        nv, nu = geometry.n_detector
        affine = np.eye(4)
        affine[:3, :3] = np.diag(fr["d"])
        affine[:3, 3] = fr["lo"] + fr["d"] / 2
        subject = types.SimpleNamespace(
            volume=types.SimpleNamespace(affine=affine),
            density=types.SimpleNamespace(data=torch.as_tensor(np.array(volume, np.float32))[None]),
            mask=None, reorient=torch.eye(4))
        drr = DRR(subject, sdd=float(geometry.DSD), height=nv, width=nu, delx=fr["du"], dely=fr["dv"],
                  x0=fr["off_u"], y0=-fr["off_v"], reverse_x_axis=False, renderer=renderer).to(dev)
        base = torch.as_tensor(_matrices(fr, flip_v=True), dtype=torch.float32, device=dev)
        kw = {"n_points": n_samples} if renderer == "trilinear" else {}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        render = lambda m: drr(RigidTransform(m), **kw)  # noqa: E731
        img = _torch_cases(render, base, drr.density, warmup=warmup, repeats=repeats, views=geometry.n_views, out=out)
        out["rel_l2_vs_jaxmedrf"] = _rel_l2(img, reference)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def time_mbirjax(volume: np.ndarray, geometry, *, warmup: int = 2, repeats: int = 10, **_) -> dict:
    """mbirjax's cone-beam ``forward_project`` and ``forward_project`` + ``back_project``."""
    try:
        from benchmarks.baselines import _import_mbirjax

        mj, stubbed = _import_mbirjax()
        import jax
        import jax.numpy as jnp
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"mbirjax not importable: {type(e).__name__}: {e}"}
    out = {"peer": "mbirjax", "version": _version("mbirjax", mj),
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
        out["forward"] = _time_jax(lambda: model.forward_project(vol), warmup=warmup, repeats=repeats, views=geometry.n_views)
        out["forward_ms_per_drr"] = out["forward"]["ms_per_drr"]
        sino = sino * 1.01
        fb = lambda: model.back_project(model.forward_project(vol) - sino)  # noqa: E731
        out["forward_backward_volume"] = _time_jax(fb, warmup=warmup, repeats=repeats, views=geometry.n_views)
        out["forward_backward_volume"]["what"] = "forward_project then back_project (adjoint) of the residual"
        out["forward_backward_volume_ms_per_drr"] = out["forward_backward_volume"]["ms_per_drr"]
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def jaxmedrf_reference(volume: np.ndarray, geometry, *, n_samples: int = 512, method: str = "trilinear") -> np.ndarray:
    """Our DRRs ``(views, nv, nu)``: trilinear with exactly ``n_samples`` midpoints per ray, or Siddon."""
    import jaxmedrf as jm

    return np.asarray(jm.project(volume, geometry, method=method, step=_step_for(geometry.n_voxel, n_samples)),
                      np.float64)


def time_jaxmedrf(volume: np.ndarray, geometry, *, n_samples: int = 512, warmup: int = 2, repeats: int = 10,
                  **_) -> dict:
    """jaxmedrf's XLA trilinear projector (``jm.project``), same figures as the torch peers."""
    import jax
    import jax.numpy as jnp

    import jaxmedrf as jm
    from jaxmedrf import pose as P

    step = _step_for(geometry.n_voxel, n_samples)
    views = geometry.n_views
    out = {"peer": "jaxmedrf", "version": getattr(jm, "__version__", "dev"), "projector": "XLA trilinear",
           "device": jax.devices()[0].device_kind, "jax": jax.__version__, "n_samples": n_samples, "step_voxels": step,
           "views": views, "n_voxel": list(geometry.n_voxel), "n_detector": list(geometry.n_detector)}
    vol = jnp.asarray(volume)
    fwd = jax.jit(lambda v: jm.project(v, geometry, method="trilinear", step=step))
    target = fwd(vol) * 1.01
    out["forward"] = _time_jax(lambda: fwd(vol), warmup=warmup, repeats=repeats, views=views)
    r0 = np.stack([np.asarray(P.from_geometry(geometry, i).rotation) for i in range(views)]).astype(np.float32)

    def loss_pose(p):
        d = P.se3_exp(p)
        g = geometry.replace(angles=jnp.zeros((views,), jnp.float32), rotation=d.rotation @ r0, translation=d.translation)
        return jnp.sum((jm.project(vol, g, method="trilinear", step=step) - target) ** 2)

    gp = jax.jit(jax.grad(loss_pose))
    p0 = jnp.full((views, 6), 1e-4, jnp.float32)
    out["forward_backward_pose"] = _time_jax(lambda: gp(p0), warmup=warmup, repeats=repeats, views=views)
    out["pose_gradient_finite"] = bool(jnp.all(jnp.isfinite(gp(p0))))
    gv = jax.jit(jax.grad(lambda v: jnp.sum((jm.project(v, geometry, method="trilinear", step=step) - target) ** 2)))
    out["forward_backward_volume"] = _time_jax(lambda: gv(vol), warmup=warmup, repeats=repeats, views=views)
    for k in ("forward", "forward_backward_pose", "forward_backward_volume"):
        out[f"{k}_ms_per_drr"] = out[k]["ms_per_drr"]
    return out


def _version(name: str, mod) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return getattr(mod, "__version__", "unknown")


PEERS: dict[str, tuple[Callable[..., dict], dict]] = {
    "jaxmedrf_xla_trilinear": (time_jaxmedrf, {}),
    "nanodrr_triton": (time_nanodrr, {"backend": "triton"}),
    "nanodrr_torch": (time_nanodrr, {"backend": "torch"}),
    "diffdrr_siddon": (time_diffdrr, {"renderer": "siddon"}),
    "diffdrr_trilinear": (time_diffdrr, {"renderer": "trilinear"}),
    "mbirjax_forward": (time_mbirjax, {}),
}


def run_all(volume: np.ndarray, geometry, *, n_samples: int = 512, warmup: int = 3, repeats: int = 10,
            peers: list[str] | None = None, budget_s: float | None = None) -> dict:
    """Every peer in :data:`PEERS` (or ``peers``) on one case; ``{name: figures}``.

    ``budget_s``: peers not started once this many seconds have passed are reported skipped.
    """
    t0 = time.perf_counter()
    refs = {}
    for method in ("trilinear", "siddon"):
        try:
            refs[method] = jaxmedrf_reference(volume, geometry, n_samples=n_samples, method=method)
        except Exception as e:  # noqa: BLE001
            refs[method] = None
            print(f"jaxmedrf {method} reference failed: {type(e).__name__}: {e}", file=sys.stderr)
    results = {}
    for name in peers or list(PEERS):
        fn, kw = PEERS[name]
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            results[name] = {"skipped": f"time budget of {budget_s:g} s spent before this peer"}
            continue
        t = time.perf_counter()
        try:
            ref = refs["siddon" if kw.get("renderer") == "siddon" else "trilinear"]
            results[name] = fn(volume, geometry, n_samples=n_samples, warmup=warmup, repeats=repeats, reference=ref, **kw)
        except Exception as e:  # noqa: BLE001 - one peer's failure must not lose the others
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["wall_s"] = time.perf_counter() - t
        _free_torch()
        print(name, json.dumps(_brief(results[name])), flush=True)
    return results


def _free_torch() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _brief(r: dict) -> dict:
    keys = ("skipped", "error", "forward_ms_per_drr", "forward_no_grad_ms_per_drr", "forward_backward_pose_ms_per_drr",
            "forward_backward_volume_ms_per_drr", "rel_l2_vs_jaxmedrf", "stubs", "wall_s")
    return {k: r[k] for k in keys if k in r}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="CPU smoke sizes: 32³, 32² detector, 4 views, 64 samples")
    ap.add_argument("--n-voxel", type=int, default=256)
    ap.add_argument("--n-detector", type=int, default=256)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--n-samples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peers", nargs="+", choices=list(PEERS), default=None)
    ap.add_argument("--budget-s", type=float, default=None, help="skip peers not started after this many seconds")
    ap.add_argument("--out-dir", default=None, help="write projector_peers_<device>_<date>.json there")
    a = ap.parse_args(argv)
    if a.small:
        a.n_voxel, a.n_detector, a.views, a.n_samples, a.repeats, a.warmup = 32, 32, 4, 64, 2, 1
    from benchmarks.common import environment, write_json

    vol, g = make_case(n_voxel=a.n_voxel, n_detector=a.n_detector, n_views=a.views)
    results = run_all(vol, g, n_samples=a.n_samples, warmup=a.warmup, repeats=a.repeats, peers=a.peers,
                      budget_s=a.budget_s)
    payload = {"benchmark": "projector_peers", "environment": environment(),
               "case": {"n_voxel": a.n_voxel, "n_detector": a.n_detector, "views": a.views, "n_samples": a.n_samples,
                        "geometry": json.loads(g.to_json()), "phantom": "Shepp-Logan", "repeats": a.repeats,
                        "warmup": a.warmup},
               "results": results}
    if a.out_dir:
        path = write_json("projector_peers" + ("_small" if a.small else ""), payload, a.out_dir)
        print("wrote", path, file=sys.stderr)
    print(json.dumps(payload, default=str))
    return payload


if __name__ == "__main__":
    main()
