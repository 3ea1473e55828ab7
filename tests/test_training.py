"""The shared training module: each caller's optimiser equals the optax chain it used to build by hand
(schedule values and Adam updates, bit for bit), and train_loop's steps, tolerance, NaN stop and hook."""

import ast
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmedrf.training import INSTANT_NGP_ADAM, adam_with_schedule, lr_schedule, train_loop


# ------------------------------------------------------------------------------ optimiser
def hand_built(kind, *, lr, lr_final=None, warmup=0, n_iters, lr_decay=0.5, fraction=0.05, level=0):
    """``(schedule, Adam)`` exactly as each caller wrote them before the shared builder."""
    if kind in ("naf", "inr"):
        s = optax.warmup_cosine_decay_schedule(init_value=lr * 1e-2, peak_value=lr, warmup_steps=max(int(warmup), 1),
                                               decay_steps=max(n_iters, int(warmup) + 1), end_value=lr_final)
        return s, optax.adam(s, b1=0.9, b2=0.99, eps=1e-15)
    if kind == "smore":
        s = optax.warmup_cosine_decay_schedule(0.0, lr, min(50, n_iters // 10 + 1), max(n_iters, 2), lr_final)
        return s, optax.adam(s)
    rate = fraction ** (1.0 / max(n_iters - 1, 1))  # registration, one level
    s = optax.exponential_decay(lr * lr_decay**level, transition_steps=1, decay_rate=rate)
    return s, optax.adam(s)


def assert_same_updates(tx_a, tx_b, n_steps=40):
    """Adam updates of ``n_steps`` random gradients (of many magnitudes) are bitwise equal."""
    key = jax.random.key(3)
    params = {"w": jax.random.normal(key, (6, 5)), "b": jnp.ones((5,))}
    state_a, state_b = tx_a.init(params), tx_b.init(params)
    pa = pb = params
    for t in range(n_steps):
        g = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.fold_in(key, t), x.shape)
                                   * 10.0 ** (t % 5 - 2), params)
        ua, state_a = tx_a.update(g, state_a, pa)
        ub, state_b = tx_b.update(g, state_b, pb)
        for a, b in zip(jax.tree_util.tree_leaves(ua), jax.tree_util.tree_leaves(ub)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"step {t}")
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)


def assert_same_schedule(a, b, n_steps):
    t = jnp.arange(n_steps + 30, dtype=jnp.int32)
    np.testing.assert_array_equal(np.asarray(jax.vmap(a)(t)), np.asarray(jax.vmap(b)(t)))


@pytest.mark.parametrize("lr,lr_final,warmup,n_iters", [(1e-2, 1e-3, 50, 1500), (1e-2, 1e-3, 5, 40),
                                                        (0.0123, 7.7e-4, 0, 30), (3e-3, 2e-5, 80, 60)])
def test_naf_optimizer_is_the_instant_ngp_adam_with_warmup_and_cosine(lr, lr_final, warmup, n_iters):
    from jaxmedrf.recon.naf import NAFConfig, _optimizer

    cfg = NAFConfig(lr=lr, lr_final=lr_final, warmup=warmup, n_iters=n_iters)
    s, tx = hand_built("naf", lr=lr, lr_final=lr_final, warmup=warmup, n_iters=n_iters)
    assert_same_schedule(s, lr_schedule(lr, n_iters, final_fraction=lr_final / lr, warmup=warmup,
                                        initial_fraction=1e-2), n_iters)
    assert_same_updates(tx, _optimizer(cfg))


def test_inr_optimizer():
    from jaxmedrf.mri.inr import INRConfig, _make_train

    cfg = INRConfig(n_iters=300)
    tx, _ = _make_train(cfg, np.array([[0.0] * 3, [1.0] * 3]), np.eye(3)[None], np.ones((1, 3)), np.array([False]))
    assert_same_updates(hand_built("inr", lr=cfg.lr, lr_final=cfg.lr_final, warmup=cfg.warmup, n_iters=300)[1], tx)


