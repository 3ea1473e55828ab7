"""Peer DRR projectors timed in the same process as jaxmedrf's (issue 8, items 4 and 6).

Peers: nanodrr 0.1.7 (fused Triton kernel and pure-torch ``grid_sample`` backends), DiffDRR
0.6.1 (Siddon and trilinear), mbirjax 0.7.3 (JAX/Pallas footprint projector), the ASTRA Toolbox
2.5.0 (its CUDA cone-beam projector ``cuda3d``, FP3D/BP3D) and, for reference in the same
process, jaxmedrf's own XLA trilinear projector. Each ``time_*`` function
takes a NumPy float32 volume ``(nx, ny, nz)`` (μ, mm⁻¹) and a cone-beam
:class:`jaxmedrf.Geometry` (DSD, DSO, detector ``(nv, nu)`` and pixel size, voxel size, view
angles) and returns a dict of figures, or ``{"skipped": reason}`` when the peer cannot be
imported or does not support the device; never an invented figure.

Figures per peer (all views in one batch, medians of ``repeats`` after ``warmup`` calls; torch
peers timed with CUDA events around each call and ``torch.cuda.synchronize``, JAX with
``block_until_ready``, ASTRA by the wall clock between two device synchronisations):

* ``forward_ms_per_drr``: the DRRs alone;
* ``forward_backward_pose_ms_per_drr``: DRRs + backward of a squared-error loss to six pose
  parameters per view (rotation vector, rad; translation, mm);
* ``forward_backward_volume_ms_per_drr``: the same loss differentiated w.r.t. the volume
  (the gradient a reconstruction needs); for mbirjax and ASTRA, which are not written for
  autodiff, their forward projection followed by their back projection of the residual (the
  adjoint ``Aᵀ``, the same cost; the entry's ``what`` says so);
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
* ASTRA (``astra_cuda3d``): a ``cone_vec`` projection geometry, one row of 12 numbers per view
  built straight from the frames above (:func:`_astra_vectors`): source ``S``, detector centre
  ``D + off_u·u + off_v·v`` (``D`` the frame's detector centre, ``S + DSD·w``), and the vectors
  from pixel ``(0, 0)`` to ``(0, 1)`` (``du·u``) and to ``(1, 0)`` (``dv·v``); ASTRA's world
  ``(X, Y, Z)`` is jaxmedrf's ``(x, y, z)``. ASTRA puts pixel ``(r, c)`` at
  ``centre + (c − nu/2 + ½)·u + (r − nv/2 + ½)·v``, the same point as ours. The volume geometry is
  ``create_vol_geom(ny, nx, nz, lo_x, hi_x, lo_y, hi_y, lo_z, hi_z)`` (rows = Y, columns = X,
  slices = Z; window = jaxmedrf's box) and the volume array is ``(Z, Y, X)``: ours transposed
  ``(2, 1, 0)``; projections come back ``(rows, views, columns)`` and are transposed
  ``(1, 0, 2)``. All lengths are in mm: ASTRA moves and scales the geometry into voxel units
  internally and multiplies its forward projection by the voxel size (``cuda/3d/cone_fp.cu``,
  ``fOutputScale · volScale``), so its DRRs are line integrals of μ in mm like ours and the
  least-squares ``ls_scale_ours_over_astra`` it records should be ≈ 1. Its FP is ray-driven:
  one trilinear texture fetch per voxel slice along each ray's dominant axis (not
  ``n_samples``); its BP is voxel-driven (not the exact transpose of its FP; the recorded
  ``adjoint_ratio`` ``⟨x, Aᵀr⟩ / ⟨Ax, r⟩`` shows by how much). Arrays stay on the GPU as CuPy
  arrays passed through DLPack to ``astra.experimental.direct_FP3D``/``direct_BP3D`` (else as
  ``astra.data3d.GPULink`` pointers; else NumPy through ``create_sino3d_gpu``/
  ``create_backprojection3d_gpu``, host transfers included, which ``path`` and
  ``includes_host_transfers`` record). No pose gradient.

Stubs: torchio (a heavy import both torch peers make at import time, only for file loading
that this benchmark does not use) and easygui (mbirjax's GUI) are replaced by empty modules in
``sys.modules`` when they do not import; each peer's ``stubs`` lists those it needed.

ASTRA: the ``astra-toolbox`` 2.5.0 wheel needs the CUDA 12 runtime and cuFFT
(``libastra.so.0`` NEEDS ``libcudart.so.12`` and ``libcufft.so.11``, RUNPATH
``$ORIGIN/../nvidia/{cuda_runtime,cufft}/lib``). On a CUDA 13 machine (its driver, 580, also
runs the CUDA 12 runtime) it is installed apart from the main environment, with the
``nvidia-cuda-runtime-cu12`` wheel, and ``benchmarks/peers/astra_stub/build.sh`` builds a
stand-in ``libcufft.so.11`` whose five functions fail with ``CUFFT_NOT_SUPPORTED``: only FBP/FDK
use cuFFT, never FP3D/BP3D (``stubs`` then lists it). Point ``ASTRA_SITE`` at that folder;
it is appended at the *end* of ``sys.path`` (its ``nvidia`` namespace must not shadow the CUDA
13 ``nvidia`` packages JAX and torch use; ``astra_cuda3d`` comes last in :data:`PEERS` so that
the torch peers have loaded their CUDA libraries before it)::

    python3 -m pip install --no-index --no-deps --target /tmp/astra_site WHEELS/*.whl
    bash benchmarks/peers/astra_stub/build.sh /tmp/astra_site
    ASTRA_SITE=/tmp/astra_site python3 -m benchmarks.projector_peers --peers astra_cuda3d jaxmedrf_xla_trilinear

Before it runs in this process, each way of calling ASTRA is tried on a 16³ case in a child
process (:func:`_astra_preflight`; ``ASTRA_PREFLIGHT=0`` skips it): a native crash there (ASTRA
2.5.0 dies of SIGFPE when it cannot query the GPU) is recorded in ``preflight`` and that way is
not used, instead of the crash ending the whole run.

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
    "time_astra",
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
    """Per-view source ``S``, detector centre ``C`` (before ``off_detector``), detector axes ``u``,
    ``v`` and unit direction ``w`` (NumPy, mm)."""
    from jaxmedrf.geometry import view_frames, volume_box

    if geometry.beam != "cone":
        raise ValueError(f"geometry.beam must be 'cone' for the DRR peers, got {geometry.beam!r}")
    f = view_frames(geometry)
    lo, hi = volume_box(geometry)
    return {"S": np.asarray(f.source, np.float64), "C": np.asarray(f.center, np.float64),
            "u": np.asarray(f.u, np.float64),
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


def _time_synced(fn: Callable[[], object], sync: Callable[[], None], *, warmup: int, repeats: int,
                 views: int) -> dict:
    """Wall clock of ``fn()`` between two device synchronisations, median of ``repeats``."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return _summary(times, views)


