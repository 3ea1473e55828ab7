"""Two processes on this machine, one global device mesh: a volume-sharded projection.

Run ``python examples/distributed_cpu.py``. It starts two copies of itself (``--worker``)
on 127.0.0.1 with a free port, each with its own ``--devices`` CPU devices, and sets the
standard variables (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``)
that :func:`jaxmedrf.distributed.initialize_from_env` (and ``jaxmedrf reconstruct
--distributed``) read. Every worker then builds the mesh over all processes' devices, places
its z-slabs of a Shepp–Logan volume, projects it with the slabs summed across processes
(``psum`` over gloo) and checks the result against a single-device projection of the whole
volume; a ``psum`` of the process ids checks the collective itself. On several GPU hosts the
same code runs unchanged with the coordinator on the first host.

Exit status 0 when both workers agree with the single-process result (printed as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(timeout_s: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxmedrf.distributed import initialize_from_env

    pid, n = initialize_from_env(timeout_s=timeout_s)
    import jaxmedrf as jm
    from jaxmedrf.parallel import make_mesh, volume_sharding
    from jaxmedrf.sharded_projection import project_sharded

    mesh = make_mesh()  # every process's devices
    g = jm.cone_beam(n_voxel=(16, 16, 16), d_voxel=8.0, n_detector=(16, 16), d_detector=20.0, n_views=4)
    vol = np.asarray(jm.voxelize(jm.shepp_logan(radius=60.0), g), np.float32)
    glob = jax.make_array_from_callback(vol.shape, volume_sharding(mesh), lambda idx: vol[idx])
    proj = project_sharded(glob, g, mesh=mesh, chunk_size=256)
    local = np.asarray(proj.addressable_shards[0].data)  # replicated: every device holds all of it
    ref = np.asarray(jm.project(jax.device_put(vol, jax.local_devices()[0]), g))
    from jax.sharding import PartitionSpec as P

    from jaxmedrf.parallel import shard_map

    ids = jax.make_array_from_callback((mesh.size,), jax.sharding.NamedSharding(mesh, P(mesh.axis_names)),
                                       lambda idx: np.arange(mesh.size, dtype=np.float32)[idx])
    total = shard_map(lambda x: jax.lax.psum(x, mesh.axis_names), mesh=mesh, in_specs=P(mesh.axis_names),
                      out_specs=P())(ids)
    return {"process": pid, "processes": n, "global_devices": len(jax.devices()),
            "local_devices": len(jax.local_devices()),
            "max_abs_diff": float(np.max(np.abs(local - ref))), "max_value": float(np.max(ref)),
            "psum_device_ids": float(np.asarray(total.addressable_shards[0].data).reshape(-1)[0]),
            "psum_expected": float(mesh.size * (mesh.size - 1) / 2)}


def launch(*, n_processes: int = 2, devices: int = 1, timeout_s: int = 30, port: int | None = None) -> list[dict]:
    """Starts ``n_processes`` workers on 127.0.0.1 and returns their JSON reports (raises on failure)."""
    port = port or free_port()
    root = Path(__file__).resolve().parents[1]
    procs = []
    for pid in range(n_processes):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n_processes),
                   JAX_PROCESS_ID=str(pid), JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", "--timeout", str(timeout_s)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    deadline = time.monotonic() + timeout_s + 60
    for p in procs:
        try:
            so, se = p.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError("distributed example: a worker did not finish in time")
        if p.returncode != 0:
            for q in procs:
                q.kill()
            raise RuntimeError(f"distributed example: worker exited with {p.returncode}: {se.strip()[-2000:]}")
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--devices", type=int, default=1, help="CPU devices per process")
    ap.add_argument("--timeout", type=int, default=30, help="seconds to wait for the coordinator")
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.timeout)))
        return 0
    reports = launch(n_processes=a.processes, devices=a.devices, timeout_s=a.timeout)
    print(json.dumps(reports, indent=1))
    ok = all(r["max_abs_diff"] <= 1e-5 * r["max_value"] and r["psum_device_ids"] == r["psum_expected"]
             for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
