"""A small learned denoiser of CT slices, trained by denoising score matching.

Network: a noise-conditional DnCNN (Zhang et al., "Beyond a Gaussian denoiser: residual
learning of deep CNN for image denoising", IEEE TIP 26, 2017) on one 2-D slice, with the
noise level σ as a second input channel (as FFDNet, Zhang et al. 2018): ``depth`` 3 × 3
convolutions of ``width`` channels, ReLU between them, predicting the noise ε̂(x̃, σ).

Training: denoising score matching (Vincent, "A connection between score matching and
denoising autoencoders", Neural Comput. 23, 2011) over several noise levels (Song & Ermon,
"Generative modeling by estimating gradients of the data distribution", NeurIPS 2019): for a
clean patch x, a level σ drawn from ``config.sigmas`` and ε ~ N(0, I),
x̃ = x + σ ε and the loss is ‖ε̂(x̃, σ) − ε‖², i.e. Song & Ermon's Eq. 2 with the weight
λ(σ) = σ² and the score s(x̃, σ) = −ε̂/σ. The denoiser is Tweedie's estimate
D_σ(x̃) = x̃ + σ² s = x̃ − σ ε̂ (Efron, "Tweedie's formula and selection bias", JASA 2011).

Intensities: the network sees x = μ / ``config.mu_scale`` (``mu_scale``, mm⁻¹, set from the
training volumes: their 99.5th percentile), and σ is in those units.

Parameters are a plain pytree ``{"layer0": {"w", "b"}, …}``; the file format
(:func:`save_prior`) is flax's msgpack serialisation of ``{format, version, config (JSON),
trained_on (JSON), params}`` — no pickle.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "DenoiserConfig", "DenoisingPrior", "denoise", "denoiser_apply", "denoiser_init", "dsm_loss", "load_prior",
    "prior_from_bytes", "prior_to_bytes", "save_prior", "train_prior",
]

FORMAT = "jaxmedrf-denoising-prior"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """Architecture, noise levels and intensity normalisation of a denoising prior.

    Attributes:
      width: channels of the hidden convolutions.
      depth: 3 × 3 convolutions (≥ 2); the receptive field is ``2 · depth + 1`` pixels.
      sigmas: the noise levels trained on, in units of ``mu_scale`` (geometric, as Song &
        Ermon 2019).
      mu_scale: intensity normalisation (mm⁻¹): the network sees μ / mu_scale.
      patch: side of the square training patches (pixels).
    """

    width: int = 32
    depth: int = 6
    sigmas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    mu_scale: float = 0.04
    patch: int = 32

    def __post_init__(self):
        for name in ("width", "depth", "patch"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.depth < 2:
            raise ValueError(f"depth must be ≥ 2, got {self.depth!r}")
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        if not self.sigmas or not all(np.isfinite(s) and s > 0 for s in self.sigmas):
            raise ValueError(f"sigmas must be positive numbers, got {self.sigmas!r}")
        if not (np.isfinite(self.mu_scale) and self.mu_scale > 0):
            raise ValueError(f"mu_scale must be positive (mm⁻¹), got {self.mu_scale!r}")


class DenoisingPrior(NamedTuple):
    """A trained prior: its config, parameters and the volumes (ids) it was trained on."""

    config: DenoiserConfig
    params: Any
    trained_on: tuple[str, ...] = ()


def _layer_shapes(config: DenoiserConfig) -> list[tuple[int, int]]:
    chans = [2] + [config.width] * (config.depth - 1) + [1]
    return list(zip(chans[:-1], chans[1:]))


def denoiser_init(key, config: DenoiserConfig) -> dict:
    """He-normal 3 × 3 kernels (HWIO), zero biases; the last layer starts at zero (ε̂ = 0: D = identity)."""
    params = {}
    shapes = _layer_shapes(config)
    for i, (cin, cout) in enumerate(shapes):
        k = jax.random.fold_in(key, i)
        w = jax.random.normal(k, (3, 3, cin, cout), jnp.float32) * jnp.sqrt(2.0 / (9 * cin))
        if i == len(shapes) - 1:
            w = w * 0.0
        params[f"layer{i}"] = {"w": w, "b": jnp.zeros((cout,), jnp.float32)}
    return params


def denoiser_apply(params, x: Float[ArrayLike, "*batch h w"], sigma: Float[ArrayLike, "*batch"],
                   config: DenoiserConfig) -> Float[Array, "*batch h w"]:
    """The predicted noise ε̂(x̃, σ) of normalised slices ``x`` (units of ``mu_scale``) at levels ``sigma``."""
    x = jnp.asarray(x, jnp.float32)
    batch, (h, w) = x.shape[:-2], x.shape[-2:]
    xf = x.reshape(-1, h, w)
    s = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), batch).reshape(-1)
    y = jnp.stack([xf, jnp.broadcast_to(s[:, None, None], xf.shape)], -1)  # NHWC
    n = config.depth
    for i in range(n):
        p = params[f"layer{i}"]
        y = jax.lax.conv_general_dilated(y, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["b"]
        if i < n - 1:
            y = jax.nn.relu(y)
    return y[..., 0].reshape(x.shape)


def denoise(prior: DenoisingPrior, mu: Float[ArrayLike, "*batch h w"], sigma: float) -> Float[Array, "*batch h w"]:
    """Tweedie's denoised slices D_σ(μ) = μ − σ ε̂ (μ in mm⁻¹, ``sigma`` in units of ``mu_scale``)."""
    scale = prior.config.mu_scale
    x = jnp.asarray(mu, jnp.float32) / scale
    eps = denoiser_apply(prior.params, x, jnp.full(x.shape[:-2], sigma, jnp.float32), prior.config)
    return (x - sigma * eps) * scale


