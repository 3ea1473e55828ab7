"""jaxmedrf: neural rendering for medical imaging in JAX."""

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
from jaxmedrf.projectors import backproject as backproject, project as project
from jaxmedrf.rays import Rays as Rays, box_intersect as box_intersect, geometry_rays as geometry_rays, pixel_rays as pixel_rays

__version__ = "0.1.0"

__all__ = (
    "Frames",
    "Geometry",
    "Rays",
    "backproject",
    "box_intersect",
    "circular_angles",
    "cone_beam",
    "geometry_rays",
    "parallel_beam",
    "pixel_rays",
    "project",
    "view_frames",
    "volume_box",
    "voxel_centers",
)
