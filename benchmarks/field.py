"""The attenuation field alone: the fused kernel against the XLA ops, forward and forward + backward.

On the points of one NAF step (``naf128_50``: 8192 random pixel rays × 128 stratified samples =
1M points, ray by ray, :func:`benchmarks.naf_profile.step_points`) and NAF's default field
(hash grid L=16, F=2, T=2^19 up to 512 cells; four layers of 32, skip at 2; softplus μ):

* ``xla``: :func:`jaxmedrf.fields.field_apply` with ``implementation="xla"`` (the hash
  encoding's ``level_major`` gathers, then the MLP as XLA dots);
* ``fused``: the kernel of :mod:`jaxmedrf.kernels.field` for each ``--tunings`` entry
  (``block:warps:bwd_block:bwd_warps:table_levels:unroll_levels`` of
  :class:`jaxmedrf.kernels.field.FusedTuning`; the first ``--dtypes`` entry gets them all, the
  others the first tuning only).

Each row: the forward (μ) and the forward + gradient w.r.t. all parameters (of ``Σ r · μ``,
``r`` random), medians of ``--repeats`` after a compiling call, in ms and points per second;
and, for the fused rows, the largest difference from the XLA path of μ and of each gradient,
relative to that array's largest entry (same float32 function; TF32 tensor-core dots in both
by JAX's default precision, exact float32 with ``--precision highest``); with ``--cpu-reference``
every row also against the XLA path run on the CPU with exact float32 dots (largest and L2
differences), which tells a kernel's error from the conditioning of the quantity.
Rows are written to the JSON as they finish.

    python benchmarks/field.py                       # GPU
    python benchmarks/field.py --small               # CPU: the XLA rows only (the kernel needs a GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from benchmarks.common import environment, timeit, write_json

DEFAULT_TUNINGS = ["128:4:64:4:0:0", "128:4:64:4:1:0", "128:4:128:4:0:0", "128:4:64:4:0:1"]


def _differences(out: dict, ref: dict) -> dict:
    """Per array: the largest difference relative to ``ref``'s largest entry, and the relative L2."""
    import numpy as np

    res = {"max_rel": {}, "rel_l2": {}}
    for k, v in out.items():
        v, w = np.asarray(v, np.float64), np.asarray(ref[k], np.float64)
        res["max_rel"][k] = float(np.max(np.abs(v - w)) / max(float(np.max(np.abs(w))), 1e-30))
        res["rel_l2"][k] = float(np.linalg.norm(v - w) / max(float(np.linalg.norm(w)), 1e-30))
    return res


