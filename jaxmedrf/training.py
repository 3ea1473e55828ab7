"""The optimiser and the training loop shared by the fits.

* :func:`adam_with_schedule`: Adam and its learning-rate schedule (:func:`lr_schedule`: warm-up and
  cosine decay, or exponential decay) for NAF (:mod:`jaxmedrf.recon.naf`), the MRI INR and SMORE
  (:mod:`jaxmedrf.mri`) and each level of registration (:mod:`jaxmedrf.registration`).
* :func:`train_loop`: compiled chunks of steps with a progress bar, the loss history, a stop on a
  non-finite loss or at a tolerance, and a hook after each chunk (NAF's checkpoints and
  evaluations), for NAF, INR and SMORE.

A low layer: it imports nothing of jaxmedrf.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["INSTANT_NGP_ADAM", "adam_with_schedule", "lr_schedule", "train_loop"]

#: Adam's moment decays and ε of the hash-grid fields (NAF, INR), after Instant-NGP (Müller et al.,
#: "Instant Neural Graphics Primitives with a Multiresolution Hash Encoding", SIGGRAPH 2022).
INSTANT_NGP_ADAM = {"b1": 0.9, "b2": 0.99, "eps": 1e-15}

DECAYS = ("cosine", "exponential")


def lr_schedule(lr: float, n_steps: int, *, final_fraction: float, decay: str = "cosine", warmup: int = 0,
                initial_fraction: float = 0.0) -> optax.Schedule:
    r"""The learning rate of step ``t`` (0-based) of an ``n_steps``-step fit.

    ``decay="cosine"``: linear warm-up from ``lr · initial_fraction`` to ``lr`` over
    :math:`W = \max(\text{warmup}, 1)` steps, then cosine decay (Loshchilov & Hutter, "SGDR",
    ICLR 2017, Eq. 5) to ``lr · final_fraction`` at step :math:`T = \max(n_\text{steps}, W + 1)`,
    held after it:

    .. math::  \eta(t) = \eta_0 \left[\alpha + (1 - \alpha)\,\tfrac12
               \left(1 + \cos \pi \tfrac{\min(t, T) - W}{T - W}\right)\right], \quad t \ge W,

    with :math:`\eta_0` = ``lr`` and :math:`\alpha` = ``final_fraction``. This is
    ``optax.warmup_cosine_decay_schedule(lr · initial_fraction, lr, W, T, lr · final_fraction)``
    given :math:`\alpha` itself (optax divides its end value by the peak), so a caller's
    ``lr_final / lr`` reaches the schedule bit for bit.

    ``decay="exponential"`` (no warm-up): :math:`\eta(t) = \eta_0\, \alpha^{t / \max(n_\text{steps} - 1, 1)}`,
    ``lr · final_fraction`` at the last step.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if decay == "exponential":
        if warmup or initial_fraction:
            raise ValueError("the exponential decay has no warm-up (warmup=0, initial_fraction=0)")
        rate = final_fraction ** (1.0 / max(int(n_steps) - 1, 1))
        return optax.exponential_decay(lr, transition_steps=1, decay_rate=rate)
    w = max(int(warmup), 1)
    total = max(int(n_steps), w + 1)
    return optax.join_schedules(
        [optax.linear_schedule(lr * initial_fraction, lr, w),
         optax.cosine_decay_schedule(lr, total - w, alpha=final_fraction)], [w])


def adam_with_schedule(lr: float, n_steps: int, *, final_fraction: float, decay: str = "cosine", warmup: int = 0,
                       initial_fraction: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam (Kingma & Ba, ICLR 2015) with the step size of :func:`lr_schedule` (same arguments);
    ``b1``, ``b2``: decay rates of the first and second moments; ``eps``: added to the root of the
    second moment (optax's defaults; :data:`INSTANT_NGP_ADAM` for the hash-grid fields)."""
    schedule = lr_schedule(lr, n_steps, final_fraction=final_fraction, decay=decay, warmup=warmup,
                           initial_fraction=initial_fraction)
    return optax.adam(schedule, b1=b1, b2=b2, eps=eps)


def committed_like(tree: Any, like: Any) -> Any:
    """``tree`` (arrays restored from a checkpoint) with each array committed to a device only where
    the matching array of ``like`` (the fresh state) is. Orbax commits every restored array, and a
    jitted step first called with uncommitted arguments (a fresh state) is lowered and compiled again
    for committed ones; with uncommitted copies, a resume in the process that trained (after
    ``stop_after``) reuses the compiled step. The values are unchanged."""
    import jax

    def one(x, ref):
        return x if getattr(ref, "committed", True) else jnp.asarray(np.asarray(x))

    return jax.tree_util.tree_map(one, tree, like)


def _check_finite(losses, first_step: int, desc: str) -> None:
    """FloatingPointError naming the first step (counting from 0) of a chunk whose loss is not finite;
    ``losses`` hold the chunk's steps along their last axis."""
    arr = np.asarray(losses)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
    ok = np.isfinite(arr).all(0)
    if not ok.all():
        i = int(np.argmax(~ok))
        bad = arr[~np.isfinite(arr[:, i]), i][0]
        raise FloatingPointError(f"{desc} loss became {'NaN' if np.isnan(bad) else bad} at step {first_step + i}")


def train_loop(train: Callable, carry: Any, data: tuple, n_iters: int, steps_per_call: int, history: dict, *,
               desc: str, progress: bool, tol: float | None = None, start: int = 0,
               chunk_loss: Callable[[Any], float] | None = None,
               on_chunk: Callable[[int, Any, float], dict | None] | None = None) -> Any:
    """Calls ``train(carry, *data) -> (carry, losses)`` (``steps_per_call`` steps each, their losses
    along the last axis) from step ``start`` until ``n_iters`` steps are done.

    After each call:

    1. a non-finite loss raises FloatingPointError naming the step;
    2. the call's loss, ``chunk_loss(losses)`` (default: their mean), the steps done and the seconds
       elapsed are appended to ``history["loss"]``, ``["step"]`` and ``["time_s"]``, and the tqdm bar
       (``progress``) moves on;
    3. ``on_chunk(steps done, carry, loss)`` runs (checkpoints, evaluations); its time is not counted
       in ``time_s``, and the dict it returns, if any, is shown on the bar (its ``"loss"``, if any,
       in place of the default);
    4. the loop stops when the loss is at most ``tol`` (``None``: never).

    Returns:
      The last carry.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iters, initial=start, desc=desc, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    paused = 0.0  # seconds spent in on_chunk
    done = start
    try:
        while done < n_iters:
            carry, losses = train(carry, *data)
            _check_finite(losses, done, desc)
            done += steps_per_call
            loss = float(jnp.mean(losses)) if chunk_loss is None else chunk_loss(losses)
            history["step"].append(done)
            history["loss"].append(loss)
            history["time_s"].append(time.perf_counter() - t0 - paused)
            fields = {"loss": f"{loss:.3g}"}
            if bar is not None:
                bar.update(steps_per_call)
            if on_chunk is not None:
                t1 = time.perf_counter()
                fields.update(on_chunk(done, carry, loss) or {})
                paused += time.perf_counter() - t1
            if bar is not None:
                bar.set_postfix(fields)
            if tol is not None and loss <= tol:
                break
    finally:
        if bar is not None:
            bar.close()
    return carry
