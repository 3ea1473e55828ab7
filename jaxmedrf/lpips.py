"""LPIPS, the learned perceptual image patch similarity (Zhang et al., CVPR 2018), in pure JAX.

.. math::

    d(x, x_0) = \\sum_l \\frac{1}{H_l W_l} \\sum_{h,w}
        \\bigl\\| w_l \\odot (\\hat y^l_{hw} - \\hat y^l_{0,hw}) \\bigr\\|_2^2

(Eq. 1 of the paper): ``ŷˡ`` are the feature maps of layer ``l`` of an ImageNet classifier,
each unit-normalised along channels, and ``w_l ≥ 0`` the per-channel weights of the "linear
calibration" layers (1×1 convolutions without bias) fitted to human judgements. This module
follows the ``lpips`` package (v0.1, ``lpips.LPIPS(net=…)``) exactly:

1. **Scaling layer**: ``(x − shift) / scale`` with ``shift = (−0.030, −0.088, −0.188)`` and
   ``scale = (0.458, 0.448, 0.450)`` (ImageNet statistics expressed for inputs in [−1, 1]).
2. **Trunk** in torchvision's layer layout (convolution weights OIHW): AlexNet taps
   ``relu1 … relu5`` (after each of its five convolutions); VGG16 taps ``relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3``.
3. ``ŷ = y / (‖y‖₂ + 10⁻¹⁰)`` over channels; squared difference; the linear layer; the
   spatial mean; the sum over the five layers.

**Inputs**: images in **[−1, 1]**, channels first, ``(*batch, 3, H, W)`` like the ``lpips``
package (PyTorch NCHW). :func:`to_lpips_input` turns grayscale CT slices ``(*batch, H, W)``
with a data range ``[low, high]`` (e.g. mm⁻¹ or HU) into that form by mapping the range
linearly onto [−1, 1] and repeating the channel. AlexNet needs ``H, W ≥ 31``, VGG16 ``≥ 16``.

**Weights**: the linear layers ship inside the ``lpips`` PyPI package
(``lpips/weights/v0.1/{alex,vgg}.pth``) and are read from there without importing it (or
from a path you give). The ImageNet trunk weights (torchvision's ``alexnet``/``vgg16``
``state_dict`` ``.pth``, e.g. ``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) cannot be
downloaded by this library: the user supplies the file. Both are read by
:func:`jaxmedrf._pth.read_pth`, which refuses to unpickle anything but tensors and dicts.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jaxmedrf._pth import read_pth

__all__ = [
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "LPIPSParams",
    "load_lpips",
    "lpips",
    "lpips_slices",
    "lpips_weights_path",
    "read_pth",
    "to_lpips_input",
]

#: ``lpips.ScalingLayer`` constants, per RGB channel, for inputs in [−1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips.normalize_tensor

# Trunks in torchvision's ``features`` layout: stages of (max-pool (kernel, stride) before the
# stage or None, convolutions (out channels, kernel, stride, padding)); each conv is followed
# by a ReLU and LPIPS taps the last ReLU of every stage.
_ARCH = {
    "alex": (
        (None, ((64, 11, 4, 2),)),
        ((3, 2), ((192, 5, 1, 2),)),
        ((3, 2), ((384, 3, 1, 1),)),
        (None, ((256, 3, 1, 1),)),
        (None, ((256, 3, 1, 1),)),
    ),
    "vgg": (
        (None, ((64, 3, 1, 1),) * 2),
        ((2, 2), ((128, 3, 1, 1),) * 2),
        ((2, 2), ((256, 3, 1, 1),) * 3),
        ((2, 2), ((512, 3, 1, 1),) * 3),
        ((2, 2), ((512, 3, 1, 1),) * 3),
    ),
}
_NETS = tuple(_ARCH)
_MIN_SIZE = {"alex": 31, "vgg": 16}


def _conv_indices(net: str) -> list[int]:
    """Indices of the convolutions in torchvision's ``features`` Sequential."""
    idx, out = 0, []
    for pool, convs in _ARCH[net]:
        idx += pool is not None
        for _ in convs:
            out.append(idx)
            idx += 2  # conv, relu
    return out


