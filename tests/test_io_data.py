"""Radiographs, intensity conversions, DRR geometry/export, batch loaders and the info/convert CLI."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import jaxmedrf.io as jio
from jaxmedrf import cli
from jaxmedrf.geometry import view_frames
from jaxmedrf.rays import pixel_rays

from io_helpers import write_series

# --- radiographs ------------------------------------------------------------------------------


def _dx(tmp_path, stored, **tags):
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "DX"
    ds.SamplesPerPixel, ds.Rows, ds.Columns = 1, *stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    p = tmp_path / "dx.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


def test_radiograph_monochrome1_geometry(tmp_path, rng):
    stored = rng.integers(0, 4096, size=(6, 7))
    p = _dx(tmp_path, stored, PhotometricInterpretation="MONOCHROME1", ImagerPixelSpacing=["0.15", "0.16"],
            DistanceSourceToDetector="1100", DistanceSourceToPatient="1000")
    r = jio.load_radiograph(p)
    np.testing.assert_array_equal(r.array, stored.min() + stored.max() - stored)
    assert r.d_detector == (0.15, 0.16) and r.DSD == 1100.0 and r.DSO == 1000.0 and r.voi == "none"
    assert r.geometry_fields() == {"n_detector": (6, 7), "DSD": 1100.0, "DSO": 1000.0, "d_detector": (0.15, 0.16)}


def test_radiograph_window_reference(tmp_path, rng):
    stored = rng.integers(0, 4096, size=(5, 5))
    c, w = 2000.0, 1001.0
    r = jio.load_radiograph(_dx(tmp_path, stored, WindowCenter=str(c), WindowWidth=str(w)))
    # DICOM PS3.3 C.11.2.1.2.1 linear window, output range of 12-bit unsigned stored values.
    x = stored.astype(float)
    ref = np.clip(((x - (c - 0.5)) / (w - 1) + 0.5) * 4095, 0, 4095)
    np.testing.assert_allclose(r.array, ref, atol=1e-3)
    assert r.voi == "window"


def test_radiograph_test_files():
    r = jio.load_radiograph(get_testdata_file("RG1_UNCR.dcm"))  # CR, MONOCHROME1, PixelSpacing 0
    assert r.photometric == "MONOCHROME1" and r.DSD == 1996.0 and r.d_detector is None and r.modality == "CR"
    assert jio.load_radiograph(get_testdata_file("vlut_04.dcm")).voi == "lut"
    ref = jio.load_radiograph(get_testdata_file("MR_small.dcm"), apply_voi=False).array
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        np.testing.assert_array_equal(jio.load_radiograph(get_testdata_file(name), apply_voi=False).array, ref)


def test_radiograph_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"MR_truncated\.dcm: cannot decode pixel data"):
        jio.load_radiograph(get_testdata_file("MR_truncated.dcm"))
    with pytest.raises(ValueError, match="no pixel data"):
        jio.load_radiograph(get_testdata_file("rtplan.dcm"))
    with pytest.raises(ValueError, match="one 2D frame"):
        jio.load_radiograph(get_testdata_file("emri_small.dcm"))
    with pytest.raises(ValueError, match="colour images"):
        jio.load_radiograph(get_testdata_file("SC_rgb.dcm"))
    with pytest.raises(ValueError, match=r"jaxmedrf\.json: not a DICOM file"):
        (tmp_path / "jaxmedrf.json").write_text("{}")
        jio.load_radiograph(tmp_path / "jaxmedrf.json")


# --- intensity --------------------------------------------------------------------------------


def test_hu_mu_reference_and_round_trip():
    assert jio.mu_water(60.0) == pytest.approx(jio.MU_WATER, rel=1e-6)
    assert jio.mu_water(40.0) > jio.mu_water(70.0) > jio.mu_water(120.0)
    hu = np.array([-1000.0, 0.0, 1000.0, 3000.0], np.float32)
    mu = jio.hu_to_mu(hu)
    np.testing.assert_allclose(mu[:2], [jio.MU_AIR, jio.MU_WATER], rtol=1e-5, atol=1e-9)  # float32
    np.testing.assert_allclose(jio.mu_to_hu(mu), hu, atol=1e-2)
    m2 = jio.hu_to_mu(hu, mu_water=jio.mu_water(80.0))
    np.testing.assert_allclose(m2[1], 0.01837, rtol=1e-4)
    assert float(jio.hu_to_mu(np.float32(-2000.0))) == 0.0
    np.testing.assert_allclose(jax.jit(jio.hu_to_mu)(hu), mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jax.vmap(jio.hu_to_mu)(hu[:, None])[:, 0], mu, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="energy_kev"):
        jio.mu_water(5.0)


def test_window_normalize():
    x = jnp.array([-200.0, 40.0, 240.0, 500.0])
    np.testing.assert_allclose(jio.window(x, center=40, width=400), [0, 0.5, 1, 1])
    np.testing.assert_allclose(jio.normalize(x), (x + 200) / 700)
    with pytest.raises(ValueError, match="width"):
        jio.window(x, center=0, width=0)


def _vol(rng, shape=(8, 6, 4), spacing=(1.0, 2.0, 3.0)):
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = rng.normal(size=3)
    return jio.VolumeData(rng.normal(size=shape).astype(np.float32), np.array(spacing), aff, "CT", "HU")


def test_resize_keeps_extent_and_positions(rng):
    v = _vol(rng)
    r = jio.resize_volume(v, (4, 3, 8))
    np.testing.assert_allclose(r.spacing, (2.0, 4.0, 1.5))
    np.testing.assert_allclose(np.array(r.shape) * r.spacing, np.array(v.shape) * v.spacing)
    lo_old = v.affine @ np.array([-0.5, -0.5, -0.5, 1])  # outer voxel edge is kept
    lo_new = r.affine @ np.array([-0.5, -0.5, -0.5, 1])
    np.testing.assert_allclose(lo_new, lo_old, atol=1e-9)
    c = jio.VolumeData(np.ones((4, 4, 4), np.float32) * 5, np.ones(3), np.eye(4))
    np.testing.assert_allclose(jio.resize_volume(c, (7, 3, 5)).array, 5.0, rtol=1e-6)


def test_crop_or_pad_positions(rng):
    v = _vol(rng)
    out = jio.crop_or_pad(v, (6, 9, 4), fill=-1000)
    inv = np.linalg.inv(v.affine)
    for idx in np.ndindex(out.shape):
        old = np.rint(inv @ out.affine @ np.array([*idx, 1.0]))[:3].astype(int)
        inside = all(0 <= o < n for o, n in zip(old, v.shape))
        assert out.array[idx] == (v.array[tuple(old)] if inside else -1000)
    np.testing.assert_allclose(out.spacing, v.spacing)


def test_augmentations_keyed_jit_vmap(rng):
    x = jnp.asarray(rng.normal(size=(6, 6, 3)).astype(np.float32))
    k = jax.random.key(1)
    np.testing.assert_array_equal(jio.random_flip(k, x, axes=(0, 2), p=1.0), x[::-1, :, ::-1])
    np.testing.assert_array_equal(jio.random_flip(k, x, p=0.0), x)
    np.testing.assert_allclose(jio.random_rotation(k, x, max_degrees=0.0), x, atol=1e-6)
    # NumPy reference for a fixed angle: output (a, b) samples input at the inverse-rotated point.
    theta = float(jnp.deg2rad(jax.random.uniform(k, (), minval=-30.0, maxval=30.0)))
    rot = np.asarray(jio.random_rotation(k, x, max_degrees=30.0))
    xn = np.asarray(x)
    for a_, b_ in [(2, 3), (3, 2), (1, 4)]:
        da, db = a_ - 2.5, b_ - 2.5
        pa, pb = 2.5 + math.cos(theta) * da + math.sin(theta) * db, 2.5 - math.sin(theta) * da + math.cos(theta) * db
        i0, j0 = int(np.floor(pa)), int(np.floor(pb))
        fa, fb = pa - i0, pb - j0
        ref = ((1 - fa) * (1 - fb) * xn[i0, j0] + fa * (1 - fb) * xn[i0 + 1, j0]
               + (1 - fa) * fb * xn[i0, j0 + 1] + fa * fb * xn[i0 + 1, j0 + 1])
        np.testing.assert_allclose(rot[a_, b_], ref, atol=1e-5)
    a = jax.jit(jio.augment)(k, x)
    np.testing.assert_array_equal(a, jio.augment(k, x))
    assert not np.allclose(jio.augment(jax.random.key(2), x), a)
    batch = jax.vmap(jio.augment)(jax.random.split(k, 3), jnp.stack([x] * 3))
    assert batch.shape == (3, 6, 6, 3) and bool(jnp.all(jnp.isfinite(batch)))
    j = jio.intensity_jitter(k, x, scale=0.1, shift=2.0)
    gain = float((j[0, 0, 0] - j[1, 1, 1]) / (x[0, 0, 0] - x[1, 1, 1]))
    assert 0.9 <= gain <= 1.1


# --- DRR geometry and PNG export ----------------------------------------------------------------


def test_geometry_for_volume_mednerf_images_whole_volume(rng):
    v = _vol(rng, shape=(20, 16, 30), spacing=(0.8, 0.8, 1.5))
    g = jio.geometry_for_volume(v, preset="mednerf")
    assert g.n_views == 72 and g.n_detector == (128, 128) and g.n_voxel == (20, 16, 30)
    np.testing.assert_allclose(np.diff(np.asarray(g.angles)), math.radians(5.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g.d_voxel), v.spacing)
    np.testing.assert_allclose(np.asarray(g.off_origin), 0.0)
    g.check_volume(v.array)
    # Every corner of the volume box projects inside the detector in every view (NumPy reference).
    fr = view_frames(g)
    src, ctr, u, w = (np.asarray(a, np.float64) for a in (fr.source, fr.center, fr.u, fr.v))
    half = 0.5 * np.array(v.shape) * v.spacing
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    dv, du = np.asarray(g.d_detector)
    for i in range(g.n_views):
        n = (ctr[i] - src[i]) / np.linalg.norm(ctr[i] - src[i])
        for p in corners:
            d = p - src[i]
            hit = src[i] + d * ((ctr[i] - src[i]) @ n) / (d @ n)
            assert abs((hit - ctr[i]) @ u[i]) < 64 * du and abs((hit - ctr[i]) @ w[i]) < 64 * dv
    assert abs(w[0] @ np.array([0, 0, 1.0])) == 1.0  # vertical axis = z (superior in LPS)
    g2 = jio.geometry_for_volume(v, n_views=4, n_detector=(8, 10), off_origin=(1, 2, 3), DSO=500, DSD=900)
    assert g2.n_views == 4 and float(g2.DSO) == 500 and g2.n_detector == (8, 10)
    with pytest.raises(ValueError, match="preset"):
        jio.geometry_for_volume(v, preset="nerf")
    with pytest.raises(ValueError, match="inside the volume"):
        jio.geometry_for_volume(v, DSO=1.0)


def test_drr_from_ct_volume_projects(rng):
    import jaxmedrf as jm

    hu = np.full((12, 12, 12), -1000.0, np.float32)
    hu[3:9, 3:9, 3:9] = 0.0
    v = jio.VolumeData(hu, np.array([2.0, 2.0, 2.0]), np.diag([2.0, 2.0, 2.0, 1.0]), "CT", "HU")
    g = jio.geometry_for_volume(v, n_views=2, n_detector=(16, 16))
    p = np.asarray(jm.project(jio.attenuation_volume(v), g))
    assert p.shape == (2, 16, 16) and p[:, 8, 8].min() > 0.9 * 12 * jio.MU_WATER * (g.DSD / g.DSD)
    assert p[:, 0, 0].max() < 0.01
    with pytest.raises(ValueError, match="not attenuation"):
        jio.attenuation_volume(v.replace(unit="MR", modality="MR"))


@pytest.mark.parametrize("bits", [8, 16])
def test_export_drr_pngs(tmp_path, rng, bits):
    from PIL import Image

    v = _vol(rng, shape=(8, 8, 8))
    g = jio.geometry_for_volume(v, n_views=3, n_detector=(5, 6))
    proj = rng.uniform(0, 3, size=g.projection_shape)
    proj[1, 0, 2] = 10.0  # brightest pixel: detector row 0 = bottom of the PNG
    out = jio.export_drr_pngs(proj, g, tmp_path / "drr", bits=bits)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["drr_0000.json", "drr_0000.png", "drr_0001.json", "drr_0001.png", "drr_0002.json",
                     "drr_0002.png", "poses.json"]
    fr = view_frames(g)
    lo, hi = proj.min(), proj.max()
    for i in range(3):
        img = np.asarray(Image.open(out / f"drr_{i:04d}.png"))
        assert img.shape == (5, 6) and img.dtype == (np.uint16 if bits == 16 else np.uint8)
        back = img[::-1].astype(float) / (2**bits - 1) * (hi - lo) + lo
        np.testing.assert_allclose(back, proj[i], atol=(hi - lo) / (2**bits - 1))
        pose = json.loads((out / f"drr_{i:04d}.json").read_text())
        np.testing.assert_allclose(pose["source"], np.asarray(fr.source[i]), rtol=1e-6)
        np.testing.assert_allclose(pose["detector_center"], np.asarray(fr.center[i]), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(pose["u"], np.asarray(fr.u[i]), atol=1e-7)
        assert pose["value_range"] == [lo, hi] and pose["pixel_size"] == list(np.asarray(g.d_detector))
    assert np.asarray(Image.open(out / "drr_0001.png"))[4, 2] == 2**bits - 1
    with pytest.raises(ValueError, match="not empty|output exists"):
        jio.export_drr_pngs(proj, g, out)
    with pytest.raises(ValueError, match="shape"):
        jio.export_drr_pngs(proj[:2], g, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- batch loaders ----------------------------------------------------------------------------


def test_ray_batches_cover_each_ray_once(rng):
    v = _vol(rng, shape=(4, 4, 4))
    g = jio.geometry_for_volume(v, n_views=3, n_detector=(4, 5))
    proj = rng.normal(size=g.projection_shape).astype(np.float32)
    batches = list(jio.ray_batches(jax.random.key(0), proj, g, batch_size=6))
    assert len(batches) == 60 // 6 and all(isinstance(b["origins"], np.ndarray) for b in batches)
    idx = np.concatenate([b["index"] for b in batches])
    assert len({tuple(i) for i in idx}) == 60
    b = batches[0]
    ref = pixel_rays(g, jnp.asarray(b["index"][:, 0]), jnp.asarray(b["index"][:, 1]), jnp.asarray(b["index"][:, 2]))
    np.testing.assert_allclose(b["origins"], np.asarray(ref.origins), rtol=1e-5)
    np.testing.assert_allclose(b["directions"], np.asarray(ref.directions), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(b["values"], proj[tuple(b["index"].T)])
    again = next(jio.ray_batches(jax.random.key(0), proj, g, batch_size=6))
    np.testing.assert_array_equal(again["index"], b["index"])
    with pytest.raises(ValueError, match="batch_size"):
        next(jio.ray_batches(jax.random.key(0), proj, g, batch_size=0))


def test_slice_batches_coordinates(rng):
    v = _vol(rng, shape=(5, 4, 6))
    bs = list(jio.slice_batches(jax.random.key(0), v.array, spacing=v.spacing, affine=v.affine, batch_size=4,
                                drop_remainder=False, shuffle=False))
    assert [b["slices"].shape[0] for b in bs] == [4, 2]
    b = bs[1]
    np.testing.assert_array_equal(b["slices"][0], v.array[:, :, 4])
    np.testing.assert_allclose(b["coords"][0, 2, 3], (v.affine @ np.array([2, 3, 4, 1.0]))[:3], rtol=1e-6)


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def run_cli():
    return cli.main


def test_cli_info(tmp_path, rng, run_cli, capsys):
    write_series(tmp_path / "s", rng.uniform(-1000, 1000, (6, 5, 4)).astype(np.float32), series_uid="1.2.3.9")
    assert run_cli(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "1.2.3.9" in out and "6 x 5 x 4 voxels" in out and "LPS" in out and "problems: none" in out
    assert "Explicit VR Little Endian" in out
    write_series(tmp_path / "s", rng.uniform(-1000, 1000, (6, 5, 3)).astype(np.float32), series_uid="1.2.3.8")
    assert run_cli(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "series found: 2" in out and "--series UID" in out
    assert run_cli(["info", get_testdata_file("CT_small.dcm")]) == 0
    out = capsys.readouterr().out
    assert "as a radiograph" in out and "problems: none" in out
    assert run_cli(["info", get_testdata_file("rtplan.dcm")]) == 0
    assert "no pixel data" in capsys.readouterr().out
    (tmp_path / "junk.dcm").write_text("junk")
    assert run_cli(["info", str(tmp_path / "junk.dcm")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a DICOM file" in err and "Traceback" not in err


def test_cli_convert_round_trip(tmp_path, rng, run_cli, capsys):
    acq = np.rint(rng.uniform(-1000, 1000, (6, 5, 4))).astype(np.float32)
    write_series(tmp_path / "s", acq, row=(0, 1, 0), col=(0, 0, -1))  # sagittal
    src = jio.load_volume(tmp_path / "s")
    assert run_cli(["convert", str(tmp_path / "s"), str(tmp_path / "v.nii.gz")]) == 0
    assert run_cli(["convert", str(tmp_path / "v.nii.gz"), str(tmp_path / "v.npz")]) == 0
    assert run_cli(["convert", str(tmp_path / "v.npz"), str(tmp_path / "dcm")]) == 0
    back = jio.load_volume(tmp_path / "dcm")
    np.testing.assert_allclose(back.array, src.array, atol=1e-3)
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-4)
    assert back.modality == "CT" and back.unit == "HU"
    capsys.readouterr()
    assert run_cli(["convert", str(tmp_path / "v.npz"), str(tmp_path / "dcm")]) == 2  # exists
    assert "output exists" in capsys.readouterr().err
    (tmp_path / "bad.nii").write_bytes(b"nope")
    assert run_cli(["convert", str(tmp_path / "bad.nii"), str(tmp_path / "o.npz")]) == 2
    assert not (tmp_path / "o.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
