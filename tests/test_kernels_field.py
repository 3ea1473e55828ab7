"""The fused field kernel (interpret mode on CPU) equals the XLA field: values and gradients.

Reference: :func:`jaxmedrf.fields.field_apply` with ``implementation="xla"`` (the hash
encoding, tested against a NumPy loop in test_encodings.py, then ``mlp_apply``). The kernel is
called through the same ``custom_vjp`` that ``field_apply`` uses on a GPU
(``field._fused_mu`` with ``interpret=True``), so the packing of the MLP's parameters, the
partial sums of their gradients and the position gradient (taken from the XLA path) are
covered too.

Tolerances (float32): the two do the same float32 arithmetic in a different order (features
summed over corners, layers as tile products, gradients summed per block then across blocks,
table gradients by atomic adds), so values agree to 1e-5 relative and gradients to 2e-5 of
their largest entry. A bfloat16 table's gradient is rounded to bfloat16 at the end in both,
so it may differ by one unit in the last place (2^-7 relative).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedrf.fields import FieldConfig, HashGridConfig
from jaxmedrf.fields import field as F
from jaxmedrf.fields.field import field_apply, field_init
from jaxmedrf.kernels import field as K

# Two dense levels (res 4, 8) and one hashed (res 16); encoding width 6, padded to a 16 tile.
ENC = HashGridConfig(n_levels=3, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=16,
                     init_scale=1.0)  # fmt: skip
NAF_LIKE = FieldConfig(encoding=ENC, width=16, depth=4, skips=(2,), activation="leaky_relu", out_activation="softplus",
                       mu_scale=0.05)  # fmt: skip
TUNING = K.FusedTuning(block=16, bwd_block=16, table_block=16, replica_rows=512)
# the other schedules: levels unrolled in the forward, one level per table-gradient program, one point
# per lane of the table gradient (the default: 4 consecutive points)
TUNING_ALT = TUNING._replace(unroll_levels=True, table_levels=1, block=32, table_run=1)
LO, HI = jnp.array([-10.0, -12.0, -8.0]), jnp.array([10.0, 12.0, 8.0])


def _points(n=40):
    u = jax.random.uniform(jax.random.key(1), (n, 3), jnp.float32, -0.05, 1.05)
    edge = jnp.array([[0.0, 1.0, 0.5], [-0.1, 1.2, 0.3], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]], jnp.float32)
    return LO + u.at[: len(edge)].set(edge) * (HI - LO)


def _fused_apply(params, x, config, tuning=TUNING):
    """field_apply's fused branch, in interpret mode, with small blocks (masked last block)."""
    u = (x - LO) / (HI - LO)
    return _value_and_grads(lambda p, u: F._fused_mu(p["encoding"], p["mlp"], u, config, True, tuning), params, u)


def _value_and_grads(fn, params, u):
    r = jax.random.normal(jax.random.key(3), (u.shape[0],), jnp.float32)
    out, vjp = jax.vjp(fn, params, u)
    d_params, d_u = vjp(r)
    return out, d_params, d_u


def _reference(params, x, config):
    u = (x - LO) / (HI - LO)
    cfg = dataclasses.replace(config, implementation="xla")
    return _value_and_grads(lambda p, u: F._xla_mu(p, u, cfg), params, u)


def _close(got, ref, rtol, what):
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    assert np.abs(ref).max() > 0, what
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=2e-5 * np.abs(ref).max(), err_msg=what)


F1 = dataclasses.replace(NAF_LIKE, encoding=dataclasses.replace(ENC, features_per_level=1, table_dtype="bfloat16"),
                         width=32, depth=2, skips=(), activation="relu", out_activation="sigmoid", mu_scale=1.0)
F4 = dataclasses.replace(NAF_LIKE, encoding=dataclasses.replace(ENC, features_per_level=4), depth=4, skips=(1,),
                         activation="softplus", out_activation="relu")


@pytest.mark.parametrize(
    "config, tuning",
    [
        (NAF_LIKE, TUNING),
        (NAF_LIKE, TUNING_ALT),
        # F = 1, no skip, one hidden layer of 32, relu / sigmoid, bfloat16 table
        (F1, TUNING),
        # F = 4 (encoding width 12), softplus hidden layers, skip at 1, relu output
        (F4, TUNING),
    ],
    ids=["naf_loop", "naf_unrolled", "f1_bf16_relu_sigmoid", "f4_softplus_skip1"],
)
def test_interpret_matches_xla(config, tuning):
    params = field_init(jax.random.key(2), config)
    x = _points()
    ref = _reference(params, x, config)
    got = _fused_apply(params, x, config, tuning)
    _close(got[0], ref[0], 1e-5, "mu")
    table_tol = 2.0**-7 if config.encoding.table_dtype == "bfloat16" else 1e-5
    _close(got[1]["encoding"].astype(jnp.float32), ref[1]["encoding"].astype(jnp.float32), table_tol, "d table")
    assert got[1]["encoding"].dtype == params["encoding"].dtype
    for i, ((gw, gb), (rw, rb)) in enumerate(zip(got[1]["mlp"], ref[1]["mlp"])):
        _close(gw, rw, 1e-5, f"d W{i}")
        _close(gb, rb, 1e-5, f"d b{i}")
    _close(got[2], ref[2], 1e-5, "d u")
    assert float(got[0][1]) == 0.0  # outside the box: μ = 0


def test_pack_unpack_round_trip():
    params = field_init(jax.random.key(0), NAF_LIKE)["mlp"]
    spec = F._mlp_spec(NAF_LIKE)
    flat = K.pack(params)
    assert flat.shape == (K.n_params(spec),)
    for (w, b), (w2, b2) in zip(params, K.unpack(flat, spec)):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)


def test_dispatch_and_support():
    # the CPU has no Triton: "auto" takes the XLA path silently, "fused" warns once and does too
    params = field_init(jax.random.key(0), NAF_LIKE)
    x = _points(8)
    ref = field_apply(params, x, dataclasses.replace(NAF_LIKE, implementation="xla"), lo=LO, hi=HI)
    np.testing.assert_array_equal(field_apply(params, x, NAF_LIKE, lo=LO, hi=HI), ref)
    F._WARNED.clear()
    with pytest.warns(UserWarning, match="fused kernel unavailable"):
        out = field_apply(params, x, dataclasses.replace(NAF_LIKE, implementation="fused"), lo=LO, hi=HI)
    np.testing.assert_array_equal(out, ref)
    assert "backend" in F.fused_unsupported(NAF_LIKE)
    odd = dataclasses.replace(NAF_LIKE, width=24)
    assert "width 24" in K.fused_supported(odd.encoding, F._mlp_spec(odd))
    with pytest.raises(ValueError, match="implementation"):
        FieldConfig(implementation="triton")