def _expected_shapes(net: str) -> list[tuple[int, int, int, int]]:
    shapes, c_in = [], 3
    for _, convs in _ARCH[net]:
        for c_out, k, _, _ in convs:
            shapes.append((c_out, c_in, k, k))
            c_in = c_out
    return shapes


def _tap_channels(net: str) -> list[int]:
    return [convs[-1][0] for _, convs in _ARCH[net]]


class LPIPSParams(NamedTuple):
    """LPIPS weights as a pytree; the trunk (AlexNet or VGG16) follows from ``len(convs)``.

    Attributes:
      convs: per convolution ``(weight (O, I, kh, kw), bias (O,))``, torchvision order.
      lins: per tapped layer the non-negative channel weights ``(C_l,)`` of the 1×1 linear layer.
    """

    convs: tuple[tuple[Array, Array], ...]
    lins: tuple[Array, ...]

    @property
    def net(self) -> str:
        return {5: "alex", 13: "vgg"}[len(self.convs)]


def lpips_weights_path(net: str, *, version: str = "0.1") -> Path:
    """The linear-layer file shipped in the ``lpips`` package (located, not imported).

    Raises:
      ValueError: unknown ``net``, or the ``lpips`` package is not installed.
    """
    _check_net(net)
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the LPIPS linear layers ship in the 'lpips' package, which is not installed:"
            " `pip install --no-deps lpips` (it is only read, never imported), or pass lin=FILE"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / f"v{version}" / f"{net}.pth"
    if not path.is_file():
        raise ValueError(f"the installed lpips package has no {path}")
    return path


def _check_net(net):
    if net not in _NETS:
        raise ValueError(f"net must be one of {_NETS}, got {net!r}")


_KEY = re.compile(r"(?:^|\.)(?:features|slice\d+)\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"(?:^|\.)lin(\d+)\.model\.\d+\.weight$")


def _as_state_dict(obj, path):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_lpips(backbone: str | os.PathLike, *, net: str = "alex", lin: str | os.PathLike | None = None) -> LPIPSParams:
    """Reads LPIPS weights: the user's ImageNet trunk and the calibrated linear layers.

    Args:
      backbone: ``.pth`` state dict of the trunk: torchvision's ``alexnet``/``vgg16`` (keys
        ``features.<i>.weight/bias``; classifier keys are ignored) or an ``lpips`` module's
        ``net`` (keys ``slice<k>.<i>.weight/bias``); any key prefix (``module.``, ``net.``)
        is accepted.
      net: ``"alex"`` or ``"vgg"`` (VGG16).
      lin: the linear-layer ``.pth`` (keys ``lin<l>.model.1.weight``); default the file
        shipped in the installed ``lpips`` package (:func:`lpips_weights_path`).

    Returns:
      :class:`LPIPSParams` in float32.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: unknown ``net``; a file that is not a torch checkpoint or holds anything but
        tensors; missing keys or shapes that do not match the trunk (``vgg16_bn`` is not VGG16).
    """
    _check_net(net)
    path = Path(backbone)
    sd = _as_state_dict(read_pth(path), path)
    found: dict[int, dict[str, np.ndarray]] = {}
    for k, v in sd.items():
        m = _KEY.search(str(k))
        if m and isinstance(v, np.ndarray):
            found.setdefault(int(m.group(1)), {})[m.group(2)] = v
    convs = []
    for i, shape in zip(_conv_indices(net), _expected_shapes(net)):
        wb = found.get(i, {})
        if "weight" not in wb or "bias" not in wb:
            raise ValueError(
                f"{path}: no weight/bias for {net} feature layer {i} (expected torchvision's"
                f" {'alexnet' if net == 'alex' else 'vgg16'} state dict; found layers {sorted(found)})"
            )
        w, b = wb["weight"], wb["bias"]
        if w.shape != shape or b.shape != shape[:1]:
            raise ValueError(f"{path}: feature layer {i} has weight {w.shape} and bias {b.shape}, {net} needs {shape} and {shape[:1]}")
        convs.append((jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)))
    if sorted(found) != _conv_indices(net):
        raise ValueError(f"{path}: feature layers {sorted(found)} do not match {net} (convolutions at {_conv_indices(net)})")

    lin_path = Path(lin) if lin is not None else lpips_weights_path(net)
    lsd = _as_state_dict(read_pth(lin_path), lin_path)
    lins_found = {int(m.group(1)): v for k, v in lsd.items() if (m := _LIN_KEY.search(str(k)))}
    lins = []
    for l, c in enumerate(_tap_channels(net)):
        w = lins_found.get(l)
        if w is None or np.shape(w) != (1, c, 1, 1):
            got = None if w is None else np.shape(w)
            raise ValueError(f"{lin_path}: lin{l}.model.1.weight must have shape (1, {c}, 1, 1) for {net}, got {got}")
        if np.any(w < 0):
            raise ValueError(f"{lin_path}: lin{l} has negative weights; LPIPS linear layers are non-negative")
        lins.append(jnp.asarray(w.reshape(c), jnp.float32))
    return LPIPSParams(tuple(convs), tuple(lins))


