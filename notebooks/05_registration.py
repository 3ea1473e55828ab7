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
# # 05 · 2D/3D registration: find an X-ray's pose against a CT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxmedrf/jaxmedrf/blob/main/notebooks/05_registration.ipynb)
#
# **What it teaches:** registering a simulated X-ray to its CT step by step with `jm.registration`: poses as SE(3) transforms (`jm.pose`), the differentiable DRR, the similarity loss (NCC) and its landscape (one `vmap` over many poses), gradient descent on se(3) coarse to fine, multi-start, the error measures (mTRE, landmark reprojection, rotation and translation error), the overlay before and after, and the same through the `jaxmedrf register` command.
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
N = 64                  # CT voxels per axis (a 128 mm head-sized field of view)
DET = 64                # X-ray detector pixels per side
LEVELS = (4, 2, 1)      # coarse-to-fine detector downsampling factors
ITERATIONS = 150        # maximum Adam steps per level
STARTS = 8              # random starts of the multi-start run
LANDSCAPE = 41          # poses along the loss-landscape line
MTRE_MAX = 1.0          # mm: the registration must end closer than this

# %% [markdown]
# ## 1. A CT, a true pose and its X-ray
#
# An asymmetric synthetic CT (an ellipsoid body with four inserts of other attenuation, μ in
# mm⁻¹), a C-arm geometry (source–detector 800 mm) and a true rig pose `T = (R, t)`: the rig
# (source, detector) is rotated by `R` and moved by `t` in the CT frame. The X-ray is the DRR at the
# true pose with a little Poisson noise.

# %%
P, R = jm.pose, jm.registration
D_VOX = 128.0 / N
x = (np.arange(N) - (N - 1) / 2) * D_VOX
X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
r = 64.0
ct = 0.02 * ((X / (0.9 * r)) ** 2 + (Y / (0.75 * r)) ** 2 + (Z / (0.95 * r)) ** 2 < 1)
for c, rad, mu in [((0.3, 0.2, 0.1), 0.25, 0.03), ((-0.35, -0.1, 0.3), 0.18, 0.04),
                   ((0.0, -0.3, -0.4), 0.2, -0.01), ((-0.1, 0.35, -0.2), 0.12, 0.05)]:
    ct = ct + mu * (((X - c[0] * r) ** 2 + (Y - c[1] * r) ** 2 + (Z - c[2] * r) ** 2) < (rad * r) ** 2)
ct = jnp.asarray(ct, jnp.float32)

g = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=D_VOX, n_detector=(DET, DET), d_detector=256.0 / DET, DSD=800.0, DSO=400.0, n_views=1)
truth = P.se3_exp(jnp.asarray([0.1, -0.05, 0.2, 3.0, -2.0, 4.0]))  # (rotation vector rad, translation mm)
xray = jm.poisson_noise(jax.random.key(0), R.drr(ct, g, truth), i0=1e5)
print("true pose: Euler ZYX (deg)", np.degrees(np.asarray(P.matrix_to_euler(truth.rotation))).round(2),
      "translation (mm)", np.asarray(truth.translation).round(2))
