r"""A generative attenuation field trained from DRR sets: GRAF with MedNeRF's discriminator.

The generator is a *conditional* field (GRAF: Schwarz et al., "GRAF: Generative Radiance Fields
for 3D-Aware Image Synthesis", NeurIPS 2020, Sec. 3.1): a shape code :math:`z_s` and an
appearance code :math:`z_a`, both :math:`\mathcal N(0, I)`, condition an MLP of the encoded
position,

.. math::  h = g_\theta(\gamma(u), z_s), \qquad \mu(x) = s\,\mathrm{softplus}(f_\theta(h, z_a)),

with :math:`u \in [-1, 1]^3` the point in the volume box, :math:`\gamma` NeRF's positional
encoding and :math:`s` (mm⁻¹) set from the data. X-rays have no colour nor view dependence, so the
appearance code modulates the attenuation head (GRAF's colour head); the field is rendered by the
X-ray marcher (:func:`jaxmedrf.render.render_rays`: line integrals, not alpha compositing).

Training follows GRAF: each step renders ``batch`` patches of :math:`K \times K` rays placed on
the detector by GRAF's strided sampler (a random scale :math:`s \in [s_{min}, 1]` and a random
offset of a :math:`K \times K` grid spanning the fraction :math:`s` of the panel, GRAF Sec. 3.2,
Eq. 3), at random views of the DRR geometry; the real patches are bilinear samples of random DRRs
at the same kind of coordinates. The losses are GRAF's: the non-saturating GAN loss with an R1
penalty :math:`\frac{\gamma}{2}\mathbb E\|\nabla D(x_{real})\|^2` (Mescheder et al. 2018;
GRAF Eq. 5, :math:`\gamma = 10`), RMSprop (lr 5e-4 generator, 1e-4 discriminator).

MedNeRF (Corona-Figueroa et al., "MedNeRF: Medical Neural Radiance Fields for Reconstructing
3D-aware CT-Projections from a Single X-ray", EMBC 2022, Sec. II-B) changes the discriminator:

* **DAG** (Tran et al., "On Data Augmentation for GAN Training", IEEE TIP 2021): one shared trunk
  with one head per augmentation :math:`T_k`; each head sees real and fake patches transformed by
  its :math:`T_k`, the identity head is the usual one, the others are weighted
  :math:`\lambda / (K - 1)` (DAG Eq. 7–8). Here the augmentations are the four rotations by
  multiples of 90° (one of DAG's families; MedNeRF uses DAG's rotations and flips).
* **Self-supervised auto-encoding** (after Liu et al., FastGAN, ICLR 2021, Sec. 3.2): a small
  decoder reconstructs the (downsampled) real patch from the discriminator's last feature map,
  and its error is added to the discriminator's loss, which forces the features to describe the
  whole image. MedNeRF and FastGAN measure it with a perceptual (LPIPS) loss; this small version
  uses the mean squared error.

Inversion (MedNeRF Sec. II-C, "volumetric rendering from a single view"): the codes are optimised
so that the rendered view matches a given X-ray (mean squared error, a small Gaussian prior on the
codes); optionally the generator is then fine-tuned on that view. The volume is the field on the
geometry's voxel grid.

Randomness: the key of step ``n`` is ``fold_in(key, n)``, so a resumed run draws the same batches
as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf._checks import check_numbers
from jaxmedrf.chunking import chunked_map
from jaxmedrf.fields.encodings import FrequencyConfig, frequency_encode
from jaxmedrf.fields.mlp import mlp_apply, mlp_init
from jaxmedrf.geometry import Geometry, view_frames, volume_box, voxel_centers
from jaxmedrf.rays import Rays, box_intersect
from jaxmedrf.render import render_rays
from jaxmedrf.training import committed_like, train_loop

__all__ = [
    "GANState", "GRAFConfig", "GenerativeModel", "InversionResult", "d_loss", "d_step", "dag_logits",
    "detector_rays", "discriminator_apply", "discriminator_init", "fake_patches", "g_loss", "g_step", "gan_init",
    "generator_field", "generator_init", "generator_volume", "invert", "load_generator", "normalise",
    "patch_coords", "render_patches", "render_views", "sample_codes", "sample_real_patches", "train_generative",
    "train_step",
]


@dataclasses.dataclass(frozen=True)
class GRAFConfig:
    """Every setting of the generative field and its training (defaults: GRAF's where they apply).

    Attributes:
      z_shape, z_app: sizes of the shape and appearance codes (GRAF: 128 + 128).
      n_frequencies: octaves of the positional encoding of the position (GRAF: 10).
      hidden: width of the generator's MLPs.
      depth: hidden layers of the shape MLP (GRAF: 8); the appearance head has one.
      patch: side K of the rendered patches (GRAF: 32); a power of two ≥ 8.
      min_scale: GRAF's smallest patch scale s_min (the patch spans a fraction s ∈ [s_min, 1] of
        the panel).
      batch: patches per step (real and fake each; GRAF: 8).
      n_samples: stratified samples per ray.
      d_width: channels of the discriminator's first layer (doubled at each halving).
      lr_g, lr_d: RMSprop learning rates (GRAF: 5e-4, 1e-4).
      r1_weight: γ of the R1 penalty on real patches (GRAF: 10).
      dag_weight: DAG's λ: total weight of the three rotated heads (DAG: 0.2).
      recon_weight: weight of the discriminator's auto-encoding loss (MedNeRF/FastGAN).
      n_iters: training steps.
      steps_per_call: steps per compiled call (between progress updates and checkpoints).
      seed: PRNG seed.
    """

    z_shape: int = 64
    z_app: int = 32
    n_frequencies: int = 6
    hidden: int = 128
    depth: int = 4
    patch: int = 32
    min_scale: float = 0.25
    batch: int = 8
    n_samples: int = 64
    d_width: int = 32
    lr_g: float = 5e-4
    lr_d: float = 1e-4
    r1_weight: float = 10.0
    dag_weight: float = 0.2
    recon_weight: float = 1.0
    n_iters: int = 2000
    steps_per_call: int = 25
    seed: int = 0

    def __post_init__(self):
        check_numbers(
            self,
            positive_ints=("z_shape", "z_app", "hidden", "depth", "patch", "batch", "n_samples", "d_width", "n_iters",
                           "steps_per_call"),
            nonneg_ints=("n_frequencies",),
            positive=("lr_g", "lr_d"),
            nonneg=("r1_weight", "dag_weight", "recon_weight"),
        )  # fmt: skip
        if self.patch < 8 or self.patch & (self.patch - 1):
            raise ValueError(f"patch must be a power of two >= 8, got {self.patch!r}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "GRAFConfig":
        return cls(**json.loads(s))


# ----------------------------------------------------------------------------- rays and patches
def detector_rays(geometry: Geometry, view: Array, row: Array, col: Array) -> Rays:
    """Rays through *continuous* detector coordinates ``(row, col)`` (pixel units, pixel centres at
    integers) of view ``view``: :func:`jaxmedrf.pixel_rays` between pixel centres."""
    frames = view_frames(geometry)
    nv, nu = geometry.n_detector
    d = jnp.asarray(geometry.d_detector)
    off = jnp.asarray(geometry.off_detector)
    off = off[view] if off.ndim == 2 else off  # one (v, u) offset per view, or one for all
    a = (col - (nu - 1) / 2) * d[1] + off[..., 1]
    b = (row - (nv - 1) / 2) * d[0] + off[..., 0]
    pix = frames.center[view] + frames.u[view] * a[..., None] + frames.v[view] * b[..., None]
    if geometry.beam == "cone":
        src = frames.source[view]
        return Rays(jnp.broadcast_to(src, pix.shape), pix - src)
    lo, hi = volume_box(geometry)
    half = jnp.linalg.norm(pix - 0.5 * (lo + hi), axis=-1) + 0.5 * jnp.linalg.norm(hi - lo) + 1.0
    dirn = frames.direction[view]
    return Rays(pix - dirn * half[..., None], 2.0 * dirn * half[..., None])


def patch_coords(key: PRNGKeyArray, n_detector: tuple[int, int], *, patch: int,
                 min_scale: float) -> tuple[Float[Array, "k k"], Float[Array, "k k"]]:
    """GRAF's strided patch (``FlexGridRaySampler``): a ``patch × patch`` grid spanning a random
    fraction ``s ∈ [min_scale, 1]`` of the panel at a random offset; ``(rows, cols)`` in pixels
    (continuous; corners of the grid at pixel centres when ``s = 1``)."""
    k_s, k_o = jax.random.split(key)
    s = jax.random.uniform(k_s, (), minval=min_scale, maxval=1.0)
    off = jax.random.uniform(k_o, (2,), minval=-(1.0 - s), maxval=1.0 - s)
    g = jnp.linspace(-1.0, 1.0, patch)
    gv, gu = jnp.meshgrid(g * s + off[0], g * s + off[1], indexing="ij")
    nv, nu = n_detector
    return (gv + 1) / 2 * (nv - 1), (gu + 1) / 2 * (nu - 1)


def _bilinear(image: Array, rows: Array, cols: Array) -> Array:
    return jax.scipy.ndimage.map_coordinates(image, [rows, cols], order=1, mode="nearest")


def sample_real_patches(key: PRNGKeyArray, images: Float[Array, "cases views nv nu"], *, patch: int,
                        min_scale: float, batch: int) -> Float[Array, "batch k k"]:
    """``batch`` real patches: a random DRR of a random case, bilinearly sampled on a GRAF patch."""
    n_cases, n_views, nv, nu = images.shape

    def one(k):
        k_c, k_v, k_p = jax.random.split(k, 3)
        c = jax.random.randint(k_c, (), 0, n_cases)
        v = jax.random.randint(k_v, (), 0, n_views)
        rows, cols = patch_coords(k_p, (nv, nu), patch=patch, min_scale=min_scale)
        return _bilinear(images[c, v], rows, cols)

    return jax.vmap(one)(jax.random.split(key, batch))


# ----------------------------------------------------------------------------- generator
def generator_init(key: PRNGKeyArray, config: GRAFConfig) -> dict:
    """Parameters of the conditional field: ``{"shape": MLP, "app": MLP}``."""
    k1, k2 = jax.random.split(key)
    enc = FrequencyConfig(config.n_frequencies).out_dim(3)
    shape = mlp_init(k1, [enc + config.z_shape] + [config.hidden] * config.depth)
    app = mlp_init(k2, [config.hidden + config.z_app, config.hidden // 2, 1])
    return {"shape": shape, "app": app}


def generator_field(params: dict, z_shape: Float[Array, " zs"], z_app: Float[Array, " za"], config: GRAFConfig, *,
                    lo: Array, hi: Array, mu_scale: float | Array) -> Callable[[Array], Array]:
    """The field ``x (N, 3) mm → μ (N,) mm⁻¹`` of the codes ``(z_shape, z_app)`` (module doc)."""

    def field(x):
        u = 2.0 * (x - lo) / (hi - lo) - 1.0
        n = x.shape[0]
        h = jnp.concatenate([frequency_encode(u, FrequencyConfig(config.n_frequencies)),
                             jnp.broadcast_to(z_shape, (n, z_shape.shape[0]))], -1)
        h = mlp_apply(params["shape"], h, out_activation=jax.nn.relu)
        h = jnp.concatenate([h, jnp.broadcast_to(z_app, (n, z_app.shape[0]))], -1)
        return mu_scale * jax.nn.softplus(mlp_apply(params["app"], h)[:, 0])

    return field


def sample_codes(key: PRNGKeyArray, config: GRAFConfig, n: int) -> tuple[Array, Array]:
    """``n`` codes from the prior 𝒩(0, I): ``(z_shape (n, zs), z_app (n, za))``."""
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (n, config.z_shape)), jax.random.normal(k2, (n, config.z_app))


def render_patches(key: PRNGKeyArray, params: dict, z_shape: Float[Array, "b zs"], z_app: Float[Array, "b za"],
                   geometry: Geometry, config: GRAFConfig, *, mu_scale: float | Array) -> Float[Array, "b k k"]:
    """Line integrals of ``b`` generated fields on GRAF patches at random views (stratified samples)."""
    lo, hi = volume_box(geometry)
    n_views = geometry.n_views

    def one(k, zs, za):
        k_v, k_p, k_r = jax.random.split(k, 3)
        view = jax.random.randint(k_v, (), 0, n_views)
        rows, cols = patch_coords(k_p, geometry.n_detector, patch=config.patch, min_scale=config.min_scale)
        rays = detector_rays(geometry, view, rows.reshape(-1), cols.reshape(-1))
        field = generator_field(params, zs, za, config, lo=lo, hi=hi, mu_scale=mu_scale)
        return render_rays(field, rays, lo, hi, n_samples=config.n_samples, key=k_r).reshape(config.patch, config.patch)

    return jax.vmap(one)(jax.random.split(key, z_shape.shape[0]), z_shape, z_app)


# ----------------------------------------------------------------------------- discriminator
def _conv(x, w, b, stride=1):
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b


def _conv_init(key, k, cin, cout):
    bound = 1.0 / math.sqrt(k * k * cin)
    kw, kb = jax.random.split(key)
    return (jax.random.uniform(kw, (k, k, cin, cout), jnp.float32, -bound, bound),
            jax.random.uniform(kb, (cout,), jnp.float32, -bound, bound))


N_AUG = 4  # DAG heads: rotations by 0, 90, 180, 270 degrees
RECON_SIDE = 16  # side of the auto-encoder's output; target: the real patch average-pooled to min(16, K)


def discriminator_init(key: PRNGKeyArray, config: GRAFConfig) -> dict:
    """A convolutional patch discriminator: stride-2 4×4 convolutions down to 4×4, one linear
    head per DAG augmentation, and a decoder (two nearest upsamplings + 3×3 convolutions, then
    to ``16 × 16``) for the auto-encoding loss."""
    n_down = int(math.log2(config.patch)) - 2
    keys = jax.random.split(key, n_down + 4)
    chans = [1] + [config.d_width * 2**i for i in range(n_down)]
    trunk = [_conv_init(keys[i], 4, chans[i], chans[i + 1]) for i in range(n_down)]
    c = chans[-1]
    heads = mlp_init(keys[n_down], [16 * c, N_AUG])
    dec = [_conv_init(keys[n_down + 1], 3, c, c // 2), _conv_init(keys[n_down + 2], 3, c // 2, c // 4),
           _conv_init(keys[n_down + 3], 3, c // 4, 1)]
    return {"trunk": trunk, "heads": heads, "dec": dec}


def _trunk(params, x):
    h = x[..., None]
    for w, b in params["trunk"]:
        h = jax.nn.leaky_relu(_conv(h, w, b, 2), 0.2)
    return h  # (B, 4, 4, C)


def _up(h):
    b, hh, ww, c = h.shape
    return jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")


def discriminator_apply(params: dict, x: Float[Array, "b k k"], *, head: int = 0,
                        decode: bool = False) -> Float[Array, " b"] | tuple[Array, Array]:
    """Logits of DAG head ``head`` for patches ``x`` (already transformed by that head's rotation);
    with ``decode`` also the ``(B, 16, 16)`` reconstruction from the last feature map."""
    h = _trunk(params, x)
    logits = mlp_apply(params["heads"], h.reshape(h.shape[0], -1))[:, head]
    if not decode:
        return logits
    r = h
    for i, (w, b) in enumerate(params["dec"]):
        r = _up(r) if i < 2 else r
        r = _conv(r, w, b)
        r = jax.nn.leaky_relu(r, 0.2) if i < 2 else jnp.tanh(r)
    return logits, r[..., 0]


def _pool_to(x, side):
    b, k, _ = x.shape
    f = k // side
    return x.reshape(b, side, f, side, f).mean((2, 4)) if f > 1 else x


def _head_weights(config: GRAFConfig) -> Array:
    return jnp.asarray([1.0] + [config.dag_weight / (N_AUG - 1)] * (N_AUG - 1), jnp.float32)


def dag_logits(params: dict, x: Float[Array, "b k k"]) -> Float[Array, "aug b"]:
    """Logits of every DAG head ``k`` on its own transform ``T_k x`` (rotation by ``k`` · 90°), all
    augmentations in one batch through the shared trunk."""
    xs = jnp.concatenate([jnp.rot90(x, k, axes=(1, 2)) for k in range(N_AUG)])
    h = _trunk(params, xs)
    logits = mlp_apply(params["heads"], h.reshape(h.shape[0], -1)).reshape(N_AUG, x.shape[0], N_AUG)
    return jnp.stack([logits[k, :, k] for k in range(N_AUG)])


def d_loss(params: dict, real: Float[Array, "b k k"], fake: Float[Array, "b k k"],
           config: GRAFConfig) -> tuple[Array, dict]:
    """The discriminator's loss: Σ_k w_k [softplus(D_k(T_k fake)) + softplus(−D_k(T_k real))]
    (non-saturating GAN, DAG heads, DAG Eq. 8) + γ/2 E‖∇ₓD_0(real)‖² (R1, GRAF Eq. 5) + the
    auto-encoding error on real patches (FastGAN Eq. 2, squared error). Patches are normalised
    images (:func:`normalise`)."""
    w = _head_weights(config)
    gan = jnp.sum(w * (jnp.mean(jax.nn.softplus(dag_logits(params, fake)), -1)
                       + jnp.mean(jax.nn.softplus(-dag_logits(params, real)), -1)))
    grad = jax.grad(lambda x: jnp.sum(discriminator_apply(params, x, head=0)))(real)
    r1 = jnp.mean(jnp.sum(grad**2, axis=(1, 2)))
    _, rec = discriminator_apply(params, real, head=0, decode=True)
    side = min(RECON_SIDE, real.shape[1])
    recon = jnp.mean((_pool_to(rec, side) - _pool_to(real, side)) ** 2)
    loss = gan + 0.5 * config.r1_weight * r1 + config.recon_weight * recon
    return loss, {"d_gan": gan, "r1": r1, "recon": recon}


def g_loss(d_params: dict, fake: Float[Array, "b k k"], config: GRAFConfig) -> Array:
    """The generator's non-saturating loss Σ_k w_k E softplus(−D_k(T_k fake))."""
    return jnp.sum(_head_weights(config) * jnp.mean(jax.nn.softplus(-dag_logits(d_params, fake)), -1))


# ----------------------------------------------------------------------------- training
class GANState(NamedTuple):
    g_params: Any
    d_params: Any
    g_opt: Any
    d_opt: Any
    step: Array
    key: Array


def _optimizers(config: GRAFConfig):
    return optax.rmsprop(config.lr_g), optax.rmsprop(config.lr_d)


def gan_init(key: PRNGKeyArray, config: GRAFConfig) -> GANState:
    """The initial training state (generator, discriminator, RMSprop states, step 0, ``key``)."""
    k_g, k_d = jax.random.split(jax.random.fold_in(key, 1 << 30))
    g, d = generator_init(k_g, config), discriminator_init(k_d, config)
    tx_g, tx_d = _optimizers(config)
    return GANState(g, d, tx_g.init(g), tx_d.init(d), jnp.zeros((), jnp.int32), key)


def normalise(p: Array, peak: float | Array) -> Array:
    """Line integrals → the discriminator's range: ``2 p / peak − 1``."""
    return 2.0 * p / peak - 1.0


def fake_patches(key: PRNGKeyArray, g_params: dict, geometry: Geometry, config: GRAFConfig, *,
                 mu_scale: float | Array, peak: float | Array) -> Float[Array, "b k k"]:
    """``config.batch`` normalised patches of fields of codes drawn from the prior."""
    k_z, k_r = jax.random.split(key)
    zs, za = sample_codes(k_z, config, config.batch)
    return normalise(render_patches(k_r, g_params, zs, za, geometry, config, mu_scale=mu_scale), peak)


def d_step(state: GANState, real: Float[Array, "b k k"], fake: Float[Array, "b k k"],
           config: GRAFConfig) -> tuple[GANState, dict]:
    """One RMSprop step of the discriminator on ``real`` and (fixed) ``fake`` patches."""
    _, tx_d = _optimizers(config)
    (dl, aux), dg = jax.value_and_grad(d_loss, has_aux=True)(state.d_params, real, jax.lax.stop_gradient(fake), config)
    upd, d_opt = tx_d.update(dg, state.d_opt, state.d_params)
    return state._replace(d_params=optax.apply_updates(state.d_params, upd), d_opt=d_opt), {"d_loss": dl, **aux}


def g_step(key: PRNGKeyArray, state: GANState, geometry: Geometry, config: GRAFConfig, *,
           mu_scale: float | Array, peak: float | Array) -> tuple[GANState, dict]:
    """One RMSprop step of the generator against the current discriminator (codes and rays from
    ``key``)."""
    tx_g, _ = _optimizers(config)
    gl, gg = jax.value_and_grad(lambda g: g_loss(state.d_params, fake_patches(key, g, geometry, config,
                                                                              mu_scale=mu_scale, peak=peak),
                                                 config))(state.g_params)
    upd, g_opt = tx_g.update(gg, state.g_opt, state.g_params)
    return state._replace(g_params=optax.apply_updates(state.g_params, upd), g_opt=g_opt), {"g_loss": gl}


def train_step(state: GANState, images: Float[Array, "cases views nv nu"], geometry: Geometry, config: GRAFConfig, *,
               mu_scale: float | Array, peak: float | Array) -> tuple[GANState, dict]:
    """One discriminator update then one generator update (``images``: line integrals); the key of
    step ``n`` is ``fold_in(state.key, n)``."""
    key = jax.random.fold_in(state.key, state.step)
    k_real, k_fd, k_fg = jax.random.split(key, 3)
    real = normalise(sample_real_patches(k_real, images, patch=config.patch, min_scale=config.min_scale,
                                         batch=config.batch), peak)
    fake = fake_patches(k_fd, state.g_params, geometry, config, mu_scale=mu_scale, peak=peak)
    state, m_d = d_step(state, real, fake, config)
    state, m_g = g_step(k_fg, state, geometry, config, mu_scale=mu_scale, peak=peak)
    return state._replace(step=state.step + 1), {**m_d, **m_g}


def _make_train_fn(geometry, config):
    """``(state, images, scales [mu_scale, peak]) → (state, metrics)``: ``steps_per_call`` steps,
    jitted; the scales are arguments, so data of other ranges reuse the compiled program."""
    def run(state, images, scales):
        def body(s, _):
            return train_step(s, images, geometry, config, mu_scale=scales[0], peak=scales[1])

        return jax.lax.scan(body, state, None, length=config.steps_per_call)

    return jax.jit(run, donate_argnums=0)


# ----------------------------------------------------------------------------- checkpoints
def _ckpt_dirs(root: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.name[5:]), p) for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit())