def _time_jax(fn: Callable[[], object], *, warmup: int, repeats: int, views: int) -> dict:
    import jax

    return _time_synced(lambda: jax.block_until_ready(fn()), lambda: None, warmup=warmup, repeats=repeats,
                        views=views)


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


ASTRA_CUFFT_STUB = "cufft (FDK unavailable; projectors only)"


def _astra_vectors(fr: dict) -> np.ndarray:
    """``(views, 12)`` ASTRA ``cone_vec`` rows from :func:`_frames`, mm.

    Per view: source ``S``; detector centre ``C + off_u·u + off_v·v``; ``du·u`` (pixel ``(0, 0)``
    → ``(0, 1)``, along a detector row); ``dv·v`` (pixel ``(0, 0)`` → ``(1, 0)``). ASTRA's world
    ``(X, Y, Z)`` is jaxmedrf's ``(x, y, z)``, so no axis is swapped here.
    """
    centre = fr["C"] + fr["off_u"] * fr["u"] + fr["off_v"] * fr["v"]
    return np.concatenate([fr["S"], centre, fr["du"] * fr["u"], fr["dv"] * fr["v"]], axis=1).astype(np.float64)


def _astra_volume_window(geometry) -> tuple[tuple[int, int, int], list[float]]:
    """``((ny, nx, nz), [lo_x, hi_x, lo_y, hi_y, lo_z, hi_z])``: the arguments of ASTRA's
    ``create_vol_geom(rows=Y, cols=X, slices=Z, minX, maxX, minY, maxY, minZ, maxZ)``, mm
    (float64, so that ASTRA's voxel sizes ``(max − min) / n`` equal ``d_voxel``)."""
    nx, ny, nz = (int(n) for n in geometry.n_voxel)
    d = np.asarray(geometry.d_voxel, np.float64)
    off = np.asarray(geometry.off_origin, np.float64)
    lo = off - 0.5 * np.array([nx, ny, nz]) * d
    hi = off + 0.5 * np.array([nx, ny, nz]) * d
    return (ny, nx, nz), [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]), float(lo[2]), float(hi[2])]


