"""Generative models: a MedNeRF/GRAF generative attenuation field (:mod:`.graf`), its DRR-set
data (:mod:`.data`) and a small CT ↔ MR CycleGAN (:mod:`.cyclegan`). Method demos: see README."""

from jaxmedrf._lazy import lazy_namespace

_EXPORTS = {
    "GRAFConfig": ("jaxmedrf.generative.graf", "GRAFConfig"),
    "GenerativeModel": ("jaxmedrf.generative.graf", "GenerativeModel"),
    "InversionResult": ("jaxmedrf.generative.graf", "InversionResult"),
    "train_generative": ("jaxmedrf.generative.graf", "train_generative"),
    "load_generator": ("jaxmedrf.generative.graf", "load_generator"),
    "invert": ("jaxmedrf.generative.graf", "invert"),
    "render_views": ("jaxmedrf.generative.graf", "render_views"),
    "generator_volume": ("jaxmedrf.generative.graf", "generator_volume"),
    "load_drr_sets": ("jaxmedrf.generative.data", "load_drr_sets"),
    "load_drr_set": ("jaxmedrf.generative.data", "load_drr_set"),
    "augment_volume": ("jaxmedrf.generative.data", "augment_volume"),
    "CycleGANConfig": ("jaxmedrf.generative.cyclegan", "CycleGANConfig"),
    "train_cyclegan": ("jaxmedrf.generative.cyclegan", "train_cyclegan"),
    "translate": ("jaxmedrf.generative.cyclegan", "translate"),
    "graf": ("jaxmedrf.generative.graf", None),
    "data": ("jaxmedrf.generative.data", None),
    "cyclegan": ("jaxmedrf.generative.cyclegan", None),
}

__all__ = tuple(sorted(_EXPORTS))

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
