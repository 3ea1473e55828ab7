"""The benchmark entry point: CPU smoke suite writes valid JSON; GPU suite on CPU exits 0."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_suite_writes_json_and_gpu_suite_declines(tmp_path):
    env = {"JAX_PLATFORMS": "cpu", "PATH": ""}
    # One entry exercises the runner (the projector's, which no other test runs; hashgrid's has its own test).
    res = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite", "cpu", "--only", "projector",
                          "--out-dir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files and all(f.startswith("projector") for f in files), files
    for f in tmp_path.glob("*.json"):
        d = json.loads(f.read_text())
        text = json.dumps(d)
        assert "jax" in text and "date" in text
    gpu = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite", "gpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert gpu.returncode == 0 and "needs a GPU" in gpu.stdout


def test_report_is_built_from_the_committed_results():
    from benchmarks.run import report

    text = report()
    assert "| projector" in text and "NAF naf128_50" in text


def test_plots_are_drawn_from_the_committed_results(tmp_path):
    from benchmarks.plots import plot_all

    made = plot_all(ROOT / "benchmarks" / "results", tmp_path / "plots")
    assert sorted(p.name for p in made) == ["baselines_cost.png", "hashgrid.png", "projector_cost.png",
                                            "time_to_quality.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in made)
    assert plot_all(tmp_path / "empty", tmp_path / "none") == []  # no results: nothing drawn, no error