def _import_astra():
    """``import astra``, first appending ``$ASTRA_SITE`` (when set) at the *end* of ``sys.path``."""
    site = os.environ.get("ASTRA_SITE")
    if site:
        if not os.path.isdir(site):
            raise ImportError(f"ASTRA_SITE={site!r} is not a folder")
        if site not in sys.path:
            sys.path.append(site)
    import astra

    return astra


def _loaded_libraries(*names: str) -> dict:
    """``{name: [path, …]}``: the shared libraries mapped into this process whose file name
    starts with ``name`` (from ``/proc/self/maps``; empty lists where that cannot be read). JAX
    and CuPy load their own CUDA 13 ``libcudart.so.13``/``libcufft.so.12`` beside ASTRA's."""
    found: dict = {n: [] for n in names}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                path = fields[5].strip() if len(fields) == 6 else ""
                base = os.path.basename(path)
                for n in names:
                    if base.startswith(n) and path not in found[n]:
                        found[n].append(path)
    except OSError:
        pass
    return found


def _cufft_is_stub(path: str | None) -> bool | None:
    """Whether the loaded ``libcufft.so.11`` is ``benchmarks/peers/astra_stub``'s (None: unknown)."""
    if not path:
        return None
    try:
        import ctypes

        lib = ctypes.CDLL(path)
        return hasattr(lib, "jaxmedrf_cufft_stub")
    except Exception:  # noqa: BLE001
        return None


def _astra_agreement(img: np.ndarray, ref: np.ndarray | None) -> dict:
    """``rel_l2`` of ASTRA's DRRs ``(views, nv, nu)`` against ours, the least-squares factor
    ``s = Σ a·b / Σ a·a`` (ours ≈ s · ASTRA) and ``rel_l2`` after it, and ``rel_l2`` with
    rows/columns flipped or swapped (an axis-convention slip shows up as one of those being
    much smaller than ``rel_l2_vs_jaxmedrf``)."""
    if ref is None:
        return {"rel_l2_vs_jaxmedrf": None}
    a = np.asarray(img, np.float64)
    b = np.asarray(ref, np.float64)
    if a.shape != b.shape:
        return {"rel_l2_vs_jaxmedrf": None, "agreement_error": f"shape {a.shape} vs ours {b.shape}"}
    aa = float(np.sum(a * a))
    s = float(np.sum(a * b) / aa) if aa > 0 else float("nan")
    out = {"rel_l2_vs_jaxmedrf": _rel_l2(a, b), "ls_scale_ours_over_astra": s,
           "rel_l2_after_ls_scale": _rel_l2(s * a, b) if aa > 0 else None,
           "sum_ratio_astra_over_ours": float(a.sum() / b.sum()) if b.sum() != 0 else None}
    flips = {"rows": a[:, ::-1, :], "cols": a[:, :, ::-1], "rows_and_cols": a[:, ::-1, ::-1]}
    if a.shape[1] == a.shape[2]:
        flips["transposed"] = np.swapaxes(a, 1, 2)
    out["rel_l2_if_flipped"] = {k: _rel_l2(v, b) for k, v in flips.items()}
    return out


