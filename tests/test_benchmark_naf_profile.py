"""benchmarks/naf_profile.py runs at tiny size on the CPU and writes every part's time."""

import json

from benchmarks import naf_profile


def test_naf_profile_small(tmp_path):
    naf_profile.main(["--small", "--variants", "xla:level_major:float32", "xla:pallas:float32", "fused:-:float32",
                      "--out-dir", str(tmp_path)])
    (path,) = tmp_path.glob("naf_profile_small_*.json")
    rows = json.loads(path.read_text())["rows"]
    xla, pallas, fused = rows
    assert set(xla["parts_ms"]) == {"encode", "encode+grad", "mlp", "mlp+grad", "field+grad", "render+grad", "adam",
                                    "adam_donated", "adam_one_pass"}
    assert xla["step_ms"] > 0 and all(v > 0 for v in xla["parts_ms"].values())
    assert xla["samples_per_s"] > 0
    assert "GPU" in pallas["skipped"]  # no GPU here: reported, not timed
    assert "backend" in fused["skipped"]


def test_atomic_roofline_sums_match_numpy():
    """The roofline kernel (interpret mode) adds each point's value at the rows ``atomic_rows`` says."""
    import numpy as np
    import jax.numpy as jnp

    n, levels, t, f = 300, 3, 64, 2
    g = np.random.default_rng(0).normal(size=n).astype(np.float32)
    out = np.asarray(naf_profile.atomic_roofline(jnp.asarray(g), levels=levels, t=t, f=f, block=128, interpret=True))
    ref = np.zeros((levels, t, f))
    rows = naf_profile.atomic_rows(n, levels, t)
    for level in range(levels):
        for c in range(8):
            np.add.at(ref[level], rows[level, c], g[:, None])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_adam_one_pass_is_optax_adam():
    """The one-pass Adam the profile times computes optax's Adam (same lr, b1, b2, eps)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxmedrf.training import INSTANT_NGP_ADAM

    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"a": jax.random.normal(k1, (5, 3)), "b": [(jnp.ones(4), jnp.zeros(2))]}
    tx = optax.adam(1e-2, **INSTANT_NGP_ADAM)
    state = tx.init(params)
    p1, m, v, count = params, jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params), jnp.int32(0)
    p0 = params
    for i in range(3):
        grads = jax.tree.map(lambda x: jnp.sin(x + i), p0)
        updates, state = tx.update(grads, state, p0)
        p0 = optax.apply_updates(p0, updates)
        grads1 = jax.tree.map(lambda x: jnp.sin(x + i), p1)
        p1, m, v, count = naf_profile._adam_one_pass(p1, m, v, grads1, count, lr=1e-2, **INSTANT_NGP_ADAM)
    for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_fused_parts_run_in_interpret_mode():
    """Every fused-field part the GPU profile times runs (Pallas interpreter, tiny field). One point per
    lane of the table gradient (``table_run=1``): the interpreter runs the default's 4-point runs 3-4x
    slower, and tests/test_kernels_field.py checks both schedules against XLA."""
    import jax
    import jax.numpy as jnp

    from jaxmedrf.fields import FieldConfig, HashGridConfig, field_init
    from jaxmedrf.kernels import field as K

    enc = HashGridConfig(n_levels=2, log2_table_size=8, base_resolution=4, finest_resolution=8)
    cfg = FieldConfig(encoding=enc, width=16, out_activation="softplus")
    params = field_init(jax.random.key(0), cfg)
    u = jax.random.uniform(jax.random.key(1), (40, 3))
    parts = naf_profile.fused_parts(params, u, jnp.ones(40), cfg, interpret=True,
                                  tuning=K.DEFAULT_FUSED_TUNING._replace(table_run=1))
    assert set(parts) == {"fused_forward", "fused_forward+features", "fused_backward", "table_grad", "atomic_roofline"}
    for run in parts.values():
        run()
