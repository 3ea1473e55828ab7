"""The hash-grid benchmark script runs at tiny size on the CPU and writes a valid JSON."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hashgrid.py"


def test_hashgrid_benchmark_small(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_hashgrid", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(
        ["--small", "--n-points", "256", "--repeats", "1", "--impls", "fused", "level_major",
         "--backwards", "scatter", "segment_sum", "--dtypes", "float32", "bfloat16", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    assert rc == 0
    (out,) = tmp_path.glob("hashgrid_cpu_*.json")
    data = json.loads(out.read_text())
    for key in ("device", "jax_version", "date", "n_points", "config", "records", "best"):
        assert key in data
    assert data["n_points"] == 256
    recs = data["records"]
    assert len(recs) == 2 * 2 * (1 + 2)  # dtypes × impls × (forward + 2 backwards)
    for r in recs:
        assert "error" not in r, r
        assert r["points_per_second"] > 0 and r["seconds"] > 0
    assert {r["mode"] for r in recs} == {"forward", "forward+backward"}
    assert data["best"]["forward+backward"]["points_per_second"] > 0
    assert not list(tmp_path.glob(".*"))  # nothing half-written left behind
