"""Real data in and out: DICOM/NIfTI volumes, radiographs, raw projection frames (TIFF/PNG/NPY/DICOM),
de-identified DICOM output, DRR export, the scan ``.npz``.

Volumes are held in patient LPS axes order (see :mod:`jaxmedrf.io.volume`). Requires the ``io``
extra (``nibabel``, ``pylibjpeg`` and its decoders) for NIfTI and compressed DICOM.

Names load on first use (:mod:`jaxmedrf._lazy`).
"""

from jaxmedrf._lazy import lazy_namespace

_EXPORTS = {
    "MU_AIR": ("jaxmedrf.io.intensity", "MU_AIR"),
    "MU_WATER": ("jaxmedrf.io.intensity", "MU_WATER"),
    "PRESETS": ("jaxmedrf.io.drr", "PRESETS"),
    "RadiographData": ("jaxmedrf.io.radiograph", "RadiographData"),
    "SAMPLES": ("jaxmedrf.io.samples", "SAMPLES"),
    "UNITS": ("jaxmedrf.io.drr", "UNITS"),
    "VolumeData": ("jaxmedrf.io.volume", "VolumeData"),
    "attenuation_units": ("jaxmedrf.io.drr", "attenuation_units"),
    "attenuation_volume": ("jaxmedrf.io.drr", "attenuation_volume"),
    "augment": ("jaxmedrf.io.intensity", "augment"),
    "crop_or_pad": ("jaxmedrf.io.intensity", "crop_or_pad"),
    "deidentify": ("jaxmedrf.io.deid", "deidentify"),
    "export_drr_pngs": ("jaxmedrf.io.drr", "export_drr_pngs"),
    "geometry_for_volume": ("jaxmedrf.io.drr", "geometry_for_volume"),
    "hu_to_mu": ("jaxmedrf.io.intensity", "hu_to_mu"),
    "intensity_jitter": ("jaxmedrf.io.intensity", "intensity_jitter"),
    "load_angles": ("jaxmedrf.io.raw", "load_angles"),
    "load_field": ("jaxmedrf.io.raw", "load_field"),
    "load_frames": ("jaxmedrf.io.raw", "load_frames"),
    "load_radiograph": ("jaxmedrf.io.radiograph", "load_radiograph"),
    "load_sample": ("jaxmedrf.io.samples", "load_sample"),
    "load_volume": ("jaxmedrf.io.volume", "load_volume"),
    "looks_like_hu": ("jaxmedrf.io.intensity", "looks_like_hu"),
    "mu_to_hu": ("jaxmedrf.io.intensity", "mu_to_hu"),
    "mu_water": ("jaxmedrf.io.intensity", "mu_water"),
    "normalize": ("jaxmedrf.io.intensity", "normalize"),
    "random_flip": ("jaxmedrf.io.intensity", "random_flip"),
    "random_rotation": ("jaxmedrf.io.intensity", "random_rotation"),
    "ray_batches": ("jaxmedrf.io.dataset", "ray_batches"),
    "ray_table": ("jaxmedrf.io.dataset", "ray_table"),
    "reorient_to_lps": ("jaxmedrf.io.volume", "reorient_to_lps"),
    "resize_volume": ("jaxmedrf.io.intensity", "resize_volume"),
    "sample_path": ("jaxmedrf.io.samples", "sample_path"),
    "save_scan": ("jaxmedrf.io.scan", "save_scan"),
    "save_volume": ("jaxmedrf.io.volume", "save_volume"),
    "slice_batches": ("jaxmedrf.io.dataset", "slice_batches"),
    "window": ("jaxmedrf.io.intensity", "window"),
}
__all__ = tuple(sorted(_EXPORTS))
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
