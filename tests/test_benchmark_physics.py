"""benchmarks/physics.py runs at the test's size on the CPU and writes a valid JSON."""

import json

from benchmarks import physics


def test_physics_small(tmp_path):
    rep = json.loads(physics.main(["--small", "--out-dir", str(tmp_path)]).read_text())
    assert {"environment", "results", "reference_mu_water_mm-1"} <= set(rep)
    (row,) = rep["results"]
    assert row["polychromatic"]["cupping"] > row["monochromatic"]["cupping"]
    assert abs(row["water_corrected"]["mean_mu_water_mm-1"] - rep["reference_mu_water_mm-1"]) < 0.05 * rep["reference_mu_water_mm-1"]
