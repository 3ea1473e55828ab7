"""jaxmedrf: neural rendering for medical imaging in JAX.

Modules: :mod:`~jaxmedrf.geometry` → :mod:`~jaxmedrf.rays` → :mod:`~jaxmedrf.projectors` /
:mod:`~jaxmedrf.render` · :mod:`~jaxmedrf.phantoms` · :mod:`~jaxmedrf.noise` ·
:mod:`~jaxmedrf.fields` · :mod:`~jaxmedrf.recon` (naf, fdk, sart, cgls) ·
:mod:`~jaxmedrf.metrics` · :mod:`~jaxmedrf.io` · :mod:`~jaxmedrf.pose` ·
:mod:`~jaxmedrf.registration` · :mod:`~jaxmedrf.parallel`.
"""

from jaxmedrf import (
    fields as fields,
    io as io,
    lpips as lpips,
    metrics as metrics,
    mri as mri,
    kernels as kernels,
    noise as noise,
    occupancy as occupancy,
    parallel as parallel,
    phantoms as phantoms,
    pose as pose,
    recon as recon,
    registration as registration,
    render as render,
    sharded_projection as sharded_projection,
)
from jaxmedrf.fields import FieldConfig as FieldConfig, HashGridConfig as HashGridConfig
from jaxmedrf.occupancy import OccupancyGrid as OccupancyGrid
from jaxmedrf.geometry import (
    Frames as Frames,
    Geometry as Geometry,
    circular_angles as circular_angles,
    cone_beam as cone_beam,
    parallel_beam as parallel_beam,
    view_frames as view_frames,
    volume_box as volume_box,
    voxel_centers as voxel_centers,
)
from jaxmedrf.io import load_radiograph as load_radiograph, load_volume as load_volume, save_volume as save_volume
from jaxmedrf.noise import poisson_noise as poisson_noise
from jaxmedrf.parallel import make_mesh as make_mesh
from jaxmedrf.phantoms import (
    analytic_projections as analytic_projections,
    shepp_logan as shepp_logan,
    spheres as spheres,
    voxelize as voxelize,
)
from jaxmedrf.projectors import backproject as backproject, project as project
from jaxmedrf.rays import Rays as Rays, box_intersect as box_intersect, geometry_rays as geometry_rays, pixel_rays as pixel_rays
from jaxmedrf.recon import cgls as cgls, fdk as fdk, sart as sart
from jaxmedrf.recon.naf import NAFConfig as NAFConfig, train_naf as train_naf
from jaxmedrf.recon.naf_io import load_field as load_field, render_projections as render_projections
from jaxmedrf.registration import RegistrationConfig as RegistrationConfig, register as register

__version__ = "0.1.0"

__all__ = (
    "FieldConfig",
    "Frames",
    "Geometry",
    "HashGridConfig",
    "NAFConfig",
    "OccupancyGrid",
    "Rays",
    "RegistrationConfig",
    "analytic_projections",
    "backproject",
    "box_intersect",
    "cgls",
    "circular_angles",
    "cone_beam",
    "fdk",
    "fields",
    "geometry_rays",
    "io",
    "kernels",
    "load_field",
    "load_radiograph",
    "lpips",
    "load_volume",
    "make_mesh",
    "metrics",
    "mri",
    "noise",
    "occupancy",
    "parallel",
    "parallel_beam",
    "phantoms",
    "pixel_rays",
    "poisson_noise",
    "pose",
    "project",
    "recon",
    "register",
    "registration",
    "render",
    "render_projections",
    "sart",
    "sharded_projection",
    "save_volume",
    "shepp_logan",
    "spheres",
    "train_naf",
    "view_frames",
    "volume_box",
    "voxel_centers",
    "voxelize",
)
