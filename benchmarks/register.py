"""Benchmark: 2D/3D registration of DRRs at random true poses (issue 10).

For each phantom (the 3D Shepp–Logan of :mod:`jaxmedrf.phantoms` when available, and a
synthetic CT with soft tissue, lungs, spine and ribs built here), ``--trials`` true rig poses
are drawn (a random gantry angle plus a random offset of up to ±10° / ±10 mm), their DRRs
rendered, and registration starts from the true pose offset by a uniform error of up to
``±--init-deg`` per rotation-vector component and ``±--init-mm`` per translation component
(about the volume centre). Each trial runs single-start and ``--starts``-start registration
(pruned multi-start: the ``K`` starts share the ``--multi-levels`` coarsest levels in one
``vmap``-ed program, then the best continues alone; ``--multi-levels 0`` runs every start on
every level, the costly variant) and, where it imports, the same registration through
nanodrr's ``Registration`` module (:class:`NanoDRR`; single start, the same schedule).
Phantoms take turns trial by trial, so a time budget (``--budget-s``) is shared fairly.
Reported per setting: success rate (mTRE < 1 mm), median/mean mTRE, median time per
registration (compilation excluded: :func:`jaxmedrf.registration.register` compiles once per
shapes and settings, ahead of time, and reports that time as ``compile_s``, recorded here
apart). nanodrr runs in the same process when importable; otherwise the reason is recorded.
Stubs: torchio (imported by nanodrr only for file loading) is replaced by an empty module
when it does not import, as ``benchmarks/peers/common.py`` does, and listed in the JSON.

Writes ``benchmarks/results/register_<device>_<date>.json`` after every trial (so a run that is
cut short still leaves its results) and, at the end, a PNG (mTRE before vs after).

    python benchmarks/register.py                  # GPU: 100 trials, 128³, 128² detector, 8 starts
    python benchmarks/register.py --budget-s 170   # stop starting trials after 170 s
    python benchmarks/register.py --small --out-dir /tmp/x   # CPU smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # nanodrr (torch) shares the GPU
if str(Path(__file__).resolve().parent.parent) not in sys.path:  # `python benchmarks/register.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np

import jaxmedrf as jm
from jaxmedrf import pose as P
from jaxmedrf import registration as R
from jaxmedrf._files import atomic_path


def synthetic_ct(n: int, d: float) -> np.ndarray:
    """A torso-like CT in μ (mm⁻¹): soft-tissue ellipse, two lungs, a spine and ribs (bone)."""
    mu_water, mu_bone, mu_lung = 0.019, 0.045, 0.005
    x = (np.arange(n) - (n - 1) / 2) * d
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r = n * d / 2
    body = (X / (0.85 * r)) ** 2 + (Y / (0.6 * r)) ** 2 < 1
    vol = mu_water * body * (np.abs(Z) < 0.9 * r)
    for sx in (-1, 1):  # lungs
        lung = ((X - sx * 0.38 * r) / (0.3 * r)) ** 2 + ((Y + 0.02 * r) / (0.38 * r)) ** 2 + (Z / (0.7 * r)) ** 2 < 1
        vol = np.where(lung, mu_lung, vol)
    spine = (X / (0.09 * r)) ** 2 + ((Y - 0.4 * r) / (0.09 * r)) ** 2 < 1
    vertebrae = np.cos(Z / (0.09 * r) * math.pi) > -0.6  # discs between vertebral bodies
    vol = np.where(spine & vertebrae & (np.abs(Z) < 0.9 * r), mu_bone, vol)
    rho = np.sqrt((X / 0.8) ** 2 + (Y / 0.56) ** 2)
    for z0 in np.linspace(-0.6 * r, 0.6 * r, 7):  # ribs: thin elliptical shells
        rib = (np.abs(rho - 0.95 * r) < 0.04 * r) & (np.abs(Z - z0 - 0.1 * Y) < 0.035 * r) & (Y > -0.3 * r)
        vol = np.where(rib, mu_bone, vol)
    sternum = (np.abs(X) < 0.05 * r) & (np.abs(Y + 0.57 * r) < 0.03 * r) & (np.abs(Z) < 0.4 * r)
    return np.where(sternum, mu_bone, vol).astype(np.float32)


def make_phantom(name: str, grid):
    if name == "synthetic-ct":
        return synthetic_ct(grid.n_voxel[0], float(np.asarray(grid.d_voxel)[0])), None
    try:
        from jaxmedrf import phantoms
    except ImportError as e:
        return None, f"jaxmedrf.phantoms not importable: {e}"
    r = 0.5 * grid.n_voxel[0] * float(np.asarray(grid.d_voxel)[0])
    ph = phantoms.shepp_logan(radius=0.95 * r, mu_scale=0.05) if name == "shepp-logan" else phantoms.spheres(radius=0.95 * r, mu_scale=0.05)
    return np.asarray(phantoms.voxelize(ph, grid), np.float32), None


def random_offset(rng, rot_deg, trans_mm, pivot):
    """``C ∘ exp(ξ) ∘ C⁻¹`` with ξ uniform in ±rot_deg (per rotation-vector component), ±trans_mm."""
    xi = np.concatenate([np.radians(rng.uniform(-rot_deg, rot_deg, 3)), rng.uniform(-trans_mm, trans_mm, 3)])
    d = P.se3_exp(jnp.asarray(xi, jnp.float32))
    c = P.Pose(jnp.eye(3), jnp.asarray(pivot, jnp.float32))
    return P.compose(c, P.compose(d, P.inverse(c)))


class NanoDRR:
    """The same registrations through nanodrr's ``Registration`` module (its fused Triton DRR on
    CUDA, its ``grid_sample`` DRR elsewhere) and its ``NormalizedCrossCorrelation2d``.

    nanodrr ships the differentiable module (a pose perturbation ``(so3_log rotation, mm)``
    about the isocentre) and leaves the loop to the user; the loop here mirrors ours: the
    same levels (``rescale_`` of the intrinsics, target block-averaged), Adam with the same
    step sizes (``lr`` degrees ≈ ``lr·π/180`` rad, ``lr`` mm), decay and stopping rule, loss
    ``1 − NCC``, and as many samples per ray as our projector takes. Geometry: camera → CT
    ``rt_inv = T · [u | v | w | S]`` for a rig pose ``T`` (see ``benchmarks/peers/nanodrr.py``),
    so the estimate maps back to ``T = pose · [u | v | w | S]⁻¹``. One start: the module
    optimises one perturbation.
    """

    def __init__(self, vol, geom, cfg, *, device: str | None = None):
        from benchmarks.peers.common import import_peer
        from benchmarks.peers.nanodrr import camera

        nanodrr, self.stubs = import_peer("nanodrr")
        import torch
        from nanodrr.camera import make_k_inv
        from nanodrr.data import Subject
        from nanodrr.metrics import NormalizedCrossCorrelation2d
        from nanodrr.registration import Registration

        from jaxmedrf.projectors.trilinear import n_samples_for_step

        self.torch, self.Registration, self.cfg = torch, Registration, cfg
        self.version = getattr(nanodrr, "__version__", None) or _dist_version("nanodrr")
        self.dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = "triton" if self.dev.type == "cuda" else "torch"
        g0 = geom.replace(angles=np.zeros(1), rotation=None, translation=None)
        cam = camera(g0)
        self.c0 = cam["rt_inv"][0]
        self.c0_inv = np.linalg.inv(self.c0)
        self.h, self.w = g0.n_detector
        v = np.asarray(vol, np.float32)
        img = torch.as_tensor(np.ascontiguousarray(np.transpose(v, (2, 1, 0))), device=self.dev)[None, None]
        v2w = cam["voxel_to_world"]
        t32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=self.dev)  # noqa: E731
        self.t32 = t32
        self.subject = Subject(img, torch.zeros_like(img), t32(v2w), t32(np.linalg.inv(v2w)),
                               Subject._make_voxel_to_grid(img.shape).to(self.dev), t32(g0.off_origin),
                               max_label=0, convert_to_mu=False)
        self.k_inv = make_k_inv(cam["sdd"], cam["delx"], cam["dely"], cam["x0"], cam["y0"], self.h, self.w).to(self.dev)
        self.sdd = t32([cam["sdd"]])
        self.n_samples = n_samples_for_step(g0.n_voxel, cfg.step)
        self.ncc = NormalizedCrossCorrelation2d()

    def register(self, target, init: P.Pose):
        """``(pose, time_s, iterations per level, final loss)`` from the initial rig pose."""
        torch, cfg = self.torch, self.cfg
        torch.manual_seed(0)
        t0 = time.perf_counter()
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = np.asarray(init.rotation, np.float64), np.asarray(init.translation, np.float64)
        reg = self.Registration(self.subject, self.t32(m @ self.c0)[None], self.k_inv.clone(), self.sdd, self.h, self.w)
        full = torch.as_tensor(np.array(target, np.float32), device=self.dev)[None, None]
        iters, scale, best = [], 1, math.inf
        rate = cfg.lr_final_fraction ** (1.0 / max(cfg.iterations - 1, 1))
        for level, f in enumerate(cfg.levels):
            reg.rescale_(scale / f)
            scale = f
            tgt = torch.nn.functional.avg_pool2d(full, f) if f > 1 else full
            lr0 = cfg.lr * cfg.lr_decay**level
            opt = torch.optim.Adam([{"params": [reg._rot], "lr": math.radians(lr0 * cfg.rot_scale_deg)},
                                    {"params": [reg._xyz], "lr": lr0 * cfg.trans_scale_mm}])
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=rate)
            best, since, it = math.inf, 0, 0
            best_p = (reg._rot.detach().clone(), reg._xyz.detach().clone())
            while it < cfg.iterations and since < cfg.patience:
                opt.zero_grad(set_to_none=True)
                loss = 1.0 - self.ncc(reg(n_samples=self.n_samples, backend=self.backend), tgt).mean()
                val = float(loss.detach())
                val = val if math.isfinite(val) else math.inf
                since = 0 if val < best - cfg.tol else since + 1
                if val < best:
                    best, best_p = val, (reg._rot.detach().clone(), reg._xyz.detach().clone())
                loss.backward()
                opt.step()
                sched.step()
                it += 1
            with torch.no_grad():
                reg._rot.copy_(best_p[0])
                reg._xyz.copy_(best_p[1])
            iters.append(it)
        est = reg.pose.detach().double().cpu().numpy()[0] @ self.c0_inv
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        elapsed = time.perf_counter() - t0
        return P.Pose(jnp.asarray(est[:3, :3], jnp.float32), jnp.asarray(est[:3, 3], jnp.float32)), elapsed, iters, best


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "unknown"


def make_nanodrr(vol, geom, cfg, device=None):
    """``(NanoDRR or None, status dict)``."""
    try:
        nd = NanoDRR(vol, geom, cfg, device=device)
    except Exception as e:  # noqa: BLE001 - any import/set-up failure is a reason to skip
        return None, {"skipped": f"nanodrr not usable: {type(e).__name__}: {e}"}
    return nd, {"version": nd.version, "backend": nd.backend, "device": str(nd.dev), "stubs": nd.stubs,
                "n_samples": nd.n_samples, "starts": 1}


class Phantom:
    """One phantom's trials: its own random stream, so results do not depend on the others."""

    def __init__(self, name, vol, geom, cfg, args, seed, key, nano=None):
        self.name, self.vol, self.geom, self.cfg, self.args = name, vol, geom, cfg, args
        self.nano = nano
        self.rng = np.random.default_rng(seed)
        lo, hi = jm.volume_box(geom)
        self.pivot = np.asarray(0.5 * (lo + hi))
        self.landmarks = R.default_landmarks(geom)
        self.starts_k = R.random_perturbations(key, args.starts, rot_range_deg=args.init_deg, trans_range_mm=args.init_mm)
        self.multi = f"multi{args.starts}"
        self.multi_cfg = dataclasses.replace(cfg, multi_start_levels=args.multi_levels)
        self.rows = []
        self.nano_compile_s = None
        lm, g = self.landmarks, geom
        self.errors = jax.jit(lambda est, truth: jnp.stack([
            R.mean_target_registration_error(est, truth, lm), R.rotation_error_deg(est, truth),
            R.translation_error_mm(est, truth), R.reprojection_error(est, truth, lm, g)[1]]))

    def trial(self) -> dict:
        args, cfg, geom, lm = self.args, self.cfg, self.geom, self.landmarks
        t_trial = time.perf_counter()
        f32 = lambda p: P.Pose(jnp.asarray(p.rotation, jnp.float32), jnp.asarray(p.translation, jnp.float32))  # noqa: E731
        theta = self.rng.uniform(0, 2 * math.pi)
        nominal = P.Pose(jnp.asarray(P._rz_np(theta), jnp.float32), jnp.zeros(3))
        truth = P.compose(random_offset(self.rng, 10.0, 10.0, self.pivot), nominal)
        target = R.drr(self.vol, geom, truth, step=cfg.step)
        init = P.compose(random_offset(self.rng, args.init_deg, args.init_mm, self.pivot), truth)
        row = {"trial": len(self.rows), "theta_deg": math.degrees(theta),
               "initial_mtre_mm": float(R.mean_target_registration_error(init, truth, lm))}
        def errors(est):
            e = np.asarray(self.errors(est, truth), np.float64)  # one compiled call, one transfer
            return dict(zip(("mtre_mm", "rotation_deg", "translation_mm", "reprojection_px"), map(float, e)))

        for label, starts, c in (("single", None, cfg), (self.multi, self.starts_k, self.multi_cfg)):
            res = R.register(self.vol, geom, target, init, config=c, starts=starts)
            row[label] = errors(f32(res.pose)) | {
                "time_s": res.time_s,
                "compile_s": res.compile_s,
                "iterations": res.iterations[res.best_start].tolist(),
                "best_start": res.best_start,
                "loss": res.loss,
            }
        if self.nano is not None and len(self.rows) % args.nanodrr_every == 0:
            try:
                if self.nano_compile_s is None:  # first call: Triton compiles its kernels
                    self.nano_compile_s = self.nano.register(target, init)[1]
                est, t_s, iters, loss = self.nano.register(target, init)
                row["nanodrr"] = errors(est) | {"time_s": t_s, "compile_s": 0.0, "iterations": iters, "loss": loss}
            except Exception as e:  # noqa: BLE001 - record, keep our trials going
                self.nano_error = f"{type(e).__name__}: {e}"
                print(f"[{self.name}] nanodrr failed: {self.nano_error}", flush=True)
                self.nano = None
        row["wall_s"] = time.perf_counter() - t_trial  # everything: DRR, all registrations, errors
        self.rows.append(row)
        s, m = row["single"], row[self.multi]
        comp = s["compile_s"] + m["compile_s"]
        nd = row.get("nanodrr")
        print(f"[{self.name}] trial {len(self.rows)}/{args.trials}: mTRE {row['initial_mtre_mm']:.2f} → "
              f"{s['mtre_mm']:.3f} mm (single, {s['time_s']:.2f} s), {m['mtre_mm']:.3f} mm "
              f"({self.multi}, {m['time_s']:.2f} s)"
              + (f", {nd['mtre_mm']:.3f} mm (nanodrr, {nd['time_s']:.2f} s)" if nd else "")
              + f"; trial {row['wall_s']:.2f} s"
              + (f" incl. compilation {comp:.1f} s" if comp > 0 else ""), flush=True)
        return row

    def result(self) -> dict:
        summary = {}
        for label in ("single", self.multi, "nanodrr"):
            rows = [r for r in self.rows if label in r]
            if not rows:
                continue
            get = lambda k: np.array([r[label][k] for r in rows])  # noqa: E731,B023
            summary[label] = {
                "trials": len(rows),
                "success_rate_mtre_lt_1mm": R.success_rate(get("mtre_mm"), 1.0),
                "median_mtre_mm": float(np.median(get("mtre_mm"))),
                "mean_mtre_mm": float(np.mean(get("mtre_mm"))),
                "median_time_s": float(np.median(get("time_s"))),
                "max_time_s": float(np.max(get("time_s"))),
                "compile_s": float(np.sum(get("compile_s"))) if label != "nanodrr" else (self.nano_compile_s or 0.0),
                "median_rotation_error_deg": float(np.median(get("rotation_deg"))),
                "median_translation_error_mm": float(np.median(get("translation_mm"))),
            }
        out = {"summary": summary, "trials": self.rows}
        if getattr(self, "nano_error", None):
            out["nanodrr_error"] = self.nano_error
        return out


