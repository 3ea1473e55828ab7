"""Throughput of the hash-grid encoding: XLA variants, the Pallas kernel, torch-ngp's CUDA kernel.

Times :func:`jaxmedrf.fields.hash_grid_encode` for each ``implementation`` ×
``table_dtype`` (forward) and each ``implementation`` × ``backward`` × ``table_dtype``
(forward + backward: value and gradient w.r.t. the table of ``Σ features · R`` with a
random float32 ``R`` of shape ``(N, L·F)``; the forward is included). The ``"pallas``"
implementation (the fused kernel, :mod:`jaxmedrf.kernels.hashgrid`) has one backward
(atomic adds) and is timed in the same process; without a GPU it is recorded as skipped.
``--position-grad`` adds the gradient w.r.t. the positions too (first dtype only). Default configuration: the
one of issue 8 (16 levels, 2 features, 2^19 rows, resolutions 16 → 2048, 4M points in
``[0, 1]^3``). Each figure is the median of ``--repeats`` timed runs after one warm-up
(compilation) run, with ``block_until_ready``; the result is points per second.

``--peer`` (on a GPU with PyTorch and nvcc) also builds torch-ngp's fused CUDA hash encoder
from NAF's repository (``benchmarks/peers/torchngp_hash``) with PyTorch's JIT extension
loader and times it in the same process beside ``level_major`` and ``pallas`` at ITS
configuration: per-level scale 2 (resolutions ``16 · 2^l``), same ``L``, ``F``, ``T``
and points. A peer that cannot build or run is recorded as skipped with the reason.

Usage::

    python benchmarks/hashgrid.py                     # GPU: full size, all variants
    python benchmarks/hashgrid.py --small             # CPU smoke run at tiny size
    python benchmarks/hashgrid.py --impls level_major pallas --backwards segment_sum --peer

Writes ``benchmarks/results/hashgrid_<device>_<date>.json`` (or into ``--out-dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

# PyTorch (the peer) shares the GPU with JAX in this process: no up-front 75 % reservation.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from jaxmedrf._files import atomic_path
from jaxmedrf.fields.encodings import _BACKWARDS, _DTYPES, HASH_IMPLEMENTATIONS, HashGridConfig, hash_grid_encode, hash_grid_init
from jaxmedrf.kernels.hashgrid import (
    DEFAULT_TUNING,
    Tuning,
    hash_grid_encode_pallas,
    pallas_supported,
    table_grad_tuning,
)

RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first run seconds, median seconds of ``repeats`` further runs)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def run(
    *,
    n_points: int,
    base: HashGridConfig,
    impls,
    backwards,
    dtypes,
    repeats: int,
    seed: int = 0,
    position_grad: bool = False,
    tuning=DEFAULT_TUNING,
    deadline: float = float("inf"),
) -> list[dict]:
    """Times every requested variant; returns one record per (mode, variant).

    Variants reached after ``deadline`` (a ``time.time()`` value) are recorded as skipped.
    """
    key_x, key_t, key_r = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.uniform(key_x, (n_points, 3), jnp.float32)
    cot = jax.random.normal(key_r, (n_points, base.out_dim), jnp.float32)
    records = []

    def record(mode, cfg, fn, *args):
        rec = {"mode": mode, "implementation": cfg.implementation, "table_dtype": cfg.table_dtype}
        if mode.startswith("forward+backward"):
            rec["backward"] = "atomic" if cfg.implementation == "pallas" else cfg.backward
        if cfg.implementation == "pallas":
            rec["tuning"] = tuning._asdict()
        if time.time() > deadline:
            rec["skipped"] = "time budget (--deadline-s) exhausted"
            records.append(rec)
            print(f"{mode:27s} {cfg.implementation:12s} skipped: time budget", flush=True)
            return
        try:
            first, med = _time(fn, *args, repeats=repeats)
            rec.update(seconds=med, first_call_seconds=first, points_per_second=n_points / med)
        except Exception as e:  # an OOM or lowering failure of one variant must not end the run
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        records.append(rec)
        shown = f"{rec['points_per_second']:.3e} points/s" if "error" not in rec else rec["error"]
        print(f"{mode:27s} {cfg.implementation:12s} {rec.get('backward', ''):12s} {cfg.table_dtype:9s} {shown}", flush=True)

    def encoder(cfg):
        if cfg.implementation == "pallas":  # the kernel itself, with the benchmark's tuning
            return lambda t, p: hash_grid_encode_pallas(t, p, cfg, tuning=tuning)
        return lambda t, p: hash_grid_encode(t, p, cfg)

    for dtype in dtypes:
        for impl in impls:
            cfg = dataclasses.replace(base, implementation=impl, table_dtype=dtype, init_scale=1.0)
            if impl == "pallas" and (reason := pallas_supported(cfg)) is not None:
                records.append({"mode": "forward", "implementation": impl, "table_dtype": dtype, "skipped": reason})
                print(f"pallas {dtype}: skipped ({reason})", flush=True)
                continue
            table = hash_grid_init(key_t, cfg)
            enc = encoder(cfg)
            record("forward", cfg, jax.jit(enc), table, x)
            for bwd in ["atomic"] if impl == "pallas" else backwards:
                cfg_b = cfg if impl == "pallas" else dataclasses.replace(cfg, backward=bwd)
                enc_b = encoder(cfg_b)
                loss = lambda t, p, r, enc_b=enc_b: jnp.sum(enc_b(t, p) * r)  # noqa: E731
                record("forward+backward", cfg_b, jax.jit(jax.value_and_grad(loss)), table, x, cot)
                if position_grad and dtype == dtypes[0]:
                    fb = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
                    record("forward+backward+positions", cfg_b, fb, table, x, cot)
            del table
    return records


#: Launch settings of the Pallas kernel tried by ``--pallas-sweep`` (all give the same values).
#: Level groups (``levels_per_program`` G < L) keep G tables in L2 at a time: the float32
#: table and its gradient each touch 47 MB at L = 16, T = 2^19 (11 hashed levels of 4 MB),
#: about the 50 MB L2 of an H100, which the streamed inputs and outputs share.
SWEEP = {
    "one_pass_b128_w4": Tuning(),
    "one_pass_b256_w4": Tuning(block=256, bwd_block=256),
    "one_pass_b64_w2": Tuning(block=64, num_warps=2, bwd_block=64, bwd_num_warps=2),
    "one_pass_no_replicas": Tuning(replica_rows=1),
    "one_pass_acq_rel_atomics": Tuning(relaxed_atomics=False),
    "groups_of_8_levels": Tuning(levels_per_program=8),
    "groups_of_4_levels": Tuning(levels_per_program=4),
    "groups_of_4_levels_b256": Tuning(levels_per_program=4, block=256, bwd_block=256),
    "groups_of_4_levels_b512_w8": Tuning(levels_per_program=4, block=512, num_warps=8, bwd_block=512, bwd_num_warps=8),
    "groups_of_4_levels_no_replicas": Tuning(levels_per_program=4, replica_rows=1),
    "groups_of_2_levels": Tuning(levels_per_program=2),
    "one_level_per_program": Tuning(levels_per_program=1),
    "one_level_per_program_b512_w8": Tuning(levels_per_program=1, block=512, num_warps=8, bwd_block=512,
                                            bwd_num_warps=8),
}
_FORWARD_FIELDS = ("block", "num_warps", "levels_per_program")  # what the forward kernel uses


def combine(fwd: Tuning, bwd: Tuning) -> Tuning:
    """The forward settings of ``fwd`` with the table-gradient settings of ``bwd``."""
    g_bwd = table_grad_tuning(bwd).levels_per_program
    return bwd._replace(**{k: getattr(fwd, k) for k in _FORWARD_FIELDS}, bwd_levels_per_program=g_bwd)


def sweep(*, n_points: int, base: HashGridConfig, dtype: str, repeats: int, deadline: float, seed: int = 0):
    """Times every :data:`SWEEP` tuning (forward, forward + backward) and checks it against
    ``level_major`` (max error relative to the largest reference entry). Returns
    ``(records, best tuning by forward + backward among the correct ones or None)``."""
    key_x, key_t, key_r = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.uniform(key_x, (n_points, 3), jnp.float32)
    cot = jax.random.normal(key_r, (n_points, base.out_dim), jnp.float32)
    cfg = dataclasses.replace(base, table_dtype=dtype, init_scale=1.0)
    if (reason := pallas_supported(cfg)) is not None:
        return [{"mode": "sweep", "skipped": reason}], None
    table = hash_grid_init(key_t, cfg)

    @jax.jit
    def relerr(a, b):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        return jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30)

    def both(enc):
        fwd = jax.jit(enc)
        fb = jax.jit(jax.value_and_grad(lambda t, p, r: jnp.sum(enc(t, p) * r)))
        return fwd, fb

    ref_fwd, ref_fb = both(lambda t, p: hash_grid_encode(t, p, dataclasses.replace(cfg, backward="segment_sum")))
    ref_out, (_, ref_grad) = ref_fwd(table, x), ref_fb(table, x, cot)
    records = []

    def measure(name, tun):
        rec = {"mode": "sweep", "name": name, "table_dtype": dtype, "tuning": tun._asdict()}
        records.append(rec)
        if time.time() > deadline:
            rec["skipped"] = "time budget (--deadline-s) exhausted"
            return
        try:
            fwd, fb = both(lambda t, p, tun=tun: hash_grid_encode_pallas(t, p, cfg, tuning=tun))
            rec["rel_err_features"] = float(relerr(fwd(table, x), ref_out))
            rec["rel_err_table_grad"] = float(relerr(fb(table, x, cot)[1], ref_grad))
            for mode, fn, args in (("forward", fwd, (table, x)), ("forward+backward", fb, (table, x, cot))):
                first, med = _time(fn, *args, repeats=repeats)
                rec[mode] = {"seconds": med, "first_call_seconds": first, "points_per_second": n_points / med}
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            return
        rec["matches_reference"] = rec["rel_err_features"] < 1e-5 and rec["rel_err_table_grad"] < 1e-4
        print(f"sweep {name:30s} fwd {rec['forward']['points_per_second']:.3e} fwd+bwd "
              f"{rec['forward+backward']['points_per_second']:.3e} points/s, errors {rec['rel_err_features']:.1e} "
              f"{rec['rel_err_table_grad']:.1e}", flush=True)  # fmt: skip

    for name, tun in SWEEP.items():
        measure(name, tun)
    ok = [r for r in records if r.get("matches_reference")]
    if not ok:
        return records, None
    # The forward and the table gradient are separate kernels: the fastest forward's settings
    # with the fastest backward's (forward + backward time minus forward time) are timed too.
    best_f = min(ok, key=lambda r: r["forward"]["seconds"])
    best_b = min(ok, key=lambda r: r["forward+backward"]["seconds"] - r["forward"]["seconds"])
    if best_f is not best_b:
        measure(f"combined({best_f['name']}, {best_b['name']})",
                combine(Tuning(**best_f["tuning"]), Tuning(**best_b["tuning"])))
        ok = [r for r in records if r.get("matches_reference")]
    best = max(ok, key=lambda r: r["forward+backward"]["points_per_second"])
    return records, Tuning(**best["tuning"])


def run_peer(
    *, n_points: int, base: HashGridConfig, dtypes, repeats: int, seed: int = 0, deadline: float = float("inf")
) -> dict:
    """torch-ngp's CUDA hash encoder (NAF's repository) at ``base``'s L, F, T (scale 2)."""
    try:
        import torch
    except ImportError as e:
        return {"skipped": f"PyTorch not importable: {e}"}
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device visible to PyTorch"}
    from benchmarks.peers import torchngp_hash

    t0 = time.perf_counter()
    try:
        backend = torchngp_hash.load(build_dir=os.environ.get("TORCHNGP_BUILD_DIR", "/tmp/torchngp_hash_build"))
    except Exception as e:  # no nvcc, compiler error, ...
        return {"skipped": f"build failed: {type(e).__name__}: {str(e)[-600:]}"}
    out = {"name": "torch-ngp hash encoder (NAF repository, CUDA)", "torch_version": torch.__version__,
           "build_seconds": time.perf_counter() - t0, "records": []}  # fmt: skip
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(seed)
    encode, n_rows, _ = torchngp_hash.make_encoder(
        backend, n_levels=base.n_levels, level_dim=base.features_per_level, base_resolution=base.base_resolution,
        log2_hashmap_size=base.log2_table_size, device=dev,
    )  # fmt: skip
    names = {"float32": torch.float32, "float16": torch.float16}

    def timed(fn):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    for dtype in dtypes:
        if dtype not in names:
            out["records"].append({"table_dtype": dtype, "skipped": "torch-ngp's kernel has no bfloat16 path"})
            continue
        tdt = names[dtype]
        x = torch.rand(n_points, 3, device=dev, generator=gen).to(tdt)
        emb = ((torch.rand(n_rows, base.features_per_level, device=dev, generator=gen) * 2 - 1)).to(tdt)
        emb.requires_grad_(True)
        r = torch.randn(n_points, base.out_dim, device=dev, generator=gen).to(tdt)

        def fwd():
            with torch.no_grad():
                return encode(x, emb)

        def fwd_bwd():
            emb.grad = None
            loss = (encode(x, emb).float() * r.float()).sum()
            loss.backward()
            return loss

        for mode, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
            rec = {"mode": mode, "table_dtype": dtype}
            if time.time() > deadline:
                rec["skipped"] = "time budget (--deadline-s) exhausted"
                out["records"].append(rec)
                continue
            if dtype == "float16":
                rec["note"] = "positions, table and gradient accumulation (half2 atomics) in float16"
            try:
                sec = timed(fn)
                rec.update(seconds=sec, points_per_second=n_points / sec)
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            out["records"].append(rec)
            print(f"peer {mode:17s} {dtype:9s} {rec.get('points_per_second', rec.get('error'))}", flush=True)
        del x, emb, r
        torch.cuda.empty_cache()
    return out


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "device"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--n-points", type=int, default=None, help="points per call (default 4M; 4096 with --small)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs after warm-up (default 10; 2 with --small)")
    ap.add_argument("--log2-table-size", type=int, default=None)
    ap.add_argument("--per-level-scale", type=float, default=None, help="e.g. 2.0 for NAF's torch-ngp setting")
    ap.add_argument("--impls", nargs="+", default=list(HASH_IMPLEMENTATIONS), choices=HASH_IMPLEMENTATIONS)
    ap.add_argument("--backwards", nargs="+", default=list(_BACKWARDS), choices=_BACKWARDS)
    ap.add_argument("--dtypes", nargs="+", default=list(_DTYPES), choices=list(_DTYPES))
    ap.add_argument("--position-grad", action="store_true", help="also time the gradient w.r.t. the positions")
    ap.add_argument("--peer", action="store_true", help="also build and time torch-ngp's CUDA kernel (GPU)")
    ap.add_argument("--peer-dtypes", nargs="+", default=["float32", "float16"], choices=list(_DTYPES))
    ap.add_argument("--pallas-tuning", type=Path, default=None, help="JSON of jaxmedrf.kernels.hashgrid.Tuning fields")
    ap.add_argument("--pallas-sweep", action="store_true",
                    help="first time every SWEEP tuning (first dtype); the fastest correct one is used after")
    ap.add_argument("--deadline-s", type=float, default=None, help="skip variants reached after this many seconds")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    tuning = Tuning(**json.loads(args.pallas_tuning.read_text())) if args.pallas_tuning else DEFAULT_TUNING
    deadline = time.time() + args.deadline_s if args.deadline_s else float("inf")

    n_points = args.n_points or (4096 if args.small else 4 * 1024 * 1024)
    repeats = args.repeats or (2 if args.small else 10)
    if n_points < 1 or repeats < 1:
        raise ValueError(f"--n-points and --repeats must be >= 1, got {n_points}, {repeats}")
    base = HashGridConfig(
        n_levels=4 if args.small else 16,
        features_per_level=2,
        log2_table_size=args.log2_table_size or (12 if args.small else 19),
        base_resolution=16,
        finest_resolution=128 if args.small else 2048,
        per_level_scale=args.per_level_scale,
    )
    device = jax.devices()[0]
    print(f"device {device.device_kind} ({device.platform}), jax {jax.__version__}, {n_points} points", flush=True)
    sweep_records = None
    if args.pallas_sweep and "pallas" in args.impls:
        sweep_records, best_tuning = sweep(
            n_points=n_points, base=base, dtype=args.dtypes[0], repeats=repeats, deadline=deadline
        )
        if best_tuning is not None and args.pallas_tuning is None:
            tuning = best_tuning
            print(f"pallas tuning from the sweep: {tuning}", flush=True)
    records = run(
        n_points=n_points, base=base, impls=args.impls, backwards=args.backwards, dtypes=args.dtypes,
        repeats=repeats, position_grad=args.position_grad, tuning=tuning, deadline=deadline,
    )  # fmt: skip
    now = _dt.datetime.now(_dt.timezone.utc)
    out = args.out_dir / f"hashgrid_{_device_slug(device.device_kind)}_{now.strftime('%Y%m%d-%H%M%S')}.json"

    def save(peer_section=None):  # after the main records and again after the peer: a cut run keeps them
        best = {}
        for mode in ("forward", "forward+backward"):
            ok = [r for r in records if r["mode"] == mode and "points_per_second" in r]
            if ok:
                best[mode] = max(ok, key=lambda r: r["points_per_second"])
        result = {
            "benchmark": "hashgrid",
            "device": device.device_kind,
            "platform": device.platform,
            "jax_version": jax.__version__,
            "jaxlib_version": _version("jaxlib"),
            "python": platform.python_version(),
            "date": now.isoformat(timespec="seconds"),
            "n_points": n_points,
            "repeats": repeats,
            "timing": "median of repeats after one warm-up call, block_until_ready",
            "cotangent": "random normal (N, L*F) float32; value and gradient w.r.t. the table (and the "
            "positions in 'forward+backward+positions') of sum(features * R)",
            "config": {
                "n_levels": base.n_levels,
                "features_per_level": base.features_per_level,
                "log2_table_size": base.log2_table_size,
                "base_resolution": base.base_resolution,
                "finest_resolution": base.finest_resolution,
                "per_level_scale": base.per_level_scale,
                "resolutions": list(base.resolutions),
            },
            "records": records,
            "best": best,
        }
        if peer_section is not None:
            result["peer_comparison"] = peer_section
        if sweep_records is not None:
            result["pallas_sweep"] = sweep_records
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))

    save()
    peer_section = None
    if args.peer:
        base2 = dataclasses.replace(base, per_level_scale=2.0)
        print(f"peer comparison at per-level scale 2: resolutions {base2.resolutions}", flush=True)
        try:
            peer = run_peer(
                n_points=n_points, base=base2, dtypes=args.peer_dtypes, repeats=repeats, deadline=deadline
            )
        except Exception as e:  # the peer must never end the run
            peer = {"skipped": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        ours = run(
            n_points=n_points, base=base2, impls=[i for i in ("level_major", "pallas") if i in args.impls],
            backwards=["segment_sum"], dtypes=args.peer_dtypes, repeats=repeats, tuning=tuning, deadline=deadline,
        )  # fmt: skip
        peer_section = {
            "config": {"per_level_scale": 2.0, "resolutions": list(base2.resolutions),
                       "n_levels": base2.n_levels, "features_per_level": base2.features_per_level,
                       "log2_table_size": base2.log2_table_size},
            "note": "same L, F, T, points and process; torch-ngp offsets positions by half a cell and sizes "
                    "dense levels min(T, (N+1)^3), so only speeds are comparable",
            "jaxmedrf": ours,
            "peer": peer,
        }  # fmt: skip
    save(peer_section)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