@pytest.mark.parametrize("n_iters", [1, 9, 100, 1000])
def test_smore_optimizer(n_iters):
    from jaxmedrf.mri.smore import SMOREConfig, _make_train

    cfg = SMOREConfig(n_iters=n_iters).for_backend("cpu")
    s, tx = hand_built("smore", lr=cfg.lr, lr_final=cfg.lr_final, n_iters=n_iters)
    assert_same_schedule(s, lr_schedule(cfg.lr, n_iters, final_fraction=cfg.lr_final / cfg.lr,
                                        warmup=min(50, n_iters // 10 + 1)), n_iters)
    assert_same_updates(tx, _make_train(cfg)[0])


@pytest.mark.parametrize("lr,fraction,iterations,level", [(1.0, 0.05, 200, 0), (1.0, 0.05, 200, 2),
                                                          (0.7, 0.07, 40, 1), (2.5, 1.0, 1, 0)])
def test_registration_level_optimizer(lr, fraction, iterations, level):
    from jaxmedrf.registration import RegistrationConfig

    cfg = RegistrationConfig(lr=lr, lr_final_fraction=fraction, iterations=iterations)
    s, tx = hand_built("registration", lr=cfg.lr, n_iters=iterations, lr_decay=cfg.lr_decay, fraction=fraction,
                       level=level)
    lr0 = cfg.lr * cfg.lr_decay**level
    assert_same_schedule(s, lr_schedule(lr0, iterations, final_fraction=fraction, decay="exponential"), iterations)
    assert_same_updates(tx, adam_with_schedule(lr0, iterations, decay="exponential", final_fraction=fraction))


def test_schedule_end_points_and_checks():
    cos = lr_schedule(1e-2, 100, final_fraction=0.1, warmup=10, initial_fraction=0.01)
    close = lambda x: pytest.approx(x, rel=1e-5)  # noqa: E731 - float32
    assert float(cos(0)) == close(1e-4) and float(cos(10)) == close(1e-2)
    assert float(cos(55)) == close(1e-3 + 0.5 * (1e-2 - 1e-3))  # half-way down the cosine
    assert float(cos(100)) == close(1e-3) and float(cos(500)) == close(1e-3)
    exp = lr_schedule(2.0, 11, final_fraction=0.25, decay="exponential")
    assert float(exp(0)) == close(2.0) and float(exp(5)) == close(1.0) and float(exp(10)) == close(0.5)
    with pytest.raises(ValueError, match="decay"):
        lr_schedule(1.0, 10, final_fraction=0.1, decay="linear")
    with pytest.raises(ValueError, match="warm-up"):
        lr_schedule(1.0, 10, final_fraction=0.1, decay="exponential", warmup=5)
    assert INSTANT_NGP_ADAM == {"b1": 0.9, "b2": 0.99, "eps": 1e-15}


# ------------------------------------------------------------------------------ loop
def scripted(losses_of_call):
    """A ``train`` whose carry counts calls and whose losses are ``losses_of_call(call)``."""
    def train(carry, scale):
        return carry + 1, scale * np.asarray(losses_of_call(carry), np.float32)
    return train


def new_history():
    return {"step": [], "loss": [], "time_s": []}


def test_runs_chunks_until_n_iters_and_records_the_mean_loss():
    h = new_history()
    calls = train_loop(scripted(lambda c: [c, c + 1.0]), 0, (2.0,), 7, 2, h, desc="t", progress=False)
    assert calls == 4 and h["step"] == [2, 4, 6, 8]
    assert h["loss"] == [1.0, 3.0, 5.0, 7.0]  # 2 · mean(c, c + 1)
    assert len(h["time_s"]) == 4 and all(np.diff(h["time_s"]) >= 0)


def test_stops_at_tol():
    h = new_history()
    calls = train_loop(scripted(lambda c: [1.0 / (c + 1)] * 5), 0, (1.0,), 100, 5, h, desc="t", progress=False,
                       tol=0.4)
    assert calls == 3 and h["step"] == [5, 10, 15] and h["loss"][-1] <= 0.4 < h["loss"][-2]
    h = new_history()
    train_loop(scripted(lambda c: [0.0] * 5), 0, (1.0,), 20, 5, h, desc="t", progress=False)  # tol None: never
    assert h["step"] == [5, 10, 15, 20]


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_a_non_finite_loss_raises_with_its_step(bad, word):
    def losses(c):
        out = np.ones((3, 10))  # (cases, steps)
        if c == 2:
            out[1, 7:] = bad
        return out

    h = new_history()
    with pytest.raises(FloatingPointError, match=f"fit loss became {word} at step 27$"):
        train_loop(scripted(losses), 0, (1.0,), 100, 10, h, desc="fit", progress=False)
    assert h["step"] == [10, 20]  # the bad call is not recorded


def test_hook_runs_after_each_call_from_start_and_its_time_is_not_counted(capsys):
    seen = []

    def on_chunk(step, carry, loss):
        seen.append((step, carry, loss))
        time.sleep(0.2)
        return {"extra": "x"}

    h = new_history()
    carry = train_loop(scripted(lambda c: np.full((2, 10), c, np.float32)), 0, (1.0,), 50, 10, h, desc="t",
                       progress=True, start=20, chunk_loss=lambda losses: float(losses[:, -1].sum()),
                       on_chunk=on_chunk)
    assert carry == 3 and seen == [(30, 1, 0.0), (40, 2, 2.0), (50, 3, 4.0)]
    assert h["step"] == [30, 40, 50] and h["loss"] == [0.0, 2.0, 4.0]
    assert h["time_s"][-1] < 0.2, h["time_s"]  # the three sleeps (0.6 s) are excluded
    err = capsys.readouterr().err
    assert "extra=x" in err and "50/50" in err
    h = new_history()
    train_loop(scripted(lambda c: [1.0]), 0, (1.0,), 20, 10, h, desc="t", progress=False, start=20, on_chunk=on_chunk)
    assert h["step"] == [] and len(seen) == 3  # nothing left to do


def test_training_is_a_low_layer():
    tree = ast.parse(Path(__file__).parents[1].joinpath("jaxmedrf", "training.py").read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("jaxmedrf")], imported
