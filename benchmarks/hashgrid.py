"""Throughput of the XLA hash-grid encoding: forward and forward + backward, every variant.

Times :func:`jaxmedrf.fields.hash_grid_encode` for each ``implementation`` ×
``table_dtype`` (forward) and each ``implementation`` × ``backward`` × ``table_dtype``
(forward + backward: the gradient w.r.t. the table of ``Σ features · R`` with a random
float32 ``R`` of shape ``(N, L·F)``). Default configuration: the one of issue 8 (16 levels,
2 features, 2^19 rows, resolutions 16 → 2048, 4M points in ``[0, 1]^3``). Each figure is the
median of ``--repeats`` timed runs after one warm-up (compilation) run, with
``block_until_ready``; the result is points per second.

Usage::

    python benchmarks/hashgrid.py                     # GPU: full size, all variants
    python benchmarks/hashgrid.py --small             # CPU smoke run at tiny size
    python benchmarks/hashgrid.py --impls level_major --backwards scatter --dtypes float32

Writes ``benchmarks/results/hashgrid_<device>_<date>.json`` (or into ``--out-dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from jaxmedrf._files import atomic_path
from jaxmedrf.fields.encodings import _BACKWARDS, _DTYPES, _IMPLEMENTATIONS, HashGridConfig, hash_grid_encode, hash_grid_init

RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first run seconds, median seconds of ``repeats`` further runs)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def run(
    *,
    n_points: int,
    base: HashGridConfig,
    impls,
    backwards,
    dtypes,
    repeats: int,
    seed: int = 0,
) -> list[dict]:
    """Times every requested variant; returns one record per (mode, variant)."""
    key_x, key_t, key_r = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.uniform(key_x, (n_points, 3), jnp.float32)
    cot = jax.random.normal(key_r, (n_points, base.out_dim), jnp.float32)
    records = []

    def record(mode, cfg, fn, *args):
        rec = {"mode": mode, "implementation": cfg.implementation, "table_dtype": cfg.table_dtype}
        if mode == "forward+backward":
            rec["backward"] = cfg.backward
        try:
            first, med = _time(fn, *args, repeats=repeats)
            rec.update(seconds=med, first_call_seconds=first, points_per_second=n_points / med)
        except Exception as e:  # an OOM or lowering failure of one variant must not end the run
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        records.append(rec)
        shown = f"{rec['points_per_second']:.3e} points/s" if "error" not in rec else rec["error"]
        print(f"{mode:17s} {cfg.implementation:12s} {rec.get('backward', ''):12s} {cfg.table_dtype:9s} {shown}", flush=True)

    for dtype in dtypes:
        for impl in impls:
            cfg = dataclasses.replace(base, implementation=impl, table_dtype=dtype, init_scale=1.0)
            table = hash_grid_init(key_t, cfg)
            fwd = jax.jit(lambda t, p, cfg=cfg: hash_grid_encode(t, p, cfg))
            record("forward", cfg, fwd, table, x)
            for bwd in backwards:
                cfg_b = dataclasses.replace(cfg, backward=bwd)
                grad = jax.jit(jax.grad(lambda t, p, r, cfg=cfg_b: jnp.sum(hash_grid_encode(t, p, cfg) * r)))
                record("forward+backward", cfg_b, grad, table, x, cot)
            del table
    return records


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "device"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--n-points", type=int, default=None, help="points per call (default 4M; 4096 with --small)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs after warm-up (default 10; 2 with --small)")
    ap.add_argument("--log2-table-size", type=int, default=None)
    ap.add_argument("--per-level-scale", type=float, default=None, help="e.g. 2.0 for NAF's torch-ngp setting")
    ap.add_argument("--impls", nargs="+", default=list(_IMPLEMENTATIONS), choices=_IMPLEMENTATIONS)
    ap.add_argument("--backwards", nargs="+", default=list(_BACKWARDS), choices=_BACKWARDS)
    ap.add_argument("--dtypes", nargs="+", default=list(_DTYPES), choices=list(_DTYPES))
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    n_points = args.n_points or (4096 if args.small else 4 * 1024 * 1024)
    repeats = args.repeats or (2 if args.small else 10)
    if n_points < 1 or repeats < 1:
        raise ValueError(f"--n-points and --repeats must be >= 1, got {n_points}, {repeats}")
    base = HashGridConfig(
        n_levels=4 if args.small else 16,
        features_per_level=2,
        log2_table_size=args.log2_table_size or (12 if args.small else 19),
        base_resolution=16,
        finest_resolution=128 if args.small else 2048,
        per_level_scale=args.per_level_scale,
    )
    device = jax.devices()[0]
    print(f"device {device.device_kind} ({device.platform}), jax {jax.__version__}, {n_points} points", flush=True)
    records = run(
        n_points=n_points, base=base, impls=args.impls, backwards=args.backwards, dtypes=args.dtypes, repeats=repeats
    )
    now = _dt.datetime.now(_dt.timezone.utc)
    best = {}
    for mode in ("forward", "forward+backward"):
        ok = [r for r in records if r["mode"] == mode and "error" not in r]
        if ok:
            best[mode] = max(ok, key=lambda r: r["points_per_second"])
    result = {
        "benchmark": "hashgrid",
        "device": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "python": platform.python_version(),
        "date": now.isoformat(timespec="seconds"),
        "n_points": n_points,
        "repeats": repeats,
        "timing": "median of repeats after one warm-up call, block_until_ready",
        "cotangent": "random normal (N, L*F) float32; gradient w.r.t. the table",
        "config": {
            "n_levels": base.n_levels,
            "features_per_level": base.features_per_level,
            "log2_table_size": base.log2_table_size,
            "base_resolution": base.base_resolution,
            "finest_resolution": base.finest_resolution,
            "per_level_scale": base.per_level_scale,
            "resolutions": list(base.resolutions),
        },
        "records": records,
        "best": best,
    }
    out = args.out_dir / f"hashgrid_{_device_slug(device.device_kind)}_{now.strftime('%Y%m%d-%H%M%S')}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
