r"""Intensities and grids: HU ↔ μ, windowing, resizing/cropping with consistent spacing, augmentation.

Hounsfield units are defined against water and air (DICOM PS3.3 C.8.2.1.1.4; Hounsfield 1973):

.. math:: \mathrm{HU} = 1000\,\frac{\mu - \mu_\text{water}}{\mu_\text{water} - \mu_\text{air}},
   \qquad \mu = \mu_\text{water} + \frac{\mathrm{HU}}{1000}(\mu_\text{water} - \mu_\text{air}).

μ depends on the photon energy; :data:`MU_WATER` is water at 60 keV (a common effective energy of a
120 kVp spectrum) from NIST XCOM (Hubbell & Seltzer, NISTIR 5632): μ/ρ = 0.2059 cm²/g, ρ = 1 g/cm³
→ 0.02059 mm⁻¹. :func:`mu_water` interpolates the XCOM table log–log for other energies; pass its
value as ``mu_water=`` to the conversions. :data:`MU_AIR` is dry air at 60 keV
(0.1875 cm²/g × 1.205·10⁻³ g/cm³).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf.io.volume import VolumeData

__all__ = [
    "MU_WATER", "MU_AIR", "mu_water", "hu_to_mu", "mu_to_hu", "looks_like_hu", "window", "normalize",
    "resize_volume", "crop_or_pad", "random_flip", "random_rotation", "intensity_jitter", "augment",
]

MU_WATER = 0.02059  # mm⁻¹, water at 60 keV (NIST XCOM μ/ρ = 0.2059 cm²/g)
MU_AIR = 2.26e-5  # mm⁻¹, dry air at 60 keV (0.1875 cm²/g × 1.205e-3 g/cm³)

# NIST XCOM, water, total attenuation with coherent scattering: energy keV → μ/ρ cm²/g.
_XCOM_WATER = np.array([
    (20, 0.8096), (30, 0.3756), (40, 0.2683), (50, 0.2269), (60, 0.2059), (80, 0.1837),
    (100, 0.1707), (150, 0.1505), (200, 0.1370),
])


def mu_water(energy_kev: float) -> float:
    """Linear attenuation of water at ``energy_kev`` (20–200 keV), mm⁻¹ (NIST XCOM, log–log)."""
    e = float(energy_kev)
    if not 20.0 <= e <= 200.0:
        raise ValueError(f"energy_kev must be in [20, 200] keV, got {energy_kev!r}")
    log_mu = np.interp(math.log(e), np.log(_XCOM_WATER[:, 0]), np.log(_XCOM_WATER[:, 1]))
    return float(np.exp(log_mu)) * 0.1  # cm²/g × 1 g/cm³ = cm⁻¹ → mm⁻¹


def hu_to_mu(hu: Float[ArrayLike, "*shape"], *, mu_water: float = MU_WATER, mu_air: float = MU_AIR,
             clip: bool = True) -> Float[Array, "*shape"]:
    """HU → linear attenuation μ in mm⁻¹ (module equation); ``clip``: μ ≥ 0."""
    hu = jnp.asarray(hu)
    dtype = hu.dtype if jnp.issubdtype(hu.dtype, jnp.floating) else jnp.float32
    mu = mu_water + hu.astype(dtype) * ((mu_water - mu_air) / 1000.0)
    return jnp.maximum(mu, 0.0).astype(dtype) if clip else mu.astype(dtype)


def mu_to_hu(
    mu: Float[ArrayLike, "*shape"], *, mu_water: float = MU_WATER, mu_air: float = MU_AIR
) -> Float[Array, "*shape"]:
    """Linear attenuation μ (mm⁻¹) → HU (inverse of :func:`hu_to_mu` without clipping)."""
    mu = jnp.asarray(mu)
    dtype = mu.dtype if jnp.issubdtype(mu.dtype, jnp.floating) else jnp.float32
    return ((mu.astype(dtype) - mu_water) * (1000.0 / (mu_water - mu_air))).astype(dtype)


# looks_like_hu: thresholds, HU.
HU_AIR_PERCENTILE = 1.0  # this percentile of the voxels …
HU_AIR_BELOW = -500.0  # … must be at most this (air is −1000 HU; padding is lower still)
HU_MIN = -3072.0  # no voxel below (padding outside the reconstruction circle: −1024, −2000, −2048, −3024)
HU_HIGH_PERCENTILE = 99.9  # this percentile …
HU_HIGH_MAX = 4000.0  # … at most this (cortical bone ≈ 2000 HU, 12-bit scanners stop at 3071; a few metal voxels above are tolerated)
_GUESS_SAMPLES = 1 << 20  # percentiles from at most about this many voxels (a regular stride through the array)


def looks_like_hu(values: np.ndarray) -> bool:
    """Whether intensities of unknown unit look like Hounsfield units (a CT with air in the field).

    All of these must hold (thresholds in HU, the module's ``HU_*`` constants):

    * the 1st percentile is ≤ −500: some air (−1000 HU), or padding, is present; MR signal
      (≥ 0), μ in mm⁻¹ (≈ 0…0.05) and normalised intensities fail here;
    * the minimum is ≥ −3072: the padding scanners write outside the reconstruction circle
      (−1024, −2000, −2048, −3024) passes, anything lower is not HU;
    * the 99.9th percentile is ≤ 4000: cortical bone is ≈ 2000 HU and 12-bit data stop at 3071;
      a few metal voxels beyond are tolerated.

    Percentiles are taken over a regular stride of at most about 2²⁰ voxels (deterministic, fast
    on a 512³ CT).

    Args:
        values: the intensities (any shape, finite).

    Returns:
        ``True`` when the values look like HU.
    """
    a = np.asarray(values, np.float32).ravel()
    if a.size == 0 or float(a.min()) < HU_MIN:
        return False
    sample = a[:: max(1, a.size // _GUESS_SAMPLES)]
    air, high = np.percentile(sample, [HU_AIR_PERCENTILE, HU_HIGH_PERCENTILE])
    return bool(air <= HU_AIR_BELOW and high <= HU_HIGH_MAX)


def window(x: Float[ArrayLike, "*shape"], *, center: float, width: float) -> Float[Array, "*shape"]:
    """Linear window to [0, 1]: ``clip((x - (center - width/2)) / width, 0, 1)`` (e.g. HU 40/400)."""
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width!r}")
    x = jnp.asarray(x)
    return jnp.clip((x - (center - width / 2.0)) / width, 0.0, 1.0)


def normalize(x: Float[ArrayLike, "*shape"], *, lo: float | None = None, hi: float | None = None,
              percentiles: tuple[float, float] | None = None) -> Float[Array, "*shape"]:
    """Affine map of ``[lo, hi]`` (default: min/max, or the given ``percentiles``) to [0, 1], clipped."""
    x = jnp.asarray(x)
    if percentiles is not None:
        lo, hi = (float(v) for v in jnp.percentile(x, jnp.asarray(percentiles)))
    lo = jnp.min(x) if lo is None else lo
    hi = jnp.max(x) if hi is None else hi
    span = jnp.maximum(hi - lo, jnp.finfo(x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32).tiny)
    return jnp.clip((x - lo) / span, 0.0, 1.0)


def resize_volume(vol: VolumeData, shape: tuple[int, int, int], *, method: str = "linear") -> VolumeData:
    """Resamples to ``shape`` voxels over the same physical extent (spacing scaled by n_old/n_new).

    Voxel edges are kept (half-pixel convention of :func:`jax.image.resize`): the new voxel ``i``
    centre sits at old index ``(i + 1/2)·s − 1/2`` with ``s = n_old / n_new``; the affine is updated
    so that every new voxel keeps its patient position.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive integers, got {shape!r}")
    s = np.asarray(vol.shape, np.float64) / np.asarray(shape, np.float64)
    arr = np.asarray(jax.image.resize(jnp.asarray(vol.array, jnp.float32), shape, method=method))
    affine = np.asarray(vol.affine, np.float64).copy()
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ (0.5 * s - 0.5)
    affine[:3, :3] = affine[:3, :3] * s[None, :]
    return vol.replace(array=arr, affine=affine, spacing=vol.spacing * s)


def crop_or_pad(vol: VolumeData, shape: tuple[int, int, int], *, fill: float | None = None) -> VolumeData:
    """Centre crop and/or pad to ``shape`` voxels; spacing unchanged, affine origin shifted.

    Args:
        vol: the volume.
        shape: target voxel counts.
        fill: padding value (default: the volume's minimum, e.g. air in HU).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive integers, got {shape!r}")
    fill = float(np.min(vol.array)) if fill is None else float(fill)
    out = np.full(shape, fill, dtype=vol.array.dtype)
    start_old, start_new, n = [], [], []
    for old, new in zip(vol.shape, shape):
        off = (old - new) // 2  # >0: crop, <0: pad
        start_old.append(max(off, 0))
        start_new.append(max(-off, 0))
        n.append(min(old, new))
    src = tuple(slice(a, a + m) for a, m in zip(start_old, n))
    dst = tuple(slice(a, a + m) for a, m in zip(start_new, n))
    out[dst] = vol.array[src]
    shift = np.asarray(start_old, np.float64) - np.asarray(start_new, np.float64)  # new index 0 = old index shift
    affine = np.asarray(vol.affine, np.float64).copy()
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ shift
    return vol.replace(array=out, affine=affine)


# --- augmentation (explicit key, jit/vmap-able) ------------------------------------------------


def random_flip(key: Array, volume: Float[ArrayLike, "x y z"], *, axes: tuple[int, ...] = (0,),
                p: float = 0.5) -> Float[Array, "x y z"]:
    """Flips each axis of ``axes`` independently with probability ``p`` (default: left–right)."""
    keys = jax.random.split(key, len(axes))
    for k, ax in zip(keys, axes):
        volume = jnp.where(jax.random.bernoulli(k, p), jnp.flip(volume, axis=ax), volume)
    return volume


def random_rotation(key: Array, volume: Float[ArrayLike, "x y z"], *, max_degrees: float = 5.0,
                    axes: tuple[int, int] = (0, 1), fill: float | None = None) -> Float[Array, "x y z"]:
    """Rotates about the centre in the plane of ``axes`` by a uniform angle in ±``max_degrees``.

    Trilinear interpolation (``jax.scipy.ndimage.map_coordinates``, order 1); voxels sampled from
    outside take ``fill`` (default: the volume's minimum). Assumes equal spacing along ``axes``.
    """
    volume = jnp.asarray(volume)
    theta = jnp.deg2rad(jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees))
    idx = jnp.meshgrid(*(jnp.arange(n, dtype=jnp.float32) for n in volume.shape), indexing="ij")
    a, b = axes
    ca, cb = (volume.shape[a] - 1) / 2.0, (volume.shape[b] - 1) / 2.0
    da, db = idx[a] - ca, idx[b] - cb
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    coords = list(idx)
    coords[a] = ca + cos * da + sin * db  # inverse map: output voxel ← input position
    coords[b] = cb - sin * da + cos * db
    cval = jnp.min(volume) if fill is None else fill
    inside = jnp.ones(volume.shape, bool)
    for ax in (a, b):
        inside &= (coords[ax] >= -0.5) & (coords[ax] <= volume.shape[ax] - 0.5)
    out = jax.scipy.ndimage.map_coordinates(volume, coords, order=1, mode="nearest")
    return jnp.where(inside, out, cval).astype(volume.dtype)


def intensity_jitter(key: Array, volume: Float[ArrayLike, "*shape"], *, scale: float = 0.05,
                     shift: float = 0.0) -> Float[Array, "*shape"]:
    """``volume · (1 + U(−scale, scale)) + U(−shift, shift)``: one global gain and offset."""
    k1, k2 = jax.random.split(key)
    gain = 1.0 + jax.random.uniform(k1, (), minval=-scale, maxval=scale)
    off = jax.random.uniform(k2, (), minval=-shift, maxval=shift)
    return (volume * gain + off).astype(jnp.asarray(volume).dtype)


def augment(key: Array, volume: Float[ArrayLike, "x y z"], *, flip_axes: tuple[int, ...] = (0,),
            max_degrees: float = 5.0, scale: float = 0.05, shift: float = 0.0) -> Float[Array, "x y z"]:
    """Flip, small in-plane (axial) rotation and intensity jitter, each from its own subkey."""
    k1, k2, k3 = jax.random.split(key, 3)
    volume = random_flip(k1, volume, axes=flip_axes)
    volume = random_rotation(k2, volume, max_degrees=max_degrees)
    return intensity_jitter(k3, volume, scale=scale, shift=shift)
