"""Raw projections in (#21): intensities with Poisson noise, flat/dark fields, dead and hot pixels
and stripes, simulated from known line integrals, go through `raw_to_line_integrals` /
`jaxmedrf preprocess` and come back as those line integrals within what the noise predicts.

Noise model of the reference: with λ = (F − D)·e^{−p} expected counts over a dark level D,
Var p̂ ≈ (λ + D)/λ² + (F + D)/(n_f (F − D)²) (Poisson frame and dark current, the flat's mean of
n_f frames; the dark mean's share is negligible).
"""

import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import jaxmedrf as jm
from jaxmedrf import preprocess as pp
from jaxmedrf.cli import main
from jaxmedrf.io import load_field, load_frames

SEED = 20261203
I0 = 2.0e4  # counts per pixel in the open beam
N_FIELD = 16  # flat and dark frames
DARK = 100.0  # counts
DEAD = [(3, 5), (12, 90), (0, 127)]  # gain 0: reads the dark level
STUCK = (20, 40)  # saturated in every frame, flat and dark included
HOT = (7, 70)  # +3000 counts of dark current
# Column → gain during the scan / gain in the flat: stripes stronger than the sinogram's change from
# one column to the next there (about 0.01), the regime of the sorting-based ring filter.
STRIPES = {56: 1.06, 70: 0.95}
FLAGS = ["--dso", "400", "--dsd", "600", "--d-detector", "2", "0.625", "--n-voxel", "24", "--d-voxel", "2"]


def _geometry(n_views=60):
    return jm.cone_beam(n_voxel=(24, 24, 24), d_voxel=2.0, n_detector=(24, 128), d_detector=(2.0, 0.625),
                        DSD=600.0, DSO=400.0, n_views=n_views)


@pytest.fixture(scope="module")
def truth():
    """Noise-free line integrals of the spheres phantom (water sphere of radius 16 mm + inserts)."""
    return np.asarray(jm.analytic_projections(jm.spheres(radius=16.0), _geometry()), np.float64)


def _raw(p, rng, *, defects=True, stripes=True, uniform=False, drift=None):
    """``(frames, flat frames, dark frames, expected counts λ, gain F − D)`` for line integrals ``p``:
    the gain varies across the columns (±10 %) and from pixel to pixel (2 %) unless ``uniform``;
    ``drift``: the source's output in each frame, relative to the flat's."""
    v, nv, nu = p.shape
    gain = np.full((nv, nu), I0)
    if not uniform:
        gain *= (1 + 0.1 * np.sin(np.arange(nu) / 9.0))[None] * (1 + 0.02 * rng.standard_normal((nv, nu)))
    dark = DARK + 3 * rng.standard_normal((nv, nu))
    if defects:
        for rc in DEAD:
            gain[rc] = 0.0
        dark[HOT] += 3000
    scan_gain = gain.copy()
    if stripes:
        for c, f in STRIPES.items():
            scan_gain[:, c] *= f
    lam = scan_gain * np.exp(-p)
    if drift is not None:
        lam = lam * drift[:, None, None]
    frames = rng.poisson(lam) + rng.poisson(np.broadcast_to(dark, p.shape))
    flats = rng.poisson(np.broadcast_to(gain, (N_FIELD, nv, nu))) + rng.poisson(np.broadcast_to(dark, (N_FIELD, nv, nu)))
    darks = rng.poisson(np.broadcast_to(dark, (N_FIELD, nv, nu)))
    if defects:
        for a in (frames, flats, darks):
            a[:, STUCK[0], STUCK[1]] = 65535
    return frames.astype(np.uint16), flats.astype(np.uint16), darks.astype(np.uint16), lam, gain


def _sigma(lam, gain):
    with np.errstate(divide="ignore"):
        return np.sqrt((lam + DARK) / lam**2 + (gain + DARK) / (N_FIELD * gain**2))


def _defect_mask(shape):
    m = np.zeros(shape, bool)
    for rc in (*DEAD, STUCK, HOT):
        m[rc] = True
    return m


def _z(est, p, sigma, keep):
    """Standardised errors where the line integral is clear of the clip at 0 (p > 4σ) and ``keep``."""
    sel = keep & (p > 4 * sigma)
    return ((est - p) / sigma)[sel], sel


