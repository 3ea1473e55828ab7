# ---
# jupyter:
#   colab:
#     provenance: []
#   jupytext:
#     notebook_metadata_filter: colab,language_info,-jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown]
# # 03 · Speed: the hash-grid encoding and the projector
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxmedrf/jaxmedrf/blob/main/notebooks/03_speed.ipynb)
#
# **What it teaches:** how to time JAX code properly (compile once, `block_until_ready`, median of repeats); the hash-grid encoding of `jm.fields` (three XLA formulations) against a plain one-level-at-a-time reference, forward and forward+backward; the Siddon and trilinear projectors against a naive ray-marching reference; and how to read the committed benchmark results in `benchmarks/results/*.json`.
#
# **Time:** about 1.5 minutes on a 2-core CPU runtime like Colab's free one (measured); under 1 minute on a GPU runtime (estimated from the H100 benchmarks, not measured in Colab; *Runtime → Change runtime type → GPU*). Every size is set in the one cell tagged `parameters`: shrink or grow them there.

# %%
# Colab only: install jaxmedrf from its repository (does nothing anywhere else).
import subprocess
import sys

REPO = "https://github.com/jaxmedrf/jaxmedrf"
if "google.colab" in sys.modules:
    packages = [f"jaxmedrf[io] @ git+{REPO}"]
    if subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0:
        packages.append("jax[cuda12]")  # keep JAX on the GPU after the upgrade
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)

# %%
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmedrf as jm

print("jaxmedrf", jm.__version__, "| JAX", jax.__version__, "| devices:", jax.devices())

# %% tags=["parameters"]
N_POINTS = (2**14, 2**16, 2**18)  # points per hash-grid encoding call
N_LEVELS = 16                      # hash-grid levels (Instant-NGP / NAF: 16)
LOG2_TABLE = 19                    # hash-table rows per level = 2**LOG2_TABLE (Instant-NGP / NAF: 19)
REPEATS = 5                        # timed repeats (the median is reported)
PROJ_SIZES = (32, 64, 96)          # volumes N³ for the projector timing
PROJ_DET = 64                      # detector pixels per side
PROJ_VIEWS = 8                     # views per projector call

# %% [markdown]
# ## 1. Timing JAX correctly
#
# JAX dispatches asynchronously and compiles on the first call of each shape, so: call once
# (compile), then time several calls that each end with `jax.block_until_ready`, and report the
# median.

# %%
DEVICE = jax.devices()[0]
print("timing on", DEVICE.platform, DEVICE.device_kind)