def _saveable(state: GANState) -> dict:
    d = state._asdict()
    d["key"] = jax.random.key_data(state.key)
    return d


def save_checkpoint(root: Path, state: GANState, *, keep: int = 2) -> Path:
    import orbax.checkpoint as ocp

    path = (root / f"step_{int(state.step):08d}").resolve()
    if path.exists():
        return path
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, _saveable(state))
    ckptr.wait_until_finished()
    for _, old in _ckpt_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def restore_checkpoint(root: Path, like: GANState) -> tuple[GANState, Path]:
    import orbax.checkpoint as ocp

    found = _ckpt_dirs(root)
    if not found:
        raise ValueError(f"no checkpoint found in {root}")
    path = found[-1][1].resolve()
    saveable = _saveable(like)
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, saveable)
    try:
        tree = ocp.StandardCheckpointer().restore(path, target)
    except Exception as e:  # orbax raises several types for a structure mismatch
        raise ValueError(f"checkpoint {path} does not match this configuration ({e})") from e
    tree = committed_like(tree, saveable)
    tree["key"] = jax.random.wrap_key_data(tree["key"])
    return GANState(**tree), path


class GenerativeModel(NamedTuple):
    """A trained generator: parameters, configuration, the DRR geometry (its voxel box is the
    field's domain), ``mu_scale`` (mm⁻¹) and ``peak`` (the normalising line integral)."""

    g_params: Any
    config: GRAFConfig
    geometry: Geometry
    mu_scale: float
    peak: float