def _astra_device_run(astra, mode: str, vol_zyx: np.ndarray, proj_geom: dict, vol_geom: dict, *,
                      warmup: int, repeats: int, views: int) -> tuple[dict, np.ndarray]:
    """FP3D and FP3D + BP3D on CuPy arrays kept on the GPU (``mode`` ``"cupy_dlpack"``: passed as
    DLPack arrays; ``"cupy_gpulink"``: as ``astra.data3d.GPULink`` pointers). ``(figures, DRRs
    (views, nv, nu))``; raises on any failure."""
    import astra.experimental as ex
    import cupy as cp

    nv, nu = int(proj_geom["DetectorRowCount"]), int(proj_geom["DetectorColCount"])
    nz, ny, nx = vol_zyx.shape
    res = {"cupy": cp.__version__}
    vol = proj = bp = target = V = P = B = None
    pid = astra.create_projector("cuda3d", proj_geom, vol_geom)
    try:
        vol = cp.asarray(vol_zyx)
        proj = cp.zeros((nv, views, nu), cp.float32)
        bp = cp.zeros_like(vol)
        if mode == "cupy_dlpack":
            V, P, B = vol, proj, bp
        elif mode == "cupy_gpulink":
            link = astra.data3d.GPULink
            V = link(vol.data.ptr, nx, ny, nz, nx * 4)
            P = link(proj.data.ptr, nu, views, nv, nu * 4)
            B = link(bp.data.ptr, nx, ny, nz, nx * 4)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        sync = cp.cuda.runtime.deviceSynchronize
        sync()
        t0 = time.perf_counter()
        ex.direct_FP3D(pid, V, P)
        sync()
        res["forward_first_call_s"] = time.perf_counter() - t0
        img = np.transpose(cp.asnumpy(proj), (1, 0, 2)).copy()  # proj is overwritten below
        if not np.all(np.isfinite(img)):
            raise RuntimeError("ASTRA FP3D returned non-finite values")
        if not np.any(img) and np.any(vol_zyx):
            # astra 2.5.0's direct_FPBP3D builds its AstraError without raising it: a failed FP
            # leaves the output as it was (zeros here); ASTRA's log on stderr says why.
            raise RuntimeError("ASTRA FP3D left the projections all zero (a silent failure; see ASTRA's log)")
        res["forward"] = _time_synced(lambda: ex.direct_FP3D(pid, V, P), sync, warmup=warmup, repeats=repeats,
                                      views=views)
        target = proj * 1.01

        def fb():
            ex.direct_FP3D(pid, V, P)
            cp.subtract(proj, target, out=proj)  # the residual, in place: P still points at it
            ex.direct_BP3D(pid, B, P)

        res["forward_backward_volume"] = _time_synced(fb, sync, warmup=warmup, repeats=repeats, views=views)
        fb()
        sync()
        r = cp.asnumpy(proj).astype(np.float64)
        ax = r + cp.asnumpy(target).astype(np.float64)
        atr = cp.asnumpy(bp).astype(np.float64)
        if not np.all(np.isfinite(atr)):
            raise RuntimeError("ASTRA BP3D returned non-finite values")
        den = float(np.sum(ax * r))
        res["adjoint_ratio"] = float(np.sum(vol_zyx.astype(np.float64) * atr) / den) if den != 0 else None
        res["includes_host_transfers"] = False
        return res, img
    finally:
        try:
            astra.projector3d.delete(pid)
        except Exception:  # noqa: BLE001
            pass
        vol = proj = bp = target = V = P = B = None  # noqa: F841 - release the GPU arrays
        try:
            cp.get_default_memory_pool().free_all_blocks()
        except Exception:  # noqa: BLE001
            pass


