"""The ASTRA Toolbox 2.5.0 (its CUDA cone-beam projector ``cuda3d``, FP3D/BP3D) as a DRR peer.

**Geometry mapping** (:func:`jaxmedrf.interop.to_astra`, via :func:`astra_geometry`): a ``cone_vec``
projection geometry, one row of 12 numbers per view: source ``S``, detector centre
``C + off_u·u + off_v·v``, and the vectors from pixel ``(0, 0)``
to ``(0, 1)`` (``du·u``) and to ``(1, 0)`` (``dv·v``); ASTRA's world ``(X, Y, Z)`` is jaxmedrf's
``(x, y, z)``. ASTRA puts pixel ``(r, c)`` at ``centre + (c − nu/2 + ½)·u + (r − nv/2 + ½)·v``, the
same point as ours. The volume geometry is ``create_vol_geom(ny, nx, nz, lo_x, hi_x, lo_y, hi_y,
lo_z, hi_z)`` (rows = Y, columns = X, slices = Z; window = jaxmedrf's box)
and the volume array is ``(Z, Y, X)``: ours transposed ``(2, 1, 0)``; projections come back
``(rows, views, columns)`` and are transposed ``(1, 0, 2)``. All lengths are in mm: ASTRA moves
and scales the geometry into voxel units internally and multiplies its forward projection by the
voxel size (``cuda/3d/cone_fp.cu``, ``fOutputScale · volScale``), so its DRRs are line integrals
of μ in mm like ours and the least-squares ``ls_scale_ours_over_astra`` it records should be
≈ 1. Its FP is ray-driven: one trilinear texture fetch per voxel slice along each ray's dominant
axis (not ``n_samples``); its BP is voxel-driven (not the exact transpose of its FP; the
recorded ``adjoint_ratio`` ``⟨x, Aᵀr⟩ / ⟨Ax, r⟩`` shows by how much). Arrays stay on the GPU as
CuPy arrays passed through DLPack to ``astra.experimental.direct_FP3D``/``direct_BP3D`` (else as
``astra.data3d.GPULink`` pointers; else NumPy through ``create_sino3d_gpu``/
``create_backprojection3d_gpu``, host transfers included, which ``path`` and
``includes_host_transfers`` record). No pose gradient; the volume figure is FP3D then BP3D of
the residual (the adjoint ``Aᵀ``, the same cost as a volume gradient).

**Install**: the ``astra-toolbox`` 2.5.0 wheel needs the CUDA 12 runtime and cuFFT
(``libastra.so.0`` NEEDS ``libcudart.so.12`` and ``libcufft.so.11``, RUNPATH
``$ORIGIN/../nvidia/{cuda_runtime,cufft}/lib``). On a CUDA 13 machine (its driver, 580, also
runs the CUDA 12 runtime) it is installed apart from the main environment, with the
``nvidia-cuda-runtime-cu12`` wheel, and ``benchmarks/peers/astra_stub/build.sh`` builds a
stand-in ``libcufft.so.11`` whose five functions fail with ``CUFFT_NOT_SUPPORTED``: only FBP/FDK
use cuFFT, never FP3D/BP3D (``stubs`` then lists it). Point ``ASTRA_SITE`` at that folder;
it is appended at the *end* of ``sys.path`` (its ``nvidia`` namespace must not shadow the CUDA
13 ``nvidia`` packages JAX and torch use; ``astra_cuda3d`` comes last in the runner's ``PEERS``
so that the torch peers have loaded their CUDA libraries before it)::

    python3 -m pip install --no-index --no-deps --target /tmp/astra_site WHEELS/*.whl
    bash benchmarks/peers/astra_stub/build.sh /tmp/astra_site
    ASTRA_SITE=/tmp/astra_site python3 -m benchmarks.projector_peers --peers astra_cuda3d jaxmedrf_xla_trilinear

Before it runs in this process, each way of calling ASTRA is tried on a 16³ case in a child
process (:mod:`benchmarks.peers.astra_preflight`; ``ASTRA_PREFLIGHT=0`` skips it): a native crash
there is recorded in ``preflight`` and that way is not used, instead of the crash ending the
whole run.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.peers.astra_preflight import gpu_arrays, import_astra, preflight as run_preflight
from benchmarks.peers.common import rel_l2, time_synced, version

CUFFT_STUB = "cufft (FDK unavailable; projectors only)"


def astra_geometry(geometry) -> tuple[tuple, tuple]:
    """``(vol_args, proj_args)``: the arguments of ASTRA's ``create_vol_geom(rows=ny, cols=nx,
    slices=nz, minX, maxX, minY, maxY, minZ, maxZ)`` and ``create_proj_geom("cone_vec", rows=nv,
    cols=nu, vectors)`` for a cone-beam geometry, from :func:`jaxmedrf.interop.to_astra` (mm,
    float64, so that ASTRA's voxel sizes ``(max − min) / n`` equal ``d_voxel``)."""
    from jaxmedrf.interop import to_astra

    if geometry.beam != "cone":
        raise ValueError(f"geometry.beam must be 'cone' for the DRR peers, got {geometry.beam!r}")
    a = to_astra(geometry)
    vg, pg, o = a["vol_geom"], a["proj_geom"], a["vol_geom"]["option"]
    window = [o[f"Window{m}{x}"] for x in "XYZ" for m in ("Min", "Max")]
    return ((vg["GridRowCount"], vg["GridColCount"], vg["GridSliceCount"], *window),
            (pg["type"], pg["DetectorRowCount"], pg["DetectorColCount"], pg["Vectors"]))


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


def _agreement(img: np.ndarray, ref: np.ndarray | None) -> dict:
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
    out = {"rel_l2_vs_jaxmedrf": rel_l2(a, b), "ls_scale_ours_over_astra": s,
           "rel_l2_after_ls_scale": rel_l2(s * a, b) if aa > 0 else None,
           "sum_ratio_astra_over_ours": float(a.sum() / b.sum()) if b.sum() != 0 else None}
    flips = {"rows": a[:, ::-1, :], "cols": a[:, :, ::-1], "rows_and_cols": a[:, ::-1, ::-1]}
    if a.shape[1] == a.shape[2]:
        flips["transposed"] = np.swapaxes(a, 1, 2)
    out["rel_l2_if_flipped"] = {k: rel_l2(v, b) for k, v in flips.items()}
    return out


def _device_run(astra, mode: str, vol_zyx: np.ndarray, proj_geom: dict, vol_geom: dict, *,
                warmup: int, repeats: int, views: int) -> tuple[dict, np.ndarray]:
    """FP3D and FP3D + BP3D on CuPy arrays kept on the GPU (``mode`` ``"cupy_dlpack"``: passed as
    DLPack arrays; ``"cupy_gpulink"``: as ``astra.data3d.GPULink`` pointers). ``(figures, DRRs
    (views, nv, nu))``; raises on any failure."""
    import astra.experimental as ex
    import cupy as cp

    nv, nu = int(proj_geom["DetectorRowCount"]), int(proj_geom["DetectorColCount"])
    res = {"cupy": cp.__version__}
    vol = proj = bp = target = V = P = B = None
    pid = astra.create_projector("cuda3d", proj_geom, vol_geom)
    try:
        vol, proj, bp, V, P, B = gpu_arrays(astra, cp, mode, vol_zyx, views, (nv, nu))
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
        res["forward"] = time_synced(lambda: ex.direct_FP3D(pid, V, P), sync, warmup=warmup, repeats=repeats,
                                     views=views)
        target = proj * 1.01

        def fb():
            ex.direct_FP3D(pid, V, P)
            cp.subtract(proj, target, out=proj)  # the residual, in place: P still points at it
            ex.direct_BP3D(pid, B, P)

        res["forward_backward_volume"] = time_synced(fb, sync, warmup=warmup, repeats=repeats, views=views)
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


def _host_run(astra, vol_zyx: np.ndarray, proj_geom: dict, vol_geom: dict, *, warmup: int, repeats: int,
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
    res["forward"] = time_synced(fp, lambda: None, warmup=warmup, repeats=repeats, views=views)

    def fb():
        s = fp()
        vid, b = astra.create_backprojection3d_gpu(np.asarray(s - target, np.float32), proj_geom, vol_geom)
        astra.data3d.delete(vid)
        return s, b

    res["forward_backward_volume"] = time_synced(fb, lambda: None, warmup=warmup, repeats=repeats, views=views)
    s, b = fb()
    r = np.asarray(s, np.float64) - target
    den = float(np.sum(np.asarray(s, np.float64) * r))
    res["adjoint_ratio"] = float(np.sum(vol_zyx.astype(np.float64) * b) / den) if den != 0 else None
    res["includes_host_transfers"] = True
    return res, img


def time_astra(volume: np.ndarray, geometry, *, n_samples: int | None = None, warmup: int = 3, repeats: int = 10,
               reference: np.ndarray | None = None,
               modes: tuple[str, ...] = ("cupy_dlpack", "cupy_gpulink", "numpy_host"), preflight: bool | None = None,
               **_) -> dict:
    """The ASTRA Toolbox's CUDA cone-beam projector (``cuda3d``, ``cone_vec`` geometry): FP3D, and
    FP3D then BP3D of the residual; see the module docstring (geometry, units, ``ASTRA_SITE``).

    Args:
        volume: ``(nx, ny, nz)`` float32 μ, mm⁻¹.
        geometry: a cone-beam :class:`jaxmedrf.Geometry`.
        n_samples: ignored (ASTRA samples once per voxel slice); accepted for :func:`benchmarks.projector_peers.run_all`.
        warmup, repeats: untimed and timed calls.
        reference: our DRRs ``(views, nv, nu)`` for ``rel_l2_vs_jaxmedrf`` and the scale factor.
        modes: the ways to call ASTRA, tried in order until one works: ``"cupy_dlpack"``,
            ``"cupy_gpulink"`` (GPU-resident) and ``"numpy_host"`` (host transfers included).
        preflight: first run every mode on a 16³ case in child processes
            (:func:`benchmarks.peers.astra_preflight.preflight`) and use only those that worked,
            so that a native crash does not end this process; default: on unless
            ``ASTRA_PREFLIGHT=0``.

    Returns:
        Figures (``forward_ms_per_drr``, ``forward_backward_volume_ms_per_drr``, agreement with
        ours), or ``{"skipped": reason}`` when astra does not import or sees no CUDA GPU, or
        with ``"error"`` when every mode failed (``modes_failed`` says how).
    """
    try:
        astra = import_astra()
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"astra (ASTRA Toolbox) not importable: {type(e).__name__}: {e}"}
    ver = getattr(astra, "__version__", None) or version("astra-toolbox", astra)
    try:
        cuda = bool(astra.use_cuda())
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"astra {ver}: use_cuda() failed: {type(e).__name__}: {e}"}
    if not cuda:
        return {"skipped": f"astra {ver} sees no usable CUDA GPU (astra.use_cuda() is False)"}
    if preflight is None:
        preflight = os.environ.get("ASTRA_PREFLIGHT", "1") != "0"
    pre_failed = {}
    if preflight:
        report, usable = run_preflight(tuple(modes))
        pre_failed = {m: "preflight " + r for m, r in report["modes"].items() if r != "ok"}
        if report.get("use_cuda") is False:
            return {"skipped": f"astra {ver} sees no usable CUDA GPU in the preflight child", "preflight": report}
        if not usable:
            return {"peer": "astra", "version": ver, "preflight": report,
                    "error": "no way of calling ASTRA passed the preflight (see preflight)"}
        modes = tuple(usable)
    libs = _loaded_libraries("libcufft.so", "libcudart.so")
    cufft11 = [q for q in libs["libcufft.so"] if os.path.basename(q).startswith("libcufft.so.11")]
    stub = _cufft_is_stub(cufft11[0] if cufft11 else None)
    views = geometry.n_views
    out = {"peer": "astra", "version": ver, "projector": "ASTRA cuda3d cone_vec FP3D (ray-driven, trilinear "
           "texture, one sample per voxel slice along the dominant axis)",
           "stubs": [] if stub is False else [CUFFT_STUB], "libraries": libs, "cufft_stub_loaded": stub,
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
        vol_args, proj_args = astra_geometry(geometry)
        vol_geom = astra.create_vol_geom(*vol_args)
        proj_geom = astra.create_proj_geom(*proj_args)
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
                res, img = _host_run(astra, vol_zyx, proj_geom, vol_geom, warmup=warmup, repeats=repeats,
                                     views=views)
            else:
                res, img = _device_run(astra, mode, vol_zyx, proj_geom, vol_geom, warmup=warmup,
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
            out.update(_agreement(img, reference))
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

