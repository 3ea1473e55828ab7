"""benchmarks/projector_peers and benchmarks/peers: a peer that cannot be imported is reported as skipped,
never timed; the ASTRA plumbing checked against a fake astra."""

import json
import sys

import numpy as np
import pytest

import jaxmedrf as jm
from benchmarks import projector_peers as PP
from benchmarks.peers import astra as A
from benchmarks.peers.jaxmedrf import step_for


@pytest.fixture
def case():
    g = jm.cone_beam(n_voxel=(8, 8, 8), d_voxel=4.0, n_detector=(8, 8), d_detector=8.0, DSD=800.0, DSO=400.0, n_views=2)
    return np.zeros((8, 8, 8), np.float32), g


@pytest.mark.parametrize("module, fn, kw", [
    ("nanodrr", PP.time_nanodrr, {"backend": "torch"}),
    ("diffdrr", PP.time_diffdrr, {"renderer": "siddon"}),
    ("mbirjax", PP.time_mbirjax, {}),
])
def test_missing_peer_is_skipped(monkeypatch, case, module, fn, kw):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    out = fn(*case, repeats=1, warmup=0, **kw)
    assert set(out) <= {"skipped", "stubs"} and module in out["skipped"]


def test_step_gives_the_requested_sample_count():
    from jaxmedrf.projectors.trilinear import n_samples_for_step

    for n in ((256,) * 3, (128, 96, 64), (7, 7, 7)):
        assert n_samples_for_step(n, step_for(n, 512)) == 512


# ----------------------------------------------------------------------------- ASTRA


def test_missing_astra_is_skipped(monkeypatch, case, tmp_path):
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_astra appends $ASTRA_SITE
    monkeypatch.setitem(sys.modules, "astra", None)
    monkeypatch.delenv("ASTRA_SITE", raising=False)
    out = A.time_astra(*case, repeats=1, warmup=0)
    assert set(out) == {"skipped"} and "astra" in out["skipped"]
    monkeypatch.setenv("ASTRA_SITE", str(tmp_path / "absent"))
    out = A.time_astra(*case, repeats=1, warmup=0)
    assert set(out) == {"skipped"} and "ASTRA_SITE" in out["skipped"]


def _astra_case():
    """A cone beam with a non-square detector, anisotropic pixels and a detector offset, views at 0 and 90°."""
    return jm.cone_beam(n_voxel=(6, 8, 10), d_voxel=(4.0, 3.0, 2.0), n_detector=(6, 10), d_detector=(2.0, 3.0),
                        DSD=800.0, DSO=400.0, angles=np.array([0.0, np.pi / 2]), off_detector=(1.5, -2.0),
                        off_origin=(1.0, -2.0, 3.0))


def test_astra_vectors_by_hand():
    _, (kind, nv, nu, vec) = A.astra_geometry(_astra_case())
    assert (kind, nv, nu) == ("cone_vec", 6, 10) and vec.shape == (2, 12)
    # (srcX, srcY, srcZ, dX, dY, dZ, uX, uY, uZ, vX, vY, vZ); off_u = -2, off_v = 1.5, du = 3, dv = 2.
    # View 0: S = (400, 0, 0), centre (-400, 0, 0), u = (0, 1, 0), v = (0, 0, 1).
    np.testing.assert_allclose(vec[0], [400, 0, 0, -400, -2.0, 1.5, 0, 3, 0, 0, 0, 2], atol=1e-9)
    # View 1 (90°): S = (0, 400, 0), centre (0, -400, 0), u = (-1, 0, 0).
    np.testing.assert_allclose(vec[1], [0, 400, 0, 2.0, -400, 1.5, -3, 0, 0, 0, 0, 2], atol=1e-9)
    with pytest.raises(ValueError, match="cone"):
        A.astra_geometry(jm.parallel_beam(n_voxel=4, n_detector=(2, 2), n_views=1))


def test_astra_vectors_put_every_pixel_where_ours_is():
    g = _astra_case()
    _, (_, nv, nu, vec) = A.astra_geometry(g)
    rays = jm.geometry_rays(g)
    pix = np.asarray(rays.origins + rays.directions)
    r, c = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    for i in range(g.n_views):
        np.testing.assert_allclose(vec[i, 0:3], np.asarray(rays.origins)[i, 0, 0], atol=1e-3)
        # ASTRA (ConeVecProjectionGeometry3D.cpp, cone_fp.cu): pixel (r, c) centre at
        # d − (nu/2)·uvec − (nv/2)·vvec + (c + ½)·uvec + (r + ½)·vvec.
        corner = vec[i, 3:6] - nu / 2 * vec[i, 6:9] - nv / 2 * vec[i, 9:12]
        theirs = corner + (c[..., None] + 0.5) * vec[i, 6:9] + (r[..., None] + 0.5) * vec[i, 9:12]
        np.testing.assert_allclose(theirs, pix[i], atol=1e-3)