def _astra_host_run(astra, vol_zyx: np.ndarray, proj_geom: dict, vol_geom: dict, *, warmup: int, repeats: int,
                    views: int) -> tuple[dict, np.ndarray]:
    """FP3D and FP3D + BP3D from NumPy (``create_sino3d_gpu``/``create_backprojection3d_gpu``:
    every call copies host → GPU → host)."""

    def fp():
        sid, data = astra.create_sino3d_gpu(vol_zyx, proj_geom, vol_geom)
        astra.data3d.delete(sid)
        return data

    res = {}
    t0 = time.perf_counter()
    sino = fp()
    res["forward_first_call_s"] = time.perf_counter() - t0
    img = np.transpose(np.asarray(sino, np.float32), (1, 0, 2)).copy()
    if not np.all(np.isfinite(img)):
        raise RuntimeError("ASTRA FP3D returned non-finite values")
    if not np.any(img) and np.any(vol_zyx):
        raise RuntimeError("ASTRA FP3D returned all zeros (see ASTRA's log)")
    target = np.asarray(sino, np.float32) * np.float32(1.01)
    res["forward"] = _time_synced(fp, lambda: None, warmup=warmup, repeats=repeats, views=views)

    def fb():
        s = fp()
        vid, b = astra.create_backprojection3d_gpu(np.asarray(s - target, np.float32), proj_geom, vol_geom)
        astra.data3d.delete(vid)
        return s, b

    res["forward_backward_volume"] = _time_synced(fb, lambda: None, warmup=warmup, repeats=repeats, views=views)
    s, b = fb()
    r = np.asarray(s, np.float64) - target
    den = float(np.sum(np.asarray(s, np.float64) * r))
    res["adjoint_ratio"] = float(np.sum(vol_zyx.astype(np.float64) * b) / den) if den != 0 else None
    res["includes_host_transfers"] = True
    return res, img


# A tiny ASTRA run in a child process, one line per step, so that a native crash (segfault,
# SIGFPE: ASTRA 2.5.0 divides by a zero block size when it cannot query the GPU) is recorded
# instead of taking the benchmark process down. argv: the modes to try.
_ASTRA_PREFLIGHT = r'''
import json, os, sys
site = os.environ.get("ASTRA_SITE")
if site and site not in sys.path:
    sys.path.append(site)


def say(*a):
    print("ASTRA_PREFLIGHT", *a, flush=True)


import numpy as np
import astra

say("IMPORTED", json.dumps({"version": getattr(astra, "__version__", None), "use_cuda": bool(astra.use_cuda())}))
if not astra.use_cuda():
    sys.exit(0)
n, nv, nu, views = 16, 12, 20, 3
vg = astra.create_vol_geom(n, n, n, -16.0, 16.0, -16.0, 16.0, -16.0, 16.0)
th = np.linspace(0.0, np.pi, views, endpoint=False)
vec = np.zeros((views, 12))
vec[:, 0], vec[:, 1] = 100 * np.cos(th), 100 * np.sin(th)
vec[:, 3], vec[:, 4] = -50 * np.cos(th), -50 * np.sin(th)
vec[:, 6], vec[:, 7] = -3 * np.sin(th), 3 * np.cos(th)
vec[:, 11] = 3.0
pg = astra.create_proj_geom("cone_vec", nv, nu, vec)
vol = np.zeros((n, n, n), np.float32)
vol[4:12, 4:12, 4:12] = 0.01
for mode in sys.argv[1:]:
    say("BEGIN", mode)
    try:
        if mode == "numpy_host":
            sid, s = astra.create_sino3d_gpu(vol, pg, vg)
            astra.data3d.delete(sid)
            vid, b = astra.create_backprojection3d_gpu(s, pg, vg)
            astra.data3d.delete(vid)
            s, b = np.asarray(s), np.asarray(b)
        else:
            import cupy as cp
            import astra.experimental as ex

            pid = astra.create_projector("cuda3d", pg, vg)
            try:
                v = cp.asarray(vol)
                p = cp.zeros((nv, views, nu), cp.float32)
                bb = cp.zeros_like(v)
                if mode == "cupy_gpulink":
                    L = astra.data3d.GPULink
                    V = L(v.data.ptr, n, n, n, 4 * n)
                    P = L(p.data.ptr, nu, views, nv, 4 * nu)
                    B = L(bb.data.ptr, n, n, n, 4 * n)
                else:
                    V, P, B = v, p, bb
                cp.cuda.runtime.deviceSynchronize()
                ex.direct_FP3D(pid, V, P)
                ex.direct_BP3D(pid, B, P)
                cp.cuda.runtime.deviceSynchronize()
                s, b = cp.asnumpy(p), cp.asnumpy(bb)
            finally:
                astra.projector3d.delete(pid)
        ok = bool(np.isfinite(s).all() and np.isfinite(b).all() and s.max() > 0 and b.max() > 0)
        say("OK" if ok else "FAIL", mode, "" if ok else f"FP max {float(s.max())}, BP max {float(b.max())}")
    except Exception as e:
        say("FAIL", mode, f"{type(e).__name__}: {e}")
'''