# ------------------------------------------------------------------------------------ network
def _features(x, params: LPIPSParams):
    """Tapped ReLU outputs of the trunk for ``x`` (N, 3, H, W), already scaled."""
    hi = jax.lax.Precision.HIGHEST
    taps, it = [], iter(params.convs)
    for pool, convs in _ARCH[params.net]:
        if pool is not None:
            k, s = pool
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, k, k), (1, 1, s, s), "VALID")
        for _, _, stride, pad in convs:
            w, b = next(it)
            x = jax.lax.conv_general_dilated(
                x, w.astype(x.dtype), (stride, stride), [(pad, pad), (pad, pad)],
                dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=hi,
            )
            x = jax.nn.relu(x + b.astype(x.dtype)[:, None, None])
        taps.append(x)
    return taps


def _unit_normalise(y):
    """``y / (‖y‖₂ + 1e-10)`` over channels, with a gradient defined where ``y = 0``."""
    s = jnp.sum(y * y, axis=1, keepdims=True)
    pos = s > 0
    norm = jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)
    return y / (norm + _EPS)


def lpips(
    image: Float[ArrayLike, "*batch 3 h w"],
    reference: Float[ArrayLike, "*batch 3 h w"],
    params: LPIPSParams,
) -> Float[Array, "*batch"]:
    """LPIPS distance (Zhang et al. 2018, Eq. 1) between images in [−1, 1], channels first.

    Equals ``lpips.LPIPS(net=…, version="0.1")(image, reference)`` (PyTorch) with the same
    weights. Symmetric, ≥ 0, 0 for identical images; differentiable (usable as a loss).

    Args:
      image: RGB images in [−1, 1], ``(*batch, 3, H, W)``; see :func:`to_lpips_input` for CT.
      reference: same shape.
      params: from :func:`load_lpips`.

    Returns:
      One distance per image, ``batch`` shape (a scalar for a single ``(3, H, W)`` pair).

    Raises:
      ValueError: shapes differ, the channel axis is not 3, or the image is smaller than the
        trunk needs (AlexNet 31×31, VGG16 16×16).
    """
    image, reference = jnp.asarray(image), jnp.asarray(reference)
    if image.shape != reference.shape:
        raise ValueError(f"image shape {image.shape} differs from reference shape {reference.shape}")
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected (*batch, 3, H, W) images, got shape {image.shape}")
    net = params.net
    if min(image.shape[-2:]) < _MIN_SIZE[net]:
        raise ValueError(f"{net} LPIPS needs images of at least {_MIN_SIZE[net]}×{_MIN_SIZE[net]} pixels, got {image.shape[-2:]}")
    dtype = jnp.promote_types(jnp.result_type(image, reference), jnp.float32)
    batch = image.shape[:-3]
    x = jnp.concatenate([image.reshape(-1, *image.shape[-3:]), reference.reshape(-1, *image.shape[-3:])]).astype(dtype)
    shift = jnp.asarray(LPIPS_SHIFT, dtype)[:, None, None]
    scale = jnp.asarray(LPIPS_SCALE, dtype)[:, None, None]
    feats = _features((x - shift) / scale, params)
    n = x.shape[0] // 2
    total = 0.0
    for f, w in zip(feats, params.lins):
        f = _unit_normalise(f)
        d = (f[:n] - f[n:]) ** 2
        total = total + jnp.mean(jnp.einsum("c,nchw->nhw", w.astype(dtype), d, precision=jax.lax.Precision.HIGHEST), axis=(-2, -1))
    return total.reshape(batch)


