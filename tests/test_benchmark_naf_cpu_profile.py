"""benchmarks/naf_cpu_profile.py runs at tiny size and writes every part's time and the XLA op profile."""

import json

from benchmarks import naf_cpu_profile


def test_naf_cpu_profile_small(tmp_path):
    # naf_profile.py --small's setup and steps per call: the same programs as tests/test_benchmark_naf_profile.py
    # (a hit in the compilation cache)
    naf_cpu_profile.main(["--small", "--implementations", "level_major", "--backwards", "segment_sum",
                          "--steps-per-call", "5", "--xla-ops", "3", "--out-dir", str(tmp_path)])
    (path,) = tmp_path.glob("naf_cpu_profile_small_*.json")
    payload = json.loads(path.read_text())
    assert payload["environment"]["jax_version"] and payload["environment"]["date"]
    (row,) = payload["rows"]
    assert set(row["parts_ms"]) == {"encode", "encode+grad", "mlp", "mlp+grad", "field+grad", "render+grad", "adam",
                                    "adam_donated", "adam_one_pass"}
    assert row["step_ms"] > 0 and all(v > 0 for v in row["parts_ms"].values())
    assert len(row["xla_ops_ms_per_step"]) == 3 and all(v > 0 for v in row["xla_ops_ms_per_step"].values())