def _astra_preflight(modes: tuple[str, ...], *, timeout_s: float = 90.0) -> tuple[dict, list[str]]:
    """Runs each way of calling ASTRA (``modes``) on a 16³ case in child processes.

    A child that dies (signal, abort) or hangs marks the mode it was in as crashed, and the
    modes it had not reached are tried again in a new child. Returns ``(report, usable)``:
    per-mode outcome (``"ok"``, ``"failed: …"``, ``"crashed …"``) and the modes that worked.
    """
    import subprocess

    report: dict = {"modes": {}}
    todo = list(modes)
    while todo:
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-c", _ASTRA_PREFLIGHT, *todo], capture_output=True, text=True,
                               timeout=timeout_s, env=os.environ.copy())
            stdout, stderr, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            dec = lambda x: x.decode(errors="replace") if isinstance(x, bytes) else (x or "")  # noqa: E731
            stdout, stderr, rc = dec(e.stdout), dec(e.stderr), f"timed out after {timeout_s:g} s"
        report["child_s"] = report.get("child_s", 0.0) + time.perf_counter() - t0
        began = None
        for line in stdout.splitlines():
            if not line.startswith("ASTRA_PREFLIGHT "):
                continue
            parts = line.split(" ", 3)[1:]  # tag, mode, message
            tag = parts[0]
            if tag == "IMPORTED":
                try:
                    report.update(json.loads(line.split(" ", 2)[2]))
                except Exception:  # noqa: BLE001
                    report["imported_line"] = line
            elif tag == "BEGIN":
                began = parts[1]
            elif tag in ("OK", "FAIL") and len(parts) >= 2:
                report["modes"][parts[1]] = "ok" if tag == "OK" else "failed: " + (parts[2] if len(parts) > 2 else "")
                began = None
        tail = stderr.strip()[-600:]
        if "use_cuda" not in report:
            report["error"] = f"astra did not import in the child (exit {rc}): {tail}"
            break
        if not report["use_cuda"]:
            break
        if began is not None:
            report["modes"][began] = f"crashed (exit {rc}): {tail}"
        elif rc != 0:
            report["error"] = f"child exited {rc} outside any mode: {tail}"
        left = [m for m in todo if m not in report["modes"]]
        if len(left) == len(todo):  # no progress: stop rather than loop
            break
        todo = left
    return report, [m for m in modes if report["modes"].get(m) == "ok"]


