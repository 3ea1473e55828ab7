"""MRI slice interpolation and super-resolution: brain phantom, slice acquisition model,
implicit-neural-representation fit, interpolation baselines and the evaluation protocol."""

from jaxmedrf.mri.phantom import (
    brain_field as brain_field,
    brain_phantom as brain_phantom,
    phantom_affine as phantom_affine,
    realistic_phantom as realistic_phantom,
)
from jaxmedrf.mri.fusion import fuse_stacks as fuse_stacks, learn_filter as learn_filter, restore_stack as restore_stack
from jaxmedrf.mri.slices import (
    SliceStack as SliceStack,
    acquire as acquire,
    make_stack as make_stack,
    psf_offsets as psf_offsets,
    stack_box as stack_box,
    stack_points as stack_points,
)
from jaxmedrf.mri.inr import (
    INRConfig as INRConfig,
    INRResult as INRResult,
    auto_base as auto_base,
    fit_inr as fit_inr,
    query_inr as query_inr,
)
from jaxmedrf.mri.smore import (
    SMOREConfig as SMOREConfig,
    SMOREResult as SMOREResult,
    apply_smore as apply_smore,
    fit_smore as fit_smore,
)
from jaxmedrf.mri.interpolate import METHODS as METHODS, interpolate as interpolate, target_grid as target_grid
from jaxmedrf.mri.evaluate import (
    evaluate_interpolation as evaluate_interpolation,
    format_summary as format_summary,
    format_table as format_table,
    per_slice_scores as per_slice_scores,
    save_report as save_report,
    save_slice_report as save_slice_report,
    slice_metrics as slice_metrics,
    summarize_volumes as summarize_volumes,
)

__all__ = (
    "INRConfig", "INRResult", "METHODS", "evaluate_interpolation", "fit_inr", "format_summary", "format_table",
    "interpolate", "per_slice_scores", "query_inr", "save_report", "save_slice_report", "slice_metrics", "summarize_volumes", "target_grid",
    "SliceStack", "acquire", "brain_field", "brain_phantom", "make_stack", "phantom_affine", "psf_offsets",
    "stack_box", "stack_points", "SMOREConfig", "fuse_stacks", "learn_filter", "realistic_phantom", "restore_stack", "SMOREResult", "apply_smore", "fit_smore",
    "auto_base",
)
