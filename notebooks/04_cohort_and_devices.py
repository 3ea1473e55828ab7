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
# # 04 · Cohorts, devices and checkpoints
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxmedrf/jaxmedrf/blob/main/notebooks/04_cohort_and_devices.ipynb)
#
# **What it teaches:** training one neural attenuation field per scan for several scans at once (`jm.train_naf` on a `(K, V, nv, nu)` stack: the training step is `vmap`-ed over the case axis); the device mesh and how arrays are sharded over it (`jm.make_mesh`, `jm.project(..., mesh=...)`, `train_naf(..., mesh=...)`); and checkpoint/resume, by interrupting a run and resuming it to the same result as an uninterrupted one.
#
# **Time:** about 3 minutes (CPU-sized defaults: 32³, 3 scans, 100 steps) on a 2-core CPU runtime like Colab's free one (measured); a few minutes with the GPU-sized defaults (128³, 4 scans, 1000 steps) on a GPU runtime (estimated from the H100 benchmarks, not measured in Colab; *Runtime → Change runtime type → GPU*). Every size is set in the one cell tagged `parameters`: shrink or grow them there.

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

# %% [markdown]
# JAX fixes its devices when it starts. On a CPU runtime we ask XLA for 4 host devices (before
# importing JAX), so the sharding below is real even without accelerators; on a GPU runtime the
# mesh uses the GPUs. (If JAX was already started in this kernel, restart it first.)

# %%
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
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
ACCEL = jax.default_backend() != "cpu"  # a GPU/TPU runtime gets NAF's full-size setup
N = 128 if ACCEL else 32               # voxels per axis (256 mm field of view); detector N×N
VIEWS = 50 if ACCEL else 30            # views per scan
CASES = 4 if ACCEL else 3              # scans trained together
ITERS = 1000 if ACCEL else 100         # NAF steps (a multiple of 25, the steps per compiled call)
BATCH_RAYS = 8192 if ACCEL else 1024   # rays per step (must divide over the devices)
N_SAMPLES = 128 if ACCEL else 32       # samples per ray
LOG2_TABLE = 19 if ACCEL else 15       # hash-table rows per level = 2**LOG2_TABLE
N_DEVICES = 4                          # devices of the mesh (at most those JAX sees)
PSNR_FLOOR = 28.0 if ACCEL else 15.0   # dB: every case of the cohort must beat this

# %% [markdown]
# ## 1. The device mesh and sharding
#
# `jm.make_mesh(n_devices=...)` builds a 1-D `jax.sharding.Mesh` named `"batch"`. An array placed
# with a `NamedSharding` that splits its first axis over `"batch"` lives in pieces, one per device;
# `jit`-compiled code on it runs on every device at once and the compiler inserts the
# communication (no `pmap`). `jm.project(..., mesh=mesh)` splits each chunk of rays this way, and
# `train_naf(..., mesh=mesh)` splits each step's rays while the field's parameters are replicated
# and their gradients summed across devices. (On a CPU runtime the forced devices share the same
# cores, so splitting shows *how* it works, not a speed-up; on several GPUs each gets its share.)

# %%
mesh = jm.make_mesh(n_devices=min(N_DEVICES, jax.device_count()))
print(mesh)
rays_ids = jnp.arange(4 * mesh.size)
sharded = jax.device_put(rays_ids, jm.parallel.batch_sharding(mesh, ndim=1))
for shard in sharded.addressable_shards:
    print(f"{shard.device}: elements {shard.index[0].start}…{shard.index[0].stop - 1} = {np.asarray(shard.data)}")
assert len(sharded.addressable_shards) == mesh.size

# %%
FOV = 256.0
g = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=FOV / N, n_detector=(N, N), d_detector=409.6 / N, n_views=VIEWS)
phantoms = [jm.shepp_logan(radius=FOV / 2, mu_scale=1.0), jm.spheres(radius=0.8 * FOV / 2, mu_scale=1.0),
            jm.shepp_logan(radius=0.7 * FOV / 2, mu_scale=1.0)]
truths = jnp.stack([jm.voxelize(phantoms[k % len(phantoms)], g) for k in range(CASES)])
one = jm.project(truths[0], g)
t0 = time.perf_counter(); one = jax.block_until_ready(jm.project(truths[0], g)); t_one = time.perf_counter() - t0
t0 = time.perf_counter(); split = jax.block_until_ready(jm.project(truths[0], g, mesh=mesh)); t_split = time.perf_counter() - t0
print(f"projection on 1 device {t_one:.3f} s, on {mesh.size} devices {t_split:.3f} s (after compilation); "
      f"max difference {float(jnp.abs(one - split).max()):.2e}")