def _meta(config, geometry, mu_scale, peak, n_cases):
    return {"config": json.loads(config.to_json()), "geometry": json.loads(geometry.to_json()),
            "mu_scale": mu_scale, "peak": peak, "cases": n_cases}


def train_generative(
    images: Float[ArrayLike, "cases views nv nu"],
    geometry: Geometry,
    config: GRAFConfig = GRAFConfig(),
    *,
    out_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[GenerativeModel, dict]:
    """Trains the generative field on DRR sets of ``geometry`` (line integrals, ≥ 0).

    Args:
      images: ``(cases, views, nv, nu)`` DRRs, one set per volume, all of ``geometry``.
      geometry: the DRR geometry (its voxel box bounds the generated fields).
      config: settings (:class:`GRAFConfig`).
      out_dir: model folder: ``model.json`` (configuration, geometry, scales) and orbax
        ``step_*`` checkpoints (written at the end, every ``checkpoint_every`` steps and at
        ``stop_after``).
      checkpoint_every: steps between checkpoints (rounded up to ``steps_per_call``; 0: at the end).
      resume: continue from the newest checkpoint in ``out_dir`` (same data scales and settings).
      stop_after: stop (after checkpointing) once this many steps are done, as if killed.
      progress: a tqdm bar with the losses.
      log: where log lines go.

    Returns:
      ``(model, history)``; ``history`` holds per-call means of ``d_loss``, ``g_loss``, ``r1``,
      ``recon`` and the seconds.
    """
    imgs = np.asarray(images, np.float32)
    if imgs.ndim != 4 or imgs.shape[1:] != geometry.projection_shape:
        raise ValueError(f"images must be (cases, {', '.join(map(str, geometry.projection_shape))}), got {imgs.shape}")
    if not np.all(np.isfinite(imgs)) or imgs.min() < -0.05 * max(float(imgs.max()), 1e-6):
        raise ValueError("images must be finite line integrals (>= 0)")
    from jaxmedrf.recon.naf import estimate_mu_scale

    mu_scale = 4.0 * max(estimate_mu_scale(imgs, geometry), 1e-6)
    peak = float(imgs.max()) or 1.0
    state = gan_init(jax.random.key(config.seed), config)
    root = Path(out_dir) if out_dir is not None else None
    meta = _meta(config, geometry, mu_scale, peak, imgs.shape[0])
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        mfile = root / "model.json"
        if resume:
            if not mfile.exists():
                raise ValueError(f"resume: {mfile} not found")
            saved, mine = json.loads(mfile.read_text()), json.loads(json.dumps(meta))
            for d in (saved, mine):  # a resumed run may train for longer
                d["config"].pop("n_iters", None)
            if saved != mine:
                raise ValueError(f"resume: the model in {root} was trained with other settings or data")
            state, path = restore_checkpoint(root, state)
            log(f"resumed from {path} at step {int(state.step)}")
        else:
            mfile.write_text(json.dumps(meta))
    elif resume:
        raise ValueError("resume=True needs out_dir")
    train_fn = _make_train_fn(geometry, config)
    scales = jnp.asarray([mu_scale, peak], jnp.float32)
    every = config.steps_per_call
    ckpt_every = -(-checkpoint_every // every) * every if checkpoint_every else 0
    target = config.n_iters if stop_after is None else min(config.n_iters, stop_after)
    history = {"step": [], "loss": [], "time_s": [], "d_loss": [], "g_loss": [], "r1": [], "recon": []}
    data = jnp.asarray(imgs)

    def train(state, data):
        state, m = train_fn(state, data, scales)
        m = {k: np.asarray(v) for k, v in m.items()}
        for k in ("d_loss", "g_loss", "r1", "recon"):
            history[k].append(float(m[k].mean()))
        return state, m["d_loss"] + m["g_loss"]

    def on_chunk(step, state, loss):
        if root is not None and ckpt_every and step % ckpt_every == 0:
            save_checkpoint(root, state)
        return {"D": f"{history['d_loss'][-1]:.3f}", "G": f"{history['g_loss'][-1]:.3f}"}

    state = train_loop(train, state, (data,), target, every, history, desc="GRAF", progress=progress,
                       start=int(state.step), on_chunk=on_chunk)
    if root is not None:
        save_checkpoint(root, state)
    history["train_seconds"] = history["time_s"][-1] if history["time_s"] else 0.0
    return GenerativeModel(state.g_params, config, geometry, mu_scale, peak), history


def load_generator(model_dir: str | Path) -> GenerativeModel:
    """The generator saved by :func:`train_generative` in ``model_dir`` (its newest checkpoint)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {root} not found")
    mfile = root / "model.json"
    if not mfile.exists():
        raise ValueError(f"{root} holds no model.json (not a folder written by `jaxmedrf generate train`)")
    meta = json.loads(mfile.read_text())
    config = GRAFConfig(**meta["config"])
    geometry = Geometry.from_dict(meta["geometry"])
    state, _ = restore_checkpoint(root, gan_init(jax.random.key(config.seed), config))
    return GenerativeModel(state.g_params, config, geometry, float(meta["mu_scale"]), float(meta["peak"]))


# ----------------------------------------------------------------------------- rendering and inversion
def render_views(g_params: dict, z_shape: Float[Array, " zs"], z_app: Float[Array, " za"], model: GenerativeModel,
                 views: Sequence[int] | ArrayLike, *, chunk_rays: int = 1 << 14) -> Float[Array, "n nv nu"]:
    """Full DRRs (line integrals) of the field of ``(z_shape, z_app)`` at view indices ``views`` of
    the model's geometry (midpoint samples)."""
    geo, cfg = model.geometry, model.config
    lo, hi = volume_box(geo)
    views = jnp.asarray(views, jnp.int32).reshape(-1)
    nv, nu = geo.n_detector
    field = generator_field(g_params, z_shape, z_app, cfg, lo=lo, hi=hi, mu_scale=model.mu_scale)

    def one(ids):
        v, pix = views[ids // (nv * nu)], ids % (nv * nu)
        rays = detector_rays(geo, v, (pix // nu).astype(jnp.float32), (pix % nu).astype(jnp.float32))
        return render_rays(field, rays, lo, hi, n_samples=cfg.n_samples)

    return chunked_map(one, views.shape[0] * nv * nu, chunk_rays).reshape(-1, nv, nu)


def generator_volume(g_params: dict, z_shape: Float[Array, " zs"], z_app: Float[Array, " za"],
                     model: GenerativeModel, *, chunk: int = 1 << 15) -> Float[Array, "nx ny nz"]:
    """μ (mm⁻¹) of the field at the voxel centres of the model's geometry."""
    geo = model.geometry
    lo, hi = volume_box(geo)
    field = generator_field(g_params, z_shape, z_app, model.config, lo=lo, hi=hi, mu_scale=model.mu_scale)
    xs, ys, zs = voxel_centers(geo)
    nx, ny, nz = geo.n_voxel

    def one(ids):
        i, j, k = ids // (ny * nz), (ids // nz) % ny, ids % nz
        return field(jnp.stack([xs[i], ys[j], zs[k]], -1).astype(jnp.float32))

    return chunked_map(one, nx * ny * nz, chunk).reshape(nx, ny, nz)


class InversionResult(NamedTuple):
    """Codes and generator parameters that explain an X-ray; ``history`` the fit's losses."""

    z_shape: Array
    z_app: Array
    g_params: Any
    history: dict


def invert(
    key: PRNGKeyArray,
    image: Float[ArrayLike, "nv nu"],
    view: int,
    model: GenerativeModel,
    *,
    n_steps: int = 300,
    finetune_steps: int = 0,
    lr: float = 3e-2,
    finetune_lr: float = 1e-3,
    resolution: int = 32,
    n_restarts: int = 4,
    prior_weight: float = 1e-3,
) -> InversionResult:
    """Codes (and optionally generator weights) whose render at ``view`` matches ``image``.

    Minimises ``mean((render − image)² / peak²) + prior_weight · (‖z_s‖² + ‖z_a‖²) / dim`` over a
    ``resolution × resolution`` grid of rays spanning the panel (the image bilinearly sampled
    there): Adam on the codes from ``n_restarts`` draws of the prior (the best kept), then
    ``finetune_steps`` of Adam on the generator with the codes fixed (MedNeRF Sec. II-C).

    Args:
      key: PRNG key (initial codes, stratified samples).
      image: the X-ray as line integrals on the model's detector.
      view: its view index in the model's geometry.
      model: from :func:`train_generative` or :func:`load_generator`.
    """
    cfg, geo = model.config, model.geometry
    img = jnp.asarray(image, jnp.float32)
    if img.shape != tuple(geo.n_detector):
        raise ValueError(f"image must be {tuple(geo.n_detector)} (the model's detector), got {img.shape}")
    if not 0 <= int(view) < geo.n_views:
        raise ValueError(f"view must be in [0, {geo.n_views}), got {view}")
    nv, nu = geo.n_detector
    g = jnp.linspace(0.0, 1.0, resolution)
    rows, cols = jnp.meshgrid(g * (nv - 1), g * (nu - 1), indexing="ij")
    target = _bilinear(img, rows, cols) / model.peak
    lo, hi = volume_box(geo)
    rays = detector_rays(geo, jnp.asarray(int(view)), rows.reshape(-1), cols.reshape(-1))

    def loss_fn(g_params, zs, za, k):
        field = generator_field(g_params, zs, za, cfg, lo=lo, hi=hi, mu_scale=model.mu_scale)
        p = render_rays(field, rays, lo, hi, n_samples=cfg.n_samples, key=k).reshape(resolution, resolution)
        fit = jnp.mean((p / model.peak - target) ** 2)
        prior = prior_weight * (jnp.mean(zs**2) + jnp.mean(za**2))
        return fit + prior, fit

    tx = optax.adam(lr)

    @jax.jit
    def fit_codes(k):
        k0, k1 = jax.random.split(k)
        zs, za = sample_codes(k0, cfg, 1)
        z = (zs[0] * 0.5, za[0] * 0.5)

        def body(c, i):
            z, opt = c
            (_, fit), gz = jax.value_and_grad(lambda z: loss_fn(model.g_params, *z, jax.random.fold_in(k1, i)),
                                              has_aux=True)(z)
            upd, opt = tx.update(gz, opt, z)
            return (optax.apply_updates(z, upd), opt), fit

        (z, _), fits = jax.lax.scan(body, (z, tx.init(z)), jnp.arange(n_steps))
        final = loss_fn(model.g_params, *z, None)[1]
        return z, fits, final

    best = None
    for r, k in enumerate(jax.random.split(key, max(1, n_restarts))):
        z, fits, final = fit_codes(k)
        if best is None or float(final) < best[2]:
            best = (z, fits, float(final))
    (zs, za), fits, final = best
    history = {"code_fit": np.asarray(fits).tolist(), "code_final": final}
    g_params = model.g_params
    if finetune_steps > 0:
        tx_f = optax.adam(finetune_lr)

        @jax.jit
        def finetune(g_params, k):
            def body(c, i):
                g, opt = c
                (_, fit), gg = jax.value_and_grad(lambda g: loss_fn(g, zs, za, jax.random.fold_in(k, i)),
                                                  has_aux=True)(g)
                upd, opt = tx_f.update(gg, opt, g)
                return (optax.apply_updates(g, upd), opt), fit

            (g, _), fits = jax.lax.scan(body, (g_params, tx_f.init(g_params)), jnp.arange(finetune_steps))
            return g, fits

        g_params, ft = finetune(g_params, jax.random.fold_in(key, 7))
        history["finetune_fit"] = np.asarray(ft).tolist()
    return InversionResult(zs, za, g_params, history)
