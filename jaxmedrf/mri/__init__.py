"""MRI slice interpolation and super-resolution: brain phantom, slice acquisition model,
implicit-neural-representation fit, interpolation baselines and the evaluation protocol."""

from jaxmedrf.mri.phantom import brain_field as brain_field, brain_phantom as brain_phantom, phantom_affine as phantom_affine
from jaxmedrf.mri.slices import (
    SliceStack as SliceStack,
    acquire as acquire,
    make_stack as make_stack,
    psf_offsets as psf_offsets,
    stack_box as stack_box,
    stack_points as stack_points,
)

__all__ = (
    "SliceStack", "acquire", "brain_field", "brain_phantom", "make_stack", "phantom_affine", "psf_offsets",
    "stack_box", "stack_points",
)