def test_flat_dark_round_trip_within_the_noise_bad_pixels_replaced(truth):
    rng = np.random.default_rng(SEED)
    frames, flats, darks, lam, gain = _raw(truth, rng)
    res = pp.raw_to_line_integrals(frames, flat=flats.mean(0), dark=darks.mean(0))
    assert res.projections.dtype == np.float32 and res.projections.shape == truth.shape
    defects = _defect_mask(truth.shape[1:])
    assert np.all(res.bad_pixels[defects]) and res.bad_pixels.sum() <= defects.sum() + 2
    assert res.floored == 0 and res.projections.min() == 0.0
    keep = np.broadcast_to(~defects, truth.shape).copy()
    keep[:, :, list(STRIPES)] = False
    sigma = _sigma(lam, gain)
    z, sel = _z(res.projections, truth, sigma, keep)
    assert sel.sum() > 50_000
    assert abs(z.mean()) < 0.03 and 0.97 < z.std() < 1.03, (z.mean(), z.std())
    err = (res.projections - truth)[sel]
    assert abs(err.mean()) < 0.03 * sigma[sel].mean()  # bias
    assert abs(np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(sigma[sel] ** 2)) - 1) < 0.03  # RMS as predicted
    # Bad pixels: the median of their neighbours, close to the truth there.
    for rc in (*DEAD, STUCK, HOT):
        e = res.projections[:, rc[0], rc[1]] - truth[:, rc[0], rc[1]]
        assert np.abs(e).max() < 0.08 and abs(e.mean()) < 0.02, (rc, np.abs(e).max(), e.mean())
    # Without the ring filter the stripes stay: the scan's gain differs from the flat's there.
    for c, f in STRIPES.items():
        assert np.mean((res.projections - truth)[:, :, c]) == pytest.approx(-np.log(f), abs=0.005)


def test_ring_filter_removes_the_stripes_and_keeps_the_rest(truth):
    rng = np.random.default_rng(SEED)
    frames, flats, darks, lam, gain = _raw(truth, rng)
    res = pp.raw_to_line_integrals(frames, flat=flats.mean(0), dark=darks.mean(0), ring_filter=True)
    assert res.ring_size == 5  # default: 1 % of 128 columns, at least 5
    err = res.projections - truth
    for c, f in STRIPES.items():
        assert abs(err[:, :, c].mean()) < 0.2 * abs(np.log(f)), (c, err[:, :, c].mean())
    keep = np.broadcast_to(~_defect_mask(truth.shape[1:]), truth.shape).copy()
    keep[:, :, list(STRIPES)] = False
    z, _ = _z(res.projections, truth, _sigma(lam, gain), keep)
    assert abs(z.mean()) < 0.05 and z.std() < 1.1, (z.mean(), z.std())


def test_remove_stripes_is_exact_on_a_pure_stripe():
    rng = np.random.default_rng(SEED)
    base = np.cumsum(rng.random((40, 3, 32)), axis=0)  # columns differ, each smooth over the views
    base = np.broadcast_to(base.mean(axis=2, keepdims=True), base.shape).copy()  # every column the same
    striped = base.copy()
    striped[:, :, 10] += 0.3
    np.testing.assert_allclose(pp.remove_stripes(striped, size=5), base, atol=1e-12)
    with pytest.raises(ValueError, match="ring-filter size"):
        pp.remove_stripes(striped, size=1)


def test_air_region_i0_follows_the_source_drift(truth):
    """No flat field (a detector of uniform gain): I0 of each frame from air, in a region or the
    border found automatically; the bad pixels come from the frames' temporal statistics."""
    rng = np.random.default_rng(SEED + 1)
    drift = 1 + 0.05 * np.sin(np.arange(truth.shape[0]) / 5.0)
    frames, _, _, lam, gain = _raw(truth, rng, stripes=False, uniform=True, drift=drift)
    defects = _defect_mask(truth.shape[1:])
    sigma = _sigma(lam, gain)
    for region in ("auto", (0, 24, 0, 8)):
        res = pp.raw_to_line_integrals(frames, dark=np.full(truth.shape[1:], DARK), air_region=region,
                                       bad_pixels="temporal")
        np.testing.assert_allclose(res.air, I0 * drift, rtol=2e-3)
        assert np.all(res.bad_pixels[defects]) and res.bad_pixels.sum() <= defects.sum() + 2
        z, _ = _z(res.projections, truth, sigma, np.broadcast_to(~defects, truth.shape))
        assert abs(z.mean()) < 0.1 and 0.95 < z.std() < 1.05, (region, z.mean(), z.std())


