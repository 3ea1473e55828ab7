"""Classical reconstructions: FDK/FBP and the iterative SART/OS-SART and CGLS.

Every method has the same call shape ``fn(projections, geometry, **options) -> Result``
with :class:`Result` ``(volume, history)``: ``volume`` is μ in mm⁻¹ on ``geometry``'s grid,
``history`` a dict of NumPy arrays, one value per iteration (empty for FDK).
"""

from jaxmedrf.recon._result import Result as Result
from jaxmedrf.recon.fdk import (
    FILTERS as FILTERS,
    fdk as fdk,
    parker_weights as parker_weights,
    ramp_filter as ramp_filter,
    voxel_backproject as voxel_backproject,
)
from jaxmedrf.recon.iterative import cgls as cgls, sart as sart

METHODS = {"fdk": fdk, "sart": sart, "cgls": cgls}

__all__ = ("FILTERS", "METHODS", "Result", "cgls", "fdk", "parker_weights", "ramp_filter", "sart", "voxel_backproject")