def timeit(fn, *args, repeats=REPEATS):
    """Median wall seconds of ``fn(*args)`` after one compiling call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


assert timeit(jax.jit(jnp.sin), jnp.ones(8)) > 0

# %% [markdown]
# ## 2. The hash-grid encoding
#
# Instant-NGP's multiresolution hash encoding (Müller et al. 2022, Sec. 3): at each of `L` levels
# a point's 8 cell corners index a table of `T` feature rows (directly while the grid fits, by a
# spatial hash beyond), and the rows are interpolated trilinearly. The reference below writes
# exactly that, one level and one corner at a time; `jm.fields.hash_grid_encode` computes the same
# numbers with one fused gather (`implementation="fused"`, `"level_major"`, or `"per_level"`).

# %%
CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
PRIMES = [np.uint32(p) for p in jm.fields.HASH_PRIMES]


def reference_encode(table, x, cfg):
    """Plain jnp, level by level, corner by corner (Instant-NGP Eq. 1–4)."""
    features = []
    for level, (res, dense) in enumerate(zip(cfg.resolutions, cfg.dense_levels)):
        pos = jnp.clip(x, 0.0, 1.0) * res
        lower = jnp.clip(jnp.floor(pos), 0, res - 1)
        frac = pos - lower
        out = 0.0
        for c in CORNERS:
            i, j, k = (lower + c).astype(jnp.uint32).T
            if dense:
                row = i + j * (res + 1) + k * (res + 1) ** 2
            else:
                row = (i * PRIMES[0]) ^ (j * PRIMES[1]) ^ (k * PRIMES[2])
            row = (row & np.uint32(cfg.table_size - 1)).astype(jnp.int32)
            weight = jnp.prod(jnp.where(c == 1, frac, 1.0 - frac), axis=-1)
            out = out + weight[:, None] * table[level, row]
        features.append(out)
    return jnp.concatenate(features, axis=-1)


base = jm.HashGridConfig(n_levels=N_LEVELS, log2_table_size=LOG2_TABLE)
table = jm.fields.hash_grid_init(jax.random.key(0), base)
x = jax.random.uniform(jax.random.key(1), (max(N_POINTS), 3))
print(f"L={base.n_levels} levels, F={base.features_per_level}, T=2^{LOG2_TABLE}, resolutions {base.resolutions[0]}→{base.resolutions[-1]}, "
      f"{sum(base.dense_levels)} dense levels")
ref = jax.jit(reference_encode, static_argnums=2)(table, x[:4096], base)
for impl in ("fused", "level_major", "per_level"):
    cfg = jm.HashGridConfig(n_levels=N_LEVELS, log2_table_size=LOG2_TABLE, implementation=impl)
    np.testing.assert_allclose(jm.fields.hash_grid_encode(table, x[:4096], cfg), ref, atol=1e-6)
print("all three implementations equal the reference")

# %% [markdown]
# Throughput in points per second, forward and forward + backward (the gradient with respect to
# the table, what training needs). Which formulation wins depends on the device (on a CPU the
# plain reference can be as fast); the committed H100 figures are read in section 4.

# %%
variants = {"reference": None, "fused": "fused", "level_major": "level_major", "per_level": "per_level"}
speed = {}
for name, impl in variants.items():
    cfg = base if impl is None else jm.HashGridConfig(n_levels=N_LEVELS, log2_table_size=LOG2_TABLE, implementation=impl)
    encode = (lambda t, p, cfg=cfg: reference_encode(t, p, cfg)) if impl is None else (
        lambda t, p, cfg=cfg: jm.fields.hash_grid_encode(t, p, cfg))
    fwd = jax.jit(encode)
    fwd_bwd = jax.jit(jax.grad(lambda t, p, encode=encode: jnp.sum(jnp.sin(encode(t, p)))))
    for n in N_POINTS:
        speed[name, "forward", n] = n / timeit(fwd, table, x[:n])
        speed[name, "forward+backward", n] = n / timeit(fwd_bwd, table, x[:n])
    print(f"{name:12s} at {max(N_POINTS)} points: forward {speed[name, 'forward', max(N_POINTS)]:.2e} pts/s, "
          f"forward+backward {speed[name, 'forward+backward', max(N_POINTS)]:.2e} pts/s")
fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for a, mode in zip(ax, ("forward", "forward+backward")):
    for name in variants:
        a.loglog(N_POINTS, [speed[name, mode, n] for n in N_POINTS], "o-", label=name)
    a.set(title=f"hash grid, {mode}", xlabel="points per call", ylabel="points / s"); a.grid(alpha=0.3, which="both")
ax[0].legend(); plt.tight_layout(); plt.show()
assert all(np.isfinite(s) and s > 0 for s in speed.values())


# %% [markdown]
# ## 3. The projector
#
# `jm.project` walks each ray voxel by voxel (Siddon, exact) or samples it at a fixed step
# (trilinear), in chunks of rays. The reference is the textbook version: sample every ray at
# `n` points between its box entry and exit and interpolate with
# `jax.scipy.ndimage.map_coordinates` (all samples of a view in memory at once).

# %%
def reference_project(volume, g, n_samples):
    """Trilinear ray marching with map_coordinates, one view at a time (midpoint rule)."""
    lo, hi = jm.volume_box(g)
    rays = jm.geometry_rays(g)
    t_in, t_out = jm.box_intersect(rays, lo, hi)
    mid = (jnp.arange(n_samples) + 0.5) / n_samples

    def one_view(i):
        o, d, a, b = rays.origins[i], rays.directions[i], t_in[i], t_out[i]
        t = a[..., None] + (b - a)[..., None] * mid                                      # (nv, nu, n)
        idx = (o[..., None, :] + t[..., None] * d[..., None, :] - lo) / jnp.asarray(g.d_voxel) - 0.5
        vals = jax.scipy.ndimage.map_coordinates(volume, list(jnp.moveaxis(idx, -1, 0)), order=1, mode="constant")
        return vals.sum(-1) * (b - a) * jnp.linalg.norm(d, axis=-1) / n_samples

    return jax.lax.map(one_view, jnp.arange(g.n_views))


phantom = jm.shepp_logan(radius=128.0, mu_scale=0.1)
proj_ms = {}
for n in PROJ_SIZES:
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(PROJ_DET,) * 2, d_detector=409.6 / PROJ_DET, n_views=PROJ_VIEWS)
    vol = jm.voxelize(phantom, g)
    ref_fn = jax.jit(lambda v, g=g, n=n: reference_project(v, g, 2 * n))
    funcs = {"siddon": lambda v, g=g: jm.project(v, g, method="siddon"),
             "trilinear": lambda v, g=g: jm.project(v, g, method="trilinear"), "reference": ref_fn}
    for name, fn in funcs.items():
        proj_ms[name, n] = 1e3 * timeit(fn, vol) / PROJ_VIEWS
    rel = float(jnp.linalg.norm(ref_fn(vol) - jm.project(vol, g, method="trilinear")) / jnp.linalg.norm(ref_fn(vol)))
    print(f"{n}³: " + ", ".join(f"{k} {proj_ms[k, n]:.2f} ms/DRR" for k in funcs) + f"; reference vs trilinear {100 * rel:.2f} %")
plt.figure(figsize=(5.5, 4))
for name in ("siddon", "trilinear", "reference"):
    plt.loglog(PROJ_SIZES, [proj_ms[name, n] for n in PROJ_SIZES], "o-", label=name)
plt.xlabel("volume N (N³ voxels)"); plt.ylabel(f"ms per {PROJ_DET}² DRR"); plt.title(f"projector on {DEVICE.platform}")
plt.legend(); plt.grid(alpha=0.3, which="both"); plt.show()
assert rel < 0.03  # the reference computes the same line integrals (to the sampling error)


# %% [markdown]
# ## 4. Reading `benchmarks/results/`
#
# The benchmark scripts (`python -m benchmarks.projector`, `python -m benchmarks.reconstruct`,
# `python benchmarks/hashgrid.py`, `python benchmarks/baselines.py`, each with `--small` for a
# CPU smoke run) write one JSON per run: the device, JAX version and date, the configuration, and
# one record per measured case. The committed ones were measured on an H100. They come with a
# clone of the repository; a Colab runtime that only installed the package does not have them.

# %%
def find_results():
    here = Path.cwd().resolve()
    for root in (here, *here.parents, Path(jm.__file__).resolve().parents[1]):
        if (root / "benchmarks" / "results").is_dir():
            return root / "benchmarks" / "results"
    return None


results_dir = find_results()
loaded = {}
if results_dir is None:
    print(f"benchmarks/results/ is not here (e.g. in Colab, where only the package is installed); "
          f"clone {REPO} to read them, or browse {REPO}/tree/main/benchmarks/results")
else:
    for path in sorted(results_dir.glob("*.json")):
        loaded[path.name] = json.loads(path.read_text())
        env = loaded[path.name].get("environment", loaded[path.name])
        print(f"{path.name}: {env.get('device')} · JAX {env.get('jax_version')} · {env.get('date')}")
assert results_dir is None or len(loaded) > 0

# %%
import re


def first(prefix):  # "projector_<device>…", not "projector_kernels_…" or "projector_peers_…"
    return next((d for name, d in loaded.items() if re.match(rf"{prefix}_(nvidia|NVIDIA|cpu)", name)), None)


panels = [p for p in ("hashgrid", "projector", "reconstruct", "baselines") if first(p)]
if panels:
    fig, ax = plt.subplots(2, 2, figsize=(14, 10))
    for a in ax.ravel()[len(panels):]:
        a.axis("off")
    for a, kind in zip(ax.ravel(), panels):
        d = first(kind)
        if kind == "hashgrid":
            recs = [r for r in d["records"] if "points_per_second" in r]
            labels = [f"{r['mode'][:7]} {r['implementation']} {r['table_dtype']} {r.get('backward', '')}".strip() for r in recs]
            a.barh(range(len(recs)), [r["points_per_second"] for r in recs]); a.set_yticks(range(len(recs)), labels, fontsize=6)
            a.set(xlabel="points / s", title=f"hash grid, {d['n_points']} points")
        elif kind == "projector":
            for method in ("siddon", "trilinear"):
                recs = sorted((r for r in d["results"] if r["method"] == method and r.get("chunk_size") is None
                               and "forward_backward_ms_per_drr" in r), key=lambda r: r["n_voxel"])
                a.plot([r["n_voxel"] for r in recs], [r["forward_ms_per_drr"] for r in recs], "o-", label=f"{method} forward")
                a.plot([r["n_voxel"] for r in recs], [r["forward_backward_ms_per_drr"] for r in recs], "s--", label=f"{method} fwd+bwd")
            a.set(xlabel="N (N³ volume)", ylabel="ms per DRR", title="projector"); a.legend(fontsize=7)
        elif kind == "reconstruct":
            for r in d["results"]:
                curve = r["naf"]["curve"]
                a.plot([c["train_seconds"] for c in curve], [c["psnr3d"] for c in curve], label=r["case"])
            a.set(xlabel="training seconds", ylabel="PSNR3D (dB)", title="NAF time to quality"); a.legend(fontsize=7)
        else:
            r = d["results"][0]
            names = [m for m in r["ours"] if "psnr3d" in r["ours"][m]]
            a.bar(names, [r["ours"][m]["psnr3d"] for m in names]); a.tick_params(axis="x", labelsize=6, rotation=30)
            a.set(ylabel="PSNR3D (dB)", title=f"baselines, {r['n_voxel']}³, {r['n_views']} views")
        a.grid(alpha=0.3)
    plt.tight_layout(); plt.show()
else:
    print("no benchmark results to plot")
assert results_dir is None or len(panels) > 0
