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
# # 01 · DRRs from a CT: geometry, phantoms, DICOM, noise, exactness
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxmedrf/jaxmedrf/blob/main/notebooks/01_drr_from_ct.ipynb)
#
# **What it teaches:** the scan geometry of `jaxmedrf` (TIGRE conventions: source, detector, u/v axes, detector and origin offsets, the volume box) drawn to scale; digitally reconstructed radiographs (DRRs) of the 3-D Shepp–Logan phantom and of a CT series read from DICOM with `jm.load_volume`; the MedNeRF preset; Poisson noise at several photon counts; and how exact the projector is, against analytic line integrals of the phantom.
#
# **Time:** about 40 s on a 2-core CPU runtime like Colab's free one (measured); under 30 s on a GPU runtime (estimated from the H100 benchmarks, not measured in Colab; *Runtime → Change runtime type → GPU*). Every size is set in the one cell tagged `parameters`: shrink or grow them there.

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
N = 64                          # voxels per axis of the phantom volume (256 mm field of view)
DET = 128                       # detector pixels per side
VIEWS = 36                      # views over 360°
CT_N = 64                       # voxels per axis (in-plane) of the synthetic CT series
MEDNERF_DETECTOR = None         # None: the MedNeRF preset's 128×128 detector; an int overrides it
I0S = (1e3, 1e4, 1e5, 1e6)      # incident photons per pixel for the noise section
GRID_SIZES = (16, 32, 64, 128)  # grids of the exactness check

# %% [markdown]
# ## 1. The geometry
#
# A `jm.Geometry` holds TIGRE's fields: `DSD` (source–detector) and `DSO` (source–isocentre)
# distances in mm, the detector `n_detector = (nv, nu)` pixels of `d_detector = (dv, du)` mm shifted
# by `off_detector = (v, u)` mm, the volume `n_voxel = (nx, ny, nz)` of `d_voxel` mm centred at
# `off_origin` (mm), and the view `angles` (rad). At angle θ the source is at
# `S = DSO (cos θ, sin θ, 0)`, the detector centre at `D = (DSO − DSD)(cos θ, sin θ, 0)`, and the
# detector axes are `u = (−sin θ, cos θ, 0)` (columns) and `v = (0, 0, 1)` (rows). Pixel `(r, c)`
# has its centre at `D + u((c − (nu−1)/2)·du + off_u) + v((r − (nv−1)/2)·dv + off_v)`.
#
# We draw one view at 30° with exaggerated offsets, seen from above (the x–y plane; `v` points out
# of the page) and from the side (along `u`).

# %%
from matplotlib.patches import Rectangle

FOV = 256.0  # mm, the field of view of every volume below
g_draw = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=FOV / N, n_detector=(DET, DET), d_detector=409.6 / DET,
                      angles=np.deg2rad([30.0]), off_detector=(60.0, 80.0), off_origin=(60.0, -40.0, 20.0))
f = jm.view_frames(g_draw)
S, D, u, v = (np.asarray(a[0]) for a in (f.source, f.center, f.u, f.v))
(nv, nu), (dv, du), (ov, ou) = g_draw.n_detector, np.asarray(g_draw.d_detector), np.asarray(g_draw.off_detector)
lo, hi = (np.asarray(a) for a in jm.volume_box(g_draw))
grid_centre = D + ou * u + ov * v                     # centre of the pixel grid (offsets applied)
edge_u = [grid_centre - u * nu * du / 2, grid_centre + u * nu * du / 2]

fig, (top, side) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1.1, 1]})
radial = S / np.linalg.norm(S)                      # unit vector from the isocentre towards the source
t = np.linspace(0, 2 * np.pi, 400)
top.plot(g_draw.DSO * np.cos(t), g_draw.DSO * np.sin(t), ":", color="grey", lw=0.8, label="source orbit (radius DSO)")
top.add_patch(Rectangle(lo[:2], *(hi - lo)[:2], fill=False, color="C2", lw=2, label="volume box (n_voxel · d_voxel)"))
top.plot(*np.c_[edge_u[0], edge_u[1]][:2], color="C1", lw=6, label="detector (nu · du wide)")
for e in edge_u:
    top.plot(*np.c_[S, e][:2], color="C1", lw=0.6)
