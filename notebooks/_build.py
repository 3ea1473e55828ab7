"""Writes the tutorial notebooks (``python notebooks/_build.py``) from the cell sources below.

Edit the notebooks HERE, then run this script: ``tests/test_notebooks.py`` checks that every
committed ``.ipynb`` equals this script's output (and has no outputs), and executes each one
with its ``parameters`` cell shrunk. Outputs are never committed.

Every notebook: a title cell (what it teaches, time on CPU/GPU, "Open in Colab" badge), a
first code cell that installs the package only inside Colab, ONE cell tagged ``parameters``
that sets every size, then sections that each end with an ``assert``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

#: The repository, written once here; every notebook's install cell and badge use it.
REPO = "https://github.com/jaxmedrf/jaxmedrf"
HERE = Path(__file__).resolve().parent


def badge(name: str) -> str:
    path = REPO.removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{name}.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def title(name: str, heading: str, teaches: str, cpu: str, gpu: str) -> str:
    return (
        f"# {heading}\n\n{badge(name)}\n\n**What it teaches:** {teaches}\n\n"
        f"**Time:** {cpu} on a 2-core CPU runtime like Colab's free one (measured); {gpu} on a GPU "
        "runtime (estimated from the H100 benchmarks, not measured in Colab; *Runtime → Change runtime "
        "type → GPU*). Every size is set in the one cell tagged `parameters`: shrink or grow them there."
    )


INSTALL = f'''# Colab only: install jaxmedrf from its repository (does nothing anywhere else).
import subprocess
import sys

REPO = "{REPO}"
if "google.colab" in sys.modules:
    packages = [f"jaxmedrf[io] @ git+{{REPO}}"]
    if subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0:
        packages.append("jax[cuda12]")  # keep JAX on the GPU after the upgrade
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)'''

IMPORTS = '''import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmedrf as jm

print("jaxmedrf", jm.__version__, "| JAX", jax.__version__, "| devices:", jax.devices())'''


# ======================================================================================
# 01 · DRRs from a CT

NB01 = [
    ("md", title(
        "01_drr_from_ct", "01 · DRRs from a CT: geometry, phantoms, DICOM, noise, exactness",
        "the scan geometry of `jaxmedrf` (TIGRE conventions: source, detector, u/v axes, detector "
        "and origin offsets, the volume box) drawn to scale; digitally reconstructed radiographs "
        "(DRRs) of the 3-D Shepp–Logan phantom and of a CT series read from DICOM with "
        "`jm.load_volume`; the MedNeRF preset; Poisson noise at several photon counts; and how "
        "exact the projector is, against analytic line integrals of the phantom.",
        "about 40 s", "under 30 s")),
    ("code", INSTALL),
    ("code", IMPORTS),
    ("params", '''N = 64                          # voxels per axis of the phantom volume (256 mm field of view)
DET = 128                       # detector pixels per side
VIEWS = 36                      # views over 360°
CT_N = 64                       # voxels per axis (in-plane) of the synthetic CT series
MEDNERF_DETECTOR = None         # None: the MedNeRF preset's 128×128 detector; an int overrides it
I0S = (1e3, 1e4, 1e5, 1e6)      # incident photons per pixel for the noise section
GRID_SIZES = (16, 32, 64, 128)  # grids of the exactness check'''),
    ("md", '''## 1. The geometry

A `jm.Geometry` holds TIGRE's fields: `DSD` (source–detector) and `DSO` (source–isocentre)
distances in mm, the detector `n_detector = (nv, nu)` pixels of `d_detector = (dv, du)` mm shifted
by `off_detector = (v, u)` mm, the volume `n_voxel = (nx, ny, nz)` of `d_voxel` mm centred at
`off_origin` (mm), and the view `angles` (rad). At angle θ the source is at
`S = DSO (cos θ, sin θ, 0)`, the detector centre at `D = (DSO − DSD)(cos θ, sin θ, 0)`, and the
detector axes are `u = (−sin θ, cos θ, 0)` (columns) and `v = (0, 0, 1)` (rows). Pixel `(r, c)`
has its centre at `D + u((c − (nu−1)/2)·du + off_u) + v((r − (nv−1)/2)·dv + off_v)`.

We draw one view at 30° with exaggerated offsets, seen from above (the x–y plane; `v` points out
of the page) and from the side (along `u`).'''),
    ("code", '''from matplotlib.patches import Rectangle

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
plt.show()'''),
    ("md", "The pixel-centre formula is the contract: `jm.pixel_rays` must end exactly where it says."),
    ("code", '''rows, cols = np.array([0, nv - 1, 7]), np.array([0, nu - 1, 3])
rays = jm.pixel_rays(g_draw, np.zeros(3, int), rows, cols)          # segments from S to each pixel centre
by_hand = D + u[None] * ((cols[:, None] - (nu - 1) / 2) * du + ou) + v[None] * ((rows[:, None] - (nv - 1) / 2) * dv + ov)
print("pixel centres (mm):\\n", np.asarray(rays.origins + rays.directions).round(2))
assert np.allclose(np.linalg.norm(S), g_draw.DSO) and np.allclose(np.linalg.norm(S - D), g_draw.DSD)
assert np.allclose(np.asarray(rays.origins + rays.directions), by_hand, atol=1e-3)'''),
    ("md", '''## 2. DRRs of the Shepp–Logan phantom

`jm.shepp_logan` is the 3-D modified Shepp–Logan phantom as ellipsoids (μ in mm⁻¹; with the
default `mu_scale=0.1` the brain-like region is water, 0.02 mm⁻¹). `jm.voxelize` samples it on
the geometry's grid; `jm.project` computes the line integrals ∫μ dl through every pixel (Siddon:
exact for piecewise-constant voxels; trilinear: ray marching).'''),
    ("code", '''g = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=FOV / N, n_detector=(DET, DET), d_detector=409.6 / DET, n_views=VIEWS)
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
assert drr.shape == (VIEWS, DET, DET) and float(drr.max()) > 0'''),
    ("md", '''## 3. DRRs of a CT series read from DICOM

A small synthetic head CT: the phantom in Hounsfield units (air −1000 HU, brain = water 0 HU) on
an anisotropic grid (slices twice as thick as the pixels), written as a DICOM series with
`jm.save_volume` (one de-identified CT image file per slice) and read back with
`jm.load_volume`, exactly as a scanner's series would be. `jm.io.attenuation_volume` turns HU
back into μ (mm⁻¹) at 60 keV.'''),
    ("code", '''import pydicom

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
assert np.allclose(ct.array, hu, atol=1.0)  # HU survive the round trip (16-bit integers)'''),
    ("md", '''### The MedNeRF preset

`jm.io.geometry_for_volume(vol, preset="mednerf")` sets up the DRRs MedNeRF trains on: 72 views
at 5° steps over 360°, a 128×128 detector, and distances scaled to the volume so that every ray
through it hits the panel. `jm.io.export_drr_pngs` writes them as 16-bit PNGs with a JSON pose per
view.'''),
    ("code", '''mu = jm.io.attenuation_volume(ct)
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
assert len(list(Path(out).glob("*.png"))) == 72 and (Path(out) / "poses.json").exists()'''),
    ("md", '''## 4. Poisson noise

A detector pixel behind a line integral `p` counts `N ~ Poisson(I0 · e^(−p))` photons; the measured
line integral is `−log(N / I0)`. Its standard deviation is about `e^(p/2) / √I0`: ten times more
photons, √10 less noise.'''),
    ("code", '''key = jax.random.key(0)
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
assert all(a > b for a, b in zip(noise_std, noise_std[1:]))  # more photons, less noise'''),
    ("md", '''## 5. How exact is the projector?

The phantom's ellipsoids have exact line integrals (the chord of a quadric):
`jm.analytic_projections`. Projecting the *voxelised* phantom differs from them by the
partial-volume error of the voxels, which halves with each refinement of the grid (first order,
dominated by the thin skull). Detector and origin offsets are on, to test them too.'''),
    ("code", '''errors = {"siddon": [], "trilinear": []}
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
assert all(e[-1] < e[0] for e in errors.values())  # finer grids are closer to the exact integrals'''),
]


# ======================================================================================
# 02 · Sparse-view CT

NB02 = [
    ("md", title(
        "02_sparse_view_ct", "02 · Sparse-view CT: FDK, SART and a neural attenuation field",
        "simulating a cone-beam scan with 25 and 50 views; reconstructing it with FDK, OS-SART and "
        "NAF (a hash-grid neural attenuation field, `jm.train_naf`); comparing them in a table of "
        "PSNR, SSIM and GMSD (`jm.metrics`), with slice plots and a time-to-quality curve; and "
        "writing the result as NIfTI and as a DICOM series.",
        "about 4 minutes (CPU-sized defaults: 48³, 200 NAF steps)",
        "a few minutes with the GPU-sized defaults (128³, 1500 NAF steps of 8192 rays; about 20 s per NAF run on an H100)")),
    ("code", INSTALL),
    ("code", IMPORTS),
    ("params", '''ACCEL = jax.default_backend() != "cpu"  # a GPU/TPU runtime gets NAF's full-size setup
N = 128 if ACCEL else 48               # voxels per axis (256 mm field of view); detector N×N
VIEWS = (25, 50)                       # sparse-view scans to compare
ITERS = 1500 if ACCEL else 200         # NAF optimisation steps
BATCH_RAYS = 8192 if ACCEL else 1024   # NAF rays per step
N_SAMPLES = 128 if ACCEL else 48       # NAF samples per ray
LOG2_TABLE = 19 if ACCEL else 15       # NAF hash-table rows per level = 2**LOG2_TABLE
SART_ITERS = 20 if ACCEL else 10       # OS-SART passes over the views
EVAL_EVERY = 100 if ACCEL else 25      # NAF steps between evaluations of the time-to-quality curve
PSNR_FLOOR = 30.0 if ACCEL else 20.0   # dB: SART and NAF must beat this with the most views'''),
    ("md", '''## 1. Simulate the scans

The unit-scale modified Shepp–Logan phantom (values in [0, 1], the scale papers report PSNR on)
on NAF's geometry: DSD 1500 mm, DSO 1000 mm, a 256 mm field of view, a 409.6 mm detector.'''),
    ("code", '''FOV = 256.0
phantom = jm.shepp_logan(radius=FOV / 2, mu_scale=1.0)


def scan(views):
    return jm.cone_beam(n_voxel=(N,) * 3, d_voxel=FOV / N, n_detector=(N, N), d_detector=409.6 / N, n_views=views)


truth = jm.voxelize(phantom, scan(1), supersample=2)
geometries = {v: scan(v) for v in VIEWS}
projections = {v: jm.project(truth, g) for v, g in geometries.items()}
fig, ax = plt.subplots(1, 3, figsize=(11, 3.5))
ax[0].imshow(truth[:, :, N // 2].T, cmap="gray", origin="lower"); ax[0].set_title("truth, axial slice")
for a, v in zip(ax[1:], VIEWS):
    a.imshow(projections[v][0], cmap="gray", origin="lower"); a.set_title(f"view 0 of {v}")
for a in ax:
    a.axis("off")
plt.show()
assert all(projections[v].shape == (v, N, N) for v in VIEWS)'''),
    ("md", '''## 2. Reconstruct: FDK, OS-SART, NAF

* **FDK** (Feldkamp–Davis–Kress): filtered backprojection for a circular cone beam, one pass.
* **OS-SART**: iterative, ordered subsets of views; a callback records PSNR and time per pass.
* **NAF**: μ(x) = s·softplus(MLP(hash-grid(x))) fitted to random detector rays by Adam.
  `eval_fn`/`eval_every` record the volume's PSNR during training (evaluation time excluded;
  compilation included in the first point).'''),
    ("code", '''def psnr(vol):
    return float(jm.metrics.psnr(vol, truth, data_range=1.0))


naf_config = jm.NAFConfig(
    field=jm.FieldConfig(encoding=jm.HashGridConfig(log2_table_size=LOG2_TABLE), out_activation="softplus"),
    n_iters=ITERS, batch_rays=BATCH_RAYS, n_samples=N_SAMPLES,
)
results, curves = {}, {}
for v in VIEWS:
    g, p = geometries[v], projections[v]
    t0 = time.perf_counter()
    results[v, "FDK"] = (jax.block_until_ready(jm.fdk(p, g).volume), time.perf_counter() - t0)

    sart_curve, t0 = [], time.perf_counter()
    sart = jm.sart(p, g, n_iters=SART_ITERS, progress=False,
                   callback=lambda it, x, res: sart_curve.append((time.perf_counter() - t0, psnr(x))))
    results[v, "SART"] = (sart.volume, time.perf_counter() - t0)

    naf = jm.train_naf(p, g, naf_config, progress=False, eval_fn=lambda vol: {"psnr": psnr(vol)}, eval_every=EVAL_EVERY)
    results[v, "NAF"] = (naf.volume, naf.history["train_seconds"])
    curves[v] = {"SART": sart_curve, "NAF": [(e["train_seconds"], e["psnr"]) for e in naf.history["eval"]]}
    print(f"{v} views: " + ", ".join(f"{m} {psnr(results[v, m][0]):.1f} dB in {results[v, m][1]:.1f} s" for m in ("FDK", "SART", "NAF")))
best = max(VIEWS)
assert results[best, "NAF"][0].shape == (N, N, N)
assert psnr(results[best, "SART"][0]) > PSNR_FLOOR and psnr(results[best, "NAF"][0]) > PSNR_FLOOR'''),
    ("md", '''## 3. Metrics table

PSNR (dB, data range 1), SSIM (true 3-D, Gaussian 11³ window) and GMSD (gradient magnitude
similarity deviation, mean over axial slices; lower is better) against the phantom.'''),
    ("code", '''from IPython.display import Markdown, display

rows = ["| views | method | PSNR (dB) ↑ | SSIM ↑ | GMSD ↓ | seconds |", "|---|---|---|---|---|---|"]
table = {}
for (v, method), (vol, seconds) in results.items():
    table[v, method] = (psnr(vol), float(jm.metrics.ssim3d(vol, truth, data_range=1.0)),
                        float(jm.metrics.gmsd(vol, truth, data_range=1.0)))
    rows.append(f"| {v} | {method} | {table[v, method][0]:.2f} | {table[v, method][1]:.3f} | {table[v, method][2]:.3f} | {seconds:.1f} |")
display(Markdown("\\n".join(rows)))
assert all(np.isfinite(m).all() and 0 <= m[2] for m in table.values())'''),
    ("md", '''With the CPU-sized defaults NAF gets only a few hundred small steps and SART is ahead; with
the GPU-sized defaults (NAF's setup) NAF reaches about 33–34 dB at 128³ and 50 views, on par with
or ahead of SART (the README's reconstruction table, measured on an H100).

## 4. Slices and the time-to-quality curve'''),
    ("code", '''methods = ("FDK", "SART", "NAF")
fig, ax = plt.subplots(len(VIEWS), 4, figsize=(13, 3.3 * len(VIEWS)), squeeze=False)
for i, v in enumerate(VIEWS):
    ax[i, 0].imshow(truth[:, :, N // 2].T, cmap="gray", origin="lower", vmin=0, vmax=0.5); ax[i, 0].set_title("truth")
    for a, m in zip(ax[i, 1:], methods):
        a.imshow(results[v, m][0][:, :, N // 2].T, cmap="gray", origin="lower", vmin=0, vmax=0.5)
        a.set_title(f"{m}, {v} views: {table[v, m][0]:.1f} dB")
for a in ax.ravel():
    a.axis("off")
plt.tight_layout(); plt.show()

plt.figure(figsize=(6, 4))
for v in VIEWS:
    for m, style in (("NAF", "-o"), ("SART", "--s")):
        t, q = zip(*curves[v][m])
        plt.plot(t, q, style, ms=3, label=f"{m}, {v} views")
    plt.axhline(table[v, "FDK"][0], color="grey", lw=0.8, ls=":")
plt.xlabel("seconds (NAF: training time incl. compilation)"); plt.ylabel("PSNR (dB)")
plt.title("time to quality (dotted: FDK)"); plt.legend(fontsize=8); plt.grid(alpha=0.3); plt.show()
assert len(curves[best]["NAF"]) >= 1 and len(curves[best]["SART"]) == SART_ITERS'''),
    ("md", '''## 5. Write the result: NIfTI and DICOM

`jm.save_volume` picks the format from the name: `.nii.gz` → NIfTI (μ in mm⁻¹), a directory →
a DICOM CT series. DICOM CT stores Hounsfield units, so we rescale the unit phantom (brain = 0.2)
to physical μ (brain = water) and convert with `jm.io.mu_to_hu`.'''),
    ("code", '''naf_vol = np.asarray(results[best, "NAF"][0])
spacing = geometries[best].d_voxel
nii = jm.save_volume(naf_vol, "naf.nii.gz", spacing=spacing, unit="mm^-1", overwrite=True)
naf_hu = np.asarray(jm.io.mu_to_hu(naf_vol * (jm.io.MU_WATER / 0.2)))
dcm = jm.save_volume(naf_hu, "naf_dicom", spacing=spacing, modality="CT", unit="HU", overwrite=True)
back_nii, back_dcm = jm.load_volume(nii), jm.load_volume(dcm)
print(nii, back_nii.shape, back_nii.unit, "|", dcm, len(list(Path(dcm).iterdir())), "files", back_dcm.unit)
assert Path(nii).is_file() and np.allclose(back_nii.array, naf_vol, atol=1e-6)
assert len(list(Path(dcm).iterdir())) == N and np.allclose(back_dcm.array, naf_hu, atol=1.0)'''),
]


# ======================================================================================
# 03 · Speed

NB03 = [
    ("md", title(
        "03_speed", "03 · Speed: the hash-grid encoding and the projector",
        "how to time JAX code properly (compile once, `block_until_ready`, median of repeats); "
        "the hash-grid encoding of `jm.fields` (three XLA formulations) against a plain "
        "one-level-at-a-time reference, forward and forward+backward; the Siddon and trilinear "
        "projectors against a naive ray-marching reference; and how to read the committed "
        "benchmark results in `benchmarks/results/*.json`.",
        "about 1.5 minutes", "under 1 minute")),
    ("code", INSTALL),
    ("code", IMPORTS),
    ("params", '''N_POINTS = (2**14, 2**16, 2**18)  # points per hash-grid encoding call
N_LEVELS = 16                      # hash-grid levels (Instant-NGP / NAF: 16)
LOG2_TABLE = 19                    # hash-table rows per level = 2**LOG2_TABLE (Instant-NGP / NAF: 19)
REPEATS = 5                        # timed repeats (the median is reported)
PROJ_SIZES = (32, 64, 96)          # volumes N³ for the projector timing
PROJ_DET = 64                      # detector pixels per side
PROJ_VIEWS = 8                     # views per projector call'''),
    ("md", '''## 1. Timing JAX correctly

JAX dispatches asynchronously and compiles on the first call of each shape, so: call once
(compile), then time several calls that each end with `jax.block_until_ready`, and report the
median.'''),
    ("code", '''DEVICE = jax.devices()[0]
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


assert timeit(jax.jit(jnp.sin), jnp.ones(8)) > 0'''),
    ("md", '''## 2. The hash-grid encoding

Instant-NGP's multiresolution hash encoding (Müller et al. 2022, Sec. 3): at each of `L` levels
a point's 8 cell corners index a table of `T` feature rows (directly while the grid fits, by a
spatial hash beyond), and the rows are interpolated trilinearly. The reference below writes
exactly that, one level and one corner at a time; `jm.fields.hash_grid_encode` computes the same
numbers with one fused gather (`implementation="fused"`, `"level_major"`, or `"per_level"`).'''),
    ("code", '''CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
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
print("all three implementations equal the reference")'''),
    ("md", '''Throughput in points per second, forward and forward + backward (the gradient with respect to
the table, what training needs). Which formulation wins depends on the device (on a CPU the
plain reference can be as fast); the committed H100 figures are read in section 4.'''),
    ("code", '''variants = {"reference": None, "fused": "fused", "level_major": "level_major", "per_level": "per_level"}
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
assert all(np.isfinite(s) and s > 0 for s in speed.values())'''),
    ("md", '''## 3. The projector

`jm.project` walks each ray voxel by voxel (Siddon, exact) or samples it at a fixed step
(trilinear), in chunks of rays. The reference is the textbook version: sample every ray at
`n` points between its box entry and exit and interpolate with
`jax.scipy.ndimage.map_coordinates` (all samples of a view in memory at once).'''),
    ("code", '''def reference_project(volume, g, n_samples):
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
assert rel < 0.03  # the reference computes the same line integrals (to the sampling error)'''),
    ("md", '''## 4. Reading `benchmarks/results/`

The benchmark scripts (`python -m benchmarks.projector`, `python -m benchmarks.reconstruct`,
`python benchmarks/hashgrid.py`, `python benchmarks/baselines.py`, each with `--small` for a
CPU smoke run) write one JSON per run: the device, JAX version and date, the configuration, and
one record per measured case. The committed ones were measured on an H100. They come with a
clone of the repository; a Colab runtime that only installed the package does not have them.'''),
    ("code", '''def find_results():
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
assert results_dir is None or len(loaded) > 0'''),
    ("code", '''import re


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
assert results_dir is None or len(panels) > 0'''),
]


# ======================================================================================
# 04 · Cohorts and devices

NB04 = [
    ("md", title(
        "04_cohort_and_devices", "04 · Cohorts, devices and checkpoints",
        "training one neural attenuation field per scan for several scans at once (`jm.train_naf` "
        "on a `(K, V, nv, nu)` stack: the training step is `vmap`-ed over the case axis); the device "
        "mesh and how arrays are sharded over it (`jm.make_mesh`, `jm.project(..., mesh=...)`, "
        "`train_naf(..., mesh=...)`); and checkpoint/resume, by interrupting a run and resuming it "
        "to the same result as an uninterrupted one.",
        "about 3 minutes (CPU-sized defaults: 32³, 3 scans, 100 steps)",
        "a few minutes with the GPU-sized defaults (128³, 4 scans, 1000 steps)")),
    ("code", INSTALL),
    ("md", '''JAX fixes its devices when it starts. On a CPU runtime we ask XLA for 4 host devices (before
importing JAX), so the sharding below is real even without accelerators; on a GPU runtime the
mesh uses the GPUs. (If JAX was already started in this kernel, restart it first.)'''),
    ("code", '''import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
''' + IMPORTS),
    ("params", '''ACCEL = jax.default_backend() != "cpu"  # a GPU/TPU runtime gets NAF's full-size setup
N = 128 if ACCEL else 32               # voxels per axis (256 mm field of view); detector N×N
VIEWS = 50 if ACCEL else 30            # views per scan
CASES = 4 if ACCEL else 3              # scans trained together
ITERS = 1000 if ACCEL else 100         # NAF steps (a multiple of 25, the steps per compiled call)
BATCH_RAYS = 8192 if ACCEL else 1024   # rays per step (must divide over the devices)
N_SAMPLES = 128 if ACCEL else 32       # samples per ray
LOG2_TABLE = 19 if ACCEL else 15       # hash-table rows per level = 2**LOG2_TABLE
N_DEVICES = 4                          # devices of the mesh (at most those JAX sees)
PSNR_FLOOR = 28.0 if ACCEL else 15.0   # dB: every case of the cohort must beat this'''),
    ("md", '''## 1. The device mesh and sharding

`jm.make_mesh(n_devices=...)` builds a 1-D `jax.sharding.Mesh` named `"batch"`. An array placed
with a `NamedSharding` that splits its first axis over `"batch"` lives in pieces, one per device;
`jit`-compiled code on it runs on every device at once and the compiler inserts the
communication (no `pmap`). `jm.project(..., mesh=mesh)` splits each chunk of rays this way, and
`train_naf(..., mesh=mesh)` splits each step's rays while the field's parameters are replicated
and their gradients summed across devices. (On a CPU runtime the forced devices share the same
cores, so splitting shows *how* it works, not a speed-up; on several GPUs each gets its share.)'''),
    ("code", '''mesh = jm.make_mesh(n_devices=min(N_DEVICES, jax.device_count()))
print(mesh)
rays_ids = jnp.arange(4 * mesh.size)
sharded = jax.device_put(rays_ids, jm.parallel.batch_sharding(mesh, ndim=1))
for shard in sharded.addressable_shards:
    print(f"{shard.device}: elements {shard.index[0].start}…{shard.index[0].stop - 1} = {np.asarray(shard.data)}")
assert len(sharded.addressable_shards) == mesh.size'''),
    ("code", '''FOV = 256.0
g = jm.cone_beam(n_voxel=(N,) * 3, d_voxel=FOV / N, n_detector=(N, N), d_detector=409.6 / N, n_views=VIEWS)
phantoms = [jm.shepp_logan(radius=FOV / 2, mu_scale=1.0), jm.spheres(radius=0.8 * FOV / 2, mu_scale=1.0),
            jm.shepp_logan(radius=0.7 * FOV / 2, mu_scale=1.0)]
truths = jnp.stack([jm.voxelize(phantoms[k % len(phantoms)], g) for k in range(CASES)])
one = jm.project(truths[0], g)
t0 = time.perf_counter(); one = jax.block_until_ready(jm.project(truths[0], g)); t_one = time.perf_counter() - t0
t0 = time.perf_counter(); split = jax.block_until_ready(jm.project(truths[0], g, mesh=mesh)); t_split = time.perf_counter() - t0
print(f"projection on 1 device {t_one:.3f} s, on {mesh.size} devices {t_split:.3f} s (after compilation); "
      f"max difference {float(jnp.abs(one - split).max()):.2e}")
assert jnp.allclose(one, split, rtol=1e-5, atol=1e-5)  # same line integrals, however the rays are split'''),
    ("md", '''## 2. A cohort: K scans, one field each, trained together

Stack the K scans' projections into `(K, V, nv, nu)`. `train_naf` gives every case its own
parameters, optimiser state and random key (all with a leading case axis) and `vmap`s the
training step over that axis: one compiled program trains all K fields, which keeps a large
accelerator busy when a single small scan would not.'''),
    ("code", '''stack = jnp.stack([jm.project(t, g) for t in truths])
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
assert cohort.volume.shape == (CASES, N, N, N) and min(psnrs) > PSNR_FLOOR'''),
    ("md", '''## 3. Checkpoint and resume

With `checkpoint_dir`, `train_naf` saves orbax checkpoints (parameters, optimiser state, step and
key) every `checkpoint_every` steps, and `config.json` beside them. `stop_after=` stops a run
early *as if it were killed*; `resume=True` continues from the newest checkpoint. The key of step
`n` is `fold_in(key, n)`, so the resumed run draws the same rays as an uninterrupted one and ends
at the same field.'''),
    ("code", '''import shutil

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
assert np.allclose(resumed.volume, uninterrupted.volume, rtol=1e-4, atol=1e-4)'''),
]


# ======================================================================================
# 05 · Registration

NB05 = [
    ("md", title(
        "05_registration", "05 · 2D/3D registration: find an X-ray's pose against a CT",
        "registering a simulated X-ray to its CT step by step with `jm.registration`: poses as "
        "SE(3) transforms (`jm.pose`), the differentiable DRR, the similarity loss (NCC) and its "
        "landscape (one `vmap` over many poses), gradient descent on se(3) coarse to fine, "
        "multi-start, the error measures (mTRE, landmark reprojection, rotation and translation "
        "error), the overlay before and after, and the same through the `jaxmedrf register` command.",
        "about 1.5 minutes", "under 1 minute")),
    ("code", INSTALL),
    ("code", IMPORTS),
    ("params", '''N = 64                  # CT voxels per axis (a 128 mm head-sized field of view)
DET = 64                # X-ray detector pixels per side
LEVELS = (4, 2, 1)      # coarse-to-fine detector downsampling factors
ITERATIONS = 150        # maximum Adam steps per level
STARTS = 8              # random starts of the multi-start run
LANDSCAPE = 41          # poses along the loss-landscape line
MTRE_MAX = 1.0          # mm: the registration must end closer than this'''),
    ("md", '''## 1. A CT, a true pose and its X-ray

An asymmetric synthetic CT (an ellipsoid body with four inserts of other attenuation, μ in
mm⁻¹), a C-arm geometry (source–detector 800 mm) and a true rig pose `T = (R, t)`: the rig
(source, detector) is rotated by `R` and moved by `t` in the CT frame. The X-ray is the DRR at the
true pose with a little Poisson noise.'''),
    ("code", '''P, R = jm.pose, jm.registration
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
assert xray.shape == (DET, DET)'''),
    ("md", '''## 2. The initial guess and the overlay before

We start 10 mm and 5° away from the truth. The overlay shows the X-ray in green and the DRR at a
pose in magenta: where they agree the image is grey. The landmarks (the CT's centre and the
corners of its central half box) are projected with `R.project_points`; the mTRE is the mean 3-D
distance of those landmarks moved by the estimated vs the true pose.'''),
    ("code", '''axis = np.array([1.0, 2.0, -1.0]) / np.sqrt(6)
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
assert mtre_before > 5.0'''),
    ("md", '''## 3. The loss and its landscape

The normalised cross-correlation loss `1 − NCC(DRR(T), X-ray)` is 0 for a perfect match (up to
noise) and insensitive to the DRR's brightness and contrast. Along a line of translations through
the truth it has a clear basin; `vmap` renders all the poses of the line in one call.'''),
    ("code", '''offsets = jnp.linspace(-30.0, 30.0, LANDSCAPE)
direction = jnp.asarray([1.0, 0.0, 0.0])


def loss_at(d):
    pose = P.Pose(truth.rotation, truth.translation + d * direction)
    return R.ncc_loss(R.drr(ct, g, pose), xray)


landscape = jax.jit(jax.vmap(loss_at))(offsets)
plt.figure(figsize=(5, 3.5))
plt.plot(offsets, landscape, "o-", ms=3); plt.axvline(0, color="k", lw=0.8)
plt.xlabel("translation along x from the true pose (mm)"); plt.ylabel("1 − NCC"); plt.title("loss landscape"); plt.show()
assert int(jnp.argmin(landscape)) in (LANDSCAPE // 2 - 1, LANDSCAPE // 2, LANDSCAPE // 2 + 1)'''),
    ("md", '''## 4. Register: gradient descent on se(3), coarse to fine

`R.register` optimises six parameters (a rotation vector in degrees and a translation in mm,
applied about the CT's centre) with Adam, through the differentiable DRR, first on a detector
downsampled by `LEVELS[0]`, then finer. Each level stops when the loss stops improving.'''),
    ("code", '''config = R.RegistrationConfig(levels=LEVELS, iterations=ITERATIONS, loss="ncc")
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
assert mtre_single < MTRE_MAX'''),
    ("md", '''## 5. Multi-start and the overlay after

Far from the truth a single start can fall into a local minimum. `R.random_perturbations` draws
K starts (the first is the initial guess itself) and `register` runs them all as one `vmap`-ed,
compiled program, keeping the start with the lowest loss.'''),
    ("code", '''starts = R.random_perturbations(jax.random.key(1), STARTS, rot_range_deg=5.0, trans_range_mm=10.0)
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
assert mtre_after < MTRE_MAX and mtre_after < mtre_before'''),
    ("md", '''## 6. The same from the command line

`jaxmedrf register` does all of the above from files: here the CT and the X-ray come from a
`jaxmedrf simulate`-style `.npz` (volume, projections and geometry), the start is perturbed by
10 mm / 5°, and the output is a JSON with the pose in every parameterisation, the errors (the
truth is known for a simulated X-ray) and a PNG.'''),
    ("code", '''import subprocess
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
assert report["errors"]["mtre_mm"] < report["initial_errors"]["mtre_mm"]'''),
]


# ======================================================================================
# 06 · MRI slice interpolation

NB06 = [
    ("md", title(
        "06_mri_slice_interpolation", "06 · MRI slice interpolation: restore removed slices",
        "the slice-interpolation protocol of `jm.mri` on the built-in T1-like brain phantom: keep "
        "every k-th slice, restore the volume with linear and cubic interpolation, an implicit "
        "neural representation (hash grid + MLP) fitted through the slice model, and the "
        "SMORE-style self-supervised CNN; score PSNR/SSIM on the removed slices only, add orthogonal "
        "stacks for the INR, and run the protocol with `jaxmedrf interpolate`.",
        "about 4 minutes", "about 1 minute")),
    ("code", INSTALL),
    ("code", IMPORTS),
    ("params", '''SHAPE = (64, 64, 40)    # phantom voxels (x, y, z)
SPACING = 2.0           # mm per voxel
K = 4                   # keep every K-th axial slice
INR_ITERS = 600         # INR optimisation steps
INR_BATCH = 8192        # acquired voxels per INR step
SMORE_ITERS = 150       # SMORE CNN steps
SMORE_FEATURES = 16     # SMORE CNN width
SMORE_PATCH = 32        # SMORE training patch side (pixels)'''),
    ("md", '''## 1. A brain phantom and a thick-slice stack

`brain_phantom` draws a T1-like head (skull, CSF, folded grey/white matter) on a fine grid with
its voxel → patient (LPS, mm) affine. `make_stack` keeps every `K`-th axial slice: that is what a
thick-slice acquisition gives us. The removed slices are what we must restore.'''),
    ("code", '''mri = jm.mri

vol, aff = mri.brain_phantom(None, SHAPE, SPACING)
axial = mri.make_stack(vol, aff, 2, K)
removed = [i for i in range(SHAPE[2]) if i % K]
print("volume", vol.shape, "kept axial slices", axial.values.shape[2], "removed", len(removed))
fig, ax = plt.subplots(1, 2, figsize=(8, 3.5))
ax[0].imshow(vol[:, :, SHAPE[2] // 2].T, cmap="gray", origin="lower"); ax[0].set_title("axial slice")
ax[1].imshow(vol[SHAPE[0] // 2].T, cmap="gray", origin="lower", aspect="auto"); ax[1].set_title("sagittal: slice axis vertical")
for a in ax:
    a.axis("off")
plt.show()
assert len(removed) > 0'''),
    ("md", '''## 2. Restore the removed slices four ways

Linear and cubic (B-spline) interpolate along the slice axis. The INR fits a continuous field
to the acquired voxels through the slice profile, as a residual over a base learned from the
stacks' own in-plane slices (`INRConfig.base="auto"`: SMORE's network for one stack, the
learned-filter fusion for several, the field alone for thick slices), then is queried on the fine
grid. These slices are thin and the base keeps them, so the field finds nothing left to fit and
the INR returns its base; `INRConfig(base="none")` shows the field alone. SMORE learns
a through-plane CNN from the stack's own in-plane slices (degraded to the slice thickness) and
applies it along the slice axis. `evaluate_interpolation` scores the removed slices only (and the
whole volume): PSNR per slice (mean ± std) and pooled over all removed voxels. The per-slice mean
is pulled up by nearly empty slices at the ends of the head; the pooled figure is the fair one.'''),
    ("code", '''inr_cfg = mri.INRConfig(n_iters=INR_ITERS, batch=INR_BATCH)
smore_cfg = mri.SMOREConfig(n_iters=SMORE_ITERS, features=SMORE_FEATURES, depth=4, patch=SMORE_PATCH, n_patches=512)
t0 = time.perf_counter()
res = mri.evaluate_interpolation(vol, aff, K, ("linear", "cubic", "inr", "smore"), inr_config=inr_cfg,
                                 smore_config=smore_cfg, key=jax.random.key(0))
print(mri.format_table(res))
print(f"{time.perf_counter() - t0:.1f} s")
pooled = {m: r["removed"]["psnr_pooled"] for m, r in res["methods"].items()}
print("pooled PSNR on the removed slices (dB):", {m: round(v, 2) for m, v in pooled.items()})
assert all(np.isfinite(v) for v in pooled.values())'''),
    ("md", '''## 3. Look at one removed slice

Truth, cubic, INR and SMORE on a removed axial slice, with their absolute errors below.'''),
    ("code", '''z = removed[len(removed) // 2]
fig, ax = plt.subplots(2, 4, figsize=(12, 6))
ax[0, 0].imshow(vol[:, :, z].T, cmap="gray", origin="lower", vmin=0, vmax=1); ax[0, 0].set_title(f"truth, slice {z}")
for i, m in enumerate(["cubic", "inr", "smore"], 1):
    rec = res["volumes"][m]
    ax[0, i].imshow(rec[:, :, z].T, cmap="gray", origin="lower", vmin=0, vmax=1); ax[0, i].set_title(m)
    ax[1, i].imshow(np.abs(rec[:, :, z] - vol[:, :, z]).T, cmap="magma", origin="lower", vmin=0, vmax=0.3)
    ax[1, i].set_title(f"|error| (pooled {pooled[m]:.1f} dB)")
for a in ax.ravel():
    a.axis("off")
plt.tight_layout(); plt.show()
assert res["volumes"]["inr"].shape == vol.shape'''),
    ("md", '''## 4. More stacks: axial + coronal + sagittal

Clinical protocols often acquire the same anatomy in several orientations. The INR takes all
stacks at once (each placed by its own affine), so each fills the others' gaps.'''),
    ("code", '''multi = mri.evaluate_interpolation(vol, aff, K, ("inr",), stack_axes=(2, 1, 0), inr_config=inr_cfg)
three = multi["methods"]["inr"]["removed"]["psnr_pooled"]
print(f"INR from 3 orthogonal stacks: {three:.2f} dB pooled on the removed axial slices "
      f"(1 stack: {pooled['inr']:.2f} dB, cubic: {pooled['cubic']:.2f} dB)")
assert np.isfinite(three)'''),
    ("md", '''## 5. The same from the command line

`jaxmedrf interpolate` reads DICOM series or NIfTI stacks (orientation kept) and writes the
restored volume; `--phantom --evaluate K` runs the protocol on the built-in phantom.'''),
    ("code", '''import subprocess

cmd = [sys.executable, "-m", "jaxmedrf.cli", "interpolate", "--phantom", "--evaluate", str(K), "--method", "cubic",
       "--report", "interp_report"]
print(" ".join(cmd[2:]))
run = subprocess.run(cmd, capture_output=True, text=True)
print(run.stdout[-1500:], run.stderr[-500:])
assert run.returncode == 0 and (Path("interp_report") / "interpolation.json").exists()'''),
]


NOTEBOOKS = {
    "01_drr_from_ct": NB01,
    "02_sparse_view_ct": NB02,
    "03_speed": NB03,
    "04_cohort_and_devices": NB04,
    "05_registration": NB05,
    "06_mri_slice_interpolation": NB06,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as an nbformat node (no outputs, deterministic cell ids)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        cell_id = f"{name[:2]}-{i:02d}"
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(source, id=cell_id)
        else:
            cell = nbformat.v4.new_code_cell(source, id=cell_id)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv=None) -> int:
    for name in NOTEBOOKS:
        (HERE / f"{name}.ipynb").write_text(render(name), encoding="utf-8")
        print("wrote", HERE / f"{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
