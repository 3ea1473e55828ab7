"""Image similarity losses for 2D/3D registration (to minimise), on single images ``(nv, nu)``.

Each function takes two images of the same shape and returns a scalar loss; batch them with
``jax.vmap``. All are ``jit``-able and differentiable, and safe on constant images (no NaN in
value or gradient: a constant image has zero correlation).

========================  ======================  ====================  ===============
loss                      similarity              loss range            best
========================  ======================  ====================  ===============
:func:`ncc_loss`          NCC ∈ [−1, 1]           ``1 − NCC`` ∈ [0, 2]   0
:func:`multiscale_ncc_loss`  mean patch NCC       ``1 − ·`` ∈ [0, 2]     0
:func:`gradient_ncc_loss` mean NCC of gradients   ``1 − ·`` ∈ [0, 2]     0
:func:`mutual_information_loss`  MI ≥ 0 (nats)   ``−MI`` ∈ [−log B, 0]  most negative
:func:`mse_loss`          —                       ``mean (x−y)²`` ≥ 0    0
========================  ======================  ====================  ===============

NCC is invariant to an affine intensity change of either image, so no intensity scale is
needed with it; MSE is not (use the intensity-scale parameter of the registration).
References: Penney et al., "A comparison of similarity measures for use in 2-D-3-D medical
image registration", IEEE TMI 17(4) 1998 (NCC, gradient correlation); Gopalakrishnan &
Golland, "Fast auto-differentiable DRRs for 2D/3D registration" (DiffDRR), MICCAI 2022
(multiscale patch NCC); Viola & Wells, "Alignment by maximization of mutual information",
IJCV 1997 (Parzen-window MI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "LOSSES",
    "get_loss",
    "gradient_ncc_loss",
    "mse_loss",
    "multiscale_ncc_loss",
    "mutual_information_loss",
    "ncc",
    "ncc_loss",
    "patch_ncc",
]

Image = Float[Array, "nv nu"]


def _safe_rsqrt_prod(a, b, eps):
    """``1/√(a b)`` where ``a b > eps``, else 0 (double-where: no NaN gradient)."""
    p = a * b
    ok = p > eps
    return jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, p, 1.0)), 0.0)


def ncc(x: Float[Array, "*batch n"], y: Float[Array, "*batch n"], axis=-1) -> Float[Array, "*batch"]:
    """Pearson correlation of ``x`` and ``y`` along ``axis`` ∈ [−1, 1]; 0 if either is constant."""
    x = x - jnp.mean(x, axis=axis, keepdims=True)
    y = y - jnp.mean(y, axis=axis, keepdims=True)
    sxy = jnp.sum(x * y, axis=axis)
    sxx = jnp.sum(x * x, axis=axis)
    syy = jnp.sum(y * y, axis=axis)
    eps = jnp.finfo(sxy.dtype).tiny / jnp.finfo(sxy.dtype).eps
    return sxy * _safe_rsqrt_prod(sxx, syy, eps)


def ncc_loss(x: Image, y: Image) -> Float[Array, ""]:
    """``1 − NCC(x, y)`` over the whole image, ∈ [0, 2], 0 for ``y = a x + b`` with ``a > 0``."""
    return 1.0 - ncc(x.reshape(-1), y.reshape(-1))


def patch_ncc(x: Image, y: Image, patch: int) -> Float[Array, ""]:
    """Mean NCC over non-overlapping ``patch × patch`` tiles (the image is cropped centrally to
    a multiple of ``patch``), ∈ [−1, 1]."""
    nv, nu = x.shape[-2:]
    p = int(patch)
    if p < 2 or p > min(nv, nu):
        raise ValueError(f"patch must be between 2 and the image size {min(nv, nu)}, got {patch}")
    mv, mu = nv // p, nu // p
    sv, su = (nv - mv * p) // 2, (nu - mu * p) // 2

    def tiles(a):
        a = a[sv : sv + mv * p, su : su + mu * p].reshape(mv, p, mu, p)
        return a.transpose(0, 2, 1, 3).reshape(mv * mu, p * p)

    return jnp.mean(ncc(tiles(x), tiles(y)))


def multiscale_ncc_loss(
    x: Image, y: Image, *, patch_sizes: Sequence[int | None] = (None, 9), weights: Sequence[float] | None = None
) -> Float[Array, ""]:
    """``1 − Σ_k w_k NCC_k``: weighted global (``None``) and patch-wise NCC, ∈ [0, 2].

    DiffDRR's multiscale NCC (Gopalakrishnan & Golland 2022); weights default to equal and
    are normalised to sum to 1. Patch sizes larger than the image are skipped.
    """
    sizes = [p for p in patch_sizes if p is None or int(p) <= min(x.shape)]
    if not sizes:
        sizes = [None]
    w = [1.0] * len(sizes) if weights is None else [float(v) for v, p in zip(weights, patch_sizes) if p in sizes]
    total = sum(w)
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {weights!r}")
    sim = 0.0
    for p, wk in zip(sizes, w):
        sim = sim + wk / total * (ncc(x.reshape(-1), y.reshape(-1)) if p is None else patch_ncc(x, y, p))
    return 1.0 - sim


def _sobel(a: Image) -> tuple[Float[Array, "nv-2 nu-2"], Float[Array, "nv-2 nu-2"]]:
    """Sobel derivatives along rows (v) and columns (u), 'valid' (the border is dropped)."""
    gu = (a[:-2, 2:] - a[:-2, :-2]) + 2 * (a[1:-1, 2:] - a[1:-1, :-2]) + (a[2:, 2:] - a[2:, :-2])
    gv = (a[2:, :-2] - a[:-2, :-2]) + 2 * (a[2:, 1:-1] - a[:-2, 1:-1]) + (a[2:, 2:] - a[:-2, 2:])
    return gv, gu


def gradient_ncc_loss(x: Image, y: Image) -> Float[Array, ""]:
    """``1 − ½ (NCC(∂_u x, ∂_u y) + NCC(∂_v x, ∂_v y))`` with Sobel derivatives, ∈ [0, 2].

    Gradient correlation of Penney et al. (1998): insensitive to low-frequency intensity
    differences (scatter, heel effect), sensitive to edges.
    """
    xv, xu = _sobel(x)
    yv, yu = _sobel(y)
    return 1.0 - 0.5 * (ncc(xu.reshape(-1), yu.reshape(-1)) + ncc(xv.reshape(-1), yv.reshape(-1)))


def _parzen_weights(a, bins, sigma):
    """Gaussian Parzen weights ``(N, B)`` of values normalised to [0, 1]; each row sums to 1."""
    lo, hi = jnp.min(a), jnp.max(a)
    span = hi - lo
    ok = span > 0
    a = jnp.where(ok, (a - lo) / jnp.where(ok, span, 1.0), 0.5)
    centres = (jnp.arange(bins, dtype=a.dtype) + 0.5) / bins
    w = jnp.exp(-0.5 * ((a[:, None] - centres[None, :]) / sigma) ** 2)
    return w / jnp.sum(w, axis=1, keepdims=True)


def mutual_information_loss(x: Image, y: Image, *, bins: int = 32, sigma: float | None = None) -> Float[Array, ""]:
    """``−MI(x, y)`` (nats) from a Parzen-window joint histogram, ∈ [−log bins, 0].

    Intensities are rescaled to [0, 1] per image; each pixel adds a Gaussian of width
    ``sigma`` (default one bin width, ``1/bins``) to ``bins`` histogram bins; ``MI = Σ p_xy
    log(p_xy / (p_x p_y))`` (Viola & Wells 1997). Lower is better; 0 for independent images.
    """
    sigma = 1.0 / bins if sigma is None else float(sigma)
    wx = _parzen_weights(x.reshape(-1), bins, sigma)
    wy = _parzen_weights(y.reshape(-1), bins, sigma)
    pxy = jnp.einsum("nb,nc->bc", wx, wy, precision=jax.lax.Precision.HIGHEST) / wx.shape[0]
    px, py = jnp.sum(pxy, 1), jnp.sum(pxy, 0)
    tiny = jnp.finfo(pxy.dtype).tiny
    pos = pxy > tiny
    ratio = jnp.where(pos, pxy, 1.0) / jnp.maximum(px[:, None] * py[None, :], tiny)
    mi = jnp.sum(jnp.where(pos, pxy * jnp.log(ratio), 0.0))
    return -mi


def mse_loss(x: Image, y: Image) -> Float[Array, ""]:
    """Mean squared difference ``mean (x − y)²`` ≥ 0 (not intensity invariant)."""
    return jnp.mean((x - y) ** 2)


LOSSES: dict[str, Callable[[Image, Image], Float[Array, ""]]] = {
    "ncc": ncc_loss,
    "mncc": multiscale_ncc_loss,
    "gncc": gradient_ncc_loss,
    "mi": mutual_information_loss,
    "mse": mse_loss,
}


def get_loss(name: str) -> Callable[[Image, Image], Float[Array, ""]]:
    """A loss by name: one of :data:`LOSSES` (``ncc``, ``mncc``, ``gncc``, ``mi``, ``mse``)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
