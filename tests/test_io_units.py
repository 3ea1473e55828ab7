"""Intensity units of volumes read as attenuation: ``--units HU|mu``, the HU guess for NIfTIs of
unknown unit, refusal of anything else (issue #17, item 5). Tiny volumes and detectors: fast."""

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from jaxmedrf import cli
from jaxmedrf import io as jio

N = 16
SMALL = ["--n-views", "2", "--n-detector", "8", "8", "--no-png"]


def _hu_ct(rng, pad=-2048.0):
    """A 16³ CT in HU: air around a water cylinder with a bone block, padding in two corners."""
    hu = np.full((N, N, N), -1000.0, np.float32)
    x, y = np.meshgrid(np.arange(N) - 7.5, np.arange(N) - 7.5, indexing="ij")
    body = np.broadcast_to((x**2 + y**2 < 36)[..., None], hu.shape)
    hu[body] = 40.0 + 10.0 * rng.standard_normal(int(body.sum()))
    hu[6:10, 6:10, 4:12] = 1200.0
    hu[:2, :2] = pad  # outside the reconstruction circle
    return hu


def _plain_nifti(path, arr):
    """A NIfTI written by nibabel itself: no jaxmedrf ``descrip``, so the unit is unknown."""
    nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def _simulate(tmp_path, src, *extra, name="out.npz"):
    out = tmp_path / name
    rc = cli.main(["simulate", "--volume", str(src), *SMALL, "--out", str(out), *extra])
    if rc != 0:
        return rc, None
    with np.load(out) as z:
        return rc, np.asarray(z["volume"])


def _one_line_refusal(capsys, tmp_path, before):
    err = capsys.readouterr().err
    assert "--units" in err and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert sorted(tmp_path.iterdir()) == before  # nothing written
    return err


def test_looks_like_hu_rules(rng):
    hu = _hu_ct(rng)
    assert jio.looks_like_hu(hu)
    assert jio.looks_like_hu(_hu_ct(rng, pad=-3024.0)) and jio.looks_like_hu(_hu_ct(rng, pad=-1024.0))
    assert not jio.looks_like_hu(np.where(hu < -1500, -4096.0, hu))  # below any padding: not HU
    assert not jio.looks_like_hu(rng.uniform(0, 255, (N, N, N)))  # MR, 8 bit
    assert not jio.looks_like_hu(rng.uniform(0, 4000, (N, N, N)))  # MR, 12 bit
    assert not jio.looks_like_hu(np.asarray(jio.hu_to_mu(hu)))  # μ in mm⁻¹
    assert not jio.looks_like_hu(np.where(hu > 1000, 20000.0, hu))  # 3 % of voxels at 20000: not HU


