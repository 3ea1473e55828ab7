"""Multi-host start-up: ``jax.distributed.initialize`` from the standard environment variables.

After :func:`initialize_from_env` every process sees the devices of all processes in
``jax.devices()`` (its own in ``jax.local_devices()``), so :func:`jaxmedrf.parallel.make_mesh`
builds one global mesh and the same sharded program runs on every host (SPMD). On the CPU
backend cross-process collectives need ``jax_cpu_collectives_implementation = "gloo"``,
which is set here before initialising.

Environment (the names ``jax.distributed`` documents):

* ``JAX_COORDINATOR_ADDRESS``: ``host:port`` of process 0 (it runs the coordinator service).
* ``JAX_NUM_PROCESSES``: number of processes.
* ``JAX_PROCESS_ID``: this process's rank, 0 … N − 1.

A coordinator that never answers: processes other than 0 first probe its TCP port for up to
``timeout_s`` seconds and raise ``RuntimeError`` naming the address (the CLI turns it into one
line and exit status 2). Process 0 runs the coordinator itself; if a peer never joins, XLA's
client (jax 0.10) terminates the process (``abort``, exit status 134) after ``timeout_s``
seconds rather than raising, so a line on stderr says beforehand what is awaited and for how
long. Either way: an error within the timeout, never a hang.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import jax

__all__ = ["ENV_VARS", "initialize_from_env"]

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _env_int(name: str, env) -> int:
    raw = env.get(name)
    if raw is None:
        raise ValueError(f"multi-host set-up: environment variable {name} is not set (need {', '.join(ENV_VARS)})")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"multi-host set-up: {name} must be an integer, got {raw!r}") from None


def initialize_from_env(*, timeout_s: int = 60, env=None) -> tuple[int, int]:
    """Calls ``jax.distributed.initialize`` from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``.

    Must run before anything else touches JAX's devices.

    Args:
      timeout_s: seconds to wait for the coordinator and all processes
        (``initialization_timeout``).
      env: mapping to read instead of ``os.environ`` (tests).

    Returns:
      ``(process_id, num_processes)``.

    Raises:
      ValueError: a missing or malformed variable (names it).
      RuntimeError: no coordinator / not all processes within ``timeout_s`` seconds.
    """
    env = os.environ if env is None else env
    address = env.get("JAX_COORDINATOR_ADDRESS")
    if not address or ":" not in address:
        raise ValueError(f"multi-host set-up: JAX_COORDINATOR_ADDRESS must be host:port, got {address!r}")
    n = _env_int("JAX_NUM_PROCESSES", env)
    pid = _env_int("JAX_PROCESS_ID", env)
    if n < 1 or not 0 <= pid < n:
        raise ValueError(f"multi-host set-up: need JAX_NUM_PROCESSES >= 1 and 0 <= JAX_PROCESS_ID < it, got {n}, {pid}")
    if int(timeout_s) != timeout_s or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive integer, got {timeout_s!r}")
    if pid != 0:
        _wait_for_port(address, timeout_s, pid, n)
    platforms = (env.get("JAX_PLATFORMS") or jax.config.jax_platforms or "").lower()
    if platforms in ("", "cpu") or platforms.startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(f"jax.distributed: process {pid} of {n}, coordinator {address}; waiting up to {timeout_s} s "
          "for every process to join (the process is terminated if they do not)", file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=pid,
                                   initialization_timeout=int(timeout_s))
    except Exception as e:  # XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE, ...)
        raise RuntimeError(
            f"jax.distributed.initialize: process {pid} of {n} could not reach the coordinator at {address} "
            f"or not all processes joined within {timeout_s} s ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e
    return pid, n


def _wait_for_port(address: str, timeout_s: float, pid: int, n: int) -> None:
    """Returns once ``host:port`` accepts a TCP connection; ``RuntimeError`` after ``timeout_s``."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"jax.distributed: process {pid} of {n}: no coordinator at {address} after {timeout_s} s ({e}); "
                    "start process 0 (JAX_PROCESS_ID=0) on that host and port"
                ) from None
            time.sleep(0.2)