assert jnp.allclose(one, split, rtol=1e-5, atol=1e-5)  # same line integrals, however the rays are split

# %% [markdown]
# ## 2. A cohort: K scans, one field each, trained together
#
# Stack the K scans' projections into `(K, V, nv, nu)`. `train_naf` gives every case its own
# parameters, optimiser state and random key (all with a leading case axis) and `vmap`s the
# training step over that axis: one compiled program trains all K fields, which keeps a large
# accelerator busy when a single small scan would not.

# %%
stack = jnp.stack([jm.project(t, g) for t in truths])
config = jm.NAFConfig(field=jm.FieldConfig(encoding=jm.HashGridConfig(log2_table_size=LOG2_TABLE), out_activation="softplus"),
                      n_iters=ITERS, batch_rays=BATCH_RAYS, n_samples=N_SAMPLES)
cohort = jm.train_naf(stack, g, config, mesh=mesh, progress=False)
psnrs = [float(jm.metrics.psnr(cohort.volume[k], truths[k], data_range=1.0)) for k in range(CASES)]
print(f"{CASES} fields in {cohort.history['train_seconds']:.1f} s (compilation included); PSNR per case:",
      [f"{p:.1f} dB" for p in psnrs])
fig, ax = plt.subplots(2, CASES, figsize=(3.3 * CASES, 6.4), squeeze=False)
for k in range(CASES):
    ax[0, k].imshow(truths[k][:, :, N // 2].T, cmap="gray", origin="lower", vmin=0, vmax=0.5); ax[0, k].set_title(f"truth {k}")
    ax[1, k].imshow(cohort.volume[k][:, :, N // 2].T, cmap="gray", origin="lower", vmin=0, vmax=0.5)
    ax[1, k].set_title(f"NAF {k}: {psnrs[k]:.1f} dB")
for a in ax.ravel():
    a.axis("off")
plt.tight_layout(); plt.show()
assert cohort.volume.shape == (CASES, N, N, N) and min(psnrs) > PSNR_FLOOR

# %% [markdown]
# ## 3. Checkpoint and resume
#
# With `checkpoint_dir`, `train_naf` saves orbax checkpoints (parameters, optimiser state, step and
# key) every `checkpoint_every` steps, and `config.json` beside them. `stop_after=` stops a run
# early *as if it were killed*; `resume=True` continues from the newest checkpoint. The key of step
# `n` is `fold_in(key, n)`, so the resumed run draws the same rays as an uninterrupted one and ends
# at the same field.

# %%
import shutil

scan0 = stack[0]
shutil.rmtree("checkpoints", ignore_errors=True)
half = ITERS // 2
interrupted = jm.train_naf(scan0, g, config, checkpoint_dir="checkpoints", checkpoint_every=half // 2,
                           stop_after=half, progress=False)
print("interrupted at step", interrupted.history["step"][-1], "| checkpoints:", sorted(p.name for p in Path("checkpoints").iterdir()))
resumed = jm.train_naf(scan0, g, config, checkpoint_dir="checkpoints", resume=True, progress=False)
uninterrupted = jm.train_naf(scan0, g, config, progress=False)
diff = float(jnp.abs(resumed.volume - uninterrupted.volume).max())
print(f"resumed vs uninterrupted: max |Δμ| = {diff:.2e} mm⁻¹; PSNR {float(jm.metrics.psnr(resumed.volume, truths[0], data_range=1.0)):.1f} dB")
fig, ax = plt.subplots(1, 3, figsize=(10, 3.4))
for a, vol, name in zip(ax, (interrupted.volume, resumed.volume, uninterrupted.volume),
                        (f"interrupted at {half}", f"resumed to {ITERS}", "uninterrupted")):
    a.imshow(vol[:, :, N // 2].T, cmap="gray", origin="lower", vmin=0, vmax=0.5); a.set_title(name); a.axis("off")
plt.tight_layout(); plt.show()
assert (Path("checkpoints") / "config.json").exists()
assert np.allclose(resumed.volume, uninterrupted.volume, rtol=1e-4, atol=1e-4)
