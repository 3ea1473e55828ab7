"""The common return type of every reconstruction."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Array, Float

__all__ = ["Result"]


class Result(NamedTuple):
    """A reconstruction and its per-iteration history.

    Attributes:
      volume: μ in mm⁻¹, shape ``geometry.n_voxel``, indexed (x, y, z).
      history: name → NumPy array with one entry per iteration, e.g. ``"residual"`` =
        ‖A x − b‖₂ after each iteration (dimensionless). Empty for the direct methods.
    """

    volume: Float[Array, "nx ny nz"]
    history: dict[str, np.ndarray]
