"""Slice acquisition model: stacks of thick slices with a pose, and their point-spread function.

A *stack* is a 3-D array of acquired voxels whose axis ``axis`` runs across the slices,
with the LPS voxel → mm affine of :class:`jaxmedrf.io.VolumeData` (its column ``axis`` is the
slice step, the other two the in-plane pixel steps), a slice ``thickness`` (mm) and a
through-plane ``profile``. Following the slice acquisition model of NeSVoR (Xu et al.,
"NeSVoR: Implicit Neural Representation for Slice-to-Volume Reconstruction in MRI", IEEE TMI
2023, Eq. 2) and SVRTK, the value of the acquired voxel with index ``p`` is the field ``f``
integrated against a point-spread function centred on it:

.. math::  I_p = \\int \\mathrm{PSF}(u)\\, f(A\\,(p + u))\\, du,

``u`` in voxel-index units: Gaussian in plane with a full width at half maximum of one pixel
(σ = 1 / 2.3548 pixel), and through plane either a box of width ``thickness / Δs`` (``Δs``
the slice step) or a Gaussian with that FWHM. :func:`psf_offsets` draws the offsets ``u``
by Monte-Carlo (antithetic pairs ``±u``, so that a field linear in space is integrated
exactly by every draw) or, without a key, returns a tensor-product quadrature (3-point
Gauss–Hermite in plane, Gauss–Legendre or Gauss–Hermite through plane).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf.chunking import chunked_map

__all__ = ["SliceStack", "acquire", "check_volume", "intensity_norm", "make_stack", "psf_offsets", "stack_box", "stack_points"]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # σ = FWHM / 2.3548
PROFILES = ("box", "gaussian")


@dataclasses.dataclass(frozen=True, eq=False)
class SliceStack:
    """One acquired stack of slices.

    Attributes:
      values: ``(n0, n1, n2)`` acquired voxel values; axis ``axis`` runs across slices.
      affine: ``(4, 4)`` voxel index → patient LPS mm (voxel centres).
      axis: the slice axis of ``values`` (0, 1 or 2).
      thickness: slice thickness (through-plane PSF width: box width or Gaussian FWHM), mm.
      profile: through-plane PSF: ``"box"`` or ``"gaussian"``.
    """

    values: np.ndarray
    affine: np.ndarray
    axis: int = 2
    thickness: float = 1.0
    profile: str = "box"

    def __post_init__(self):
        v = np.asarray(self.values, np.float32)
        a = np.asarray(self.affine, np.float64)
        if v.ndim != 3:
            raise ValueError(f"SliceStack.values must be a 3-D array, got shape {v.shape}")
        if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
            raise ValueError(f"SliceStack.affine must be a finite invertible 4x4 matrix, got {a.tolist()}")
        if self.axis not in (0, 1, 2):
            raise ValueError(f"SliceStack.axis must be 0, 1 or 2, got {self.axis}")
        if not (np.isfinite(self.thickness) and self.thickness > 0):
            raise ValueError(f"SliceStack.thickness must be positive (mm), got {self.thickness}")
        if self.profile not in PROFILES:
            raise ValueError(f"SliceStack.profile must be one of {PROFILES}, got {self.profile!r}")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "affine", a)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel steps along the three array axes, mm (slice step at ``axis``)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def slice_spacing(self) -> float:
        return float(self.spacing[self.axis])

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        return tuple(a for a in range(3) if a != self.axis)

    @property
    def in_plane_step(self) -> float:
        """The in-plane pixel step, mm (the mean of the two in-plane steps)."""
        return float(np.mean(self.spacing[list(self.in_plane_axes)]))

    @property
    def point_like(self) -> bool:
        """Slices no thicker than the in-plane step: each acquired voxel samples the object at its
        centre (gaps between slices rather than blur through them)."""
        return self.thickness <= self.in_plane_step * (1 + 1e-6)

    def psf_widths(self) -> np.ndarray:
        """PSF parameters in voxel-index units along (in-plane 1, in-plane 2, through-plane):
        in-plane Gaussian σ, and the through-plane box width or Gaussian σ."""
        t = self.thickness / self.slice_spacing
        return np.array([FWHM_TO_SIGMA, FWHM_TO_SIGMA, t if self.profile == "box" else t * FWHM_TO_SIGMA])


def check_volume(volume, name: str = "volume") -> np.ndarray:
    """A finite 3-D float32 array, or ValueError naming the problem."""
    v = np.asarray(volume, np.float32)
    if v.ndim != 3:
        raise ValueError(f"{name} must be a 3-D volume, got an array of shape {v.shape}")
    if min(v.shape) < 1:
        raise ValueError(f"{name} is empty (shape {v.shape})")
    bad = int(np.count_nonzero(~np.isfinite(v)))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite voxels")
    return v


def make_stack(
    volume: Float[np.ndarray, "n0 n1 n2"],
    affine,
    axis: int,
    k: int,
    *,
    offset: int = 0,
    profile: str = "subsample",
) -> SliceStack:
    """Keeps every ``k``-th slice of a fine volume along ``axis`` (slices ``offset, offset+k, …``).

    Args:
      volume: the fine volume (voxel values), shape ``(n0, n1, n2)``.
      affine: its ``(4, 4)`` voxel → LPS mm affine.
      axis: the slice axis.
      k: keep one slice in ``k`` (the slice step becomes ``k`` × the fine spacing).
      offset: index of the first kept slice.
      profile: ``"subsample"``: plain subsampling (the evaluation protocol; each kept slice
        is a fine voxel, a box of the fine spacing through plane); ``"box"``: each kept slice
        is the mean of a box ``k`` fine slices wide (a thick slice, ends weighted ½ for even
        ``k``); ``"gaussian"``: a Gaussian profile of FWHM ``k`` fine slices.

    Returns:
      A :class:`SliceStack` with the stack's affine (slice step ``k`` × spacing).
    """
    v = check_volume(volume)
    a = np.asarray(affine, np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {a.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    n = v.shape[axis]
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    k = int(k)
    if not 0 <= offset < n:
        raise ValueError(f"offset must be in [0, {n - 1}], got {offset}")
    if k > 1 and (n - 1 - offset) // k < 1:
        raise ValueError(f"k={k} is too large for {n} slices along axis {axis}: fewer than 2 slices would remain")
    dz = float(np.linalg.norm(a[:3, axis]))
    from scipy import ndimage

    if profile == "subsample":
        thick, prof = dz, "box"
    elif profile == "box":
        w = np.ones(k) if k % 2 else np.concatenate([[0.5], np.ones(k - 1), [0.5]])
        v = ndimage.convolve1d(v, w / w.sum(), axis=axis, mode="nearest")
        thick, prof = k * dz, "box"
    elif profile == "gaussian":
        v = ndimage.gaussian_filter1d(v, k * FWHM_TO_SIGMA, axis=axis, mode="nearest")
        thick, prof = k * dz, "gaussian"
    else:
        raise ValueError(f"profile must be subsample, box or gaussian, got {profile!r}")
    kept = np.take(v, np.arange(offset, n, k), axis=axis)
    s_aff = a.copy()
    s_aff[:3, 3] = a[:3, 3] + offset * a[:3, axis]
    s_aff[:3, axis] = k * a[:3, axis]
    return SliceStack(kept, s_aff, axis, thick, prof)


def psf_offsets(
    key: PRNGKeyArray | None, widths: Float[ArrayLike, "3"], profile: str, n: int
) -> tuple[Float[Array, "m 3"], Float[Array, " m"]]:
    """PSF sample offsets (voxel-index units, order in-plane 1, in-plane 2, through) and weights.

    Args:
      key: PRNG key for Monte-Carlo; ``None`` for the deterministic quadrature.
      widths: from :meth:`SliceStack.psf_widths`.
      profile: ``"box"`` or ``"gaussian"`` (through plane).
      n: Monte-Carlo: samples (rounded up to an even number, antithetic pairs); quadrature:
        points through plane (the rule has ``9 n`` points).

    Returns:
      ``(offsets (m, 3), weights (m,))``, weights summing to 1.
    """
    widths = jnp.asarray(widths, jnp.float32)
    if key is not None:
        half = max(1, -(-int(n) // 2))
        k1, k2 = jax.random.split(key)
        g = jax.random.normal(k1, (half, 3))
        through = jax.random.uniform(k2, (half,), minval=-0.5, maxval=0.5) if profile == "box" else g[:, 2]
        u = jnp.stack([g[:, 0], g[:, 1], through], -1) * widths
        u = jnp.concatenate([u, -u], 0)
        return u, jnp.full((2 * half,), 1.0 / (2 * half), jnp.float32)
    gh_x, gh_w = np.polynomial.hermite_e.hermegauss(3)  # weight exp(-x²/2)
    gh_w = gh_w / gh_w.sum()
    if profile == "box":
        t_x, t_w = np.polynomial.legendre.leggauss(int(n))
        t_x, t_w = t_x / 2.0, t_w / 2.0
    else:
        t_x, t_w = np.polynomial.hermite_e.hermegauss(int(n))
        t_w = t_w / t_w.sum()
    X = np.stack(np.meshgrid(gh_x, gh_x, t_x, indexing="ij"), -1).reshape(-1, 3)
    W = np.einsum("i,j,k->ijk", gh_w, gh_w, t_w).reshape(-1)
    return jnp.asarray(X, jnp.float32) * widths, jnp.asarray(W, jnp.float32)


def intensity_norm(stack: SliceStack) -> float:
    """The stack's 99.9th intensity percentile (its maximum |value| where that is 0, else 1):
    the unit in which the INR and SMORE fits see the intensities."""
    return float(np.percentile(stack.values, 99.9)) or float(np.max(np.abs(stack.values))) or 1.0


def _frame(stack: SliceStack) -> np.ndarray:
    """Columns: world mm per index unit along (in-plane 1, in-plane 2, through-plane)."""
    i, j = stack.in_plane_axes
    return stack.affine[:3, [i, j, stack.axis]]


def stack_points(stack: SliceStack) -> Float[np.ndarray, "n 3"]:
    """World positions (LPS mm) of every acquired voxel centre, in ``values.reshape(-1)`` order."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in stack.shape], indexing="ij"), -1).reshape(-1, 3)
    return (idx @ stack.affine[:3, :3].T + stack.affine[:3, 3]).astype(np.float32)


