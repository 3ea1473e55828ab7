"""Fused accelerator kernels (Pallas), leaves of the package: each takes arrays (rays, points) and
has an XLA reference elsewhere; dispatch and fallbacks live above them (``jaxmedrf.projectors``,
``jaxmedrf.fields``).

The names below load on first use (``import jaxmedrf.kernels`` alone imports no Pallas).
"""

import importlib

_EXPORTS = {
    "HashGridTuning": ("jaxmedrf.kernels.hashgrid", "Tuning"),
    "hash_grid_encode_pallas": ("jaxmedrf.kernels.hashgrid", "hash_grid_encode_pallas"),
    "pallas_supported": ("jaxmedrf.kernels.hashgrid", "pallas_supported"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'jaxmedrf.kernels' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
