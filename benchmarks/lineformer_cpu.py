"""NAF vs Lineformer (SAX-NeRF field + MLG sampling) on the CPU at a small size: does it learn?

The tuning cases of ``ct_protocol`` only (``phantom``, ``chest0``), 32³ voxels, 48² detector,
25 views, the same steps, rays and samples for both (a small hash grid, as ``--small``).

    python -m benchmarks.lineformer_cpu [--n 32] [--iters 300] [--cases phantom,chest0] [--methods naf,...]

JSON: ``results/lineformer_cpu_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse

from benchmarks import ct_protocol
from benchmarks.common import environment, write_json

# label -> (Lineformer?, overrides of ct_protocol.run_naf)
METHODS = {
    "naf": (False, {}),
    "lineformer:mlg": (True, {"mlg": True}),
    "lineformer:uniform": (True, {}),
    "lineformer:views8": (True, {"mlg": True, "mlg_views_per_step": 8}),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--detector", type=int, default=48)
    ap.add_argument("--views", type=int, default=25)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--cases", default="phantom,chest0")
    ap.add_argument("--methods", default="naf,lineformer:mlg,lineformer:uniform", help=f"from {sorted(METHODS)}")
    ap.add_argument("--tag", default="", help="suffix of the JSON name")
    a = ap.parse_args(argv)
    over = {"n_iters": a.iters, "batch_rays": 512, "n_samples": a.n, "hash_log2_table_size": 14, "hash_n_levels": 8,
            "hash_finest_resolution": 4 * a.n}
    payload = {"benchmark": "lineformer_cpu", "environment": environment(), "n_voxel": a.n, "detector": a.detector,
               "views": a.views, "overrides": over, "rows": []}
    for case in a.cases.split(","):
        proj, g, truth = ct_protocol.make_case(case, a.views, None, n=a.n, det=a.detector)
        for label in a.methods.split(","):
            lineformer, extra = METHODS[label]
            res, _ = ct_protocol.run_naf(proj, g, truth, overrides={**over, **extra}, lineformer=lineformer)
            row = {"case": case, "method": label, **res}
            payload["rows"].append(row)
            print({k: row[k] for k in ("case", "method", "psnr3d", "ssim3d", "seconds", "train_seconds")}, flush=True)
            write_json("lineformer_cpu" + (f"_{a.tag}" if a.tag else ""), payload)
    return payload


if __name__ == "__main__":
    main()
