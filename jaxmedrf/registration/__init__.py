"""2D/3D registration of X-rays to a CT by differentiable rendering.

* :mod:`~jaxmedrf.registration.losses`: NCC, multiscale patch NCC, gradient NCC, Parzen MI.
* :mod:`~jaxmedrf.registration.register`: coarse-to-fine Adam over se(3), multi-start by ``vmap``.
* :mod:`~jaxmedrf.registration.errors`: mTRE, reprojection, rotation/translation error, success rate.
"""

from jaxmedrf.registration.errors import (
    default_landmarks as default_landmarks,
    mean_target_registration_error as mean_target_registration_error,
    project_points as project_points,
    reprojection_error as reprojection_error,
    rotation_error_deg as rotation_error_deg,
    success_rate as success_rate,
    translation_error_mm as translation_error_mm,
)
from jaxmedrf.registration.losses import (
    LOSSES as LOSSES,
    get_loss as get_loss,
    gradient_ncc_loss as gradient_ncc_loss,
    mse_loss as mse_loss,
    multiscale_ncc_loss as multiscale_ncc_loss,
    mutual_information_loss as mutual_information_loss,
    ncc as ncc,
    ncc_loss as ncc_loss,
    patch_ncc as patch_ncc,
)
from jaxmedrf.registration.register import (
    RegistrationConfig as RegistrationConfig,
    RegistrationResult as RegistrationResult,
    downsample_detector as downsample_detector,
    drr as drr,
    params_to_pose as params_to_pose,
    random_perturbations as random_perturbations,
    register as register,
)

__all__ = (
    "LOSSES",
    "RegistrationConfig",
    "RegistrationResult",
    "default_landmarks",
    "downsample_detector",
    "drr",
    "get_loss",
    "gradient_ncc_loss",
    "mean_target_registration_error",
    "mse_loss",
    "multiscale_ncc_loss",
    "mutual_information_loss",
    "ncc",
    "ncc_loss",
    "params_to_pose",
    "patch_ncc",
    "project_points",
    "random_perturbations",
    "register",
    "reprojection_error",
    "rotation_error_deg",
    "success_rate",
    "translation_error_mm",
)
