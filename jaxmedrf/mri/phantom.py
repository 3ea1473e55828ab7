"""A 3-D brain-like MRI phantom made in code (T1-weighted contrast, values in [0, 1]).

Tissues are nested level sets on an ellipsoidal head: scalp, skull (dark in T1), a CSF
layer, cortical grey matter and white matter whose boundary is folded by a sum of
low-frequency sinusoids (gyri), two lateral ventricles (CSF) and deep grey nuclei. Every
boundary is a smooth surface, and the intensity crosses it with a logistic edge of width
``edge_mm`` so that the phantom is a continuous field of world position (mm): it can be
sampled at any resolution (:func:`brain_field`) or voxelised on a grid (:func:`brain_phantom`).

T1-like intensities (fractions of white matter): WM 0.80, GM 0.55, CSF 0.12, skull 0.08,
scalp/fat 0.70, air 0. Optional degradations: a multiplicative smooth bias field
``exp(b · p(x))`` (``p`` a random low-order polynomial, scanner receive-coil inhomogeneity)
and Rician noise ``|v + n₁ + i n₂|``, ``n₁, n₂ ~ N(0, σ²)`` (Gudbjartsson & Patz, MRM 1995),
each drawn from an explicit ``key``; and tissue *texture*, a multiplicative Gaussian random field
``1 + t · n(x)`` (``n`` white noise smoothed by a Gaussian of ``texture_mm`` and scaled to unit
standard deviation), which gives the flat tissue classes the fine, partly through-plane structure
of real anatomy (the clean phantom is piecewise smooth, so an interpolator tuned on it alone
learns smooth surfaces). :func:`realistic_phantom` turns all three on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = ["brain_field", "brain_phantom", "phantom_affine", "realistic_phantom"]

#: T1-like tissue intensities.
WM, GM, CSF, SKULL, SCALP = 0.80, 0.55, 0.12, 0.08, 0.70

# Folding of the grey/white boundary: (amplitude, frequency vector in cycles per head radius, phase).
_FOLDS = (
    (0.030, (3.0, 2.0, 1.0), 0.3), (0.030, (-2.0, 3.0, 2.0), 1.1), (0.025, (1.0, -3.0, 3.0), 2.0),
    (0.030, (7.0, 3.0, -4.0), 0.7), (0.030, (-5.0, -6.0, 6.0), 2.6), (0.030, (4.0, 8.0, -5.0), 4.0),
    (0.025, (-8.0, 5.0, 3.0), 5.1), (0.025, (6.0, -4.0, 8.0), 1.9),
)


def _edge(d, width):
    """Smooth indicator of ``d < 0`` (d a signed distance in mm)."""
    return jax.nn.sigmoid(-d / width)


def brain_field(
    x_mm: Float[ArrayLike, "*n 3"], *, head_radii_mm=(72.0, 90.0, 68.0), edge_mm: float = 0.5
) -> Float[Array, "*n"]:
    """The noise-free T1-like phantom intensity at world points (mm, LPS, head centred at 0).

    Args:
      x_mm: points, mm.
      head_radii_mm: semi-axes of the head ellipsoid (left-right, anterior-posterior,
        inferior-superior), mm.
      edge_mm: width of the logistic tissue edges, mm.

    Returns:
      Intensities in [0, 1].
    """
    x = jnp.asarray(x_mm, jnp.float32)
    r = jnp.asarray(head_radii_mm, jnp.float32)
    u = x / r
    rho = jnp.sqrt(jnp.sum(u**2, axis=-1) + 1e-12)
    scale = jnp.min(r)  # mm per unit of rho (approximately: converts level offsets to mm)
    fold = sum(a * jnp.sin(jnp.pi * (u @ jnp.asarray(f, jnp.float32)) + p) for a, f, p in _FOLDS)
    w = edge_mm

    head = _edge((rho - 1.0) * scale, w)
    skull = _edge((rho - 0.95) * scale, w)
    csf = _edge((rho - 0.90) * scale, w)
    brain = _edge((rho - 0.86 - 0.4 * fold) * scale, w)  # pial surface (gently folded)
    white = _edge((rho - 0.70 - 1.6 * fold) * scale, w)  # grey/white boundary (deeply folded)

    def ellipsoid(c, s):
        v = (x - jnp.asarray(c, jnp.float32) * r) / (jnp.asarray(s, jnp.float32) * r)
        return _edge((jnp.sqrt(jnp.sum(v**2, -1) + 1e-12) - 1.0) * scale * min(s), w)

    vent = jnp.maximum(ellipsoid((0.12, -0.05, 0.12), (0.06, 0.30, 0.12)),
                       ellipsoid((-0.12, -0.05, 0.12), (0.06, 0.30, 0.12)))
    nuclei = jnp.maximum(ellipsoid((0.22, 0.05, -0.05), (0.10, 0.14, 0.10)),
                         ellipsoid((-0.22, 0.05, -0.05), (0.10, 0.14, 0.10)))

    v = SCALP * head
    v = v + (SKULL - SCALP) * skull
    v = v + (CSF - SKULL) * csf
    v = v + (GM - CSF) * brain
    v = v + (WM - GM) * white
    v = v + (0.62 - v) * nuclei * brain
    v = v + (CSF - v) * vent * brain
    return jnp.clip(v, 0.0, 1.0)


def phantom_affine(shape, spacing=1.0) -> np.ndarray:
    """The LPS voxel → mm affine of a grid of ``shape`` and ``spacing`` centred at the origin."""
    sp = np.broadcast_to(np.asarray(spacing, np.float64), (3,))
    a = np.diag([*sp, 1.0])
    a[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * sp
    return a


def brain_phantom(
    key: PRNGKeyArray | None = None,
    shape=(64, 64, 40),
    spacing=1.0,
    *,
    head_radii_mm=None,
    noise_sigma: float = 0.0,
    bias: float = 0.0,
    supersample: int = 1,
    edge_mm: float = 0.5,
    texture: float = 0.0,
    texture_mm: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The phantom on a voxel grid: ``(volume (nx, ny, nz) float32 in [0, 1], affine (4, 4))``.

    Args:
      key: PRNG key for the noise and bias field (required when either is on).
      shape: grid size (LPS axis order).
      spacing: voxel size, mm (scalar or 3).
      head_radii_mm: head semi-axes; default 0.42/0.45/0.42 of the field of view (capped at
        an adult head, 75 × 95 × 70 mm).
      noise_sigma: Rician noise σ (in units of the [0, 1] intensity); 0 = none.
      bias: strength ``b`` of the multiplicative bias field ``exp(b · p)``, ``|p| ≤ 1``.
      supersample: each voxel is the mean of ``supersample³`` points (partial-volume effect).
      edge_mm: width of the logistic tissue edges, mm.
      texture: relative amplitude ``t`` of the multiplicative tissue texture; 0 = none.
      texture_mm: correlation length (Gaussian σ) of the texture, mm.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"brain_phantom: shape must be three positive sizes, got {shape}")
    sp = np.broadcast_to(np.asarray(spacing, np.float64), (3,))
    if np.any(~np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"brain_phantom: spacing must be positive, got {sp.tolist()}")
    if (noise_sigma or bias or texture) and key is None:
        raise ValueError("brain_phantom: noise_sigma/bias/texture need an explicit key")
    if not (np.isfinite(texture_mm) and texture_mm > 0):
        raise ValueError(f"brain_phantom: texture_mm must be positive (mm), got {texture_mm}")
    fov = np.asarray(shape) * sp
    if head_radii_mm is None:
        head_radii_mm = tuple(np.minimum(fov * np.array([0.42, 0.45, 0.42]), [75.0, 95.0, 70.0]))
    affine = phantom_affine(shape, sp)
    s = int(supersample)
    offs = (np.arange(s) + 0.5) / s - 0.5
    axes = [jnp.asarray((np.arange(n) - (n - 1) / 2.0) * d, jnp.float32) for n, d in zip(shape, sp)]

    def plane(k):  # one z-plane at a time keeps memory small
        out = 0.0
        for o in np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3):
            X, Y = jnp.meshgrid(axes[0] + o[0] * sp[0], axes[1] + o[1] * sp[1], indexing="ij")
            pts = jnp.stack([X, Y, jnp.full_like(X, axes[2][k] + o[2] * sp[2])], -1)
            out = out + brain_field(pts, head_radii_mm=head_radii_mm, edge_mm=edge_mm)
        return out / s**3

    vol = jax.lax.map(plane, jnp.arange(shape[2]))  # (nz, nx, ny)
    vol = jnp.moveaxis(vol, 0, -1)
    if texture:
        from scipy import ndimage

        kt, key = jax.random.split(key)
        n = ndimage.gaussian_filter(np.asarray(jax.random.normal(kt, shape), np.float64), texture_mm / sp, mode="wrap")
        vol = vol * (1.0 + texture * jnp.asarray(n / (n.std() or 1.0), jnp.float32))
    if bias:
        kb, key = jax.random.split(key)
        c = jax.random.uniform(kb, (10,), minval=-1.0, maxval=1.0)
        g = [a / (np.max(np.abs(np.asarray(a))) or 1.0) for a in axes]
        X, Y, Z = jnp.meshgrid(*g, indexing="ij")
        terms = jnp.stack([X, Y, Z, X * Y, X * Z, Y * Z, X**2, Y**2, Z**2, jnp.ones_like(X)], 0)
        p = jnp.tensordot(c, terms, 1)
        p = p / jnp.maximum(jnp.max(jnp.abs(p)), 1e-6)
        vol = vol * jnp.exp(bias * p)
    if noise_sigma:
        k1, k2 = jax.random.split(key)
        n1 = noise_sigma * jax.random.normal(k1, vol.shape)
        n2 = noise_sigma * jax.random.normal(k2, vol.shape)
        vol = jnp.sqrt((vol + n1) ** 2 + n2**2)
    return np.asarray(jnp.clip(vol, 0.0, 1.0), np.float32), affine


def realistic_phantom(key: PRNGKeyArray, shape=(64, 64, 40), spacing=1.0) -> tuple[np.ndarray, np.ndarray]:
    """The phantom with tissue texture (8 %, σ 1.5 mm), a smooth bias field (``b`` = 0.2) and Rician
    noise (σ = 0.02, about SNR 40 in white matter), partial-volume voxels (``supersample=2``):
    ``(volume, affine)`` as :func:`brain_phantom`. The benchmark's second phantom, so that
    defaults are not chosen on one clean, piecewise-smooth phantom."""
    return brain_phantom(key, shape, spacing, noise_sigma=0.02, bias=0.2, texture=0.08, supersample=2)