def time_astra(volume: np.ndarray, geometry, *, n_samples: int | None = None, warmup: int = 3, repeats: int = 10,
               reference: np.ndarray | None = None,
               modes: tuple[str, ...] = ("cupy_dlpack", "cupy_gpulink", "numpy_host"), preflight: bool | None = None,
               **_) -> dict:
    """The ASTRA Toolbox's CUDA cone-beam projector (``cuda3d``, ``cone_vec`` geometry): FP3D, and
    FP3D then BP3D of the residual; see the module docstring (geometry, units, ``ASTRA_SITE``).

    Args:
        volume: ``(nx, ny, nz)`` float32 μ, mm⁻¹.
        geometry: a cone-beam :class:`jaxmedrf.Geometry`.
        n_samples: ignored (ASTRA samples once per voxel slice); accepted for :func:`run_all`.
        warmup, repeats: untimed and timed calls.
        reference: our DRRs ``(views, nv, nu)`` for ``rel_l2_vs_jaxmedrf`` and the scale factor.
        modes: the ways to call ASTRA, tried in order until one works: ``"cupy_dlpack"``,
            ``"cupy_gpulink"`` (GPU-resident) and ``"numpy_host"`` (host transfers included).
        preflight: first run every mode on a 16³ case in child processes
            (:func:`_astra_preflight`) and use only those that worked, so that a native crash
            does not end this process; default: on unless ``ASTRA_PREFLIGHT=0``.

    Returns:
        Figures (``forward_ms_per_drr``, ``forward_backward_volume_ms_per_drr``, agreement with
        ours), or ``{"skipped": reason}`` when astra does not import or sees no CUDA GPU, or
        with ``"error"`` when every mode failed (``modes_failed`` says how).
    """
    try:
        astra = _import_astra()
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"astra (ASTRA Toolbox) not importable: {type(e).__name__}: {e}"}
    version = getattr(astra, "__version__", None) or _version("astra-toolbox", astra)
    try:
        cuda = bool(astra.use_cuda())
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"astra {version}: use_cuda() failed: {type(e).__name__}: {e}"}
    if not cuda:
        return {"skipped": f"astra {version} sees no usable CUDA GPU (astra.use_cuda() is False)"}
    if preflight is None:
        preflight = os.environ.get("ASTRA_PREFLIGHT", "1") != "0"
    pre_failed = {}
    if preflight:
        report, usable = _astra_preflight(tuple(modes))
        pre_failed = {m: "preflight " + r for m, r in report["modes"].items() if r != "ok"}
        if report.get("use_cuda") is False:
            return {"skipped": f"astra {version} sees no usable CUDA GPU in the preflight child", "preflight": report}
        if not usable:
            return {"peer": "astra", "version": version, "preflight": report,
                    "error": "no way of calling ASTRA passed the preflight (see preflight)"}
        modes = tuple(usable)
    libs = _loaded_libraries("libcufft.so", "libcudart.so")
    cufft11 = [q for q in libs["libcufft.so"] if os.path.basename(q).startswith("libcufft.so.11")]
    stub = _cufft_is_stub(cufft11[0] if cufft11 else None)
    views = geometry.n_views
    out = {"peer": "astra", "version": version, "projector": "ASTRA cuda3d cone_vec FP3D (ray-driven, trilinear "
           "texture, one sample per voxel slice along the dominant axis)",
           "stubs": [] if stub is False else [ASTRA_CUFFT_STUB], "libraries": libs, "cufft_stub_loaded": stub,
           "astra_site": os.environ.get("ASTRA_SITE"), "views": views, "n_voxel": list(geometry.n_voxel),
           "n_detector": list(geometry.n_detector), "n_samples": "one per voxel slice (ASTRA's rule)",
           "units": "mm throughout (volume window = jaxmedrf's box); ASTRA scales FP by the voxel size",
           "timing": "wall clock between device synchronisations (includes ASTRA's per-call set-up and its "
                     "copy of the input into a CUDA texture array)",
           "pose_gradient": "not supported (no autodiff; FP3D/BP3D only)"}
    try:
        out["gpu_info"] = str(astra.get_gpu_info())
    except Exception:  # noqa: BLE001
        pass
    try:
        fr = _frames(geometry)
        nv, nu = (int(n) for n in geometry.n_detector)
        vol_shape, window = _astra_volume_window(geometry)
        vol_geom = astra.create_vol_geom(*vol_shape, *window)
        proj_geom = astra.create_proj_geom("cone_vec", nv, nu, _astra_vectors(fr))
        vol_zyx = np.ascontiguousarray(np.transpose(np.asarray(volume, np.float32), (2, 1, 0)))
    except Exception as e:  # noqa: BLE001
        out["error"] = f"geometry: {type(e).__name__}: {e}"
        return out
    if preflight:
        out["preflight"] = report
    failed = dict(pre_failed)
    for mode in modes:
        try:
            if mode == "numpy_host":
                res, img = _astra_host_run(astra, vol_zyx, proj_geom, vol_geom, warmup=warmup, repeats=repeats,
                                           views=views)
            else:
                res, img = _astra_device_run(astra, mode, vol_zyx, proj_geom, vol_geom, warmup=warmup,
                                             repeats=repeats, views=views)
        except Exception as e:  # noqa: BLE001 - try the next way of calling ASTRA
            failed[mode] = f"{type(e).__name__}: {e}"
            continue
        out["path"] = mode
        out.update(res)
        out["forward_ms_per_drr"] = res["forward"]["ms_per_drr"]
        out["forward_backward_volume"]["what"] = ("FP3D then BP3D (ASTRA's voxel-driven adjoint Aᵀ) of the "
                                                  "residual, as for mbirjax; no autodiff")
        out["forward_backward_volume_ms_per_drr"] = res["forward_backward_volume"]["ms_per_drr"]
        try:
            out.update(_astra_agreement(img, reference))
        except Exception as e:  # noqa: BLE001
            out["agreement_error"] = f"{type(e).__name__}: {e}"
        break
    if failed:
        out["modes_failed"] = failed
    if "path" not in out:
        out["error"] = "every mode failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
    try:
        device = __import__("cupy").cuda.runtime.getDeviceProperties(0)["name"]
        out["device"] = device.decode() if isinstance(device, bytes) else str(device)
    except Exception:  # noqa: BLE001
        out["device"] = out.get("gpu_info", "unknown")
    return out


