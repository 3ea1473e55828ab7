"""`jaxmedrf reconstruct`: NAF and the baselines through one command and one output format."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from jaxmedrf.cli import main

#: The session's persistent compilation cache (tests/conftest.py), for the CLI subprocesses.
JIT_CACHE = {k: v for k, v in os.environ.items() if k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    out = d / "sim.npz"
    assert main(["simulate", "--n-voxel", "16", "--n-views", "16", "--n-detector", "20", "20", "--mu-scale", "1",
                 "--no-png", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("method", ["naf", "fdk", "sart"])
def test_reconstruct_writes_volume_metrics_and_png(sim, tmp_path, method, capsys):
    out = tmp_path / f"{method}.npz"
    args = ["reconstruct", str(sim), "--method", method, "--out", str(out), "--no-progress"]
    if method == "naf":
        args += ["--iters", "50", "--batch-rays", "256", "--n-samples", "16", "--n-importance", "8", "--log2-table-size", "12",
                 "--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "25", "--devices", "1"]
    elif method == "sart":
        args += ["--iters", "3", "--backprojector", "voxel"]
    capsys.readouterr()
    old = os.umask(0o022)
    try:
        assert main(args) == 0
    finally:
        os.umask(old)
    # every file written is named on stdout, as simulate does, and has the mode the umask gives
    printed = capsys.readouterr().out
    written = [out, out.with_suffix(".json"), out.with_suffix(".png")]
    assert f"-> {', '.join(map(str, written))}" in printed, printed
    assert ("checkpoints: " + str(tmp_path / "ck") in printed) == (method == "naf")
    for f in written:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, (f, oct(f.stat().st_mode))
    with np.load(out) as z:
        assert sorted(z.files) == ["geometry", "volume"]
        assert z["volume"].shape == (16, 16, 16) and z["volume"].dtype == np.float32
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["method"] == method and np.isfinite(m["psnr3d"]) and 0 < m["ssim3d"] <= 1
    assert out.with_suffix(".png").stat().st_size > 5000
    if method == "naf":
        assert any((tmp_path / "ck").glob("step_*"))


def test_several_inputs_train_together(sim, tmp_path):
    out = tmp_path / "many"
    # the fused hash-grid kernel on a CPU falls back to XLA with a warning
    with pytest.warns(UserWarning, match="(?i)pallas|gpu"):
        assert main(["reconstruct", str(sim), str(sim), "--iters", "25", "--batch-rays", "128", "--n-samples", "8",
                     "--log2-table-size", "10", "--hash-implementation", "pallas", "--no-progress", "--no-png",
                     "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_recon.npz")) == ["sim_0_recon.npz", "sim_1_recon.npz"]


def test_naf_with_occupancy_grid(sim, tmp_path):
    out = tmp_path / "occ.npz"
    assert main(["reconstruct", str(sim), "--iters", "25", "--batch-rays", "128", "--n-samples", "8",
                 "--log2-table-size", "10", "--occupancy-resolution", "8", "--occupancy-update-every", "5",
                 "--precision", "mixed", "--devices", "1", "--field-implementation", "xla", "--no-progress", "--no-png",
                 "--out", str(out)]) == 0
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["field_implementation"] == "xla"
    assert 0 < m["occupied_fraction"] <= 1 and np.isfinite(m["psnr3d"])
    assert m["mlp_compute_dtype"] == "bfloat16"  # --precision mixed


def _run(args):
    return subprocess.run([sys.executable, "-m", "jaxmedrf.cli", "reconstruct", *args], capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": "", **JIT_CACHE})


def test_bad_inputs_exit_2_without_traceback_or_output(sim, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, angles=np.zeros(3))
    nan = tmp_path / "nan.npz"
    with np.load(sim) as z:
        p = z["projections"].copy()
        p[0, 0, 0] = np.nan
        np.savez(nan, projections=p, geometry=z["geometry"])
    out = tmp_path / "o.npz"
    for args, word in [([str(bad)], "missing keys"), ([str(nan)], "NaN"), ([str(tmp_path / "none.npz")], "no such file"),
                       ([str(sim), "--method", "magic"], "--method"), ([str(sim), "--iters", "0"], "--iters"),
                       ([str(sim), "--resume", "--iters", "5"], "checkpoint")]:
        res = _run([*args, "--out", str(out), "--no-progress"])
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr and word in res.stderr, res.stderr
        assert not out.exists()


def test_nifti_and_dicom_outputs_load_back_on_the_same_grid(sim, tmp_path, capsys):
    from jaxmedrf import io

    ref = tmp_path / "ref.npz"
    assert main(["reconstruct", str(sim), "--method", "fdk", "--no-png", "--out", str(ref)]) == 0
    mu = np.load(ref)["volume"]
    nii = tmp_path / "fdk.nii.gz"
    assert main(["reconstruct", str(sim), "--method", "fdk", "--no-png", "--out", str(nii)]) == 0
    assert (tmp_path / "fdk.json").exists()
    back = io.load_volume(nii)
    np.testing.assert_allclose(back.array, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back.spacing, [16.0] * 3)  # 256 mm / 16 voxels
    dcm = tmp_path / "fdk_series"
    assert main(["reconstruct", str(sim), "--method", "fdk", "--no-png", "--out", str(dcm)]) == 0
    assert f"-> {dcm}, {tmp_path / 'fdk_series.json'}" in capsys.readouterr().out  # the folder and the JSON
    series = io.load_volume(dcm)
    assert series.unit == "HU" and series.array.shape == mu.shape
    np.testing.assert_allclose(io.hu_to_mu(series.array, clip=False), mu, atol=io.MU_WATER / 1000 + 1e-6)


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(sim, tmp_path):
    import os
    import signal
    import time

    # One device: the kill and the resume are what is tested (the sharded step has its own tests).
    common = [str(sim), "--method", "naf", "--iters", "300", "--batch-rays", "128", "--n-samples", "8",
              "--log2-table-size", "10", "--grid-supersample", "1", "--devices", "1", "--no-progress", "--no-png"]
    env = {"JAX_PLATFORMS": "cpu", "PATH": "", **JIT_CACHE}
    full = tmp_path / "full.npz"
    assert _run([*common, "--out", str(full)]).returncode == 0
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "jaxmedrf.cli", "reconstruct", *common, "--out", str(tmp_path / "part.npz"),
           "--checkpoint-dir", str(ck), "--checkpoint-every", "25"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not [p for p in ck.glob("step_*") if p.name[5:].isdigit() and int(p.name[5:]) >= 50]:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "part.npz").exists()  # killed before the end: no output at all
    res = _run([*common, "--out", str(tmp_path / "resumed.npz"), "--checkpoint-dir", str(ck), "--checkpoint-every", "25",
                "--resume"])
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "resumed.npz")["volume"], np.load(full)["volume"], rtol=1e-5, atol=1e-6)