fig, ax = plt.subplots(1, 2, figsize=(8, 3.8))
ax[0].imshow(ct[:, :, N // 2].T, cmap="gray", origin="lower"); ax[0].set_title("CT, axial slice")
ax[1].imshow(xray, cmap="gray", origin="lower"); ax[1].set_title("X-ray (DRR at the true pose + noise)")
for a in ax:
    a.axis("off")
plt.show()
assert xray.shape == (DET, DET)

# %% [markdown]
# ## 2. The initial guess and the overlay before
#
# We start 10 mm and 5° away from the truth. The overlay shows the X-ray in green and the DRR at a
# pose in magenta: where they agree the image is grey. The landmarks (the CT's centre and the
# corners of its central half box) are projected with `R.project_points`; the mTRE is the mean 3-D
# distance of those landmarks moved by the estimated vs the true pose.

# %%
axis = np.array([1.0, 2.0, -1.0]) / np.sqrt(6)
shift = np.array([1.0, -1.0, 1.0]) / np.sqrt(3)
init = P.compose(P.Pose(P.so3_exp(jnp.asarray(axis * np.radians(5.0), jnp.float32)), jnp.asarray(shift * 10.0, jnp.float32)), truth)
landmarks = R.default_landmarks(g)


def overlay(ax, pose, name):
    drr = R.drr(ct, g, pose)
    norm = lambda im: (im - im.min()) / (im.max() - im.min())  # noqa: E731
    ax.imshow(np.stack([norm(drr), norm(xray), norm(drr)], -1), origin="lower")
    _, true_px = R.project_points(landmarks, g, truth)
    _, est_px = R.project_points(landmarks, g, pose)
    ax.plot(true_px[:, 1], true_px[:, 0], "g+", ms=10, label="landmarks, true pose")
    ax.plot(est_px[:, 1], est_px[:, 0], "mx", ms=7, label="landmarks, this pose")
    mtre = float(R.mean_target_registration_error(pose, truth, landmarks))
    ax.set_title(f"{name}: mTRE {mtre:.2f} mm"); ax.axis("off")
    return mtre


fig, ax = plt.subplots(figsize=(4.5, 4.5))
mtre_before = overlay(ax, init, "before")
ax.legend(fontsize=7, loc="lower right"); plt.show()
print(f"initial errors: rotation {float(R.rotation_error_deg(init, truth)):.2f}°, translation {float(R.translation_error_mm(init, truth)):.2f} mm")
assert mtre_before > 5.0

# %% [markdown]
# ## 3. The loss and its landscape
#
# The normalised cross-correlation loss `1 − NCC(DRR(T), X-ray)` is 0 for a perfect match (up to
# noise) and insensitive to the DRR's brightness and contrast. Along a line of translations through
# the truth it has a clear basin; `vmap` renders all the poses of the line in one call.

# %%
offsets = jnp.linspace(-30.0, 30.0, LANDSCAPE)
direction = jnp.asarray([1.0, 0.0, 0.0])


def loss_at(d):
    pose = P.Pose(truth.rotation, truth.translation + d * direction)
    return R.ncc_loss(R.drr(ct, g, pose), xray)


landscape = jax.jit(jax.vmap(loss_at))(offsets)
plt.figure(figsize=(5, 3.5))
plt.plot(offsets, landscape, "o-", ms=3); plt.axvline(0, color="k", lw=0.8)
plt.xlabel("translation along x from the true pose (mm)"); plt.ylabel("1 − NCC"); plt.title("loss landscape"); plt.show()
assert int(jnp.argmin(landscape)) in (LANDSCAPE // 2 - 1, LANDSCAPE // 2, LANDSCAPE // 2 + 1)

# %% [markdown]
# ## 4. Register: gradient descent on se(3), coarse to fine
#
# `R.register` optimises six parameters (a rotation vector in degrees and a translation in mm,
# applied about the CT's centre) with Adam, through the differentiable DRR, first on a detector
# downsampled by `LEVELS[0]`, then finer. Each level stops when the loss stops improving.

# %%
config = R.RegistrationConfig(levels=LEVELS, iterations=ITERATIONS, loss="ncc")
single = R.register(ct, g, xray, init, config=config)
est = P.Pose(jnp.asarray(single.pose.rotation, jnp.float32), jnp.asarray(single.pose.translation, jnp.float32))
mtre_single = float(R.mean_target_registration_error(est, truth, landmarks))
reproj_mm, reproj_px = R.reprojection_error(est, truth, landmarks, g)
print(f"{single.time_s:.1f} s (compilation included), iterations per level {single.iterations[0].tolist()}, final loss {single.loss:.2e}")
print(f"mTRE {mtre_single:.3f} mm | reprojection {float(reproj_mm):.3f} mm = {float(reproj_px):.3f} px | "
      f"rotation {float(R.rotation_error_deg(est, truth)):.3f}° | translation {float(R.translation_error_mm(est, truth)):.3f} mm")
plt.figure(figsize=(5, 3.5))
for level, f in enumerate(LEVELS):
    plt.semilogy(single.history[0, level], label=f"level ×{f}")
plt.xlabel("iteration"); plt.ylabel("1 − NCC"); plt.legend(); plt.title("loss per level"); plt.show()
assert mtre_single < MTRE_MAX

# %% [markdown]
# ## 5. Multi-start and the overlay after
#
# Far from the truth a single start can fall into a local minimum. `R.random_perturbations` draws
# K starts (the first is the initial guess itself) and `register` runs them all as one `vmap`-ed,
# compiled program, keeping the start with the lowest loss.

# %%
starts = R.random_perturbations(jax.random.key(1), STARTS, rot_range_deg=5.0, trans_range_mm=10.0)
multi = R.register(ct, g, xray, init, config=config, starts=starts)
poses = P.Pose(jnp.asarray(multi.poses.rotation, jnp.float32), jnp.asarray(multi.poses.translation, jnp.float32))
mtres = np.asarray(R.mean_target_registration_error(poses, truth, landmarks))
print(f"{STARTS} starts in {multi.time_s:.1f} s; best start {multi.best_start}; mTRE per start (mm):", mtres.round(2))
print(f"success rate (mTRE < 1 mm): {R.success_rate(mtres, 1.0):.0%}")
best = P.Pose(jnp.asarray(multi.pose.rotation, jnp.float32), jnp.asarray(multi.pose.translation, jnp.float32))
fig, ax = plt.subplots(1, 2, figsize=(9, 4.5))
overlay(ax[0], init, "before")
mtre_after = overlay(ax[1], best, "after")
ax[1].legend(fontsize=7, loc="lower right"); plt.tight_layout(); plt.show()
assert mtre_after < MTRE_MAX and mtre_after < mtre_before

# %% [markdown]
# ## 6. The same from the command line
#
# `jaxmedrf register` does all of the above from files: here the CT and the X-ray come from a
# `jaxmedrf simulate`-style `.npz` (volume, projections and geometry), the start is perturbed by
# 10 mm / 5°, and the output is a JSON with the pose in every parameterisation, the errors (the
# truth is known for a simulated X-ray) and a PNG.

# %%
import subprocess
import sys

g_sim = g.replace(angles=np.zeros(1), rotation=np.asarray(truth.rotation)[None], translation=np.asarray(truth.translation)[None])
np.savez("scan.npz", projections=np.asarray(xray)[None], angles=np.zeros(1), volume=np.asarray(ct), geometry=g_sim.to_json())
cmd = [sys.executable, "-m", "jaxmedrf.cli", "register", "--volume", "scan.npz", "--xray", "scan.npz",
       "--perturb-mm", "10", "--perturb-deg", "5", "--levels", *map(str, LEVELS), "--iterations", str(ITERATIONS),
       "--no-progress", "--out", "pose.json"]
print(" ".join(cmd[2:]))
run = subprocess.run(cmd, capture_output=True, text=True)
print(run.stdout[-1000:], run.stderr[-1000:])
assert run.returncode == 0 and Path("pose.json").exists() and Path("pose.png").exists()
report = json.loads(Path("pose.json").read_text())
print("pose: Euler ZYX (deg)", np.round(report["pose"]["euler_zyx_intrinsic_deg"], 2), "translation (mm)", np.round(report["pose"]["translation_mm"], 2))
for when in ("initial_errors", "errors"):
    print(f"{when:15s}", {k: round(v, 3) for k, v in report[when].items() if isinstance(v, float)})
from IPython.display import Image, display

display(Image("pose.png"))
assert report["errors"]["mtre_mm"] < report["initial_errors"]["mtre_mm"]
