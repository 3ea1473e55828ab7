"""Peer DRR projectors timed in the same process as jaxmedrf's (issue 8, items 4 and 6).

This runner holds the table of peers (:data:`PEERS`), the case and the command line; each peer
lives in ``benchmarks/peers/<peer>.py`` with its geometry mapping in its docstring:

* :mod:`benchmarks.peers.nanodrr`: nanodrr 0.1.7 (fused Triton kernel and pure-torch
  ``grid_sample`` backends);
* :mod:`benchmarks.peers.diffdrr`: DiffDRR 0.6.1 (Siddon and trilinear);
* :mod:`benchmarks.peers.mbirjax`: mbirjax 0.7.3 (JAX/Pallas footprint projector);
* :mod:`benchmarks.peers.astra`: the ASTRA Toolbox 2.5.0 (its CUDA cone-beam projector
  ``cuda3d``, FP3D/BP3D; how to install it apart, with ``ASTRA_SITE``, is said there), tried
  first in a child process (:mod:`benchmarks.peers.astra_preflight`);
* :mod:`benchmarks.peers.jaxmedrf`: for reference in the same process, jaxmedrf's own XLA and
  fused Pallas projectors;
* :mod:`benchmarks.peers.common`: what they share (import stubs, timing); each peer's camera
  comes from the library's converters (:mod:`jaxmedrf.interop`).

Each ``time_*`` function takes a NumPy float32 volume ``(nx, ny, nz)`` (μ, mm⁻¹) and a cone-beam
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
  is right.

Stubs: torchio (both torch peers) and easygui (mbirjax's GUI) are replaced by empty modules in
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
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.peers.astra import time_astra  # noqa: E402
from benchmarks.peers.diffdrr import time_diffdrr  # noqa: E402
from benchmarks.peers.jaxmedrf import jaxmedrf_reference, time_jaxmedrf  # noqa: E402
from benchmarks.peers.mbirjax import time_mbirjax  # noqa: E402
from benchmarks.peers.nanodrr import time_nanodrr  # noqa: E402

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


def make_case(*, n_voxel: int = 256, n_detector: int = 256, n_views: int = 8):
    """``(volume, geometry)``: benchmarks/projector.py's case (256 mm field of view, DSD 1500 mm,
    DSO 1000 mm, 409.6 mm detector, Shepp–Logan phantom), with ``n_views`` views on a circle."""
    import jaxmedrf as jm
    from jaxmedrf import phantoms

    g = jm.cone_beam(n_voxel=(n_voxel,) * 3, d_voxel=256.0 / n_voxel, n_detector=(n_detector,) * 2,
                     d_detector=409.6 / n_detector, DSD=1500.0, DSO=1000.0, n_views=n_views)
    vol = np.asarray(phantoms.voxelize(phantoms.shepp_logan(radius=128.0), g, supersample=1), np.float32)
    return vol, g


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
