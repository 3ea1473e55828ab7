"""Volume I/O: DICOM series / enhanced DICOM / NIfTI / npz loading, orientation, round trips, bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import jaxmedrf.io as jio
from jaxmedrf.io.dicom import decode_pixels
from jaxmedrf.io.volume import reorient_to_lps

from io_helpers import SENTINELS, all_elements, write_series

SP = (0.8, 0.7, 2.5)


def _acq(rng, shape=(12, 10, 6)):
    return np.rint(rng.uniform(-1000, 2000, size=shape)).astype(np.float32)


def _no_temp_left(parent: Path):
    assert not [p.name for p in parent.iterdir() if p.name.startswith(".")]


# --- reorientation ----------------------------------------------------------------------------


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, 1, -1), (-1, -1, -1)])
def test_reorient_keeps_every_voxel_position(rng, perm, signs):
    a = rng.normal(size=(3, 4, 5)).astype(np.float32)
    aff = np.eye(4)
    aff[:3, :3] = np.eye(3)[:, perm] * np.array([1.5, 2.0, 3.0])[None, :] * np.array(signs)[None, :]
    aff[:3, 3] = rng.normal(size=3) * 10
    b, baff = reorient_to_lps(a, aff)
    assert np.all(np.diag(baff[:3, :3]) > 0) and np.allclose(baff[:3, :3], np.diag(np.diag(baff[:3, :3])))
    inv = np.linalg.inv(aff)
    for idx in np.ndindex(b.shape):  # reference: map each new voxel back through the old affine
        old = np.rint(inv @ baff @ np.array([*idx, 1.0]))[:3].astype(int)
        assert b[idx] == a[tuple(old)]


# --- DICOM series -----------------------------------------------------------------------------


def test_axial_series_shuffled_names(tmp_path, rng):
    acq = _acq(rng)
    write_series(tmp_path / "s", acq, spacing=SP, shuffle_rng=rng)
    vol = jio.load_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, acq)
    np.testing.assert_allclose(vol.spacing, SP, atol=1e-6)
    assert vol.orientation == "LPS" and vol.modality == "CT" and vol.unit == "HU"
    np.testing.assert_allclose(vol.affine[:3, 3], (-10, -20, 30), atol=1e-4)


@pytest.mark.parametrize("plane", ["coronal", "sagittal", "axial_feet_first"])
def test_orientations_brought_to_lps(tmp_path, rng, plane):
    acq = _acq(rng, (8, 7, 5))
    row, col = {"coronal": ((1, 0, 0), (0, 0, -1)), "sagittal": ((0, 1, 0), (0, 0, -1)),
                "axial_feet_first": ((-1, 0, 0), (0, 1, 0))}[plane]
    write_series(tmp_path / "s", acq, row=row, col=col, spacing=SP)
    vol = jio.load_volume(tmp_path / "s")
    assert vol.orientation == "LPS"
    if plane == "coronal":  # x = column, y = slice (posterior), z = -row
        expected = np.transpose(acq, (0, 2, 1))[:, :, ::-1]
    elif plane == "sagittal":  # normal = (0,1,0)x(0,0,-1) = (-1,0,0): slices go right
        expected = np.transpose(acq, (2, 0, 1))[::-1, :, ::-1]
    else:  # row towards right, normal (0,0,-1): x and z flipped
        expected = acq[::-1, :, ::-1]
    np.testing.assert_array_equal(vol.array, expected)
    # Geometric reference: each loaded voxel sits where the acquisition put it.
    r, c = np.array(row, float), np.array(col, float)
    acq_aff = np.eye(4)
    acq_aff[:3, 0], acq_aff[:3, 1], acq_aff[:3, 2] = r * SP[0], c * SP[1], np.cross(r, c) * SP[2]
    acq_aff[:3, 3] = (-10.0, -20.0, 30.0)
    for idx in [(0, 0, 0), tuple(n - 1 for n in vol.shape), (1, 2, 3)]:
        old = np.rint(np.linalg.solve(acq_aff, vol.affine @ np.array([*idx, 1.0])))[:3].astype(int)
        assert vol.array[idx] == acq[tuple(old)]


def test_rescale_slope_and_rle_compressed_series(tmp_path, rng):
    acq = np.rint(_acq(rng, (8, 8, 4)) / 2) * 2
    write_series(tmp_path / "s", acq, slope=2.0, intercept=-1000.0, compress=pydicom.uid.RLELossless)
    vol = jio.load_volume(tmp_path / "s")
    np.testing.assert_allclose(vol.array, acq)
    assert "RLE" in vol.meta["transfer_syntax"]


def test_several_series_listed_then_chosen(tmp_path, rng):
    a, b = _acq(rng, (6, 6, 4)), _acq(rng, (6, 6, 3))
    write_series(tmp_path / "d", a, series_uid="1.2.3.4.1")
    shutil.copytree(tmp_path / "d", tmp_path / "d2")
    write_series(tmp_path / "x", b, series_uid="1.2.3.4.2")
    for f in (tmp_path / "x").iterdir():
        f.rename(tmp_path / "d" / ("b_" + f.name))
    with pytest.raises(ValueError, match=r"2 series found.*series=UID") as e:
        jio.load_volume(tmp_path / "d")
    assert "1.2.3.4.1" in str(e.value) and "1.2.3.4.2" in str(e.value)
    np.testing.assert_array_equal(jio.load_volume(tmp_path / "d", series="1.2.3.4.2").array, b)
    with pytest.raises(ValueError, match="not found"):
        jio.load_volume(tmp_path / "d", series="9.9")


def test_missing_slice_reported_as_gap(tmp_path, rng):
    paths = write_series(tmp_path / "s", _acq(rng, (6, 6, 8)))
    os.unlink(paths[4])
    with pytest.raises(ValueError, match=r"non-uniform slice spacing.*5\.000 mm"):
        jio.load_volume(tmp_path / "s")


def test_duplicate_positions(tmp_path, rng):
    write_series(tmp_path / "s", _acq(rng, (6, 6, 4)), positions=[0, 2.5, 2.5, 5.0])
    with pytest.raises(ValueError, match="duplicate slice positions"):
        jio.load_volume(tmp_path / "s")


def test_gantry_tilt_refused(tmp_path, rng):
    write_series(tmp_path / "s", _acq(rng, (6, 6, 5)), shear=(0.0, 0.6, 0.0))
    with pytest.raises(ValueError, match="gantry tilt of 13"):
        jio.load_volume(tmp_path / "s")


def test_inconsistent_rows_columns(tmp_path, rng):
    uid = pydicom.uid.generate_uid()
    write_series(tmp_path / "s", _acq(rng, (6, 6, 3)), series_uid=uid)
    write_series(tmp_path / "t", _acq(rng, (6, 5, 1)), series_uid=uid, positions=[7.5])
    (tmp_path / "t" / "slice_000.dcm").rename(tmp_path / "s" / "odd.dcm")
    with pytest.raises(ValueError, match=r"inconsistent image size: .*odd\.dcm"):
        jio.load_volume(tmp_path / "s")


def test_truncated_slice_names_the_file(tmp_path, rng):
    paths = write_series(tmp_path / "s", _acq(rng, (8, 8, 4)))
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match=paths[2].name):
        jio.load_volume(tmp_path / "s")


def test_undecodable_transfer_syntax(tmp_path, rng):
    paths = write_series(tmp_path / "s", _acq(rng, (8, 8, 3)))
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    ds.save_as(paths[1])
    with pytest.raises(ValueError, match=r"cannot decode pixel data with transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100"):
        jio.load_volume(tmp_path / "s")


def test_not_dicom_no_pixels_2d_and_empty_dir(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("hello, not an image")
    with pytest.raises(ValueError, match=r"notes\.dcm: not a DICOM file"):
        jio.load_volume(bad)
    with pytest.raises(ValueError, match=r"rtplan\.dcm: no pixel data"):
        jio.load_volume(get_testdata_file("rtplan.dcm"))
    with pytest.raises(ValueError, match=r"CT_small\.dcm: a single 2D image"):
        jio.load_volume(get_testdata_file("CT_small.dcm"))
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(bad, d)
    shutil.copy(get_testdata_file("rtplan.dcm"), d)
    with pytest.raises(ValueError, match="no DICOM image files found"):
        jio.load_volume(d)
    with pytest.raises(FileNotFoundError):
        jio.load_volume(tmp_path / "missing")


def test_single_slice_directory_is_2d(tmp_path, rng):
    write_series(tmp_path / "s", _acq(rng, (6, 6, 1)))
    with pytest.raises(ValueError, match="single 2D image"):
        jio.load_volume(tmp_path / "s")


# --- enhanced multi-frame ---------------------------------------------------------------------


def test_enhanced_ct_multiframe():
    path = get_testdata_file("eCT_Supplemental.dcm")
    vol = jio.load_volume(path)
    assert vol.shape == (512, 512, 2) and vol.orientation == "LPS" and vol.unit == "HU"
    np.testing.assert_allclose(vol.spacing, (0.388672, 0.388672, 10.0))
    raw = decode_pixels(pydicom.dcmread(path), path).astype(np.float32) - 1024.0  # frames at z=-159, -149
    # IOP row = (-1,0,0): x flipped; frames ordered inferior→superior.
    np.testing.assert_array_equal(vol.array[:, :, 0], raw[0].T[::-1])
    np.testing.assert_array_equal(vol.array[:, :, 1], raw[1].T[::-1])
    np.testing.assert_allclose(vol.affine[2, 3], -159.0)


@pytest.mark.parametrize("name", ["emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm",
                                  "emri_small_jpeg_2k_lossless.dcm", "emri_small_big_endian.dcm"])
def test_compressed_multiframe_decodes_equal(name):
    ref = decode_pixels(pydicom.dcmread(get_testdata_file("emri_small.dcm")), "ref")
    out = decode_pixels(pydicom.dcmread(get_testdata_file(name)), name)
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="without patient geometry"):  # these test files carry none
        jio.load_volume(get_testdata_file(name))


# --- writing, round trips, de-identification ----------------------------------------------------


def test_dicom_round_trip_and_deidentification(tmp_path, rng):
    acq = _acq(rng, (10, 9, 5))
    src = write_series(tmp_path / "src", acq, row=(1, 0, 0), col=(0, 0, -1), spacing=SP)  # coronal
    vol = jio.load_volume(tmp_path / "src")
    vol = vol.replace(array=vol.array + rng.uniform(-0.4, 0.4, vol.shape).astype(np.float32))
    out = jio.save_volume(vol, tmp_path / "out")
    back = jio.load_volume(out)
    np.testing.assert_allclose(back.array, vol.array, atol=0.5 + 1e-3)  # integer HU rescale
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert back.orientation == "LPS" and back.meta["BodyPartExamined"] == "HEAD"
    _no_temp_left(tmp_path)
    # Tag scan of every output file: nothing identifying, no private tags, no source UIDs.
    src_ds = pydicom.dcmread(src[0])
    src_uids = {str(src_ds.StudyInstanceUID), str(src_ds.SeriesInstanceUID), str(src_ds.FrameOfReferenceUID)}
    files = sorted(Path(out).iterdir())
    assert len(files) == vol.shape[2]
    sops = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES" and "DERIVED" in ds.ImageType
        assert str(ds.PatientName) == "" and ds.PatientID == ""
        assert all(kw in ds and str(ds.data_element(kw).value) == "" for kw in jio.deid.EMPTY)  # the one table
        sops.add(ds.SOPInstanceUID)
        for elem in all_elements(ds):
            assert not elem.tag.is_private
            text = str(elem.value)
            assert not any(s.lower() in text.lower() for s in SENTINELS), (f.name, elem)
            assert text not in src_uids
    assert len(sops) == len(files)
    # like=: geometry and technical attributes from a loaded volume, for a bare array.
    liked = jio.load_volume(jio.save_volume(back.array * 0 + 5, tmp_path / "liked.npz", like=back))
    np.testing.assert_allclose(liked.affine, back.affine)
    assert liked.modality == "CT" and liked.unit == "HU"


def test_deidentify_helper(tmp_path, rng, unchecked):
    paths = write_series(tmp_path / "s", _acq(rng, (4, 4, 2)))
    a, b = pydicom.dcmread(paths[0]), pydicom.dcmread(paths[1])
    uid_map: dict = {}
    da, db = jio.deidentify(a, uid_map=uid_map), jio.deidentify(b, uid_map=uid_map)
    assert str(a.PatientName) == SENTINELS[0]  # input untouched
    for ds in (da, db):
        for elem in all_elements(ds):
            assert not elem.tag.is_private
            assert not any(s.lower() in str(elem.value).lower() for s in SENTINELS), elem
        assert ds.PatientIdentityRemoved == "YES" and "PatientName" in ds and ds.SOPClassUID == a.SOPClassUID
    assert da.SeriesInstanceUID == db.SeriesInstanceUID != a.SeriesInstanceUID
    assert da.SOPInstanceUID != db.SOPInstanceUID and da.file_meta.MediaStorageSOPInstanceUID == da.SOPInstanceUID
    np.testing.assert_array_equal(da.pixel_array, a.pixel_array)
    with pytest.raises(ValueError, match="pydicom Dataset"):
        jio.deidentify({"PatientName": "x"})


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.npz"])
def test_nifti_npz_round_trip(tmp_path, rng, name):
    aff = np.diag([0.9, 1.1, 2.0, 1.0])
    aff[:3, 3] = (-5.0, 7.0, 11.0)
    arr = rng.normal(size=(6, 5, 4)).astype(np.float32)
    p = jio.save_volume(arr, tmp_path / name, affine=aff, modality="MR", unit="MR")
    back = jio.load_volume(p)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    assert (back.modality, back.unit) == ("MR", "MR")
    _no_temp_left(tmp_path)


def test_mr_dicom_series_round_trip_scaled(tmp_path, rng):
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    arr = rng.uniform(0, 0.05, size=(5, 4, 3)).astype(np.float32)  # non-integer units: rescaled to int16
    back = jio.load_volume(jio.save_volume(arr, tmp_path / "mr", affine=aff, modality="MR", unit="MR"))
    assert (back.modality, back.unit, back.meta["sop_class"]) == ("MR", "MR", "MR Image Storage")
    slope = float(pydicom.dcmread(next((tmp_path / "mr").iterdir())).RescaleSlope)
    np.testing.assert_allclose(back.array, arr, atol=0.5 * slope * 1.001)
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)


def test_nifti_ras_to_lps(tmp_path, rng):
    import nibabel as nib

    arr = rng.normal(size=(4, 5, 6)).astype(np.float32)
    ras = np.diag([2.0, 3.0, 4.0, 1.0])  # +i → Right, +j → Anterior: both flipped in LPS
    nib.save(nib.Nifti1Image(arr, ras), tmp_path / "r.nii.gz")
    vol = jio.load_volume(tmp_path / "r.nii.gz")
    np.testing.assert_array_equal(vol.array, arr[::-1, ::-1, :])
    np.testing.assert_allclose(vol.spacing, (2, 3, 4))
    np.testing.assert_allclose(vol.affine[:3, 3], (-6.0, -12.0, 0.0))  # RAS (6,12,0) of voxel (3,4,0)


def test_nifti_nan_and_2d_rejected(tmp_path):
    import nibabel as nib

    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(ValueError, match=r"nan\.nii: 1 voxel\(s\) are NaN"):
        jio.load_volume(tmp_path / "nan.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(ValueError, match=r"flat\.nii: a volume must be 3D"):
        jio.load_volume(tmp_path / "flat.nii")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        jio.load_volume(tmp_path / "junk.nii.gz")


def test_save_failure_leaves_nothing(tmp_path, rng, monkeypatch):
    arr = rng.normal(size=(4, 4, 5)).astype(np.float32)
    calls = {"n": 0}
    real = pydicom.dataset.Dataset.save_as

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", flaky)
    with pytest.raises(OSError):
        jio.save_volume(arr, tmp_path / "out", spacing=1.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="NaN"):
        jio.save_volume(np.full((2, 2, 2), np.nan), tmp_path / "x.nii", spacing=1.0)
    with pytest.raises(ValueError, match="disagrees"):
        jio.save_volume(arr, tmp_path / "x.nii", spacing=2.0, affine=np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_overwrite(tmp_path, rng):
    arr = rng.normal(size=(3, 3, 3)).astype(np.float32)
    jio.save_volume(arr, tmp_path / "a.npz", spacing=1.0)
    with pytest.raises(ValueError, match="output exists"):
        jio.save_volume(arr, tmp_path / "a.npz", spacing=1.0)
    jio.save_volume(arr * 2, tmp_path / "a.npz", spacing=1.0, overwrite=True)
    np.testing.assert_array_equal(jio.load_volume(tmp_path / "a.npz").array, arr * 2)
