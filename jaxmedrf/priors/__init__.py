"""Learned priors: a small denoiser of CT slices (denoising score matching) and its use as a
regulariser of SART and NAF (RED / plug-and-play)."""

from jaxmedrf.priors.denoiser import (
    DenoiserConfig as DenoiserConfig,
    DenoisingPrior as DenoisingPrior,
    denoise as denoise,
    denoiser_apply as denoiser_apply,
    denoiser_init as denoiser_init,
    dsm_loss as dsm_loss,
    load_prior as load_prior,
    prior_from_bytes as prior_from_bytes,
    prior_to_bytes as prior_to_bytes,
    save_prior as save_prior,
    train_prior as train_prior,
)
from jaxmedrf.priors.red import red_field_loss as red_field_loss, red_step as red_step

__all__ = (
    "DenoiserConfig", "DenoisingPrior", "denoise", "denoiser_apply", "denoiser_init", "dsm_loss", "load_prior",
    "prior_from_bytes", "prior_to_bytes", "red_field_loss", "red_step", "save_prior", "train_prior",
)
