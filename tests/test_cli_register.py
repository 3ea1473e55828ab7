"""``jaxmedrf register``: round trip on a simulated DRR, and bad inputs (exit 2, no output)."""

import json

import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf import cli
from jaxmedrf import pose as P
from test_registration import blobs


@pytest.fixture
def main():
    return cli.main


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A simulate-style .npz: a 24³ CT and 2 views of 24² whose second view has a pose offset."""
    d = tmp_path_factory.mktemp("sim")
    n, dv = 24, 5.0
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=dv, n_detector=(24, 24), d_detector=10.0, DSD=800.0, DSO=400.0,
                     n_views=2, arc=np.pi)
    rot = np.stack([np.eye(3), np.asarray(P.so3_exp(np.radians([2.0, -1.0, 3.0]).astype(np.float32)))])
    g = g.replace(rotation=rot, translation=np.array([[0.0, 0.0, 0.0], [2.0, -3.0, 1.5]]))
    vol = blobs(n, dv)
    proj = np.asarray(jm.project(vol, g, method="trilinear", step=1.0))
    path = d / "sim.npz"
    np.savez(path, projections=proj, angles=np.asarray(g.angles), volume=vol, geometry=np.asarray(g.to_json()))
    return {"dir": d, "npz": path, "geometry": g, "volume": vol, "proj": proj}


@pytest.fixture(scope="module")
def round_trip(sim, tmp_path_factory):
    """One registration of view 1 by the CLI, shared by the tests below: 2 starts on the coarse
    level, the best continuing alone (``--multi-levels 1``, explicit). These are the settings of
    ``benchmarks/register.py --small``'s multi-start run (2 levels, 30 iterations, 2 starts, no
    progress), so the two compile one program (compiling it takes ~20 s, running it < 1 s)."""
    out = tmp_path_factory.mktemp("round_trip") / "pose.json"
    args = ["register", "--volume", str(sim["npz"]), "--xray", str(sim["npz"]), "--view", "1", "--levels", "2", "1",
            "--iterations", "30", "--starts", "2", "--rot-range-deg", "2", "--trans-range-mm", "3",
            "--multi-levels", "1", "--no-progress", "--out", str(out)]
    return args, cli.main(args), out


def test_round_trip_on_simulated_drr(round_trip, sim):
    args, rc, out = round_trip
    assert rc == 0
    rep = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    for key in ("matrix", "quaternion_wxyz", "euler_zyx_intrinsic_deg", "rotation_vector_deg", "se3_log", "translation_mm"):
        assert key in rep["pose"]
    assert rep["initial_errors"]["mtre_mm"] > 2.0  # the nominal pose misses the per-view offset
    assert rep["errors"]["mtre_mm"] < 0.5 and rep["errors"]["success_mtre_below_1mm"]
    assert len(rep["iterations"]) == 2 and rep["starts"] == 2 and len(rep["start_losses"]) == 2
    # the output is a valid --init
    pose = P.from_json_dict(rep)
    truth = P.from_geometry(sim["geometry"], 1)
    assert np.allclose(pose.translation, truth.translation, atol=1.0)


def test_pruned_multi_start(main, round_trip, tmp_path, capsys):
    args, rc, out = round_trip
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["multi_levels"] == 1 and rep["errors"]["mtre_mm"] < 0.5
    assert sum(v is not None for v in rep["start_losses"]) == 1 and rep["start_losses"][rep["best_start"]] is not None
    out = tmp_path / "pose.json"
    args = args[:args.index("--multi-levels")] + ["--no-png", "--out", str(out)]
    capsys.readouterr()
    assert main(args + ["--multi-levels", "3"]) == 2 and not out.exists()
    assert "multi_start_levels" in capsys.readouterr().err


def test_npy_inputs_with_intrinsics(main, sim, tmp_path):
    np.save(tmp_path / "ct.npy", sim["volume"])
    np.save(tmp_path / "xray.npy", sim["proj"][0])
    out = tmp_path / "p.json"
    rc = main(["register", "--volume", str(tmp_path / "ct.npy"), "--spacing", "5", "--xray", str(tmp_path / "xray.npy"),
               "--sdd", "800", "--sod", "400", "--pixel-spacing", "10", "--levels", "1", "--iterations", "5",
               "--no-png", "--out", str(out)])  # with the progress bar (the round trip runs without)
    assert rc == 0
    rep = json.loads(out.read_text())
    assert "errors" not in rep and rep["loss"] < 1e-3  # view 0 at the identity pose: already aligned
    assert not out.with_suffix(".png").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_geometry", "give --sdd and --pixel-spacing"),
        ("no_pixel_spacing", "give --pixel-spacing"),
        ("size", "--detector says"),
        ("nan", "NaN"),
        ("no_spacing", "--spacing"),
        ("missing", "not found"),
        ("view", "--view"),
    ],
)
def test_bad_input_exits_2_without_output(main, sim, tmp_path, capsys, case, message):
    ct_npy, img = tmp_path / "ct.npy", tmp_path / "x.npy"
    np.save(ct_npy, sim["volume"])
    np.save(img, sim["proj"][0])
    base = ["register", "--volume", str(sim["npz"]), "--xray", str(img), "--sdd", "800", "--pixel-spacing", "10",
            "--levels", "1", "--iterations", "2", "--no-progress"]
    args = {
        "no_geometry": ["register", "--volume", str(sim["npz"]), "--xray", str(img)],
        "no_pixel_spacing": ["register", "--volume", str(sim["npz"]), "--xray", str(img), "--sdd", "800"],
        "size": base + ["--detector", "20", "24"],
        "nan": None,
        "no_spacing": ["register", "--volume", str(ct_npy), "--xray", str(sim["npz"])],
        "missing": ["register", "--volume", str(tmp_path / "nope.npz"), "--xray", str(sim["npz"])],
        "view": ["register", "--volume", str(sim["npz"]), "--xray", str(sim["npz"]), "--view", "5"],
    }[case]
    if case == "nan":
        bad = sim["proj"][0].copy()
        bad[3, 4] = np.nan
        np.save(img, bad)
        args = base
    out = tmp_path / "out.json"
    rc = main(args + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("jaxmedrf register: error:")
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_benchmark_small_smoke(tmp_path):
    """benchmarks/register.py --small runs end to end on the CPU and writes its JSON and PNG."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "register.py"
    spec = importlib.util.spec_from_file_location("bench_register", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--small", "--trials", "1", "--phantoms", "synthetic-ct", "--out-dir", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("register_*_small.json")
    rep = json.loads(js.read_text())
    assert rep["jax"] and rep["device"] and rep["date"]
    assert "skipped" in rep["nanodrr"] or "results" in rep["nanodrr"]
    summ = rep["results"]["synthetic-ct"]["summary"]
    assert set(summ) == {"single", "multi2"} and 0.0 <= summ["single"]["success_rate_mtre_lt_1mm"] <= 1.0
    assert js.with_suffix(".png").stat().st_size > 0


def test_nifti_ct_in_hu_is_read_through_io(main, sim, tmp_path):
    from jaxmedrf import io

    hu = io.mu_to_hu(sim["volume"], mu_water=io.MU_WATER, mu_air=io.MU_AIR)
    ct = tmp_path / "ct.nii.gz"
    io.save_volume(io.VolumeData(array=np.asarray(hu, np.float32), spacing=np.array([5.0, 5.0, 5.0]),
                                 affine=np.diag([5.0, 5.0, 5.0, 1.0]), modality="CT", unit="HU"), ct)
    out = tmp_path / "p.json"
    rc = main(["register", "--volume", str(ct), "--xray", str(sim["npz"]), "--view", "0", "--levels", "1",
               "--iterations", "5", "--no-png", "--out", str(out)])  # test_npy_inputs_with_intrinsics's program
    assert rc == 0
    assert json.loads(out.read_text())["errors"]["mtre_mm"] < 1.0