def test_flat_with_air_region_corrects_the_drift(truth):
    rng = np.random.default_rng(SEED + 2)
    drift = 1 + 0.05 * np.sin(np.arange(truth.shape[0]) / 5.0)
    frames, flats, darks, lam, gain = _raw(truth, rng, defects=False, stripes=False, drift=drift)
    kw = {"flat": flats.mean(0), "dark": darks.mean(0)}
    plain = pp.raw_to_line_integrals(frames, **kw)
    fixed = pp.raw_to_line_integrals(frames, air_region=(0, 24, 0, 8), **kw)
    np.testing.assert_allclose(fixed.air, drift, rtol=2e-3)
    assert plain.air is None
    sigma = _sigma(lam / drift[:, None, None], gain)
    z, _ = _z(fixed.projections, truth, sigma, np.ones(truth.shape, bool))
    assert abs(z.mean()) < 0.1 and z.std() < 1.1
    assert np.abs(np.mean(plain.projections - truth, axis=(1, 2))).max() > 0.03  # drift left in without it


def test_replace_bad_pixels_widens_for_clusters_and_refuses_a_dead_block():
    rng = np.random.default_rng(SEED)
    stack = rng.random((4, 12, 12))
    bad = np.zeros((12, 12), bool)
    bad[4:7, 4:7] = True  # the centre has no good pixel at r = 1
    out = pp.replace_bad_pixels(stack, bad)
    np.testing.assert_array_equal(out[:, ~bad], stack[:, ~bad])
    good = ~bad[3:8, 3:8]
    np.testing.assert_allclose(out[:, 5, 5], np.median(stack[:, 3:8, 3:8][:, good], axis=1))
    np.testing.assert_allclose(out[:, 4, 4], np.median(stack[:, 3:6, 3:6][:, ~bad[3:6, 3:6]], axis=1))
    with pytest.raises(ValueError, match="no good pixel within 1"):
        pp.replace_bad_pixels(stack, bad, max_radius=1)


def test_floor_and_refusals_of_the_library(unchecked):
    frames = np.full((3, 16, 16), 1000.0)
    frames[0, 2, 2] = 0.0  # nothing left: at the floor
    frames[1, 3, 3] = 2000.0  # brighter than the flat: p < 0 → 0
    res = pp.raw_to_line_integrals(frames, flat=np.full((16, 16), 1000.0), bad_pixels="none", floor=1e-4)
    assert res.floored == 1 and res.negative == 1
    assert res.projections[0, 2, 2] == pytest.approx(-np.log(1e-4)) and res.projections[1, 3, 3] == 0
    assert "1 value(s)" in res.summary()
    with pytest.raises(ValueError, match="flat field or an air region"):
        pp.raw_to_line_integrals(frames)
    with pytest.raises(ValueError, match="flat field is 16x9"):
        pp.raw_to_line_integrals(frames, flat=np.ones((16, 9)))
    with pytest.raises(ValueError, match="swapped"):
        pp.raw_to_line_integrals(frames, flat=np.full((16, 16), 10.0), dark=np.full((16, 16), 20.0))
    one_zero = np.full((16, 16), 1000.0)
    one_zero[1, 1] = 0
    with pytest.raises(ValueError, match="row 1, column 1"):
        pp.raw_to_line_integrals(frames, flat=one_zero, bad_pixels="none")
    with pytest.raises(ValueError, match="outside"):
        pp.raw_to_line_integrals(frames, air_region=(0, 17, 0, 2))


# ---- formats -------------------------------------------------------------------------------------


