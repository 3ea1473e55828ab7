"""Fused accelerator kernels (Pallas), leaves of the package: each takes arrays (rays, points) and
has an XLA reference elsewhere; dispatch and fallbacks live above them (``jaxmedrf.projectors``,
``jaxmedrf.fields``).

The names below load on first use (``import jaxmedrf.kernels`` alone imports no Pallas).
"""

from jaxmedrf._lazy import lazy_namespace

_EXPORTS = {
    "HashGridTuning": ("jaxmedrf.kernels.hashgrid", "Tuning"),
    "hash_grid_encode_pallas": ("jaxmedrf.kernels.hashgrid", "hash_grid_encode_pallas"),
    "pallas_supported": ("jaxmedrf.kernels.hashgrid", "pallas_supported"),
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