def _cpu_reference(params, u, r, xcfg) -> dict:
    """μ and the parameter gradients of ``Σ r · μ`` by the XLA path on the CPU, float32 dots exact."""
    import jax
    import jax.numpy as jnp

    from jaxmedrf.fields.field import _xla_mu

    cpu = jax.devices("cpu")[0]
    params, u, r = jax.device_put((params, u, r), cpu)
    with jax.default_matmul_precision("highest"):
        mu = jax.jit(lambda p, u: _xla_mu(p, u, xcfg))(params, u)
        g = jax.jit(jax.grad(lambda p, u, r: jnp.sum(_xla_mu(p, u, xcfg) * r)))(params, u, r)
    out = {"mu": mu, "d_table": g["encoding"]}
    out.update({f"d_mlp{i}_{k}": v for i, wb in enumerate(g["mlp"]) for k, v in zip("wb", wb)})
    return jax.device_get(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny field and batch (CPU smoke run)")
    ap.add_argument("--tunings", nargs="+", default=DEFAULT_TUNINGS, help="block:warps:bwd_block:bwd_warps:table_levels:unroll (0/1)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="MLP dot dtypes")
    ap.add_argument("--precision", choices=["default", "highest"], default="default",
                    help="jax_default_matmul_precision for both paths")
    ap.add_argument("--cpu-reference", action="store_true",
                    help="also compare every row with the XLA path run on the CPU at full float32 precision")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.naf_profile import step_points
    from jaxmedrf.fields import FieldConfig, HashGridConfig
    from jaxmedrf.fields.field import _fused_mu, _xla_mu, field_init, fused_unsupported
    from jaxmedrf.kernels.field import FusedTuning

    if a.precision == "highest":
        jax.config.update("jax_default_matmul_precision", "highest")
    repeats = a.repeats or (2 if a.small else 20)
    setup = (dict(n=16, views=4, det=16, batch=256, samples=16) if a.small
             else dict(n=128, views=50, det=256, batch=8192, samples=128))
    enc = (HashGridConfig(n_levels=4, log2_table_size=12, finest_resolution=64) if a.small
           else HashGridConfig(finest_resolution=512))
    _, _, pts, lo, hi = step_points(setup)
    u = ((pts - lo) / (hi - lo)).astype(jnp.float32)
    n = u.shape[0]
    r = jax.random.normal(jax.random.key(3), (n,), jnp.float32)
    rows = []
    payload = {"benchmark": "field", "environment": environment(), "small": a.small, "points": n,
               "setup": "naf128_50 step points (8192 rays x 128 samples), NAF's default field", "precision": a.precision,
               "rows": rows}

    def record(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        return write_json("field" + ("_small" if a.small else ""), payload, a.out_dir)

    for dtype in a.dtypes:
        cfg = FieldConfig(encoding=enc, out_activation="softplus", mu_scale=0.05, compute_dtype=dtype)
        params = field_init(jax.random.key(0), cfg)
        # a trained-like table: the initial one is ~1e-4 everywhere, which hides indexing errors
        params["encoding"] = jax.random.uniform(jax.random.key(1), params["encoding"].shape, jnp.float32, -1.0, 1.0)
        xcfg = dataclasses.replace(cfg, implementation="xla")

        def variants():
            yield "xla", None, lambda p, u: _xla_mu(p, u, xcfg)
            reason = fused_unsupported(cfg)
            if reason is not None:
                yield "fused", reason, None
                return
            for t in a.tunings if dtype == a.dtypes[0] else a.tunings[:1]:
                b, w, bb, bw, tl, un = (int(v) for v in t.split(":"))
                tuning = FusedTuning(block=b, num_warps=w, bwd_block=bb, bwd_num_warps=bw, table_levels=tl,
                                     unroll_levels=bool(un))
                yield f"fused {t}", None, (lambda p, u, tuning=tuning: _fused_mu(p["encoding"], p["mlp"], u, cfg,
                                                                                   False, tuning))

        ref = None
        cpu_ref = _cpu_reference(params, u, r, xcfg) if a.cpu_reference else None
        for name, skipped, fn in variants():
            row = {"variant": name, "compute_dtype": dtype}
            if skipped:
                record({**row, "skipped": skipped})
                continue
            try:
                fwd = jax.jit(fn)
                grad = jax.jit(jax.value_and_grad(lambda p, u, fn=fn: jnp.sum(fn(p, u) * r)))
                t0 = time.perf_counter()
                out = {"mu": jax.block_until_ready(fwd(params, u))}
                t1 = time.perf_counter()
                _, g = jax.block_until_ready(grad(params, u))
                row["first_call_s"] = {"forward": t1 - t0, "forward_backward": time.perf_counter() - t1}
                out["d_table"] = g["encoding"]
                out.update({f"d_mlp{i}_{k}": v for i, wb in enumerate(g["mlp"]) for k, v in zip("wb", wb)})
                jax.block_until_ready(out)
                t_f = timeit(lambda: jax.block_until_ready(fwd(params, u)), repeats=repeats, warmup=1)["median_s"]
                t_g = timeit(lambda: jax.block_until_ready(grad(params, u)), repeats=repeats, warmup=1)["median_s"]
                row.update(forward_ms=1e3 * t_f, forward_backward_ms=1e3 * t_g, forward_points_per_s=n / t_f,
                           forward_backward_points_per_s=n / t_g)
                if ref is None:
                    ref = out
                else:
                    row["max_rel_diff_vs_xla"] = _differences(out, ref)["max_rel"]
                if cpu_ref is not None:
                    row["diff_vs_cpu_float32"] = _differences(out, cpu_ref)
            except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
                row["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
            path = record(row)
    print("wrote", path)
    return payload


if __name__ == "__main__":
    main()