def dsm_loss(key, params, x: Float[Array, "batch h w"], config: DenoiserConfig) -> Array:
    """Denoising score matching over ``config.sigmas`` (module doc): mean ‖ε̂(x + σε, σ) − ε‖²."""
    k_s, k_e = jax.random.split(key)
    sig = jnp.asarray(config.sigmas, jnp.float32)[jax.random.randint(k_s, (x.shape[0],), 0, len(config.sigmas))]
    eps = jax.random.normal(k_e, x.shape, jnp.float32)
    pred = denoiser_apply(params, x + sig[:, None, None] * eps, sig, config)
    return jnp.mean((pred - eps) ** 2)


def _patch_bank(rng: np.random.Generator, volumes, scale: float, patch: int, max_patches: int) -> np.ndarray:
    """Normalised ``patch``² tiles (stride patch/2) of the slices of every volume along all three
    axes, with random flips, at most ``max_patches`` of them."""
    tiles = []
    stride = max(patch // 2, 1)
    for v in volumes:
        v = np.asarray(v, np.float32) / scale
        for axis in range(3):
            s = np.moveaxis(v, axis, 0)
            if min(s.shape[1:]) < patch:
                continue
            for i in range(0, s.shape[1] - patch + 1, stride):
                for j in range(0, s.shape[2] - patch + 1, stride):
                    tiles.append(s[:, i:i + patch, j:j + patch])
    if not tiles:
        raise ValueError(f"every volume is smaller than the training patch ({patch} pixels)")
    bank = np.concatenate(tiles)
    bank = bank[np.max(bank, axis=(1, 2)) > 0.05] if np.any(np.max(bank, axis=(1, 2)) > 0.05) else bank  # not all air
    if len(bank) > max_patches:
        bank = bank[rng.choice(len(bank), max_patches, replace=False)]
    flip = rng.random((len(bank), 2)) < 0.5
    bank = np.where(flip[:, 0, None, None], bank[:, ::-1], bank)
    bank = np.where(flip[:, 1, None, None], bank[:, :, ::-1], bank)
    return np.ascontiguousarray(bank)


def train_prior(
    key,
    volumes: Sequence[Float[ArrayLike, "nx ny nz"]],
    config: DenoiserConfig = DenoiserConfig(),
    *,
    steps: int = 2000,
    batch: int = 32,
    lr: float = 1e-3,
    auto_mu_scale: bool = True,
    trained_on: Sequence[str] = (),
    max_patches: int = 20000,
    steps_per_call: int = 50,
) -> tuple[DenoisingPrior, dict]:
    """Trains the denoiser on patches of the slices of ``volumes`` (μ, mm⁻¹) by denoising score matching.

    Args:
      key: PRNG key (initialisation, patch bank, batches, noise).
      volumes: the training volumes (μ in mm⁻¹), any shapes with every side ≥ ``config.patch``.
      config: architecture, noise levels, normalisation.
      steps: Adam steps (rounded up to ``steps_per_call``).
      batch: patches per step.
      lr: peak learning rate (cosine decay to a tenth).
      auto_mu_scale: set ``config.mu_scale`` to the 99.5th percentile of the volumes' μ.
      trained_on: ids of the training volumes, stored with the prior.
      max_patches: size of the patch bank sampled once from the volumes.
      steps_per_call: steps per compiled call.

    Returns:
      ``(prior, {"loss": mean DSM loss of each call})``.
    """
    if not volumes:
        raise ValueError("train_prior needs at least one volume")
    if int(steps) != steps or steps <= 0 or int(batch) != batch or batch <= 0:
        raise ValueError(f"steps and batch must be positive integers, got {steps!r}, {batch!r}")
    vols = [np.asarray(v, np.float32) for v in volumes]
    if auto_mu_scale:
        scale = float(np.percentile(np.concatenate([v.reshape(-1) for v in vols]), 99.5))
        config = dataclasses.replace(config, mu_scale=max(scale, 1e-6))
    k_init, k_bank, k_train = jax.random.split(key, 3)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_bank)).reshape(-1).astype(np.uint64))
    bank = jnp.asarray(_patch_bank(rng, vols, config.mu_scale, config.patch, max_patches))
    n_calls = -(-int(steps) // steps_per_call)
    tx = optax.adam(optax.cosine_decay_schedule(lr, n_calls * steps_per_call, alpha=0.1))
    params = denoiser_init(k_init, config)
    opt = tx.init(params)

    @jax.jit
    def run(params, opt, call):
        def one(carry, n):
            params, opt = carry
            k = jax.random.fold_in(k_train, n)
            k_idx, k_loss = jax.random.split(k)
            x = bank[jax.random.randint(k_idx, (batch,), 0, bank.shape[0])]
            loss, g = jax.value_and_grad(lambda p: dsm_loss(k_loss, p, x, config))(params)
            upd, opt = tx.update(g, opt, params)
            return (optax.apply_updates(params, upd), opt), loss

        (params, opt), losses = jax.lax.scan(one, (params, opt), call * steps_per_call + jnp.arange(steps_per_call))
        return params, opt, jnp.mean(losses)

    history = []
    for call in range(n_calls):
        params, opt, loss = run(params, opt, jnp.asarray(call))
        history.append(float(loss))
        if not np.isfinite(history[-1]):
            raise FloatingPointError(f"train_prior: the loss became {history[-1]} at step {(call + 1) * steps_per_call}")
    return DenoisingPrior(config, params, tuple(str(t) for t in trained_on)), {"loss": history}


# ------------------------------------------------------------------------------ the file
def prior_to_bytes(prior: DenoisingPrior) -> bytes:
    """The msgpack bytes of a prior (flax serialisation; no pickle)."""
    from flax import serialization

    tree = {"format": FORMAT, "version": VERSION, "config": json.dumps(dataclasses.asdict(prior.config)),
            "trained_on": json.dumps(list(prior.trained_on)),
            "params": jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), prior.params)}
    return serialization.msgpack_serialize(tree)


