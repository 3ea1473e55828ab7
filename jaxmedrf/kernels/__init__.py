"""Fused accelerator kernels (Pallas); each has an XLA reference elsewhere in the package."""

from jaxmedrf.kernels.hashgrid import Tuning as HashGridTuning
from jaxmedrf.kernels.hashgrid import hash_grid_encode_pallas, pallas_supported

__all__ = ["HashGridTuning", "hash_grid_encode_pallas", "pallas_supported"]
