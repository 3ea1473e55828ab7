"""The geometry converters (:mod:`jaxmedrf.interop`) checked against the real tools (issue 21).

``tests/test_interop.py`` rebuilds each tool's rays from its documented definition; this script
runs the tools themselves where they are installed (DiffDRR 0.6.1, nanodrr 0.1.7, the ASTRA
Toolbox 2.5.0 on a GPU; wheels from ``benchmarks/gpu_wheels.sh``, ASTRA through ``ASTRA_SITE`` as
:mod:`benchmarks.peers.astra` says) and records, for each case, ``‖tool − ours‖ / ‖ours‖`` between
the tool's DRRs and ``jm.project`` on the same geometry:

* ``<tool>_to_<case>``: our geometry (circular with offsets, anisotropic pixels and voxels, or
  with a random per-view pose) converted by ``to_<tool>`` and rendered by the tool;
* ``<tool>_from_native``: a camera set up the tool's own way (DiffDRR: ``reverse_x_axis=True``,
  orientation ``"AP"``, a ZXY Euler pose from its ``convert``; nanodrr: ``make_rt_inv`` with
  orientation ``"AP"``; ASTRA: the ``cone`` and ``parallel3d`` angle forms) read by ``from_<tool>``
  (with ``flip_columns=True`` where that camera sees ours mirrored).

The volume is a few smooth Gaussian blobs off-centre (no symmetry hides a flip). DiffDRR's Siddon
should agree to float32 rounding (~1e-6); nanodrr and ASTRA interpolate, so compare with our
trilinear at the same sample count (nanodrr) or expect ~1e-3 against Siddon; a wrong convention
gives ~1e-1. A tool that does not import is reported as skipped.

    python -m benchmarks.interop_peers [--out-dir benchmarks/results]
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

N_VOXEL, D_VOXEL, OFF_ORIGIN = (64, 60, 56), (1.0, 1.1, 0.9), (2.0, -3.0, 1.5)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_cases(seed: int = 5):
    """``(volume, {name: geometry})``: cone and parallel beams, circular and with a per-view pose."""
    import jaxmedrf as jm
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    cone = jm.cone_beam(n_voxel=N_VOXEL, d_voxel=D_VOXEL, n_detector=(48, 56), d_detector=(1.9, 1.7), DSD=500.0,
                        DSO=320.0, angles=np.array([0.3, 1.4, 2.9, 4.6]), off_detector=(3.1, -4.3),
                        off_origin=OFF_ORIGIN)
    par = jm.parallel_beam(n_voxel=N_VOXEL, d_voxel=D_VOXEL, n_detector=(48, 56), d_detector=(1.5, 1.4),
                           angles=np.array([0.3, 1.4, 2.9]), off_detector=(2.2, -3.4), off_origin=OFF_ORIGIN)

    def posed(g):
        r = Rotation.from_rotvec(rng.normal(size=(g.n_views, 3)) * 0.25).as_matrix()
        return g.replace(rotation=r, translation=rng.normal(size=(g.n_views, 3)) * 5.0)

    xs, ys, zs = (np.asarray(a, np.float64) for a in jm.voxel_centers(cone))
    x, y, z = np.meshgrid(xs - OFF_ORIGIN[0], ys - OFF_ORIGIN[1], zs - OFF_ORIGIN[2], indexing="ij")
    vol = np.zeros(N_VOXEL)
    for (cx, cy, cz), s, a in (((10, -5, 3), 6, 0.02), ((-12, 8, -6), 4, 0.03), ((0, 0, 0), 14, 0.01),
                               ((5, 12, 9), 3, 0.04)):
        vol += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return vol.astype(np.float32), {"cone": cone, "cone_posed": posed(cone), "parallel": par,
                                    "parallel_posed": posed(par)}


def ours(vol, g, *, method: str = "siddon", n_samples: int | None = None) -> np.ndarray:
    import jaxmedrf as jm
    from benchmarks.peers.jaxmedrf import step_for

    kw = {} if n_samples is None else {"step": step_for(g.n_voxel, n_samples)}
    return np.asarray(jm.project(vol, g, method=method, **kw), np.float64)


def check_diffdrr(vol, cases) -> dict:
    from benchmarks.peers.common import import_peer, torch_device
    from jaxmedrf import interop

    try:
        import_peer("diffdrr")
        import torch
        from diffdrr.drr import DRR
        from diffdrr.pose import RigidTransform, convert
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"diffdrr not importable: {type(e).__name__}: {e}"}
    dev = torch_device(None)

    def render(cam):
        subject = types.SimpleNamespace(
            volume=types.SimpleNamespace(affine=np.asarray(cam["affine"])),
            density=types.SimpleNamespace(data=torch.as_tensor(vol)[None]), mask=None,
            reorient=torch.as_tensor(np.asarray(cam["reorient"]), dtype=torch.float32))
        drr = DRR(subject, sdd=cam["sdd"], height=cam["height"], width=cam["width"], delx=cam["delx"],
                  dely=cam["dely"], x0=cam["x0"], y0=cam["y0"], reverse_x_axis=cam["reverse_x_axis"],
                  renderer="siddon").to(dev)
        with torch.no_grad():
            img = drr(RigidTransform(torch.as_tensor(np.asarray(cam["pose"]), dtype=torch.float32, device=dev)))
        return img[:, 0].double().cpu().numpy()

    out = {}
    for name in ("cone", "cone_posed"):
        out[f"diffdrr_to_{name}"] = rel(render(interop.to_diffdrr(cases[name])), ours(vol, cases[name]))
    ap = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # its orientation="AP"
    pose = convert(torch.tensor([[0.1, -0.15, 0.05], [1.2, 0.1, -0.1], [2.5, -0.05, 0.2]]),
                   torch.tensor([[0.0, 330.0, 0.0], [4.0, 320.0, -5.0], [-3.0, 340.0, 6.0]]),
                   parameterization="euler_angles", convention="ZXY").matrix.numpy().astype(np.float64)
    native = {"sdd": 500.0, "height": 48, "width": 56, "delx": 1.9, "dely": 1.7, "x0": 3.0, "y0": -2.0,
              "reverse_x_axis": True, "pose": pose, "reorient": ap,
              "affine": interop.to_diffdrr(cases["cone"])["affine"], "volume_shape": list(N_VOXEL)}
    g = interop.from_diffdrr(json.loads(json.dumps(interop.json_ready(native))), flip_columns=True)
    out["diffdrr_from_native"] = rel(render(native), ours(vol, g)[..., ::-1])
    return out


def check_nanodrr(vol, cases) -> dict:
    from benchmarks.peers.common import import_peer, torch_device
    from jaxmedrf import interop

    try:
        import_peer("nanodrr")
        import torch
        from nanodrr.camera import make_k_inv, make_rt_inv
        from nanodrr.data import Subject
        from nanodrr.drr import DRR
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"nanodrr not importable: {type(e).__name__}: {e}"}
    dev = torch_device(None)
    t32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)  # noqa: E731
    image = torch.as_tensor(np.ascontiguousarray(np.transpose(vol, (2, 1, 0))), device=dev)[None, None]

    def render(cam, n_samples):
        v2w = np.asarray(cam["voxel_to_world"])
        subject = Subject(image, torch.zeros_like(image), t32(v2w), t32(np.linalg.inv(v2w)),
                          Subject._make_voxel_to_grid(image.shape).to(dev), t32(OFF_ORIGIN), max_label=0,
                          convert_to_mu=False)
        drr = DRR.from_carm_intrinsics(cam["sdd"], cam["delx"], cam["dely"], cam["x0"], cam["y0"], cam["height"],
                                       cam["width"], orthographic=cam["orthographic"], dtype=torch.float32,
                                       device=dev)
        with torch.no_grad():
            img = drr(subject, t32(cam["rt_inv"]), n_samples=n_samples, backend="torch")
        return img[:, 0].double().cpu().numpy()

    out = {}
    for name in ("cone", "cone_posed"):
        cam = interop.to_nanodrr(cases[name])
        out[f"nanodrr_to_{name}_vs_trilinear512"] = rel(render(cam, 512), ours(vol, cases[name], method="trilinear",
                                                                              n_samples=512))
    for name in ("parallel", "parallel_posed"):
        out[f"nanodrr_to_{name}_vs_siddon"] = rel(render(interop.to_nanodrr(cases[name]), 4096), ours(vol, cases[name]))
    rt = make_rt_inv(torch.tensor([[5.0, -8.0, 3.0], [60.0, 4.0, -2.0], [150.0, -3.0, 6.0]], dtype=torch.float64),
                     torch.tensor([[0.0, 330.0, 5.0], [3.0, 320.0, -4.0], [-4.0, 340.0, 2.0]], dtype=torch.float64),
                     orientation="AP").numpy()
    native = {"sdd": 500.0, "height": 48, "width": 56, "rt_inv": rt,
              "k_inv": make_k_inv(500.0, 1.9, 1.7, 2.5, -3.5, 48, 56).numpy(),
              "voxel_to_world": interop.to_nanodrr(cases["cone"])["voxel_to_world"], "volume_shape": list(N_VOXEL)}
    g = interop.from_nanodrr(interop.json_ready(native), flip_columns=True)
    cam = dict(native, delx=1.9, dely=1.7, x0=2.5, y0=-3.5, orthographic=False)
    out["nanodrr_from_native_vs_siddon"] = rel(render(cam, 4096), ours(vol, g)[..., ::-1])
    return out


def check_astra(vol, cases) -> dict:
    from benchmarks.peers.astra_preflight import import_astra
    from jaxmedrf import interop

    try:
        astra = import_astra()
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"astra not importable: {type(e).__name__}: {e}"}
    vol_zyx = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)))

    def render(data):
        vg, pg, o = data["vol_geom"], data["proj_geom"], data["vol_geom"]["option"]
        vol_geom = astra.create_vol_geom(vg["GridRowCount"], vg["GridColCount"], vg["GridSliceCount"],
                                         *[o[f"Window{m}{x}"] for x in "XYZ" for m in ("Min", "Max")])
        if pg["type"].endswith("_vec"):
            proj_geom = astra.create_proj_geom(pg["type"], pg["DetectorRowCount"], pg["DetectorColCount"],
                                               np.asarray(pg["Vectors"]))
        else:
            extra = [pg["DistanceOriginSource"], pg["DistanceOriginDetector"]] if pg["type"] == "cone" else []
            proj_geom = astra.create_proj_geom(pg["type"], pg["DetectorSpacingX"], pg["DetectorSpacingY"],
                                               pg["DetectorRowCount"], pg["DetectorColCount"],
                                               np.asarray(pg["ProjectionAngles"]), *extra)
        i, sino = astra.create_sino3d_gpu(vol_zyx, proj_geom, vol_geom)
        astra.data3d.delete(i)
        return np.transpose(sino, (1, 0, 2)).astype(np.float64)

    out = {}
    for name, g in cases.items():
        out[f"astra_to_{name}_vs_siddon"] = rel(render(interop.to_astra(g)), ours(vol, g))
    vg = interop.to_astra(cases["cone"])["vol_geom"]
    for kind in ("cone", "parallel3d"):
        pg = {"type": kind, "DetectorSpacingX": 1.7, "DetectorSpacingY": 1.9, "DetectorRowCount": 48,
              "DetectorColCount": 56, "ProjectionAngles": np.array([0.2, 1.7, 3.3])}
        if kind == "cone":
            pg.update(DistanceOriginSource=320.0, DistanceOriginDetector=180.0)
        g = interop.from_astra({"proj_geom": pg, "vol_geom": vg})
        out[f"astra_from_native_{kind}_vs_siddon"] = rel(render({"proj_geom": pg, "vol_geom": vg}), ours(vol, g))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=None, help="write interop_peers_<device>_<date>.json there")
    a = ap.parse_args(argv)
    from benchmarks.common import environment, write_json

    vol, cases = make_cases()
    results = {}
    for tool, check in (("diffdrr", check_diffdrr), ("nanodrr", check_nanodrr), ("astra", check_astra)):
        try:
            results[tool] = check(vol, cases)
        except Exception as e:  # noqa: BLE001 - record, keep the other tools going
            results[tool] = {"error": f"{type(e).__name__}: {e}"}
    payload = {"benchmark": "interop_peers", "environment": environment(),
               "cases": {k: json.loads(g.to_json()) for k, g in cases.items()}, "results": results}
    if a.out_dir:
        print("wrote", write_json("interop_peers", payload, a.out_dir), file=sys.stderr)
    print(json.dumps(results, indent=1))
    return payload


if __name__ == "__main__":
    main()
