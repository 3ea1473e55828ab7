"""Where a NAF training step spends its time: the whole step beside each of its parts alone.

Issue 8 asks for a fused field (encoding + MLP) "in as few kernels as the profile shows are
needed"; this is that profile. On the ``naf128_50`` setup (128³ box, 50 views of 256²,
8192 rays × 128 samples a step = 1M points, the default field: hash grid L=16, F=2,
T=2^19, four layers of width 32), each part is compiled alone and timed on the points of a
real step (stratified samples along random pixel rays):

* ``step``: one full optimisation step (:func:`jaxmedrf.recon.naf.make_train_fn`, per step of
  a ``steps_per_call`` scan);
* ``encode`` / ``encode+grad``: the hash encoding, forward and forward + table gradient;
* ``mlp`` / ``mlp+grad``: the MLP on the encoding's output, forward and forward + gradients
  (weights and input);
* ``field+grad``: encoding + MLP, value and gradient w.r.t. all parameters;
* ``render+grad``: ray generation, sampling and the quadrature with the field replaced by a
  closed-form μ (so the marcher alone);
* ``adam``: the optimiser update of all parameters (the table dominates: 16.8 M floats);
  ``adam_donated``: the same with the parameters and state donated, as the training step does;
  ``adam_one_pass``: the same update written as one elementwise expression per array (what a
  single fused kernel would cost: read g, p, m, v, write p, m, v).

With the fused field, its kernels are also timed one by one (``fused_forward``,
``fused_forward+features``: the training forward that also writes the feature tiles,
``fused_backward``: the MLP backward kernel and the table-gradient kernel, ``table_grad``:
the table-gradient kernel alone), next to ``atomic_roofline``: a kernel that does nothing
but the table gradient's float2 atomic adds (``L`` levels × 8 corners per point, one level's
slice of the table per program column as the table-gradient kernel) at uniformly random rows,
i.e. the cost of the adds themselves with no gathers, weights or contention between points.

for each variant given: the field as separate XLA ops (hash implementation ``level_major`` or
``pallas``) or the fused field kernel (:mod:`jaxmedrf.kernels.field`; only the step, the field
and the parts outside it are timed then), and the MLP dtype. The
parts do not add up exactly to the step (XLA fuses across them inside the step) but show which
one dominates. Medians of ``--repeats`` after a warm-up, ``block_until_ready``.

    python benchmarks/naf_profile.py                     # GPU: XLA and fused field, float32 and bfloat16 MLP
    python benchmarks/naf_profile.py --small             # CPU smoke run (tiny field and batch)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from benchmarks.common import environment, timeit, write_json


def step_points(setup: dict):
    """The geometry, rays and sample points of one NAF step of ``setup`` (random pixel rays,
    stratified samples as :func:`jaxmedrf.render.render_rays` draws them, ray by ray):
    ``(geometry, rays, points (N, 3) mm, lo, hi)``."""
    import jax

    import jaxmedrf as jm
    from jaxmedrf.rays import box_intersect, pixel_rays
    from jaxmedrf.render import sample_uniform

    n, views, det, batch, samples = (setup[k] for k in ("n", "views", "det", "batch", "samples"))
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det, DSD=1500.0,
                     DSO=1000.0, n_views=views)
    lo, hi = jm.volume_box(g)
    idx = jax.random.randint(jax.random.key(0), (batch,), 0, views * det * det)
    rays = pixel_rays(g, idx // (det * det), (idx % (det * det)) // det, idx % det)
    t, _ = sample_uniform(jax.random.key(1), *box_intersect(rays, lo, hi), n_samples=samples)
    pts = (rays.origins[:, None] + t[..., None] * rays.directions[:, None]).reshape(-1, 3)
    return g, rays, pts, lo, hi


def build(enc, *, compute_dtype: str, setup: dict, steps_per_call: int, field_implementation: str = "xla") -> dict:
    """Every timed callable of one setup, compiled and run once: ``{part: run}``.

    Each ``run()`` blocks until its result is ready; ``"step"`` runs ``steps_per_call``
    training steps (one call of :func:`jaxmedrf.recon.naf.make_train_fn`), the others are the
    parts listed in the module docstring, on the points of a real step. ``setup`` holds the
    volume side ``n`` (voxels of 256/n mm), ``views``, detector side ``det``, ``batch`` rays and
    ``samples`` per ray. The hash encoding is looked up in :mod:`jaxmedrf.fields.encodings`
    when called, so a patched module (``naf_cpu_profile.py --baseline``) is timed throughout.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from jaxmedrf.fields import FieldConfig
    from jaxmedrf.fields.encodings import hash_grid_encode
    from jaxmedrf.fields.field import _ACTIVATIONS, _COMPUTE_DTYPES, field_apply, field_init
    from jaxmedrf.fields.mlp import mlp_apply
    from jaxmedrf.recon.naf import NAFConfig, _optimizer, init_state, make_train_fn
    from jaxmedrf.render import render_rays
    from jaxmedrf.training import INSTANT_NGP_ADAM

    batch, samples = setup["batch"], setup["samples"]
    field_cfg = FieldConfig(encoding=enc, out_activation="softplus", compute_dtype=compute_dtype,
                            implementation=field_implementation)
    g, rays, pts, lo, hi = step_points(setup)
    cfg = NAFConfig(field=field_cfg, n_iters=600, batch_rays=batch, n_samples=samples, steps_per_call=steps_per_call)
    key = jax.random.key(0)
    params = field_init(key, field_cfg)
    u = ((pts - lo) / (hi - lo)).astype(jnp.float32)
    feats = hash_grid_encode(params["encoding"], u, enc)
    cot = jax.random.normal(key, (u.shape[0],), jnp.float32)

    def mlp(p, h):
        z = mlp_apply(p, h, activation=_ACTIVATIONS[field_cfg.activation], skips=field_cfg.skips,
                      compute_dtype=_COMPUTE_DTYPES[compute_dtype])[:, 0]
        return jnp.sum(z * cot)

    def closed_form(x):  # μ of a ball, so that render+grad times the marcher, not a field
        return 0.02 * jnp.maximum(1.0 - jnp.sum((x / 100.0) ** 2, -1), 0.0)

    def render(scale):
        pred = render_rays(lambda x: scale * closed_form(x), rays, lo, hi, n_samples=samples, key=jax.random.key(2))
        return jnp.sum(pred**2)

    tx = _optimizer(cfg)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)

    def adam(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    one_pass_state = [jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params), jnp.int32(0)]

    def adam_one_pass(params, m, v, count):
        return _adam_one_pass(params, m, v, grads, count, lr=1e-3, **INSTANT_NGP_ADAM)

    donated = jax.jit(adam, donate_argnums=(0, 1))
    one_pass = jax.jit(adam_one_pass, donate_argnums=(0, 1, 2))
    adam_state = [jax.tree.map(jnp.copy, params), tx.init(params)]
    one_pass_params = [jax.tree.map(jnp.copy, params)]

    def run_donated():
        adam_state[:] = donated(*adam_state)
        jax.block_until_ready(adam_state)

    def run_one_pass():
        one_pass_params[0], *one_pass_state[:] = one_pass(one_pass_params[0], *one_pass_state)
        jax.block_until_ready(one_pass_params)

    parts = {
        "encode": (jax.jit(lambda t, u: hash_grid_encode(t, u, enc)), (params["encoding"], u)),
        "encode+grad": (jax.jit(jax.grad(lambda t, u: jnp.sum(hash_grid_encode(t, u, enc) * feats))),
                        (params["encoding"], u)),
        "mlp": (jax.jit(mlp), (params["mlp"], feats)),
        "mlp+grad": (jax.jit(jax.grad(mlp, argnums=(0, 1))), (params["mlp"], feats)),
        "field+grad": (jax.jit(jax.grad(lambda p, x: jnp.sum(field_apply(p, x, field_cfg, lo=lo, hi=hi) * cot))),
                       (params, pts)),
        "render+grad": (jax.jit(jax.grad(render)), (jnp.float32(1.0),)),
        "adam": (jax.jit(adam), (params, opt_state)),
    }
    runs = {name: (lambda fn=fn, args=args: jax.block_until_ready(fn(*args))) for name, (fn, args) in parts.items()}
    runs["adam_donated"] = run_donated
    runs["adam_one_pass"] = run_one_pass
    if field_implementation == "fused":
        runs.update(fused_parts(params, u, cot, field_cfg))

    train = make_train_fn(cfg, g)
    proj = jnp.zeros((1, *g.projection_shape), jnp.float32) + 0.1
    state = [init_state(cfg, jax.random.split(key, 1), g)]

    def step():
        state[0], _ = train(state[0], proj)
        jax.block_until_ready(state[0])

    runs["step"] = step
    for run in runs.values():  # compile
        run()
    return runs


