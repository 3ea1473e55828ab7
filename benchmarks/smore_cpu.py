"""SMORE on CPU: XLA's 3 × 3 convolution against the same convolution as one matrix product
(``jaxmedrf.mri.smore._conv3x3_matmul``), per training step inside a ``lax.scan`` (as
``fit_smore`` runs it) and outside one; then ``fit_smore`` with the CPU preset on the tuning
quadrant of the MNI brain (``benchmarks/interpolate.py --real``), k = 4, removed axial slices.

    python benchmarks/smore_cpu.py              # 2 CPU cores: about 2 minutes
    python benchmarks/smore_cpu.py --no-fit     # the convolution timings only

Writes ``benchmarks/results/smore_cpu_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, timeit, write_json  # noqa: E402


def conv_step_times(features: int, depth: int, batch: int, patch: int, repeats: int) -> dict:
    """Seconds per gradient step of the SMORE network with each convolution, in a scan and alone."""
    import jax
    import jax.numpy as jnp

    from jaxmedrf.mri import smore

    params = smore.cnn_init(jax.random.key(0), features, depth)
    params = [(w + 0.1 * jax.random.normal(jax.random.key(i), w.shape), b) for i, (w, b) in enumerate(params)]
    x = jax.random.normal(jax.random.key(1), (batch, patch, patch))
    out = {}
    for name, conv in (("xla_conv", smore._conv3x3_lax), ("matmul", smore._conv3x3_matmul)):
        def net(p, img, conv=conv):
            h = img[..., None]
            for i, (w, b) in enumerate(p):
                h = conv(h, w) + b
                h = jax.nn.relu(h) if i < len(p) - 1 else h
            return jnp.mean(h ** 2)

        grad = jax.grad(net)
        alone = jax.jit(grad)
        steps = 3

        @jax.jit
        def scanned(p, img):
            def body(q, _):
                return jax.tree.map(lambda a, g: a - 1e-3 * g, q, grad(q, img)), None
            return jax.lax.scan(body, p, None, length=steps)[0]

        out[name] = {"alone_s_per_step": timeit(lambda: jax.block_until_ready(alone(params, x)), repeats=repeats)["median_s"],
                     "in_scan_s_per_step": timeit(lambda: jax.block_until_ready(scanned(params, x)),
                                                  repeats=max(1, repeats // 3))["median_s"] / steps}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-fit", action="store_true", help="skip the fit on the MNI quadrant")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    import jax
    import numpy as np

    from jaxmedrf.mri.smore import ACCELERATOR_PRESET, CPU_PRESET

    env = environment()
    report = {"benchmark": "smore_cpu", "environment": env, "device": env["device"], "jax": jax.__version__,
              "date": env["date"], "conv_per_step": {}}
    for name, preset in (("accelerator_preset", ACCELERATOR_PRESET), ("cpu_preset", CPU_PRESET)):
        report["conv_per_step"][name] = {"preset": preset, **conv_step_times(
            preset["features"], preset["depth"], preset["batch"], preset["patch"], args.repeats)}
        print(name, report["conv_per_step"][name], flush=True)
    if not args.no_fit:
        from benchmarks.interpolate import TUNE_REGION, real_volumes
        from jaxmedrf.mri import SMOREConfig, interpolate, make_stack, slice_metrics
        from jaxmedrf.mri.smore import fit_smore

        vol, aff = real_volumes(False)[TUNE_REGION]
        stack = make_stack(vol, aff, 2, 4)
        removed = [i for i in range(vol.shape[2]) if i % 4]
        dr = float(np.ptp(vol))
        t = time.perf_counter()
        res = fit_smore(jax.random.key(0), stack, SMOREConfig().for_backend("cpu"))
        fit_s = time.perf_counter() - t
        from jaxmedrf.mri.smore import apply_smore

        rec = apply_smore(res, stack, vol.shape, aff)
        cub, _ = interpolate(stack, "cubic", shape=vol.shape, affine=aff)
        score = lambda r: slice_metrics(r, vol, removed, axis=2, data_range=dr)["psnr_pooled"]  # noqa: E731
        report["fit_cpu_preset"] = {"region": TUNE_REGION, "shape": list(vol.shape), "k": 4, "fit_s": fit_s,
                                    "psnr_removed_db": score(rec), "cubic_psnr_removed_db": score(cub)}
        print(report["fit_cpu_preset"], flush=True)
    path = write_json("smore_cpu", report, args.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
