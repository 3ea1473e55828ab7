"""`jaxmedrf reconstruct`: NAF and the baselines through one command and one output format.

The CLI runs in this process (``main([...])``) except where the process itself is tested: the exit
status of ``python -m jaxmedrf.cli`` and a run killed with SIGKILL. One NAF setting (``NAF``) is
trained once (the ``naf_run`` fixture) and checked for its files, its metrics, the occupancy grid
and mixed precision, and is the uninterrupted reference of the kill-and-resume test, whose killed
run and resumed run compile the same program (the persistent compilation cache serves them).
"""

import contextlib
import io
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from jaxmedrf.cli import main

#: The session's persistent compilation cache and XLA flags (tests/conftest.py), for the CLI
#: subprocesses: with the same flags they compile (or load) the same programs as this process.
JIT_ENV = {k: v for k, v in os.environ.items()
           if k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE")) or k == "XLA_FLAGS"}

#: The NAF setting of ``naf_run`` and of the kill-and-resume test: one device, an occupancy grid
#: and mixed precision, 150 steps (6 compiled calls of 25).
NAF = ["--method", "naf", "--iters", "150", "--batch-rays", "128", "--n-samples", "8",
       "--log2-table-size", "10", "--grid-supersample", "1", "--occupancy-resolution", "8",
       "--occupancy-update-every", "5", "--precision", "mixed", "--field-implementation", "xla", "--devices", "1",
       "--no-progress"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    out = d / "sim.npz"
    assert main(["simulate", "--n-voxel", "16", "--n-views", "16", "--n-detector", "20", "20", "--mu-scale", "1",
                 "--no-png", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def naf_run(sim, tmp_path_factory):
    """``(folder, output .npz, what it printed)`` of one NAF run with checkpoints every 25 steps
    and the PNG, under umask 022."""
    d = tmp_path_factory.mktemp("naf")
    out = d / "naf.npz"
    printed = io.StringIO()
    old = os.umask(0o022)
    try:
        with contextlib.redirect_stdout(printed):
            assert main(["reconstruct", str(sim), *NAF, "--out", str(out), "--checkpoint-dir", str(d / "ck"),
                         "--checkpoint-every", "25"]) == 0
    finally:
        os.umask(old)
    return d, out, printed.getvalue()


def _check_outputs(out, printed, method):
    # every file written is named on stdout, as simulate does, and has the mode the umask gives
    written = [out, out.with_suffix(".json"), out.with_suffix(".png")]
    assert f"-> {', '.join(map(str, written))}" in printed, printed
    assert ("checkpoints: " + str(out.parent / "ck") in printed) == (method == "naf")
    for f in written:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, (f, oct(f.stat().st_mode))
    with np.load(out) as z:
        assert sorted(z.files) == ["geometry", "volume"]
        assert z["volume"].shape == (16, 16, 16) and z["volume"].dtype == np.float32
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["method"] == method and np.isfinite(m["psnr3d"]) and 0 < m["ssim3d"] <= 1
    assert out.with_suffix(".png").stat().st_size > 5000
    return m


@pytest.mark.parametrize("method", ["fdk", "sart"])
def test_reconstruct_writes_volume_metrics_and_png(sim, tmp_path, method, capsys):
    out = tmp_path / f"{method}.npz"
    args = ["reconstruct", str(sim), "--method", method, "--out", str(out), "--no-progress"]
    if method == "sart":
        args += ["--iters", "3", "--backprojector", "voxel"]
    capsys.readouterr()
    old = os.umask(0o022)
    try:
        assert main(args) == 0
    finally:
        os.umask(old)
    _check_outputs(out, capsys.readouterr().out, method)


def test_naf_writes_volume_metrics_png_and_checkpoints_with_an_occupancy_grid(naf_run):
    d, out, printed = naf_run
    m = _check_outputs(out, printed, "naf")
    assert any((d / "ck").glob("step_*"))
    assert m["field_implementation"] == "xla" and m["steps"] == 150
    assert 0 < m["occupied_fraction"] <= 1
    assert m["mlp_compute_dtype"] == "bfloat16"  # --precision mixed


def test_several_inputs_train_together(sim, tmp_path, monkeypatch):
    from jaxmedrf.recon import naf

    steps = []  # the compiled training step: one program for every call, the first one included
    make = naf.make_train_fn
    monkeypatch.setattr(naf, "make_train_fn", lambda *a, **k: steps.append(make(*a, **k)) or steps[-1])
    out = tmp_path / "many"
    # the fused hash-grid kernel on a CPU falls back to XLA with a warning; all (8) devices split the rays
    with pytest.warns(UserWarning, match="(?i)pallas|gpu"):
        assert main(["reconstruct", str(sim), str(sim), "--iters", "50", "--batch-rays", "128", "--n-samples", "8",
                     "--log2-table-size", "10", "--grid-supersample", "1", "--hash-implementation", "pallas",
                     "--no-progress", "--no-png", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_recon.npz")) == ["sim_0_recon.npz", "sim_1_recon.npz"]
    assert len(steps) == 1 and steps[0]._cache_size() == 1


def _run(args):
    return subprocess.run([sys.executable, "-m", "jaxmedrf.cli", "reconstruct", *args], capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": "", **JIT_ENV})


def test_bad_inputs_exit_2_without_traceback_or_output(sim, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, angles=np.zeros(3))
    nan = tmp_path / "nan.npz"
    with np.load(sim) as z:
        p = z["projections"].copy()
        p[0, 0, 0] = np.nan
        np.savez(nan, projections=p, geometry=z["geometry"])
    out = tmp_path / "o.npz"
    # The process: `python -m jaxmedrf.cli` exits with status 2 and one line, no traceback.
    res = _run([str(bad), "--out", str(out), "--no-progress"])
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "missing keys" in res.stderr, res.stderr
    assert not out.exists()
    # The other refusals in this process: main returns 2 (argparse's own refusal exits with 2).
    for args, word in [([str(nan)], "NaN"), ([str(tmp_path / "none.npz")], "no such file"),
                       ([str(sim), "--method", "magic"], "--method"), ([str(sim), "--iters", "0"], "--iters"),
                       ([str(sim), "--resume", "--iters", "5"], "checkpoint")]:
        capsys.readouterr()
        try:
            rc = main(["reconstruct", *args, "--out", str(out), "--no-progress"])
        except SystemExit as e:
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert "Traceback" not in err and word in err, err
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


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(sim, naf_run, tmp_path, capsys):
    """A run killed (SIGKILL) after its checkpoint at step 50 writes nothing; resumed from its
    checkpoints it ends at the uninterrupted run's volume (``naf_run``, the same setting)."""
    import signal
    import time

    # One device: the kill and the resume are what is tested (the sharded step has its own tests).
    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "jaxmedrf.cli", "reconstruct", str(sim), *NAF, "--no-png",
           "--out", str(tmp_path / "part.npz"), "--checkpoint-dir", str(ck), "--checkpoint-every", "25"]
    proc = subprocess.Popen(cmd, env={"JAX_PLATFORMS": "cpu", "PATH": "", **JIT_ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not [p for p in ck.glob("step_*") if p.name[5:].isdigit() and int(p.name[5:]) >= 50]:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "part.npz").exists()  # killed before the end: no output at all
    capsys.readouterr()
    assert main(["reconstruct", str(sim), *NAF, "--no-png", "--out", str(tmp_path / "resumed.npz"),
                 "--checkpoint-dir", str(ck), "--checkpoint-every", "25", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "resumed.npz")["volume"], np.load(naf_run[1])["volume"], rtol=1e-5,
                               atol=1e-6)