def _adam_one_pass(params, m, v, grads, count, *, lr, b1, b2, eps):
    """Adam (Kingma & Ba, 2015, Alg. 1) with bias correction, as one expression per array."""
    import jax
    import jax.numpy as jnp

    count = count + 1
    c1, c2 = 1.0 - b1 ** count.astype(jnp.float32), 1.0 - b2 ** count.astype(jnp.float32)

    def one(p, m, v, g):
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        return p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), m, v

    leaves, treedef = jax.tree.flatten(params)
    outs = [one(*a) for a in zip(leaves, jax.tree.leaves(m), jax.tree.leaves(v), jax.tree.leaves(grads))]
    p, m, v = (jax.tree.unflatten(treedef, [o[i] for o in outs]) for i in range(3))
    return p, m, v, count


def _roofline_kernel(g_ref, _zeros, out_ref, *, t, f, block, n, interpret):
    """One level (program column) of :func:`atomic_roofline`: 8 float2 adds per point."""
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    from jaxmedrf.kernels._atomics import scatter_add

    p = pl.program_id(0) * block + jnp.arange(block, dtype=jnp.int32)
    level = pl.program_id(1)
    valid = p < n
    g = plgpu.load(g_ref.at[p], mask=valid, other=0.0)
    cols = jnp.arange(f, dtype=jnp.int32)[None, :]
    for c in range(8):
        h = (p.astype(jnp.uint32) * jnp.uint32(2654435761)) ^ ((level * 8 + c).astype(jnp.uint32) * jnp.uint32(805459861))
        row = (h & jnp.uint32(t - 1)).astype(jnp.int32)
        offs = (level * t + row)[:, None] * f + cols
        scatter_add(out_ref, offs, jnp.broadcast_to(g[:, None], (block, f)), valid[:, None] & (cols >= 0), interpret)


