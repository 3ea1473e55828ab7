"""Shared helpers for the benchmark scripts: environment record, timing, JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    import jax

    dev = jax.devices()[0]
    return {
        "device": getattr(dev, "device_kind", str(dev)),
        "platform": dev.platform,
        "n_devices": len(jax.devices()),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def timeit(fn, *, repeats: int = 10, warmup: int = 1) -> dict:
    """Median wall time of ``fn()`` (which must block until its result is ready), seconds."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats, "first_call_s": first}


def peak_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def write_json(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Writes ``results/<name>_<device>_<date>.json`` and returns its path."""
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    env = payload.get("environment") or environment()
    dev = re.sub(r"[^A-Za-z0-9]+", "-", env["device"]).strip("-").lower()
    path = out / f"{name}_{dev}_{env['date'][:10]}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