def test_astra_volume_window():
    (rows, cols, slices, *window), _ = A.astra_geometry(_astra_case())
    assert (rows, cols, slices) == (8, 6, 10)  # create_vol_geom(rows = ny, cols = nx, slices = nz, …)
    np.testing.assert_allclose(window, [1 - 12, 1 + 12, -2 - 12, -2 + 12, 3 - 10, 3 + 10])


def _fake_astra(ref: np.ndarray):
    """A stand-in astra module (and astra.experimental) whose FP returns ``ref`` in ASTRA's layout
    ``(rows, views, cols)`` after checking array shapes the way ASTRA does; its BP fills ones."""
    import types as T

    calls = []

    def vol_shape(vg):
        return (vg["GridSliceCount"], vg["GridRowCount"], vg["GridColCount"])

    def proj_shape(pg):
        return (pg["DetectorRowCount"], pg["Vectors"].shape[0], pg["DetectorColCount"])

    geoms = {}
    astra = T.ModuleType("astra")
    astra.__version__ = "fake"
    astra.use_cuda = lambda: True
    astra.get_gpu_info = lambda: "fake GPU"
    astra.create_vol_geom = lambda r, c, s, *w: {"GridRowCount": r, "GridColCount": c, "GridSliceCount": s,
                                                 "option": dict(zip(["WindowMinX", "WindowMaxX", "WindowMinY",
                                                                     "WindowMaxY", "WindowMinZ", "WindowMaxZ"], w))}
    astra.create_proj_geom = lambda t, rows, cols, vec: {"type": t, "DetectorRowCount": rows, "DetectorColCount": cols,
                                                         "Vectors": vec}

    def create_projector(kind, pg, vg):
        assert kind == "cuda3d"
        geoms[1] = (pg, vg)
        return 1

    astra.create_projector = create_projector
    astra.projector3d = T.SimpleNamespace(delete=lambda i: calls.append(("delete", i)))
    astra.data3d = T.SimpleNamespace(delete=lambda i: None, GPULink=None)
    sino = np.ascontiguousarray(np.transpose(ref, (1, 0, 2))).astype(np.float32)

    def create_sino3d_gpu(vol, pg, vg):
        assert vol.shape == vol_shape(vg) and pg["type"] == "cone_vec"
        calls.append("fp_host")
        return 7, sino.copy()

    def create_backprojection3d_gpu(s, pg, vg):
        assert s.shape == proj_shape(pg)
        return 8, np.ones(vol_shape(vg), np.float32)

    def direct_FP3D(pid, vol, proj):
        pg, vg = geoms[pid]
        assert vol.shape == vol_shape(vg) and proj.shape == proj_shape(pg)
        calls.append("fp_direct")
        proj[...] = sino

    def direct_BP3D(pid, vol, proj):
        pg, vg = geoms[pid]
        assert vol.shape == vol_shape(vg) and proj.shape == proj_shape(pg)
        vol[...] = 1.0

    astra.create_sino3d_gpu = create_sino3d_gpu
    astra.create_backprojection3d_gpu = create_backprojection3d_gpu
    ex = T.ModuleType("astra.experimental")
    ex.direct_FP3D, ex.direct_BP3D = direct_FP3D, direct_BP3D
    astra.experimental = ex
    return astra, ex, calls


def _fake_cupy():
    """NumPy in CuPy's clothes: only what benchmarks.peers.astra._device_run uses."""
    import types as T

    cp = T.ModuleType("cupy")
    cp.__version__ = "fake"
    cp.float32 = np.float32
    cp.asarray = lambda a: np.array(a)
    cp.asnumpy = np.asarray
    cp.zeros, cp.zeros_like, cp.subtract = np.zeros, np.zeros_like, np.subtract
    cp.cuda = T.SimpleNamespace(runtime=T.SimpleNamespace(deviceSynchronize=lambda: None,
                                                          getDeviceProperties=lambda i: {"name": b"fake"}))
    cp.get_default_memory_pool = lambda: T.SimpleNamespace(free_all_blocks=lambda: None)
    return cp