def atomic_rows(n: int, levels: int, t: int):
    """The rows :func:`atomic_roofline` adds into: ``(levels, 8, n)`` int (the kernel's hash)."""
    import numpy as np

    p = np.arange(n, dtype=np.uint64)
    lc = np.arange(levels * 8, dtype=np.uint64).reshape(levels, 8, 1)
    h = ((p * 2654435761) & 0xFFFFFFFF) ^ ((lc * 805459861) & 0xFFFFFFFF)
    return (h & (t - 1)).astype(np.int64)


def atomic_roofline(g, *, levels: int, t: int, f: int, block: int = 128, num_warps: int = 4, interpret: bool = False):
    """``(levels, t, f)`` sums of ``g[p]`` added at ``atomic_rows`` (every feature column):
    ``levels × 8`` float``f`` atomic adds per point, nothing else."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    n = g.shape[0]
    kw = {} if interpret else {"compiler_params": plgpu.CompilerParams(num_warps=num_warps, num_stages=1)}
    out = pl.pallas_call(
        partial(_roofline_kernel, t=t, f=f, block=block, n=n, interpret=interpret),
        out_shape=jax.ShapeDtypeStruct((levels * t * f,), jnp.float32),
        grid=(pl.cdiv(n, block), levels),
        input_output_aliases={1: 0},
        interpret=interpret,
        name="atomic_roofline",
        **kw,
    )(g.astype(jnp.float32), jnp.zeros((levels * t * f,), jnp.float32))
    return out.reshape(levels, t, f)


def fused_parts(params, u, cot, field_cfg, *, interpret: bool = False, tuning=None) -> dict:
    """The fused field's kernels one by one, and the atomic roofline: ``{part: run}``; ``tuning``: a
    :class:`jaxmedrf.kernels.field.FusedTuning` (default ``DEFAULT_FUSED_TUNING``)."""
    import jax

    from jaxmedrf.fields.field import _mlp_spec
    from jaxmedrf.kernels import field as K
    from jaxmedrf.kernels.hashgrid import _table_grad

    enc, spec = field_cfg.encoding, _mlp_spec(field_cfg)
    table, w = params["encoding"], K.pack(params["mlp"])
    tuning = K.DEFAULT_FUSED_TUNING if tuning is None else tuning
    kw = dict(tuning=tuning, interpret=interpret)
    fwd = jax.jit(lambda t, w, u: K.fused_field_forward(t, w, u, enc, spec, **kw))
    fwd_f = jax.jit(lambda t, w, u: K.fused_field_forward(t, w, u, enc, spec, save_features=True, **kw))
    _, feats = fwd_f(table, w, u)
    bwd = jax.jit(lambda t, w, u, h, g: K.fused_field_backward(t, w, u, h, g, enc, spec, **kw))
    d_feat = jax.random.normal(jax.random.key(3), (u.shape[0], enc.out_dim))
    tgrad = jax.jit(lambda u, d: _table_grad(u, d, enc, tuning.hash_tuning(), interpret, table.dtype))
    roof = jax.jit(lambda g: atomic_roofline(g, levels=enc.n_levels, t=enc.table_size, f=enc.features_per_level,
                                             interpret=interpret))
    parts = {
        "fused_forward": (fwd, (table, w, u)),
        "fused_forward+features": (fwd_f, (table, w, u)),
        "fused_backward": (bwd, (table, w, u, feats, cot)),
        "table_grad": (tgrad, (u, d_feat)),
        "atomic_roofline": (roof, (cot,)),
    }
    return {name: (lambda fn=fn, args=args: jax.block_until_ready(fn(*args))) for name, (fn, args) in parts.items()}


def profile(*, field_implementation: str, hash_implementation: str, compute_dtype: str, small: bool,
            repeats: int, table_run: int = 1) -> dict:
    """One row: the step and its parts for a field implementation (``xla`` or ``fused``), hash
    implementation (XLA path only) and MLP dtype; ``table_run``: the fused field's
    :class:`jaxmedrf.kernels.field.FusedTuning` ``table_run`` (points per lane of the table
    gradient), set as the default tuning for this row."""
    from jaxmedrf.fields import FieldConfig, HashGridConfig
    from jaxmedrf.fields.field import fused_unsupported
    from jaxmedrf.kernels import pallas_supported

    setup = (dict(n=16, views=4, det=16, batch=256, samples=16) if small
             else dict(n=128, views=50, det=256, batch=8192, samples=128))
    # NAF's default encoding (finest level 512 cells, NAFConfig.field)
    enc = (HashGridConfig(n_levels=4, log2_table_size=12, finest_resolution=64) if small
           else HashGridConfig(finest_resolution=512))
    enc = dataclasses.replace(enc, implementation="level_major" if hash_implementation == "-" else hash_implementation)
    out = {"field_implementation": field_implementation, "hash_implementation": hash_implementation,
           "compute_dtype": compute_dtype, "batch_rays": setup["batch"], "n_samples": setup["samples"],
           "points": setup["batch"] * setup["samples"], "finest_resolution": enc.finest_resolution}
    if field_implementation == "fused":
        out["hash_implementation"] = "fused"
        reason = fused_unsupported(FieldConfig(encoding=enc, out_activation="softplus", compute_dtype=compute_dtype))
    else:
        reason = pallas_supported(enc) if hash_implementation == "pallas" else None
    if reason is not None:
        out["skipped"] = reason
        return out
    steps_per_call = 5
    from jaxmedrf.kernels import field as K

    default = K.DEFAULT_FUSED_TUNING
    K.DEFAULT_FUSED_TUNING = default._replace(table_run=table_run)  # read when the step is traced
    try:
        runs = build(enc, compute_dtype=compute_dtype, setup=setup, steps_per_call=steps_per_call,
                     field_implementation=field_implementation)
    finally:
        K.DEFAULT_FUSED_TUNING = default
    if field_implementation == "fused":
        out["table_run"] = table_run
    if field_implementation == "fused":  # the encode / mlp parts are the XLA path's
        runs = {k: v for k, v in runs.items() if not k.startswith(("encode", "mlp"))}
    ms = {name: 1e3 * timeit(run, repeats=repeats, warmup=0)["median_s"] for name, run in runs.items()}
    out["step_ms"] = ms.pop("step") / steps_per_call
    out["samples_per_s"] = out["points"] / (out["step_ms"] * 1e-3)
    out["parts_ms"] = ms
    out["parts_share_of_step"] = {k: v / out["step_ms"] for k, v in out["parts_ms"].items()}
    if "atomic_roofline" in ms:
        enc_adds = out["points"] * enc.n_levels * 8
        out["atomic_adds_per_s"] = enc_adds / (ms["atomic_roofline"] * 1e-3)
        out["table_grad_points_per_s_ceiling"] = out["points"] / (ms["atomic_roofline"] * 1e-3)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny field and batch for a CPU smoke run")
    ap.add_argument("--variants", nargs="+",
                    default=["xla:level_major:float32", "xla:level_major:bfloat16", "fused:-:float32",
                             "fused:-:bfloat16"],
                    help="FIELD:HASH:DTYPE[:runW], FIELD in xla|fused, HASH an XLA hash implementation or pallas; "
                         "runW: the fused table gradient with W points per lane")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 10; 2 with --small)")
    ap.add_argument("--out-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    repeats = a.repeats or (2 if a.small else 10)
    rows = []
    for variant in a.variants:
        field_impl, hash_impl, dtype, *run = variant.split(":")
        try:
            row = profile(field_implementation=field_impl, hash_implementation=hash_impl, compute_dtype=dtype,
                          small=a.small, repeats=repeats, table_run=int(run[0][3:]) if run else 1)
        except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
            row = {"variant": variant, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        payload = {"benchmark": "naf_profile", "environment": environment(), "small": a.small,
                   "setup": "naf128_50: 128^3 box, 50 views of 256^2, 8192 rays x 128 samples a step, NAF's default "
                            "field (hash grid up to 512 cells)",
                   "rows": rows}
        path = write_json("naf_profile" + ("_small" if a.small else ""), payload, a.out_dir)  # after every row
    print("wrote", path)
    return payload


if __name__ == "__main__":
    main()
