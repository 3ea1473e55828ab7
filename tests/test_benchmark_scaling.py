"""benchmarks/scaling.py runs tiny on the forced CPU devices and writes its JSON and PNG."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"


def test_scaling_benchmark_small(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--small", "--device-counts", "1", "2", "--repeats", "1", "--skip", "strong", "volume",
                   "--volume-sizes", "16", "--out-dir", str(tmp_path)])
    assert rc == 0
    (out,) = tmp_path.glob("scaling_*.json")
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert [r["devices"] for r in data["weak"]] == [1, 2]
    assert data["weak"][0]["efficiency"] == 1.0
    assert all(r["rays_per_s"] > 0 for r in data["weak"])
    assert [r["scans_per_hour"] > 0 for r in data["cohort"]] == [True, True]
    assert "volume" not in data  # skipped: tests/test_scale_volume.py covers the sharded FDK/SART