def summary_table(results: dict, multi: str) -> str:
    head = f"{'phantom':<14} {'setting':<9} {'trials':>6} {'success':>8} {'median mTRE':>12} {'median s':>9} {'max s':>7} {'compile s':>10}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"{name:<14} skipped: {r['skipped']}")
            continue
        if not r["summary"]:
            lines.append(f"{name:<14} no trial run")
        for label in ("single", multi, "nanodrr"):
            if label in r["summary"]:
                s = r["summary"][label]
                lines.append(f"{name:<14} {label:<9} {s['trials']:>6d} {100 * s['success_rate_mtre_lt_1mm']:>7.0f}% "
                             f"{s['median_mtre_mm']:>9.3f} mm {s['median_time_s']:>9.3f} {s['max_time_s']:>7.3f} {s['compile_s']:>10.1f}")
    return "\n".join(lines)


def plot(path, results, starts):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in results.items() if r.get("trials")]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(6 * max(len(names), 1), 5), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = results[name]["trials"]
        for label, marker in (("single", "o"), (f"multi{starts}", "x"), ("nanodrr", "^")):
            pts = [(r["initial_mtre_mm"], max(r[label]["mtre_mm"], 1e-3)) for r in rows if label in r]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=label, alpha=0.7)
        ax.axhline(1.0, color="k", ls="--", lw=0.8, label="success threshold (1 mm)")
        ax.set_yscale("log")
        ax.set_xlabel("initial mTRE (mm)")
        ax.set_ylabel("final mTRE (mm)")
        s = results[name]["summary"]
        ax.set_title(f"{name}: success {100 * s['single']['success_rate_mtre_lt_1mm']:.0f}% single, "
                     f"{100 * s[f'multi{starts}']['success_rate_mtre_lt_1mm']:.0f}% multi")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=None, help="trials per phantom (default 100; 2 with --small)")
    p.add_argument("--starts", type=int, default=8, help="K for multi-start")
    p.add_argument("--multi-levels", type=int, default=2,
                   help="multi-start: the K starts run this many coarsest levels, then the best continues "
                        "alone (RegistrationConfig.multi_start_levels; 0: all levels run every start)")
    p.add_argument("--nanodrr-every", type=int, default=1, help="run nanodrr on every N-th trial of each phantom")
    p.add_argument("--no-nanodrr", action="store_true", help="skip nanodrr")
    p.add_argument("--n-voxel", type=int, default=128)
    p.add_argument("--d-voxel", type=float, default=2.0)
    p.add_argument("--n-detector", type=int, default=128)
    p.add_argument("--init-deg", type=float, default=15.0, help="± initial rotation error per component, degrees")
    p.add_argument("--init-mm", type=float, default=20.0, help="± initial translation error per component, mm")
    p.add_argument("--levels", type=int, nargs="+", default=[8, 4, 2, 1])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--loss", default="ncc")
    p.add_argument("--phantoms", nargs="+", default=["shepp-logan", "synthetic-ct"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new trial once this many seconds have passed since the start "
                        "(phantom set-up included); the results so far are kept")
    p.add_argument("--small", action="store_true", help="CPU smoke test: 2 trials, 24³, 24² detector, 2 starts")
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.trials is None:
        args.trials = 2 if args.small else 100
    if args.trials < 1:
        raise ValueError(f"--trials must be ≥ 1, got {args.trials}")
    if args.small:
        args.starts, args.n_voxel, args.n_detector = 2, 24, 24
        args.d_voxel, args.levels, args.iterations, args.multi_levels = 8.0, [2, 1], 30, 1
    if args.nanodrr_every < 1:
        raise ValueError(f"--nanodrr-every must be ≥ 1, got {args.nanodrr_every}")
    args.multi_levels = args.multi_levels or None

    size = args.n_voxel * args.d_voxel  # mm
    dsd, dso = 1000.0, 600.0
    d_det = 1.15 * size * dsd / (dso - size / 2) / args.n_detector  # the whole volume on the detector
    geom = jm.cone_beam(n_voxel=(args.n_voxel,) * 3, d_voxel=args.d_voxel, n_detector=(args.n_detector,) * 2,
                        d_detector=d_det, DSD=dsd, DSO=dso, n_views=1)
    cfg = R.RegistrationConfig(levels=tuple(args.levels), iterations=args.iterations, loss=args.loss)
    key = jax.random.key(args.seed)
    device = jax.devices()[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    tag = f"{device.device_kind}".replace(" ", "_").replace("/", "_")
    stem = f"register_{tag}_{now:%Y%m%d}" + ("_small" if args.small else "")
    out = Path(args.out_dir) / f"{stem}.json"
    multi = f"multi{args.starts}"

    results, phantoms, nano_status = {}, [], {"skipped": "no phantom"}
    for i, name in enumerate(args.phantoms):
        vol, reason = make_phantom(name, geom)
        if vol is None:
            results[name] = {"skipped": reason}
            print(f"[{name}] skipped: {reason}")
            continue
        nano = None
        if args.no_nanodrr:
            nano_status = {"skipped": "--no-nanodrr"}
        else:
            nano, nano_status = make_nanodrr(vol, geom, cfg)
        print(f"[{name}] nanodrr: {nano_status}", flush=True)
        phantoms.append(Phantom(name, jnp.asarray(vol), geom, cfg, args, [args.seed, i], key, nano))
    settings = {k: v for k, v in vars(args).items() if k != "out_dir"} | {
        "geometry": json.loads(geom.to_json()), "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "success": "mTRE < 1 mm", "landmarks": "volume centre + corners of the central half box",
        "time": "time_s: one registration, compilation excluded; compile_s: its compilation (0 when reused); "
                "wall_s: a whole trial (target DRR, all registrations, errors); nanodrr: its first registration "
                "per phantom (Triton compilation) is run twice and reported as compile_s",
        "multi_start": f"{args.starts} starts (the initial pose and {args.starts - 1} perturbations within "
                       f"±{args.init_deg}°/±{args.init_mm} mm) on the "
                       + (f"{args.multi_levels} coarsest level(s); the best then continues alone"
                          if args.multi_levels else "all levels"),
    }

    def write(complete: bool, stopped: str | None = None) -> None:
        for ph in phantoms:
            results[ph.name] = ph.result()
        report = {
            "benchmark": "register",
            "device": device.device_kind,
            "platform": device.platform,
            "jax": jax.__version__,
            "python": platform.python_version(),
            "date": now.isoformat(timespec="seconds"),
            "complete": complete,
            "stopped": stopped,
            "elapsed_s": time.perf_counter() - t_start,
            "settings": settings,
            "results": results,
            "nanodrr": nano_status,
        }
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2))

    stopped = None
    for _ in range(args.trials):
        for ph in phantoms:
            if args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
                stopped = f"time budget of {args.budget_s:g} s reached after {len(ph.rows)} trials of {ph.name}"
                break
            ph.trial()
            write(complete=False)
        if stopped:
            print(stopped)
            break
    write(complete=stopped is None, stopped=stopped)
    with atomic_path(out.with_suffix(".png")) as tmp:
        plot(tmp, results, args.starts)
    print(summary_table(results, multi))
    print(f"wrote {out} and {out.with_suffix('.png')} ({time.perf_counter() - t_start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