def prior_from_bytes(data: bytes, *, name: str = "input") -> DenoisingPrior:
    """A prior from :func:`prior_to_bytes`'s bytes; anything else is refused with one ``ValueError`` line."""
    from flax import serialization

    bad = f"{name}: not a jaxmedrf denoising prior"
    try:
        tree = serialization.msgpack_restore(bytes(data))
    except Exception as e:  # msgpack raises several types for foreign bytes
        raise ValueError(f"{bad} (unreadable as msgpack: {type(e).__name__})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ValueError(f"{bad} (no '{FORMAT}' format tag)")
    if tree.get("version") != VERSION:
        raise ValueError(f"{bad} of version {VERSION} (file has version {tree.get('version')!r})")
    try:
        fields = json.loads(tree["config"])
        known = {f.name for f in dataclasses.fields(DenoiserConfig)}
        if not isinstance(fields, dict) or set(fields) - known:
            raise ValueError(f"unknown config keys {sorted(set(fields) - known)}")
        if isinstance(fields.get("sigmas"), list):
            fields["sigmas"] = tuple(fields["sigmas"])
        config = DenoiserConfig(**fields)
        trained_on = tuple(str(t) for t in json.loads(tree["trained_on"]))
        params = tree["params"]
        want = denoiser_init(jax.random.key(0), config)
        got_struct = jax.tree_util.tree_structure(params)
        if got_struct != jax.tree_util.tree_structure(want):
            raise ValueError("its parameters do not match its config")
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(want)):
            if np.shape(a) != b.shape or not np.all(np.isfinite(a)):
                raise ValueError("its parameters do not match its config (shape) or are not finite")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{bad} ({e})") from None
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    return DenoisingPrior(config, params, trained_on)


def save_prior(path: str | Path, prior: DenoisingPrior) -> Path:
    """Writes the prior (atomically) to ``path`` (``.msgpack`` by convention)."""
    from jaxmedrf._files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(prior_to_bytes(prior))
    return path


def load_prior(path: str | Path) -> DenoisingPrior:
    """Reads a prior written by :func:`save_prior`; a missing, foreign or damaged file raises one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such prior file: {path}")
    return prior_from_bytes(path.read_bytes(), name=str(path))
