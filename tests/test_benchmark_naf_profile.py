"""benchmarks/naf_profile.py runs at tiny size on the CPU and writes every part's time."""

import json

from benchmarks import naf_profile


def test_naf_profile_small(tmp_path):
    naf_profile.main(["--small", "--variants", "xla:level_major:float32", "xla:pallas:float32", "fused:-:float32",
                      "--out-dir", str(tmp_path)])
    (path,) = tmp_path.glob("naf_profile_small_*.json")
    rows = json.loads(path.read_text())["rows"]
    xla, pallas, fused = rows
    assert set(xla["parts_ms"]) == {"encode", "encode+grad", "mlp", "mlp+grad", "field+grad", "render+grad", "adam"}
    assert xla["step_ms"] > 0 and all(v > 0 for v in xla["parts_ms"].values())
    assert xla["samples_per_s"] > 0
    assert "GPU" in pallas["skipped"]  # no GPU here: reported, not timed
    assert "backend" in fused["skipped"]
