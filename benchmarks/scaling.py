"""Scaling of jaxmedrf over the devices of one host (or of several, after ``--distributed``).

Measures, for 1, 2, 4, 8 … devices (those that exist, or ``--device-counts``):

* **NAF, weak scaling**: ``--rays-per-device`` rays per device per step (the batch grows with
  the devices): steps/s, rays/s, efficiency = rays/s(n) / (n · rays/s(1)).
* **NAF, strong scaling**: a fixed batch of ``--total-rays`` rays split over n devices:
  efficiency = steps/s(n) / (n · steps/s(1)).
* **Cohort**: ``--cases`` scans trained together, the case axis sharded over n devices
  (``train_naf(..., shard_cases=True)``'s layout): scans/hour for ``--naf-iters`` steps each,
  efficiency = scans/h(n) / (n · scans/h(1)).
* **Volume-sharded FDK and SART** (z-slabs over all devices): time per reconstruction for
  each ``--volume-sizes`` (cubes) until one fails (out of memory); the largest reached.

Writes ``benchmarks/results/scaling_<device>_<date>.json`` and a PNG of efficiency vs device
count beside it. ``--small`` runs tiny sizes on the CPU with forced devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``): it checks the script, its numbers
mean nothing (8 "devices" share the host's cores). **The figures needed are from 2, 4 and 8
GPUs** (one host, e.g. ``python benchmarks/scaling.py`` on an 8×H100 machine; see the
README for the exact runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

if "--small" in sys.argv and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, timeit, write_json  # noqa: E402


def _block(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: x.block_until_ready(), tree)


def naf_setup(size: int, views: int, det: int):
    import jaxmedrf as jm

    g = jm.cone_beam(n_voxel=(size,) * 3, d_voxel=256.0 / size, n_detector=(det, det), d_detector=409.6 / det,
                     n_views=views)
    vol = jm.voxelize(jm.shepp_logan(radius=128.0), g)
    return g, jm.project(vol, g)


def time_naf(cfg, g, proj, *, n_dev: int, cases: int, shard_cases: bool, repeats: int) -> dict:
    """Median seconds per compiled call of ``cfg.steps_per_call`` steps on ``n_dev`` devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxmedrf.parallel import batch_sharding, make_mesh, replicated
    from jaxmedrf.recon.naf import init_state, make_train_fn

    mesh = make_mesh(n_devices=n_dev)
    keys = jax.random.split(jax.random.key(0), cases)
    projs = jnp.broadcast_to(jnp.asarray(proj), (cases, *proj.shape))
    place = (lambda x: jax.device_put(x, batch_sharding(mesh, x.ndim))) if shard_cases else \
        (lambda x: jax.device_put(x, replicated(mesh)))
    state = jax.tree_util.tree_map(place, init_state(cfg, keys, g))
    projs = place(projs)
    fn = make_train_fn(cfg, g, mesh=None if shard_cases else mesh)
    box = {"state": state}

    def call():
        box["state"], losses = fn(box["state"], projs)
        _block(losses)

    t = timeit(call, repeats=repeats, warmup=1)
    assert np.all(np.isfinite(np.asarray(fn(box["state"], projs)[1])))
    return t


