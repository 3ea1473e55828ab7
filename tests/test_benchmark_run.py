"""The benchmark entry point: CPU smoke suite writes valid JSON; GPU suite on CPU exits 0."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_suite_writes_json_and_gpu_suite_declines(tmp_path, capsys):
    from benchmarks import run

    # In-process (the runner's own process behaviour is not under test; it still starts each benchmark in
    # its own process). One entry exercises the runner (the projector's, which no other test runs;
    # hashgrid's has its own test).
    assert run.main(["--suite", "cpu", "--only", "projector", "--out-dir", str(tmp_path)]) == 0, capsys.readouterr()
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files and all(f.startswith("projector") for f in files), files
    for f in tmp_path.glob("*.json"):
        d = json.loads(f.read_text())
        text = json.dumps(d)
        assert "jax" in text and "date" in text
    capsys.readouterr()
    assert run.main(["--suite", "gpu"]) == 0 and "needs a GPU" in capsys.readouterr().out


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
