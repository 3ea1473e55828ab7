"""Where a NAF training step spends its time on the CPU, at the README demo's earlier settings.

The demo as it was (``jaxmedrf reconstruct sim.npz --method naf --iters 600 --batch-rays 512
--n-samples 32 --log2-table-size 15`` on a 64³ volume, 50 views of 128²) trains 512 rays ×
32 samples = 16k points a step with NAF's default field (hash grid L=16, F=2, T=2^15;
four layers of width 32). For every hash ``implementation`` × ``backward`` this script times, in
one process, the whole step and each of its parts alone (the parts of
:func:`benchmarks.naf_profile.build`: ``encode``, ``encode+grad``, ``mlp``, ``mlp+grad``,
``field+grad``, ``render+grad``, ``adam``). A CPU shared with other work gives noisy times,
so the variants are interleaved (every part of A, of B, …, then again) for ``--repeats``
rounds and the medians reported; compare figures of one run only.

``--baseline REV`` adds the default variant with the hash encoding of git revision ``REV``
(``jaxmedrf/fields/encodings.py`` at that commit, patched in while its functions are
compiled): a before/after in the same process. ``--xla-ops N`` records the N costliest XLA
operations of one step call (``jax.profiler``, summed over the CPU client's threads) for
the default variant and the baseline: that is where the time goes inside the fused step.

    python benchmarks/naf_cpu_profile.py --baseline d10554c    # all variants, before/after
    python benchmarks/naf_cpu_profile.py --small               # smoke run (tiny field and batch)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CPU's profile, on any machine (before JAX starts)

from benchmarks.common import environment, write_json  # noqa: E402
from benchmarks.naf_profile import build  # noqa: E402

DEMO = dict(n=64, views=50, det=128, batch=512, samples=32)
SMALL = dict(n=16, views=4, det=16, batch=256, samples=16)  # naf_profile.py --small's setup
DEFAULT = ("level_major", "segment_sum")


@contextlib.contextmanager
def encodings_at(rev: str | None):
    """Within the block, :func:`hash_grid_encode` is that of ``jaxmedrf/fields/encodings.py``
    at git revision ``rev`` (where the field and this benchmark look it up); ``None``: as is."""
    if rev is None:
        yield
        return
    from jaxmedrf.fields import encodings, field

    source = subprocess.run(["git", "show", f"{rev}:jaxmedrf/fields/encodings.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    name = f"_encodings_{re.sub(r'[^0-9A-Za-z]', '_', rev)}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:jaxmedrf/fields/encodings.py", "exec"), module.__dict__)
    saved = encodings.hash_grid_encode
    encodings.hash_grid_encode = field.hash_grid_encode = module.hash_grid_encode
    try:
        yield
    finally:
        encodings.hash_grid_encode = field.hash_grid_encode = saved


def xla_op_times(run, *, top: int, calls: int) -> dict[str, float]:
    """Milliseconds per step of the ``top`` costliest XLA operations of one ``run()`` of
    ``calls`` steps, summed over the CPU client's worker threads; numbered copies of one kind
    (``dot.3``, ``dot.7``) are added up."""
    import jax

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        run()
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(str(next(Path(d).rglob("*.xplane.pb"))))
    total = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # XLA:CPU runs its thunks on these threads
                continue
            for event in line.events:
                if not event.name.startswith("ThunkExecutor"):
                    total[re.sub(r"\.\d+$", "", event.name)] += event.duration_ns / 1e6 / calls
    return dict(total.most_common(top))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny field and batch for a smoke run")
    ap.add_argument("--implementations", nargs="+", default=["level_major", "per_level", "fused"])
    ap.add_argument("--backwards", nargs="+", default=["segment_sum", "scatter", "sorted", "autodiff"])
    ap.add_argument("--baseline", default=None, metavar="REV", help="also time the default variant at git REV")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; 1 with --small)")
    ap.add_argument("--steps-per-call", type=int, default=None, help="steps per timed call (default 10; 2 with --small)")
    ap.add_argument("--xla-ops", type=int, default=12, help="costliest XLA ops recorded per profiled variant (0: off)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    repeats = a.repeats or (1 if a.small else 5)
    steps = a.steps_per_call or (2 if a.small else 10)

    from jaxmedrf.recon.naf import NAFConfig

    setup = SMALL if a.small else DEMO
    # The field of the README demo as it was when this profile was taken (NAFConfig's with
    # --log2-table-size 15; the demo now also sets 8 levels from 8 to 128 cells and 96 samples).
    base = dataclasses.replace(NAFConfig.field.encoding, log2_table_size=15)
    if a.small:  # naf_profile.py --small's hash grid: its smoke test compiles the same programs
        base = dataclasses.replace(base, n_levels=4, log2_table_size=12, finest_resolution=64)
    variants = [(impl, bwd, None) for impl in a.implementations for bwd in a.backwards]
    if a.baseline:
        variants.append((*DEFAULT, a.baseline))
    runs, compile_s = {}, {}
    for impl, bwd, rev in variants:
        t0 = time.perf_counter()
        with encodings_at(rev):
            enc = dataclasses.replace(base, implementation=impl, backward=bwd)
            runs[impl, bwd, rev] = build(enc, compute_dtype="float32", setup=setup, steps_per_call=steps)
        compile_s[impl, bwd, rev] = time.perf_counter() - t0
        print(f"compiled {impl}/{bwd}{'@' + rev if rev else ''} in {compile_s[impl, bwd, rev]:.1f} s", flush=True)

    times = {v: collections.defaultdict(list) for v in variants}
    for _ in range(repeats):  # A B … A B …: every variant sees the same background load
        for v in variants:
            for part, run in runs[v].items():
                t0 = time.perf_counter()
                run()
                times[v][part].append(1e3 * (time.perf_counter() - t0) / (steps if part == "step" else 1))

    rows = []
    for v in variants:
        impl, bwd, rev = v
        med = {part: sorted(ts)[len(ts) // 2] for part, ts in times[v].items()}
        row = {"implementation": impl, "backward": bwd, "revision": rev or "working tree",
               "step_ms": med.pop("step"), "parts_ms": med, "step_ms_all": times[v]["step"],
               "compile_and_first_call_s": compile_s[v]}
        if a.xla_ops and (impl, bwd) == DEFAULT:
            row["xla_ops_ms_per_step"] = xla_op_times(runs[v]["step"], top=a.xla_ops, calls=steps)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("implementation", "backward", "revision", "step_ms", "parts_ms")}),
              flush=True)
    payload = {"benchmark": "naf_cpu_profile", "environment": environment(), "small": a.small,
               "setup": {**setup, "hash_grid": dataclasses.asdict(base), "steps_per_call": steps, "repeats": repeats},
               "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows}
    path = write_json("naf_cpu_profile" + ("_small" if a.small else ""), payload, a.out_dir)
    print("wrote", path)
    return payload


if __name__ == "__main__":
    main()