def stack_box(stack: SliceStack) -> tuple[np.ndarray, np.ndarray]:
    """The world bounding box ``(lo, hi)`` (mm) of the stack's voxels (slice thickness included)."""
    n = np.asarray(stack.shape, np.float64)
    half = np.full(3, 0.5)
    half[stack.axis] = max(0.5, 0.5 * stack.thickness / stack.slice_spacing)
    corners = np.stack(np.meshgrid(*[[-h, s - 1 + h] for h, s in zip(half, n)], indexing="ij"), -1).reshape(-1, 3)
    w = corners @ stack.affine[:3, :3].T + stack.affine[:3, 3]
    return w.min(0), w.max(0)


def acquire(
    key: PRNGKeyArray | None,
    field_fn: Callable[[Float[Array, "n 3"]], Float[Array, " n"]],
    stack: SliceStack,
    *,
    n: int = 8,
    chunk: int = 65536,
) -> Float[Array, "n0 n1 n2"]:
    """Simulates the stack's voxel values from a continuous field (the forward slice model).

    Args:
      key: Monte-Carlo key (one PSF draw shared by all voxels); ``None`` for quadrature.
      field_fn: ``points (N, 3) mm → values (N,)``.
      stack: geometry (its ``values`` only give the shape).
      n: PSF samples (Monte-Carlo) or through-plane quadrature points.
      chunk: voxels per evaluation.

    Returns:
      ``stack.shape`` float32 values ``Σ_m w_m f(A (p + u_m))``.
    """
    u, w = psf_offsets(key, stack.psf_widths(), stack.profile, n)
    off = u @ jnp.asarray(_frame(stack).T, jnp.float32)  # (m, 3) mm
    pts = jnp.asarray(stack_points(stack))

    def one(idx):
        p = pts[idx]
        vals = field_fn((p[:, None, :] + off[None]).reshape(-1, 3)).reshape(p.shape[0], -1)
        return vals @ w

    return chunked_map(one, pts.shape[0], chunk).reshape(stack.shape)