def volume_runs(sizes, *, views: int, sart_iters: int, repeats: int) -> list[dict]:
    import jax
    import jaxmedrf as jm

    from jaxmedrf.parallel import make_mesh, volume_sharding
    from jaxmedrf.recon.fdk import fdk
    from jaxmedrf.recon.iterative import sart
    from jaxmedrf.sharded_projection import project_sharded

    mesh = make_mesh()
    out = []
    for n in sizes:
        rec = {"size": n, "devices": mesh.size}
        try:
            g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(n, n), d_detector=409.6 / n,
                             n_views=views)
            vol = jax.device_put(jm.voxelize(jm.shepp_logan(radius=128.0), g), volume_sharding(mesh))
            proj = project_sharded(vol, g, mesh=mesh)
            del vol
            rec["fdk"] = timeit(lambda: fdk(proj, g, mesh=mesh).volume.block_until_ready(), repeats=repeats)
            # sart() builds its jitted steps per call, so this time includes their compilation
            rec["sart_incl_compile"] = timeit(lambda: sart(proj, g, n_iters=sart_iters, mesh=mesh, progress=False)
                                 .volume.block_until_ready(), repeats=1, warmup=0)
            rec["sart_iters"] = sart_iters
            rec["gib_float32"] = n**3 * 4 / 2**30
        except Exception as e:  # out of memory ends the sweep
            rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            out.append(rec)
            break
        out.append(rec)
    return out


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("weak", "NAF weak (rays/device fixed)"), ("strong", "NAF strong (total rays fixed)"),
                       ("cohort", "cohort (scans/h)")):
        rows = payload.get(key) or []
        if rows:
            ax.plot([r["devices"] for r in rows], [r["efficiency"] for r in rows], "o-", label=label)
    ns = sorted({r["devices"] for k in ("weak", "strong", "cohort") for r in payload.get(k) or []})
    ax.axhline(0.9, color="gray", ls=":", lw=1, label="90 % target")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns or [1])
    ax.set_xticklabels([str(n) for n in ns] or ["1"])
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("devices")
    ax.set_ylabel("parallel efficiency")
    ax.set_title(f"jaxmedrf scaling, {payload['environment']['device']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="weak/strong NAF scaling, cohort scans/hour, volume-sharded FDK/SART")
    ap.add_argument("--small", action="store_true", help="tiny sizes, 8 forced CPU devices (checks the script)")
    ap.add_argument("--device-counts", type=int, nargs="*", default=None, help="default 1, 2, 4, 8 … (as exist)")
    ap.add_argument("--rays-per-device", type=int, default=None, help="weak scaling (default 8192; small 64)")
    ap.add_argument("--total-rays", type=int, default=None, help="strong scaling (default 65536; small 256)")
    ap.add_argument("--cases", type=int, default=None, help="cohort size (default 16; small 8): 64 default NAF fields exceed one 80 GB GPU")
    ap.add_argument("--naf-iters", type=int, default=1500, help="steps per scan for scans/hour")
    ap.add_argument("--volume-sizes", type=int, nargs="*", default=None,
                    help="cube sizes for volume-sharded FDK/SART (default 256 512 768 1024 1280 1536 2048)")
    ap.add_argument("--views", type=int, default=None, help="projections (default 360; small 8)")
    ap.add_argument("--sart-iters", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["weak", "strong", "cohort", "volume"])
    ap.add_argument("--distributed", action="store_true", help="jax.distributed.initialize from the environment first")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    if a.distributed:
        from jaxmedrf.distributed import initialize_from_env

        initialize_from_env()
    import jax

    from jaxmedrf.fields import FieldConfig, HashGridConfig
    from jaxmedrf.recon.naf import NAFConfig

    small = a.small
    n_all = len(jax.devices())
    counts = a.device_counts or [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= n_all]
    bad = [n for n in counts if not 1 <= n <= n_all]
    if bad:
        raise ValueError(f"--device-counts {bad}: only {n_all} devices exist")
    rpd = a.rays_per_device or (64 if small else 8192)
    total = a.total_rays or (256 if small else 65536)
    cases = a.cases or (8 if small else 16)
    views = a.views or (8 if small else 360)
    repeats = a.repeats or (2 if small else 5)
    sizes = a.volume_sizes or ([16, 24] if small else [256, 512, 768, 1024, 1280, 1536, 2048])
    field = (FieldConfig(encoding=HashGridConfig(n_levels=4, log2_table_size=10, base_resolution=4,
                                                 finest_resolution=32), width=16, out_activation="softplus")
             if small else FieldConfig(out_activation="softplus"))
    base = NAFConfig(field=dataclasses.replace(field, mu_scale=0.05), auto_mu_scale=False,
                     n_samples=16 if small else 128, steps_per_call=5 if small else 25)
    g, proj = naf_setup(16 if small else 128, 8 if small else 180, 16 if small else 128)
    payload = {"environment": environment(), "small": small, "device_counts": counts,
               "config": {"rays_per_device": rpd, "total_rays": total, "cases": cases, "naf_iters": a.naf_iters,
                          "n_samples": base.n_samples, "steps_per_call": base.steps_per_call,
                          "naf_volume": g.n_voxel, "views": views, "volume_sizes": sizes}}
    t0 = time.perf_counter()

    def eff(rows, key):
        ref = rows[0][key] / rows[0]["devices"]
        for r in rows:
            r["efficiency"] = r[key] / (r["devices"] * ref)
        return rows

    if "weak" not in a.skip:
        rows = []
        for n in counts:
            cfg = dataclasses.replace(base, batch_rays=rpd * n)
            t = time_naf(cfg, g, proj, n_dev=n, cases=1, shard_cases=False, repeats=repeats)
            sps = base.steps_per_call / t["median_s"]
            rows.append({"devices": n, "batch_rays": rpd * n, "steps_per_s": sps, "rays_per_s": sps * rpd * n,
                         "compile_s": t["first_call_s"]})
            print(f"weak   n={n}: {sps:.1f} steps/s, {sps * rpd * n:.3g} rays/s", flush=True)
        payload["weak"] = eff(rows, "rays_per_s")
        write_json("scaling", payload, a.out_dir)  # kept if a later section is cut short
    if "strong" not in a.skip:
        rows = []
        for n in counts:
            if total % n:
                continue
            cfg = dataclasses.replace(base, batch_rays=total)
            t = time_naf(cfg, g, proj, n_dev=n, cases=1, shard_cases=False, repeats=repeats)
            sps = base.steps_per_call / t["median_s"]
            rows.append({"devices": n, "batch_rays": total, "steps_per_s": sps, "rays_per_s": sps * total,
                         "compile_s": t["first_call_s"]})
            print(f"strong n={n}: {sps:.1f} steps/s, {sps * total:.3g} rays/s", flush=True)
        payload["strong"] = eff(rows, "steps_per_s")
        write_json("scaling", payload, a.out_dir)  # kept if a later section is cut short
    if "cohort" not in a.skip:
        rows = []
        for n in counts:
            k = -(-cases // n) * n
            cfg = dataclasses.replace(base, batch_rays=rpd)
            t = time_naf(cfg, g, proj, n_dev=n, cases=k, shard_cases=True, repeats=repeats)
            step_s = t["median_s"] / base.steps_per_call
            per_hour = cases * 3600.0 / (step_s * a.naf_iters)
            rows.append({"devices": n, "cases": cases, "padded_cases": k, "batch_rays": rpd,
                         "seconds_per_step": step_s, "scans_per_hour": per_hour, "compile_s": t["first_call_s"]})
            print(f"cohort n={n}: {per_hour:.3g} scans/h ({a.naf_iters} steps each)", flush=True)
        payload["cohort"] = eff(rows, "scans_per_hour")
        write_json("scaling", payload, a.out_dir)  # kept if a later section is cut short
    if "volume" not in a.skip:
        payload["volume"] = vol = volume_runs(sizes, views=views, sart_iters=a.sart_iters, repeats=min(repeats, 2))
        ok = [r for r in vol if "error" not in r]
        payload["largest_volume"] = ok[-1]["size"] if ok else None
        for r in ok:
            print(f"volume {r['size']}³ on {r['devices']} devices: FDK {r['fdk']['median_s']:.3g} s, "
                  f"SART {r['sart_incl_compile']['median_s']:.3g} s/{r['sart_iters']} it incl. compile", flush=True)
    payload["benchmark_seconds"] = time.perf_counter() - t0
    path = write_json("scaling", payload, a.out_dir)
    plot(payload, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
