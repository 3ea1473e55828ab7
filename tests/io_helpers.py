"""Synthetic DICOM series written with pydicom for the io tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SENTINELS = ("DOE^JANE", "PID-12345", "19700101", "St Sentinel Hospital", "ACC999", "WHO^DOCTOR",
             "SECRETPRIVATE", "Sentinel Street 1", "OPERATOR^OLGA")


def write_series(directory, acq, *, row=(1, 0, 0), col=(0, 1, 0), spacing=(0.8, 0.7, 2.5), origin=(-10.0, -20.0, 30.0),
                 series_uid=None, study_uid=None, slope=1.0, intercept=-1024.0, shuffle_rng=None, positions=None,
                 shear=(0.0, 0.0, 0.0), identifying=True, compress=None):
    """Writes ``acq`` (col, row, slice) as CT slices; returns the list of file paths.

    ``spacing`` = (column spacing Δc along ``row``, row spacing Δr along ``col``, slice step).
    ``positions``: explicit slice offsets along the normal (default ``k · spacing[2]``).
    ``shear``: added to ImagePositionPatient per slice index (gantry tilt simulation).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    n = acq.shape[2]
    positions = np.arange(n) * spacing[2] if positions is None else np.asarray(positions, float)
    names = [f"slice_{i:03d}.dcm" for i in range(n)]
    if shuffle_rng is not None:
        names = list(shuffle_rng.permutation(names))
    paths = []
    for k in range(n):
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CTImageStorage
        fm.MediaStorageSOPInstanceUID = generate_uid()
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = generate_uid()
        ds.InstanceNumber = n - k  # deliberately reversed: ordering must not use it
        ds.BodyPartExamined = "HEAD"
        ds.PatientPosition = "HFS"
        if identifying:
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = SENTINELS[0], SENTINELS[1], SENTINELS[2]
            ds.InstitutionName, ds.AccessionNumber, ds.ReferringPhysicianName = SENTINELS[3], SENTINELS[4], SENTINELS[5]
            ds.InstitutionAddress, ds.OperatorsName = SENTINELS[7], SENTINELS[8]
            ds.StudyDate = ds.SeriesDate = "20240102"
            ds.add_new(0x00091010, "LO", SENTINELS[6])
            ds.add_new(0x00090010, "LO", "ACME private")
        ipp = np.asarray(origin, float) + positions[k] * normal + k * np.asarray(shear, float)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = acq.shape[1], acq.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
        stored = np.rint((acq[:, :, k].T - intercept) / slope).astype(np.int16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        if compress is not None:
            ds.compress(compress, stored)
        p = directory / names[k]
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def all_elements(ds):
    """Every element of ``ds`` and its sequences, recursively (file meta included)."""
    fm = getattr(ds, "file_meta", None)
    if fm is not None:
        yield from fm
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from all_elements(item)


def read(path):
    return pydicom.dcmread(path)
