"""`jaxmedrf simulate --kvp/--spectrum/--scatter/--blur`, `jaxmedrf info` on its physics, and
`jaxmedrf reconstruct --bh-correction water`: the round trip and the refusals."""

import json

import numpy as np
import pytest

from jaxmedrf import physics as ph
from jaxmedrf.cli import main

SMALL = ["--n-voxel", "16", "--n-views", "6", "--n-detector", "12", "14", "--phantom", "spheres", "--mu-scale", "1"]


@pytest.fixture(scope="module")
def poly(tmp_path_factory):
    out = tmp_path_factory.mktemp("phys") / "poly.npz"
    assert main(["simulate", *SMALL, "--kvp", "100", "--filter-al", "3", "--scatter", "0.05", "--blur", "2",
                 "--noise-i0", "1e6", "--no-png", "--out", str(out)]) == 0
    return out


def test_simulate_records_the_physics_and_info_prints_it(poly, capsys):
    with np.load(poly) as z:
        assert sorted(z.files) == ["angles", "geometry", "physics", "projections", "volume"]
        d = json.loads(str(z["physics"]))
        proj = z["projections"]
    e, f = ph.kvp_spectrum(100.0, filtration={"aluminum": 3.0})
    np.testing.assert_allclose(d["spectrum"]["energy_kev"], e)
    np.testing.assert_allclose(d["spectrum"]["fluence"], f)
    assert d["detector"] == "energy" and d["scatter"] == {"amplitude": 0.05, "sigma_mm": 40.0} and d["blur_sigma_mm"] == 2.0
    assert d["materials"]["names"] == ["water", "bone"] and d["materials"]["soft_threshold_hu"] == 100.0
    assert np.isfinite(proj).all() and proj.max() > 0.5
    capsys.readouterr()
    assert main(["info", str(poly)]) == 0
    out = capsys.readouterr().out
    assert "physics: polychromatic, 100 kVp" in out and "3 mm aluminum" in out
    assert "scatter: amplitude 0.05, kernel σ 40 mm; detector blur σ 2 mm" in out and "problems: none" in out


def test_reconstruct_water_correction_from_the_file_and_from_flags(poly, tmp_path, capsys):
    out = tmp_path / "r.npz"
    assert main(["reconstruct", str(poly), "--method", "fdk", "--bh-correction", "water", "--no-png", "--out", str(out)]) == 0
    m = json.loads((tmp_path / "r.json").read_text())
    assert m["bh_correction"] == "water" and m["spectrum"].startswith("100 kVp")
    # A plain (monochromatic) scan: the spectrum must come from the flags; they give the same correction.
    plain = tmp_path / "plain.npz"
    with np.load(poly) as z:
        np.savez(plain, **{k: z[k] for k in ("projections", "geometry", "volume", "angles")})
    out2 = tmp_path / "r2.npz"
    assert main(["reconstruct", str(plain), "--method", "fdk", "--bh-correction", "water", "--kvp", "100",
                 "--filter-al", "3", "--no-png", "--out", str(out2)]) == 0
    with np.load(out) as a, np.load(out2) as b:
        np.testing.assert_array_equal(a["volume"], b["volume"])
    capsys.readouterr()
    bad = tmp_path / "bad.npz"
    assert main(["reconstruct", str(plain), "--method", "fdk", "--bh-correction", "water", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs the spectrum" in err and not bad.exists()
    assert main(["reconstruct", str(plain), "--method", "fdk", "--kvp", "100", "--out", str(bad)]) == 2
    assert "--bh-correction water" in capsys.readouterr().err and not bad.exists()


@pytest.mark.parametrize("content, args, word", [
    ("energy,fluence\n80,1\n60,1\n", [], "increasing"),
    ("1,2,3\n", [], "spectrum"),
    ("40,-1\n", [], "non-negative"),
    ("40,1\n", ["--kvp", "80"], "not both"),
    ("40,1\n", ["--method", "analytic"], "analytic"),
    (None, ["--filter-al", "2"], "need --kvp"),
    (None, ["--kvp", "10"], "kvp"),
    (None, ["--kvp", "80", "--scatter", "-1"], "scatter"),
])
def test_bad_physics_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, content, args, word):
    spec = []
    if content is not None:
        (tmp_path / "spec.csv").write_text(content)
        spec = ["--spectrum", str(tmp_path / "spec.csv")]
    out = tmp_path / "sim.npz"
    assert main(["simulate", *SMALL, *spec, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("jaxmedrf simulate: error:") and word in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["spec.csv"] if content else [])
