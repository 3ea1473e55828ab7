"""benchmarks/interpolate.py runs tiny on CPU and writes its JSON and PNG."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "interpolate.py"


def test_interpolate_benchmark_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_interpolate", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--small", "--shape", "20", "20", "16", "--k", "4", "--stacks", "1", "3", "--inr-iters", "10",
                   "--inr-batch", "1024", "--smore-iters", "2", "--out-dir", str(tmp_path)])
    assert rc == 0
    (out,) = tmp_path.glob("interpolate_*_small.json")
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert data["complete"] and "different data" in data["published_reference"]["note"]
    got = {(c["stacks"], c["axis"], c["method"]) for c in data["cases"]}
    assert got == {(1, 2, "cubic"), (1, 2, "linear"), (1, 2, "inr"), (1, 2, "smore"), (1, 1, "cubic"),
                   (1, 0, "cubic"), (3, 2, "inr")}
    t = data["targets_k4"]
    assert t["inr_3stacks_psnr_pooled_db"] is not None and t["cubic_1stack_psnr_mean_db"] is not None
    assert {"device", "jax", "date"} <= set(data)