def _dicom(path, frames, *, number=None, slope=None):
    """A grey-scale X-ray DICOM file: one frame, or a multi-frame object."""
    frames = np.asarray(frames, np.uint16)
    multi = frames.ndim == 3
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1" if multi else "1.2.840.10008.5.1.4.1.1.1.1.1"
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
    ds.Modality = "XA" if multi else "DX"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if multi:
        ds.NumberOfFrames = frames.shape[0]
    if number is not None:
        ds.InstanceNumber = number
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, 0, "US"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = frames.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_each_input_format_reads_the_same_stack(tmp_path):
    rng = np.random.default_rng(SEED)
    stack = rng.integers(0, 60000, size=(5, 6, 7)).astype(np.uint16)
    # .npy stack and single frames
    np.save(tmp_path / "stack.npy", stack)
    np.testing.assert_array_equal(load_frames(tmp_path / "stack.npy"), stack)
    assert load_frames(tmp_path / "stack.npy").dtype == np.float32
    # a folder of 16-bit PNGs, in natural name order (frame_2 before frame_10)
    png = tmp_path / "png"
    png.mkdir()
    for k, f in zip((1, 2, 10, 11, 100), stack):
        Image.fromarray(f).save(png / f"frame_{k}.png")
    (png / "notes.txt").write_text("ignored")
    np.testing.assert_array_equal(load_frames(png), stack)
    # a multi-frame 16-bit TIFF; a folder of float32 TIFFs
    Image.fromarray(stack[0]).save(tmp_path / "multi.tif", save_all=True, append_images=[Image.fromarray(f) for f in stack[1:]])
    np.testing.assert_array_equal(load_frames(tmp_path / "multi.tif"), stack)
    tif = tmp_path / "tif"
    tif.mkdir()
    for k, f in enumerate(stack):
        Image.fromarray(f.astype(np.float32) / 4).save(tif / f"p{k:03d}.tiff")
    np.testing.assert_allclose(load_frames(tif), stack / 4)
    # one multi-frame DICOM with a rescale; a folder of single-frame radiographs ordered by InstanceNumber
    _dicom(tmp_path / "multi.dcm", stack // 2, slope=2)
    np.testing.assert_array_equal(load_frames(tmp_path / "multi.dcm"), (stack // 2) * 2)
    dcm = tmp_path / "dcm"
    dcm.mkdir()
    for k, name in enumerate(["b", "e", "a", "d", "c"]):  # names out of order: InstanceNumber decides
        _dicom(dcm / f"{name}", stack[k], number=k + 1)
    np.testing.assert_array_equal(load_frames(dcm), stack)
    # fields: the mean of every frame of every path
    np.testing.assert_allclose(load_field([tmp_path / "stack.npy", png]), stack.mean(axis=0))


@pytest.mark.parametrize("case", ["garbage png", "garbage npy", "not dicom", "sizes", "colour", "empty"])
def test_unreadable_input_is_one_clear_error(tmp_path, case):
    d = tmp_path / "in"
    d.mkdir()
    if case == "garbage png":
        (d / "a.png").write_bytes(b"not a png")
        path, word = d / "a.png", "cannot read the image"
    elif case == "garbage npy":
        (d / "a.npy").write_bytes(b"\x93NUMPY garbage")
        path, word = d / "a.npy", "cannot read the .npy"
    elif case == "not dicom":
        (d / "frame1").write_text("hello")
        path, word = d, "not a DICOM file"
    elif case == "sizes":
        np.save(d / "f1.npy", np.ones((2, 4, 4)))
        np.save(d / "f2.npy", np.ones((4, 5)))
        path, word = d, "all frames must have one size"
    elif case == "colour":
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "c.png")
        path, word = d / "c.png", "grey-scale"
    else:
        path, word = d, "no frames"
    with pytest.raises(ValueError, match=word):
        load_frames(path)


# ---- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_files(truth, tmp_path_factory):
    """The raw scan on disk: frames as a folder of 16-bit PNGs, flat as a multi-frame TIFF, dark as
    a multi-frame DICOM."""
    rng = np.random.default_rng(SEED)
    frames, flats, darks, lam, gain = _raw(truth, rng)
    d = tmp_path_factory.mktemp("raw")
    (d / "frames").mkdir()
    for k, f in enumerate(frames):
        Image.fromarray(f).save(d / "frames" / f"proj_{k}.png")
    Image.fromarray(flats[0]).save(d / "flat.tif", save_all=True, append_images=[Image.fromarray(f) for f in flats[1:]])
    _dicom(d / "dark.dcm", darks)
    np.save(d / "frames.npy", frames)
    return d, frames, flats, darks


def test_cli_writes_the_simulate_format_and_fdk_reconstructs_it(raw_files, truth, tmp_path, capsys):
    d, frames, flats, darks = raw_files
    out = tmp_path / "scan.npz"
    assert main(["preprocess", str(d / "frames"), "--flat", str(d / "flat.tif"), "--dark", str(d / "dark.dcm"),
                 *FLAGS, "--ring-filter", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "60 frames of 24x128" in line and "5 bad pixel(s)" in line, line
    assert "ring filter size 5" in line
    with np.load(out) as z:
        assert sorted(z.files) == ["angles", "geometry", "projections"]
        proj, angles, geo = z["projections"], z["angles"], str(z["geometry"])
    g = _geometry()
    assert geo == g.to_json() and json.loads(geo)["beam"] == "cone"
    np.testing.assert_allclose(angles, np.asarray(g.angles))
    lib = pp.raw_to_line_integrals(frames, flat=flats.mean(0), dark=darks.mean(0), ring_filter=True)
    np.testing.assert_allclose(proj, lib.projections, atol=1e-6)
    recon = tmp_path / "recon.npz"
    assert main(["reconstruct", str(out), "--method", "fdk", "--out", str(recon), "--no-png"]) == 0
    vol = np.load(recon)["volume"]
    ref = np.asarray(jm.fdk(truth.astype(np.float32), g).volume)
    assert vol.shape == (24, 24, 24) and np.all(np.isfinite(vol))
    assert np.linalg.norm(vol - ref) < 0.15 * np.linalg.norm(ref)  # noise and what is left of the rings


def test_cli_geometry_json_angles_file_and_flips(raw_files, tmp_path):
    d, frames, flats, darks = raw_files
    g = _geometry()
    (tmp_path / "g.json").write_text(g.to_json())
    np.savetxt(tmp_path / "angles.txt", np.rad2deg(np.asarray(g.angles)))
    base = [str(d / "frames.npy"), "--flat", str(d / "flat.tif"), "--dark", str(d / "dark.dcm")]
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    assert main(["preprocess", *base, "--geometry", str(tmp_path / "g.json"), "--out", str(a)]) == 0
    assert main(["preprocess", *base, *FLAGS, "--angles", str(tmp_path / "angles.txt"), "--out", str(b)]) == 0
    assert main(["preprocess", *base, *FLAGS, "--flip-rows", "--flip-cols", "--out", str(c)]) == 0
    za, zb, zc = np.load(a), np.load(b), np.load(c)
    np.testing.assert_array_equal(za["projections"], zb["projections"])
    np.testing.assert_allclose(json.loads(str(zb["geometry"]))["angles"], np.asarray(g.angles), atol=1e-12)
    np.testing.assert_array_equal(zc["projections"], za["projections"][:, ::-1, ::-1])


def _bad_cases(d, tmp_path):
    flat_zero = tmp_path / "flat0.npy"
    np.save(flat_zero, np.zeros((24, 128)))
    one_dead = np.full((24, 128), 2.0e4)
    one_dead[5, 6] = 0
    np.save(tmp_path / "flat1.npy", one_dead)
    np.save(tmp_path / "small.npy", np.ones((24, 100)))
    np.savetxt(tmp_path / "angles.txt", np.arange(59))
    g = _geometry(n_views=50)
    (tmp_path / "g.json").write_text(g.to_json())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "number.json").write_text("3")
    frames = str(d / "frames.npy")
    return {
        "flat zeros": ([frames, "--flat", str(flat_zero), *FLAGS], "flat field minus dark"),
        "flat below dark": ([frames, "--flat", str(d / "dark.dcm"), "--dark", str(d / "flat.tif"), *FLAGS], "swapped"),
        "one dead, no bad pixels": ([frames, "--flat", str(tmp_path / "flat1.npy"), "--bad-pixels", "none", *FLAGS],
                                    "row 5, column 6"),
        "angles count": ([frames, "--flat", str(d / "flat.tif"), *FLAGS, "--angles", str(tmp_path / "angles.txt")],
                         "59 angles for 60 frames"),
        "geometry views": ([frames, "--flat", str(d / "flat.tif"), "--geometry", str(tmp_path / "g.json")],
                           "50 angles for 60 frames"),
        "flat shape": ([frames, "--flat", str(tmp_path / "small.npy"), *FLAGS], "flat field is 24x100"),
        "unreadable": ([str(tmp_path / "broken.png"), "--air-region", "auto", *FLAGS], "cannot read the image"),
        "missing file": ([str(tmp_path / "nope"), *FLAGS], "no such file"),
        "no geometry": ([frames, "--flat", str(d / "flat.tif")], "--dso, --dsd, --d-detector"),
        "bad region": ([frames, "--air-region", "1", "2", *FLAGS], "--air-region takes"),
        "both geometries": ([frames, "--geometry", str(tmp_path / "g.json"), "--arc", "200"], "drop --arc"),
        "geometry not json": ([frames, "--geometry", str(tmp_path / "number.json")], "not a geometry JSON"),
        "arc and angles": ([frames, *FLAGS, "--arc", "200", "--angles", str(tmp_path / "angles.txt")], "drop --arc"),
    }


def test_bad_input_exits_2_with_one_line_and_writes_nothing(raw_files, tmp_path, capsys, unchecked):
    d = raw_files[0]
    outdir = tmp_path / "out"
    outdir.mkdir()
    for name, (args, word) in _bad_cases(d, tmp_path).items():
        rc = main(["preprocess", *args, "--out", str(outdir / "scan.npz")])
        err = capsys.readouterr().err.strip()
        assert rc == 2, (name, err)
        assert err.startswith("jaxmedrf preprocess: error:") and err.count("\n") == 0 and word in err, (name, err)
        assert list(outdir.iterdir()) == [], name