def test_attenuation_units_known_guessed_overridden(rng):
    hu = _hu_ct(rng)
    vol = jio.VolumeData(hu, np.full(3, 2.0), np.diag([2.0, 2.0, 2.0, 1.0]), source="/data/chest.nii.gz")
    assert jio.attenuation_units(vol.replace(unit="HU")) == ("HU", "")
    assert jio.attenuation_units(vol.replace(unit="mm^-1")) == ("mm^-1", "")
    unit, note = jio.attenuation_units(vol)
    assert unit == "HU" and note.startswith("chest.nii.gz: unit unknown") and "--units" in note
    with pytest.warns(UserWarning, match="look like HU"):
        mu = jio.attenuation_volume(vol)
    np.testing.assert_array_equal(mu, np.asarray(jio.hu_to_mu(hu), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit units: no note
        np.testing.assert_array_equal(jio.attenuation_volume(vol, units="HU"), mu)
        np.testing.assert_array_equal(jio.attenuation_volume(vol, units="mu"), hu)
    assert "file says its unit is HU" in jio.attenuation_units(vol.replace(unit="HU"), units="mu")[1]
    with pytest.raises(ValueError, match="not attenuation.*--units"):
        jio.attenuation_units(vol.replace(unit="MR", modality="MR"))
    with pytest.raises(ValueError, match="do not look like HU.*--units"):
        jio.attenuation_units(vol.replace(array=np.asarray(mu)))
    with pytest.raises(ValueError, match="units must be"):
        jio.attenuation_units(vol, units="hu")


def test_cli_plain_hu_nifti_is_taken_as_hu_with_one_note(tmp_path, rng, capsys):
    src = _plain_nifti(tmp_path / "chest.nii.gz", _hu_ct(rng))
    rc, guessed = _simulate(tmp_path, src)
    assert rc == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: chest.nii.gz: unit unknown, values look like HU"), notes
    rc, explicit = _simulate(tmp_path, src, "--units", "HU", name="explicit.npz")
    assert rc == 0 and "note" not in capsys.readouterr().err
    np.testing.assert_array_equal(guessed, explicit)
    np.testing.assert_allclose(explicit, np.asarray(jio.hu_to_mu(jio.load_volume(src).array)), rtol=1e-6)
    rc, raw = _simulate(tmp_path, src, "--units", "mu", name="raw.npz")  # --units overrides the guess
    assert rc == 0
    np.testing.assert_array_equal(raw, jio.load_volume(src).array)


def test_cli_mu_nifti_needs_units_mu(tmp_path, rng, capsys):
    mu = np.asarray(jio.hu_to_mu(_hu_ct(rng)), np.float32)
    src = _plain_nifti(tmp_path / "mu.nii.gz", mu)
    before = sorted(tmp_path.iterdir())
    assert _simulate(tmp_path, src)[0] == 2
    _one_line_refusal(capsys, tmp_path, before)
    rc, vol = _simulate(tmp_path, src, "--units", "mu")
    assert rc == 0
    np.testing.assert_array_equal(vol, jio.load_volume(src).array)


@pytest.mark.parametrize("cmd", ["simulate", "register", "render"])
def test_cli_mr_nifti_is_refused_naming_units(tmp_path, rng, capsys, cmd):
    src = _plain_nifti(tmp_path / "t1.nii.gz", np.round(rng.uniform(0, 255, (N, N, N))))
    before = sorted(tmp_path.iterdir())
    out = str(tmp_path / "never")
    argv = {"simulate": ["simulate", "--volume", src, *SMALL, "--out", out + ".npz"],
            "register": ["register", "--volume", src, "--xray", out + ".npz", "--no-png", "--out", out + ".json"],
            "render": ["render", src, "--n-frames", "2", "--size", "8", "--out", out + ".gif"]}[cmd]
    assert cli.main(argv) == 2
    err = _one_line_refusal(capsys, tmp_path, before)
    assert "t1.nii.gz" in err and "do not look like HU" in err


def test_cli_units_override_a_stated_unit_with_a_note(tmp_path, rng, capsys):
    hu = _hu_ct(rng)
    src = tmp_path / "ct.nii.gz"
    jio.save_volume(jio.VolumeData(hu, np.full(3, 2.0), np.diag([2.0, 2.0, 2.0, 1.0]), "CT", "HU"), src)
    rc, known = _simulate(tmp_path, src)
    assert rc == 0 and "note" not in capsys.readouterr().err  # a unit jaxmedrf wrote: as before
    np.testing.assert_allclose(known, np.asarray(jio.hu_to_mu(hu)), rtol=1e-6)
    rc, raw = _simulate(tmp_path, src, "--units", "mu", name="raw.npz")
    assert rc == 0 and "the file says its unit is HU; taking mu" in capsys.readouterr().err
    np.testing.assert_array_equal(raw, hu)


def test_cli_evaluate_units_reads_a_hu_nifti_as_mu(tmp_path, rng, capsys):
    from jaxmedrf.cli.evaluate import load_volume

    src = _plain_nifti(tmp_path / "ref.nii.gz", _hu_ct(rng))
    stored = jio.load_volume(src).array
    np.testing.assert_array_equal(load_volume(src)[0], stored)  # no --units: values as stored, as before
    np.testing.assert_allclose(load_volume(src, units="HU")[0], np.asarray(jio.hu_to_mu(stored)), rtol=1e-6)
    np.testing.assert_allclose(load_volume(src, units="HU", mu_water=0.02)[0],
                               np.asarray(jio.hu_to_mu(stored, mu_water=0.02)), rtol=1e-6)
    with pytest.raises(SystemExit) as e:  # argparse: --units takes HU or mu only
        cli.main(["evaluate", src, "--reference", src, "--units", "kelvin"])
    assert e.value.code == 2 and "--units" in capsys.readouterr().err