top.plot(*np.c_[S, D][:2], "--", color="k", lw=0.8, label="central ray S → D (length DSD)")
top.plot(*S[:2], "o", color="C3", ms=10, label="source S")
top.plot(*D[:2], "kx", ms=10, mew=2, label="detector centre D")
top.plot(0, 0, "k+", ms=14, mew=2)
top.text(-30, -60, "isocentre", fontsize=9, ha="right")
arrow = lambda ax, a, b, color: ax.annotate("", b, a, arrowprops=dict(arrowstyle="-|>", color=color, lw=2.5, mutation_scale=18))  # noqa: E731
arrow(top, D[:2], grid_centre[:2], "C4")
top.text(*(D + 0.5 * ou * u - 70 * radial)[:2], "off_u", color="C4", fontsize=12, ha="center")
arrow(top, edge_u[1][:2], (edge_u[1] + 180 * u)[:2], "C0")
top.text(*(edge_u[1] + 200 * u - 40 * radial)[:2], "u", color="C0", fontsize=16, weight="bold")
top.text(*(edge_u[0] - 60 * radial - 40 * u)[:2], "v ⊙ points out of the page", color="C0", fontsize=10, ha="center")
centre = np.asarray(g_draw.off_origin)
top.plot(*centre[:2], "o", color="C2", ms=5)
arrow(top, (0, 0), centre[:2], "C2")
top.text(*(centre[:2] + [10, -45]), "off_origin", color="C2", fontsize=10)
pts = np.array([S[:2], *[e[:2] for e in edge_u], (edge_u[1] + 220 * u)[:2], lo[:2], hi[:2]])
top.set(xlim=(pts[:, 0].min() - 150, pts[:, 0].max() + 150), ylim=(pts[:, 1].min() - 250, pts[:, 1].max() + 150))
top.set(aspect="equal", xlabel="x (mm)", ylabel="y (mm)", title="seen from above: the view at θ = 30°")
top.legend(loc="lower right", fontsize=8)

corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
s_box = corners @ radial
side.add_patch(Rectangle((s_box.min(), lo[2]), np.ptp(s_box), hi[2] - lo[2], fill=False, color="C2", lw=2))
s_det = D @ radial
side.plot([s_det, s_det], [ov - nv * dv / 2, ov + nv * dv / 2], color="C1", lw=5)
side.plot([S @ radial, s_det], [0, 0], "--", color="k", lw=0.8)
for z in (ov - nv * dv / 2, ov + nv * dv / 2):
    side.plot([S @ radial, s_det], [0, z], color="C1", lw=0.6)
side.plot(S @ radial, 0, "o", color="C3", ms=9)
arrow(side, (s_det, 0), (s_det, ov), "C4")
side.text(s_det + 20, ov / 2, "off_v", color="C4", fontsize=12)
arrow(side, (s_det - 40, ov + nv * dv / 2 - 150), (s_det - 40, ov + nv * dv / 2), "C0")
side.text(s_det - 90, ov + nv * dv / 2 - 100, "v", color="C0", fontsize=16, weight="bold")
side.plot([0], [0], "k+", ms=14, mew=2)
side.set(aspect="equal", xlabel="position along the central ray, detector → source (mm)", ylabel="z (mm)",
         title="seen from the side (looking along u)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The pixel-centre formula is the contract: `jm.pixel_rays` must end exactly where it says.

# %%
rows, cols = np.array([0, nv - 1, 7]), np.array([0, nu - 1, 3])
rays = jm.pixel_rays(g_draw, np.zeros(3, int), rows, cols)          # segments from S to each pixel centre
by_hand = D + u[None] * ((cols[:, None] - (nu - 1) / 2) * du + ou) + v[None] * ((rows[:, None] - (nv - 1) / 2) * dv + ov)
print("pixel centres (mm):\n", np.asarray(rays.origins + rays.directions).round(2))
assert np.allclose(np.linalg.norm(S), g_draw.DSO) and np.allclose(np.linalg.norm(S - D), g_draw.DSD)
assert np.allclose(np.asarray(rays.origins + rays.directions), by_hand, atol=1e-3)

# %% [markdown]
# ## 2. DRRs of the Shepp–Logan phantom
#
# `jm.shepp_logan` is the 3-D modified Shepp–Logan phantom as ellipsoids (μ in mm⁻¹; with the
# default `mu_scale=0.1` the brain-like region is water, 0.02 mm⁻¹). `jm.voxelize` samples it on
# the geometry's grid; `jm.project` computes the line integrals ∫μ dl through every pixel (Siddon:
# exact for piecewise-constant voxels; trilinear: ray marching).

# %%
g = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=FOV / N, n_detector=(DET, DET), d_detector=409.6 / DET, n_views=VIEWS)
phantom = jm.shepp_logan(radius=FOV / 2, mu_scale=0.1)
vol = jm.voxelize(phantom, g, supersample=2)
t0 = time.perf_counter()
drr = jax.block_until_ready(jm.project(vol, g, method="siddon"))
print(f"{VIEWS} Siddon DRRs of {DET}² from a {N}³ volume: {time.perf_counter() - t0:.2f} s (compilation included)")
drr_tri = jm.project(vol, g, method="trilinear")