@pytest.mark.parametrize("with_cupy", [True, False])
def test_astra_plumbing_with_a_fake_astra(monkeypatch, with_cupy):
    """Layouts, figures and the fall-back from the GPU-resident path to the host path, with a fake
    astra that returns our own DRRs: the agreement must then be exact."""
    g = _astra_case()
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 0.02, g.n_voxel).astype(np.float32)
    ref = rng.uniform(0.5, 1.0, (g.n_views, *g.n_detector))
    astra, ex, calls = _fake_astra(ref)
    monkeypatch.delenv("ASTRA_SITE", raising=False)
    monkeypatch.setitem(sys.modules, "astra", astra)
    monkeypatch.setitem(sys.modules, "astra.experimental", ex)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy() if with_cupy else None)
    out = A.time_astra(vol, g, repeats=2, warmup=1, reference=ref, preflight=False)
    assert "error" not in out, out
    assert out["path"] == ("cupy_dlpack" if with_cupy else "numpy_host")
    assert out["includes_host_transfers"] is (not with_cupy)
    assert ("cupy_dlpack" in out.get("modes_failed", {})) is (not with_cupy)
    for k in ("forward_ms_per_drr", "forward_backward_volume_ms_per_drr"):
        assert out[k] >= 0
    assert "what" in out["forward_backward_volume"] and out["pose_gradient"].startswith("not supported")
    assert out["rel_l2_vs_jaxmedrf"] < 1e-6 and abs(out["ls_scale_ours_over_astra"] - 1) < 1e-6
    assert out["rel_l2_if_flipped"]["rows"] > 1e-3 and np.isfinite(out["adjoint_ratio"])
    assert out["stubs"] == [A.CUFFT_STUB]  # no libcufft.so.11 loaded here: assumed stubbed
    assert ("delete", 1) in calls or not with_cupy
    json.dumps(out)


_FAKE_ASTRA = '''
import os, signal, types
import numpy as np
__version__ = "fake"
use_cuda = lambda: True
create_vol_geom = lambda *a: {"vol": a}
create_proj_geom = lambda *a: {"proj": a}
data3d = types.SimpleNamespace(delete=lambda i: None)
create_sino3d_gpu = lambda vol, pg, vg: (1, np.ones((12, 3, 20), np.float32))
create_backprojection3d_gpu = lambda s, pg, vg: (2, np.ones((16, 16, 16), np.float32))


def create_projector(*a):  # the GPU-resident modes: a native crash
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_astra_preflight_child_records_a_crash_and_goes_on(monkeypatch, tmp_path):
    """The preflight runs as a real module in child processes (from any working folder): a mode that
    kills its child is recorded as crashed, and the modes after it are tried in a new child."""
    import importlib.util

    from benchmarks.peers.astra_preflight import preflight

    if importlib.util.find_spec("astra") is not None:
        pytest.skip("a real astra is installed; it would shadow the fake one")
    site = tmp_path / "site"
    (site / "astra").mkdir(parents=True)
    (site / "astra" / "__init__.py").write_text(_FAKE_ASTRA)
    (site / "astra" / "experimental.py").write_text("")
    (site / "cupy").mkdir()  # found only where no real cupy is
    (site / "cupy" / "__init__.py").write_text("")
    monkeypatch.setenv("ASTRA_SITE", str(site))
    monkeypatch.chdir(tmp_path)
    report, usable = preflight(("cupy_dlpack", "numpy_host"), timeout_s=60)
    assert report["version"] == "fake" and report["use_cuda"] is True, report
    assert report["modes"]["cupy_dlpack"].startswith("crashed (exit -9)"), report
    assert report["modes"]["numpy_host"] == "ok" and usable == ["numpy_host"], report
    assert "error" not in report


def test_peers_table():
    """The runner's table: the names ``benchmarks/run.py`` and the results files use, and each peer's options."""
    from benchmarks.peers import astra, diffdrr, jaxmedrf, mbirjax, nanodrr

    assert PP.PEERS == {
        "jaxmedrf_xla_trilinear": (jaxmedrf.time_jaxmedrf, {}),
        "jaxmedrf_pallas_siddon": (jaxmedrf.time_jaxmedrf, {"implementation": "pallas", "method": "siddon"}),
        "jaxmedrf_pallas_trilinear_bf16z": (jaxmedrf.time_jaxmedrf,
                                            {"implementation": "pallas", "dtype": "bfloat16", "pack": "z"}),
        "nanodrr_triton": (nanodrr.time_nanodrr, {"backend": "triton"}),
        "nanodrr_torch": (nanodrr.time_nanodrr, {"backend": "torch"}),
        "diffdrr_siddon": (diffdrr.time_diffdrr, {"renderer": "siddon"}),
        "diffdrr_trilinear": (diffdrr.time_diffdrr, {"renderer": "trilinear"}),
        "mbirjax_forward": (mbirjax.time_mbirjax, {}),
        "astra_cuda3d": (astra.time_astra, {}),
    }
    assert list(PP.PEERS)[-1] == "astra_cuda3d"  # after the torch peers have loaded their CUDA libraries
    assert all(hasattr(PP, name) for name in PP.__all__)


def test_interop_peers_reports_each_tool(monkeypatch, capsys):
    """benchmarks/interop_peers.py: each tool is checked, or reported as skipped when it does not import."""
    from benchmarks import interop_peers

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("ASTRA_SITE", raising=False)
    results = interop_peers.main([])["results"]
    assert set(results) == {"diffdrr", "nanodrr", "astra"}
    for tool, res in results.items():
        assert "skipped" in res or all(v < 1e-2 for v in res.values()), (tool, res)
