"""Fused accelerator kernels (Pallas); each has an XLA reference elsewhere in the package."""

from jaxmedrf.kernels.hashgrid import Tuning as HashGridTuning
from jaxmedrf.kernels.hashgrid import hash_grid_encode_pallas, pallas_supported
from jaxmedrf.kernels.projector import project_pallas, siddon_integrals_pallas, trilinear_integrals_pallas

__all__ = ["HashGridTuning", "hash_grid_encode_pallas", "pallas_supported", "project_pallas", "siddon_integrals_pallas",
           "trilinear_integrals_pallas"]