fig, ax = plt.subplots(1, 5, figsize=(17, 3.5))
for a, img, name in zip(ax[:2], (vol[:, :, N // 2].T, vol[:, N // 2 + N // 16, :].T), ("axial slice z = 0", "coronal slice")):
    a.imshow(img, cmap="gray", origin="lower"); a.set_title(name)
for a, k in zip(ax[2:4], (0, VIEWS // 4)):
    a.imshow(drr[k], cmap="gray", origin="lower"); a.set_title(f"Siddon DRR at {np.degrees(g.angles[k]):.0f}°")
a = ax[4]
a.plot(drr[0, DET // 2], label="Siddon"); a.plot(drr_tri[0, DET // 2], "--", label="trilinear")
a.set(title="central detector row", xlabel="column u", ylabel="∫μ dl"); a.legend()
for a in ax[:4]:
    a.axis("off")
plt.tight_layout(); plt.show()
assert drr.shape == (VIEWS, DET, DET) and float(drr.max()) > 0

# %% [markdown]
# ## 3. DRRs of a CT series read from DICOM
#
# A small synthetic head CT: the phantom in Hounsfield units (air −1000 HU, brain = water 0 HU) on
# an anisotropic grid (slices twice as thick as the pixels), written as a DICOM series with
# `jm.save_volume` (one de-identified CT image file per slice) and read back with
# `jm.load_volume`, exactly as a scanner's series would be. `jm.io.attenuation_volume` turns HU
# back into μ (mm⁻¹) at 60 keV.

# %%
import pydicom

ct_grid = jm.cone_beam(n_voxel=(CT_N, CT_N, CT_N // 2), d_voxel=(FOV / CT_N, FOV / CT_N, 2 * FOV / CT_N), n_views=1)
mu_ct = jm.voxelize(jm.shepp_logan(radius=FOV / 2, mu_scale=jm.io.MU_WATER / 0.2), ct_grid, supersample=2)
hu = np.asarray(jm.io.mu_to_hu(mu_ct))
jm.save_volume(hu, "ct_series", spacing=ct_grid.d_voxel, modality="CT", unit="HU", overwrite=True)
files = sorted(Path("ct_series").glob("*"))
header = pydicom.dcmread(files[0], stop_before_pixels=True)
print(len(files), "files;", header.Modality, header.PixelSpacing, header.SliceThickness, "| PatientName:", repr(header.get("PatientName", "")))

ct = jm.load_volume("ct_series")
print("loaded:", ct.shape, "spacing", ct.spacing, "mm, axes", ct.orientation, "unit", ct.unit)
assert len(files) == CT_N // 2 and ct.shape == hu.shape
assert np.allclose(ct.array, hu, atol=1.0)  # HU survive the round trip (16-bit integers)

# %% [markdown]
# ### The MedNeRF preset
#
# `jm.io.geometry_for_volume(vol, preset="mednerf")` sets up the DRRs MedNeRF trains on: 72 views
# at 5° steps over 360°, a 128×128 detector, and distances scaled to the volume so that every ray
# through it hits the panel. `jm.io.export_drr_pngs` writes them as 16-bit PNGs with a JSON pose per
# view.

# %%
mu = jm.io.attenuation_volume(ct)
overrides = {} if MEDNERF_DETECTOR is None else {"n_detector": (MEDNERF_DETECTOR,) * 2}
g_ct = jm.io.geometry_for_volume(ct, preset="mednerf", **overrides)
print(f"MedNeRF geometry: {g_ct.n_views} views, detector {g_ct.n_detector} of {np.asarray(g_ct.d_detector).round(2)} mm, "
      f"DSO {g_ct.DSO:.0f} mm, DSD {g_ct.DSD:.0f} mm")
drr_ct = jm.project(mu, g_ct)
fig, ax = plt.subplots(1, 4, figsize=(14, 3.6))
for a, k in zip(ax, range(0, 72, 18)):
    a.imshow(drr_ct[k], cmap="gray", origin="lower"); a.set_title(f"{np.degrees(g_ct.angles[k]):.0f}°"); a.axis("off")
plt.suptitle("DRRs of the CT read from DICOM (MedNeRF preset)"); plt.tight_layout(); plt.show()
out = jm.io.export_drr_pngs(drr_ct, g_ct, "mednerf_drrs", overwrite=True)
print("wrote", len(list(Path(out).glob("*.png"))), "PNGs to", out)
assert drr_ct.shape == (72, *g_ct.n_detector)
assert len(list(Path(out).glob("*.png"))) == 72 and (Path(out) / "poses.json").exists()

# %% [markdown]
# ## 4. Poisson noise
#
# A detector pixel behind a line integral `p` counts `N ~ Poisson(I0 · e^(−p))` photons; the measured
# line integral is `−log(N / I0)`. Its standard deviation is about `e^(p/2) / √I0`: ten times more
# photons, √10 less noise.

# %%
key = jax.random.key(0)
fig, ax = plt.subplots(1, len(I0S) + 1, figsize=(3.6 * (len(I0S) + 1), 3.4))
noise_std = []
for i, (a, i0) in enumerate(zip(ax, I0S)):
    noisy = jm.poisson_noise(jax.random.fold_in(key, i), drr, i0=i0)
    noise_std.append(float(jnp.std(noisy - drr)))
    a.imshow(noisy[0], cmap="gray", origin="lower"); a.set_title(f"I0 = {i0:.0e}"); a.axis("off")
ax[-1].loglog(I0S, noise_std, "o-", label="measured std")
ax[-1].loglog(I0S, noise_std[0] * np.sqrt(I0S[0] / np.asarray(I0S)), "k--", label="∝ 1/√I0")
ax[-1].set(xlabel="I0 (photons per pixel)", ylabel="std of the noise"); ax[-1].legend()
plt.tight_layout(); plt.show()
assert all(a > b for a, b in zip(noise_std, noise_std[1:]))  # more photons, less noise

# %% [markdown]
# ## 5. How exact is the projector?
#
# The phantom's ellipsoids have exact line integrals (the chord of a quadric):
# `jm.analytic_projections`. Projecting the *voxelised* phantom differs from them by the
# partial-volume error of the voxels, which halves with each refinement of the grid (first order,
# dominated by the thin skull). Detector and origin offsets are on, to test them too.

# %%
errors = {"siddon": [], "trilinear": []}
for n in GRID_SIZES:
    gn = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=FOV / n, n_detector=(24, 32), d_detector=12.8, n_views=4,
                      off_detector=(3.0, -5.0), off_origin=(2.0, -1.0, 1.5))
    exact = jm.analytic_projections(phantom, gn)
    vol_n = jm.voxelize(phantom, gn, supersample=3)
    for method in errors:
        p = jm.project(vol_n, gn, method=method)
        errors[method].append(float(jnp.linalg.norm(p - exact) / jnp.linalg.norm(exact)))
    print(f"{n:4d}³: " + ", ".join(f"{m} {100 * e[-1]:.1f} %" for m, e in errors.items()))
plt.figure(figsize=(5, 4))
for method, e in errors.items():
    plt.loglog(GRID_SIZES, e, "o-", label=method)
plt.loglog(GRID_SIZES, errors["siddon"][0] * GRID_SIZES[0] / np.asarray(GRID_SIZES), "k--", label="first order (∝ 1/n)")
plt.xlabel("voxels per axis n"); plt.ylabel("relative L2 error vs analytic"); plt.legend(); plt.grid(True, which="both", alpha=0.3)
plt.title("voxelised phantom vs exact line integrals"); plt.show()
assert all(e[-1] < e[0] for e in errors.values())  # finer grids are closer to the exact integrals
