"""The training loop shared by the iterative fits (INR, SMORE): compiled chunks of steps, a
progress bar, the loss history and a stop on a non-finite loss."""

from __future__ import annotations

import math
import time

import jax.numpy as jnp

__all__ = ["train_loop"]


def train_loop(train, carry, data, n_iters: int, steps_per_call: int, history: dict, *, desc: str, progress: bool,
               tol: float = 0.0):
    """Calls ``train(carry, *data) -> (carry, losses)`` (``steps_per_call`` steps each) until
    ``n_iters`` steps are done or a call's mean loss is at most ``tol``, recording the mean loss of each
    call and the elapsed time in ``history``, with a tqdm bar; FloatingPointError on a non-finite loss."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iters, desc=desc, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    done = 0
    try:
        while done < n_iters:
            carry, losses = train(carry, *data)
            loss = float(jnp.mean(losses))
            done += steps_per_call
            if not math.isfinite(loss):
                raise FloatingPointError(f"{desc} loss became {loss} at step {done}")
            history["step"].append(done)
            history["loss"].append(loss)
            history["time_s"].append(time.perf_counter() - t0)
            if bar is not None:
                bar.update(steps_per_call)
                bar.set_postfix(loss=f"{loss:.3g}")
            if loss <= tol:
                break
    finally:
        if bar is not None:
            bar.close()
    return carry
