"""Multi-host: the 2-process CPU example agrees with one process; a missing coordinator is a
clear error within the timeout; missing variables are named."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def test_two_process_example_agrees_with_one_process():
    import distributed_cpu

    reports = distributed_cpu.launch(n_processes=2, devices=1, timeout_s=30)
    assert [r["process"] for r in reports] == [0, 1]
    for r in reports:
        assert r["global_devices"] == 2 and r["local_devices"] == 1
        assert r["psum_device_ids"] == r["psum_expected"] == 1.0
        assert r["max_abs_diff"] <= 1e-5 * r["max_value"]  # float32, slab sums vs one pass


def _cli(env_extra, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_PLATFORMS"}
    env.update(env_extra, PYTHONPATH=str(ROOT), XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", "jaxmedrf.cli", "reconstruct", "x.npz", "--out", "o.npz",
                           "--distributed", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_missing_coordinator_is_a_clear_error_within_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = _cli({"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
             "--distributed-timeout", "2")
    assert r.returncode == 2, r.stderr
    assert "no coordinator at 127.0.0.1" in r.stderr and "after 2 s" in r.stderr
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("env, word", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID"),
])
def test_bad_environment_names_the_variable(env, word):
    from jaxmedrf.distributed import initialize_from_env

    with pytest.raises(ValueError, match=word):
        initialize_from_env(env=env)
