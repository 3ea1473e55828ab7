"""benchmarks/render.py runs at tiny size on the CPU and writes a valid JSON."""

import json

from benchmarks import render


def test_render_small(tmp_path):
    path = render.main(["--small", "--out-dir", str(tmp_path)])
    rep = json.loads(path.read_text())
    assert {"environment", "results", "target_frames_per_s"} <= set(rep)
    rows = rep["results"][0]["rows"]
    assert {r["source"] for r in rows} == {"field", "volume"}
    for r in rows:
        assert r["frames_per_s"] > 0
    assert all(0 <= r["rel_diff_vs_voxel_drr"] < 0.2 for r in rows if r["source"] == "field")
