"""Each way of calling ASTRA, tried on a 16³ case in a child process before the benchmark uses it.

A native crash there (a segfault; SIGFPE: ASTRA 2.5.0 divides by a zero block size when it
cannot query the GPU) is recorded instead of taking the benchmark process down. The parent
(:func:`preflight`) runs ``python -m benchmarks.peers.astra_preflight MODE …``; the child
(:func:`_child`) prints one line a step, ``ASTRA_PREFLIGHT TAG [MODE [MESSAGE]]`` with the tags
``IMPORTED`` (then a JSON object), ``BEGIN``, ``OK`` and ``FAIL``. Nothing here imports astra
at import time; :func:`import_astra` and :func:`gpu_arrays` are also the benchmark's own ways
of importing it and of handing it GPU arrays, so that the child tries what the benchmark does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

_TAG = "ASTRA_PREFLIGHT"
_MODULE = "benchmarks.peers.astra_preflight"
_ROOT = Path(__file__).resolve().parents[2]  # the repository root, where `benchmarks` imports from


def import_astra():
    """``import astra``, first appending ``$ASTRA_SITE`` (when set) at the *end* of ``sys.path``."""
    site = os.environ.get("ASTRA_SITE")
    if site:
        if not os.path.isdir(site):
            raise ImportError(f"ASTRA_SITE={site!r} is not a folder")
        if site not in sys.path:
            sys.path.append(site)
    import astra

    return astra


def gpu_arrays(astra, cp, mode: str, vol_zyx, n_views: int, n_detector: tuple[int, int]) -> tuple:
    """``(vol, proj, bp, V, P, B)``: CuPy arrays for the volume ``(nz, ny, nx)`` (a copy of
    ``vol_zyx``), the projections ``(nv, views, nu)`` and the back projection (zeros), and what
    ``astra.experimental.direct_FP3D``/``direct_BP3D`` are given for them: the arrays themselves
    (``mode`` ``"cupy_dlpack"``, through DLPack) or ``astra.data3d.GPULink`` pointers
    (``"cupy_gpulink"``: pointer, x, y, z sizes and the row pitch in bytes)."""
    nz, ny, nx = vol_zyx.shape
    nv, nu = n_detector
    vol = cp.asarray(vol_zyx)
    proj = cp.zeros((nv, n_views, nu), cp.float32)
    bp = cp.zeros_like(vol)
    if mode == "cupy_dlpack":
        return vol, proj, bp, vol, proj, bp
    if mode == "cupy_gpulink":
        link = astra.data3d.GPULink
        return (vol, proj, bp, link(vol.data.ptr, nx, ny, nz, nx * 4), link(proj.data.ptr, nu, n_views, nv, nu * 4),
                link(bp.data.ptr, nx, ny, nz, nx * 4))
    raise ValueError(f"unknown mode {mode!r}")


def preflight(modes: tuple[str, ...], *, timeout_s: float = 90.0) -> tuple[dict, list[str]]:
    """Runs each way of calling ASTRA (``modes``) on a 16³ case in child processes.

    A child that dies (signal, abort) or hangs marks the mode it was in as crashed, and the
    modes it had not reached are tried again in a new child. Returns ``(report, usable)``:
    per-mode outcome (``"ok"``, ``"failed: …"``, ``"crashed …"``) and the modes that worked.
    """
    import subprocess

    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(_ROOT)) if p)
    report: dict = {"modes": {}}
    todo = list(modes)
    while todo:
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, "-m", _MODULE, *todo], capture_output=True, text=True,
                               timeout=timeout_s, env=env)
            stdout, stderr, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            dec = lambda x: x.decode(errors="replace") if isinstance(x, bytes) else (x or "")  # noqa: E731
            stdout, stderr, rc = dec(e.stdout), dec(e.stderr), f"timed out after {timeout_s:g} s"
        report["child_s"] = report.get("child_s", 0.0) + time.perf_counter() - t0
        began = None
        for line in stdout.splitlines():
            if not line.startswith(_TAG + " "):
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


def _child(modes: list[str]) -> None:
    """FP3D and BP3D of a 16³ cube on 3 views, once per mode, each step reported on stdout."""

    def say(*a):
        print(_TAG, *a, flush=True)

    import numpy as np

    astra = import_astra()
    say("IMPORTED", json.dumps({"version": getattr(astra, "__version__", None), "use_cuda": bool(astra.use_cuda())}))
    if not astra.use_cuda():
        return
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
    for mode in modes:
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
                    v, p, bb, V, P, B = gpu_arrays(astra, cp, mode, vol, views, (nv, nu))  # v: kept alive for V
                    cp.cuda.runtime.deviceSynchronize()
                    ex.direct_FP3D(pid, V, P)
                    ex.direct_BP3D(pid, B, P)
                    cp.cuda.runtime.deviceSynchronize()
                    s, b = cp.asnumpy(p), cp.asnumpy(bb)
                finally:
                    astra.projector3d.delete(pid)
            ok = bool(np.isfinite(s).all() and np.isfinite(b).all() and s.max() > 0 and b.max() > 0)
            say("OK" if ok else "FAIL", mode, "" if ok else f"FP max {float(s.max())}, BP max {float(b.max())}")
        except Exception as e:  # noqa: BLE001 - reported; the next mode is tried
            say("FAIL", mode, f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    _child(sys.argv[1:])