def jaxmedrf_reference(volume: np.ndarray, geometry, *, n_samples: int = 512, method: str = "trilinear") -> np.ndarray:
    """Our DRRs ``(views, nv, nu)``: trilinear with exactly ``n_samples`` midpoints per ray, or Siddon."""
    import jaxmedrf as jm

    return np.asarray(jm.project(volume, geometry, method=method, step=_step_for(geometry.n_voxel, n_samples)),
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

    step = _step_for(geometry.n_voxel, n_samples)
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
    out["forward"] = _time_jax(lambda: fwd(vol), warmup=warmup, repeats=repeats, views=views)
    r0 = np.stack([np.asarray(P.from_geometry(geometry, i).rotation) for i in range(views)]).astype(np.float32)

    def loss_pose(p):
        d = P.se3_exp(p)
        g = geometry.replace(angles=jnp.zeros((views,), jnp.float32), rotation=d.rotation @ r0, translation=d.translation)
        return jnp.sum((project(vol, g, method=method, step=step) - target) ** 2)

    gp = jax.jit(jax.grad(loss_pose))
    p0 = jnp.full((views, 6), 1e-4, jnp.float32)
    out["forward_backward_pose"] = _time_jax(lambda: gp(p0), warmup=warmup, repeats=repeats, views=views)
    out["pose_gradient_finite"] = bool(jnp.all(jnp.isfinite(gp(p0))))
    gv = jax.jit(jax.grad(lambda v: jnp.sum((project(v, geometry, method=method, step=step) - target) ** 2)))
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
    "jaxmedrf_pallas_siddon": (time_jaxmedrf, {"implementation": "pallas", "method": "siddon"}),
    "jaxmedrf_pallas_trilinear_bf16z": (time_jaxmedrf, {"implementation": "pallas", "dtype": "bfloat16", "pack": "z"}),
    "nanodrr_triton": (time_nanodrr, {"backend": "triton"}),
    "nanodrr_torch": (time_nanodrr, {"backend": "torch"}),
    "diffdrr_siddon": (time_diffdrr, {"renderer": "siddon"}),
    "diffdrr_trilinear": (time_diffdrr, {"renderer": "trilinear"}),
    "mbirjax_forward": (time_mbirjax, {}),
    "astra_cuda3d": (time_astra, {}),
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
    keys = ("skipped", "error", "path", "forward_ms_per_drr", "forward_no_grad_ms_per_drr",
            "forward_backward_pose_ms_per_drr", "forward_backward_volume_ms_per_drr", "rel_l2_vs_jaxmedrf",
            "ls_scale_ours_over_astra", "stubs", "wall_s")
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