# ------------------------------------------------------------------------------------ CT slices
def to_lpips_input(image: Float[ArrayLike, "*batch h w"], *, low, high) -> Float[Array, "*batch 3 h w"]:
    """Grayscale slices → LPIPS input: ``[low, high]`` mapped linearly onto [−1, 1], clipped, 3 channels.

    Args:
      image: slices in any unit (μ in mm⁻¹, HU, …), ``(*batch, H, W)``.
      low: value mapped to −1 (e.g. the reference's minimum, or a window's lower bound in HU).
      high: value mapped to +1; must exceed ``low``. Use the same ``low``/``high`` for the
        image and its reference.
    """
    if not isinstance(low, jax.core.Tracer) and not isinstance(high, jax.core.Tracer) and not float(high) > float(low):
        raise ValueError(f"high must exceed low, got low={low!r}, high={high!r}")
    image = jnp.asarray(image)
    dtype = jnp.promote_types(image.dtype, jnp.float32)
    x = 2.0 * (image.astype(dtype) - low) / (high - low) - 1.0
    x = jnp.clip(x, -1.0, 1.0)
    return jnp.broadcast_to(x[..., None, :, :], (*x.shape[:-2], 3, *x.shape[-2:]))


def lpips_slices(
    image: Float[ArrayLike, "nx ny nz"],
    reference: Float[ArrayLike, "nx ny nz"],
    params: LPIPSParams,
    *,
    axis: int = 2,
    low=None,
    high=None,
    batch_size: int = 8,
) -> Float[Array, " n"]:
    """LPIPS of every 2D slice of a volume along ``axis`` (mean it for one number per volume).

    Args:
      image: reconstruction volume.
      reference: ground truth, same shape.
      params: from :func:`load_lpips`.
      axis: slicing axis (2: axial slices of an (x, y, z) volume).
      low, high: data range mapped to [−1, 1]; default the reference's min and max.
      batch_size: slices per network evaluation (bounds memory).

    Returns:
      ``(n,)`` LPIPS per slice.
    """
    image, reference = jnp.asarray(image), jnp.asarray(reference)
    if image.shape != reference.shape or image.ndim != 3:
        raise ValueError(f"expected two volumes of one 3-D shape, got {image.shape} and {reference.shape}")
    if axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    low = jnp.min(reference) if low is None else low
    high = jnp.max(reference) if high is None else high
    a = to_lpips_input(jnp.moveaxis(image, axis, 0), low=low, high=high)
    b = to_lpips_input(jnp.moveaxis(reference, axis, 0), low=low, high=high)
    return jax.lax.map(lambda ab: lpips(ab[0], ab[1], params), (a, b), batch_size=batch_size)
