"""Real data in and out: DICOM/NIfTI volumes, radiographs, de-identified DICOM output, DRR export.

Volumes are held in patient LPS axes order (see :mod:`jaxmedrf.io.volume`). Requires the ``io``
extra (``nibabel``, ``pylibjpeg`` and its decoders) for NIfTI and compressed DICOM.
"""

from jaxmedrf.io.dataset import ray_batches, ray_table, slice_batches
from jaxmedrf.io.deid import deidentify
from jaxmedrf.io.drr import PRESETS, UNITS, attenuation_units, attenuation_volume, export_drr_pngs, geometry_for_volume
from jaxmedrf.io.intensity import (
    MU_AIR, MU_WATER, augment, crop_or_pad, hu_to_mu, intensity_jitter, looks_like_hu, mu_to_hu, mu_water, normalize,
    random_flip, random_rotation, resize_volume, window,
)
from jaxmedrf.io.radiograph import RadiographData, load_radiograph
from jaxmedrf.io.samples import SAMPLES, load_sample, sample_path
from jaxmedrf.io.volume import VolumeData, load_volume, reorient_to_lps, save_volume

__all__ = (
    "VolumeData", "load_volume", "save_volume", "reorient_to_lps",
    "RadiographData", "load_radiograph", "deidentify",
    "MU_WATER", "MU_AIR", "mu_water", "hu_to_mu", "mu_to_hu", "looks_like_hu", "window", "normalize",
    "resize_volume", "crop_or_pad", "random_flip", "random_rotation", "intensity_jitter", "augment",
    "geometry_for_volume", "attenuation_volume", "attenuation_units", "UNITS", "export_drr_pngs", "PRESETS",
    "ray_table", "ray_batches", "slice_batches",
    "SAMPLES", "load_sample", "sample_path",
)
