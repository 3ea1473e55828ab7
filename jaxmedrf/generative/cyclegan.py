r"""A small CycleGAN for unpaired 2-D translation between two intensity domains (CT ↔ MR).

Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks",
ICCV 2017: two generators :math:`G: A \to B`, :math:`F: B \to A` and two discriminators
:math:`D_A, D_B`, trained with

* the least-squares GAN loss (Mao et al. 2017; CycleGAN Sec. 4):
  :math:`\mathcal L_{D_B} = \tfrac12 \mathbb E[(D_B(b) - 1)^2] + \tfrac12 \mathbb E[D_B(G(a))^2]`,
  :math:`\mathcal L_G = \mathbb E[(D_B(G(a)) - 1)^2]` (and the same for :math:`F, D_A`);
* cycle consistency (Eq. 2): :math:`\lambda\,(\|F(G(a)) - a\|_1 + \|G(F(b)) - b\|_1)`,
  :math:`\lambda = 10`;
* identity (Sec. 5.2): :math:`0.5\lambda\,(\|G(b) - b\|_1 + \|F(a) - a\|_1)`;

Adam (lr 2e-4, β₁ = 0.5). The networks are small versions of the paper's: a generator of two
stride-2 downsamplings, residual blocks and two upsamplings (nearest + convolution, instance
normalisation, ``tanh`` out), and a 3-layer PatchGAN discriminator. The paper's linear decay of the
learning rate is an option (``decay_from=0.5``). Not kept from the paper: the history pool of 50
generated images.

Images are ``(N, H, W)`` in ``[-1, 1]`` with ``H, W`` multiples of 4. A method demo, not a
clinical model: the README says how it was shown.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from jaxmedrf._checks import check_numbers

__all__ = ["CycleGANConfig", "CycleGANState", "cyclegan_init", "cyclegan_losses", "cyclegan_step", "discriminator",
           "generator", "mr_like", "train_cyclegan", "translate"]


@dataclasses.dataclass(frozen=True)
class CycleGANConfig:
    """Settings of the CycleGAN (defaults: the paper's where they apply).

    Attributes:
      width: channels of the generators' and discriminators' first layer.
      n_res: residual blocks of each generator (paper: 9 at 256²).
      cycle_weight: λ of the cycle loss (paper: 10).
      identity_weight: weight of the identity loss as a fraction of λ (paper: 0.5).
      lr: Adam learning rate (paper: 2e-4), β₁ = 0.5.
      decay_from: the rate decays linearly to 0 from this fraction of ``n_iters`` on (paper: 0.5;
        default 1: no decay, as the measured runs of the README; one CPU run with 0.5 showed no
        clear difference).
      batch: images of each domain per step.
      n_iters: steps.
      seed: PRNG seed.
    """

    width: int = 16
    n_res: int = 2
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    lr: float = 2e-4
    decay_from: float = 1.0
    batch: int = 4
    n_iters: int = 1000
    seed: int = 0

    def __post_init__(self):
        check_numbers(self, positive_ints=("width", "batch", "n_iters"), nonneg_ints=("n_res",), positive=("lr",),
                      nonneg=("cycle_weight", "identity_weight"))
        if not 0.0 <= self.decay_from <= 1.0:
            raise ValueError(f"CycleGANConfig.decay_from must be in [0, 1], got {self.decay_from}")


def _conv_init(key, k, cin, cout):
    bound = 1.0 / math.sqrt(k * k * cin)
    kw, kb = jax.random.split(key)
    return (jax.random.uniform(kw, (k, k, cin, cout), jnp.float32, -bound, bound),
            jax.random.uniform(kb, (cout,), jnp.float32, -bound, bound))


def _conv(x, p, stride=1):
    w, b = p
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b


def _inorm(x):
    m = jnp.mean(x, (1, 2), keepdims=True)
    v = jnp.var(x, (1, 2), keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5)


def _up(x):
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")


def _generator_init(key, cfg: CycleGANConfig) -> dict:
    c = cfg.width
    ks = iter(jax.random.split(key, 6 + 2 * cfg.n_res))
    return {
        "in": _conv_init(next(ks), 7, 1, c),
        "down": [_conv_init(next(ks), 3, c, 2 * c), _conv_init(next(ks), 3, 2 * c, 4 * c)],
        "res": [(_conv_init(next(ks), 3, 4 * c, 4 * c), _conv_init(next(ks), 3, 4 * c, 4 * c)) for _ in range(cfg.n_res)],
        "up": [_conv_init(next(ks), 3, 4 * c, 2 * c), _conv_init(next(ks), 3, 2 * c, c)],
        "out": _conv_init(next(ks), 7, c, 1),
    }


def generator(params: dict, x: Float[Array, "n h w"]) -> Float[Array, "n h w"]:
    """The translating network (CycleGAN's ResNet generator, small): ``[-1, 1] → [-1, 1]``."""
    h = jax.nn.relu(_inorm(_conv(x[..., None], params["in"])))
    for p in params["down"]:
        h = jax.nn.relu(_inorm(_conv(h, p, 2)))
    for p1, p2 in params["res"]:
        h = h + _inorm(_conv(jax.nn.relu(_inorm(_conv(h, p1))), p2))
    for p in params["up"]:
        h = jax.nn.relu(_inorm(_conv(_up(h), p)))
    return jnp.tanh(_conv(h, params["out"]))[..., 0]


def _discriminator_init(key, cfg: CycleGANConfig) -> list:
    c = cfg.width
    ks = jax.random.split(key, 4)
    return [_conv_init(ks[0], 4, 1, c), _conv_init(ks[1], 4, c, 2 * c), _conv_init(ks[2], 4, 2 * c, 4 * c),
            _conv_init(ks[3], 4, 4 * c, 1)]


def discriminator(params: list, x: Float[Array, "n h w"]) -> Float[Array, "n hp wp"]:
    """PatchGAN (Isola et al. 2017, small): one real/fake score per receptive field."""
    h = x[..., None]
    for i, p in enumerate(params[:-1]):
        h = _conv(h, p, 2 if i < 2 else 1)
        h = jax.nn.leaky_relu(h if i == 0 else _inorm(h), 0.2)
    return _conv(h, params[-1])[..., 0]


class CycleGANState(NamedTuple):
    params: Any  # {"G": A→B, "F": B→A, "DA", "DB"}
    opt_g: Any
    opt_d: Any
    step: Array
    key: Array


def _learning_rate(cfg) -> optax.Schedule:
    """Constant for the first ``decay_from`` of the steps, then linearly to 0 at ``n_iters`` (the
    paper: 100 epochs constant, 100 decaying)."""
    start = int(round(cfg.decay_from * cfg.n_iters))
    return optax.join_schedules([optax.constant_schedule(cfg.lr),
                                 optax.linear_schedule(cfg.lr, 0.0, max(cfg.n_iters - start, 1))], [start])


def _opt(cfg):
    return optax.adam(_learning_rate(cfg), b1=0.5, b2=0.999)


def cyclegan_init(key: PRNGKeyArray, config: CycleGANConfig) -> CycleGANState:
    """Initial parameters ``{"G", "F", "DA", "DB"}`` and Adam states."""
    kg, kf, ka, kb = jax.random.split(jax.random.fold_in(key, 1 << 30), 4)
    params = {"G": _generator_init(kg, config), "F": _generator_init(kf, config),
              "DA": _discriminator_init(ka, config), "DB": _discriminator_init(kb, config)}
    tx = _opt(config)
    gens = {"G": params["G"], "F": params["F"]}
    discs = {"DA": params["DA"], "DB": params["DB"]}
    return CycleGANState(params, tx.init(gens), tx.init(discs), jnp.zeros((), jnp.int32), key)


def cyclegan_losses(params: dict, a: Float[Array, "n h w"], b: Float[Array, "n h w"],
                    config: CycleGANConfig) -> dict:
    """Every loss of the paper on one batch: ``g_total``, ``g_gan``, ``cycle``, ``identity``,
    ``d_total`` (LSGAN, each discriminator's loss halved as in the paper)."""
    G, F, DA, DB = params["G"], params["F"], params["DA"], params["DB"]
    fake_b, fake_a = generator(G, a), generator(F, b)
    g_gan = jnp.mean((discriminator(DB, fake_b) - 1) ** 2) + jnp.mean((discriminator(DA, fake_a) - 1) ** 2)
    cycle = jnp.mean(jnp.abs(generator(F, fake_b) - a)) + jnp.mean(jnp.abs(generator(G, fake_a) - b))
    ident = jnp.mean(jnp.abs(generator(G, b) - b)) + jnp.mean(jnp.abs(generator(F, a) - a))
    lam = config.cycle_weight
    g_total = g_gan + lam * cycle + config.identity_weight * lam * ident
    d_total = _d_loss({"DA": DA, "DB": DB}, a, b, jax.lax.stop_gradient(fake_a), jax.lax.stop_gradient(fake_b))
    return {"g_total": g_total, "g_gan": g_gan, "cycle": cycle, "identity": ident, "d_total": d_total}


def _d_loss(discs: dict, a, b, fake_a, fake_b):
    """Both discriminators' LSGAN losses, each halved as in the paper."""
    DA, DB = discs["DA"], discs["DB"]
    return 0.5 * (jnp.mean((discriminator(DB, b) - 1) ** 2) + jnp.mean(discriminator(DB, fake_b) ** 2)
                  + jnp.mean((discriminator(DA, a) - 1) ** 2) + jnp.mean(discriminator(DA, fake_a) ** 2))


def cyclegan_step(state: CycleGANState, a: Float[Array, "n h w"], b: Float[Array, "n h w"],
                  config: CycleGANConfig) -> tuple[CycleGANState, dict]:
    """One Adam step of both generators, then of both discriminators (against the updated
    generators' images), on the batches ``a`` and ``b``; returns the losses before the step."""
    tx = _opt(config)
    p = state.params

    def g_obj(gens):
        losses = cyclegan_losses({**p, **gens}, a, b, config)
        return losses["g_total"], losses

    (_, losses), gg = jax.value_and_grad(g_obj, has_aux=True)({"G": p["G"], "F": p["F"]})
    upd, opt_g = tx.update(gg, state.opt_g)
    gens = optax.apply_updates({"G": p["G"], "F": p["F"]}, upd)

    fake_a, fake_b = generator(gens["F"], b), generator(gens["G"], a)  # the updated generators' images
    dg = jax.grad(_d_loss)({"DA": p["DA"], "DB": p["DB"]}, a, b, fake_a, fake_b)
    upd, opt_d = tx.update(dg, state.opt_d)
    discs = optax.apply_updates({"DA": p["DA"], "DB": p["DB"]}, upd)
    return CycleGANState({**gens, **discs}, opt_g, opt_d, state.step + 1, state.key), losses


def train_cyclegan(
    domain_a: Float[ArrayLike, "na h w"],
    domain_b: Float[ArrayLike, "nb h w"],
    config: CycleGANConfig = CycleGANConfig(),
    *,
    steps_per_call: int = 25,
    progress: bool = False,
) -> tuple[dict, dict]:
    """Trains on unpaired image sets ``domain_a`` and ``domain_b`` (``[-1, 1]``, sides multiples
    of 4); each step draws ``config.batch`` images of each at random (key of step ``n``:
    ``fold_in(key(seed), n)``). Returns ``(params {"G", "F", "DA", "DB"}, history)`` with the
    per-call mean of every loss."""
    from jaxmedrf.training import train_loop

    A, B = jnp.asarray(domain_a, jnp.float32), jnp.asarray(domain_b, jnp.float32)
    if A.ndim != 3 or B.ndim != 3 or A.shape[1:] != B.shape[1:] or A.shape[1] % 4 or A.shape[2] % 4:
        raise ValueError(f"domains must be (n, H, W) of one H, W (multiples of 4), got {A.shape} and {B.shape}")
    state = cyclegan_init(jax.random.key(config.seed), config)

    @jax.jit
    def run(state, A, B):
        def body(s, _):
            k = jax.random.fold_in(s.key, s.step)
            ka, kb = jax.random.split(k)
            ia = jax.random.randint(ka, (config.batch,), 0, A.shape[0])
            ib = jax.random.randint(kb, (config.batch,), 0, B.shape[0])
            return cyclegan_step(s, A[ia], B[ib], config)

        return jax.lax.scan(body, state, None, length=steps_per_call)

    history = {"step": [], "loss": [], "time_s": [], "g_gan": [], "cycle": [], "identity": [], "d_total": []}

    def train(state, A, B):
        state, m = run(state, A, B)
        for k in ("g_gan", "cycle", "identity", "d_total"):
            history[k].append(float(np.mean(m[k])))
        return state, np.asarray(m["g_total"])

    state = train_loop(train, state, (A, B), config.n_iters, steps_per_call, history, desc="CycleGAN",
                       progress=progress)
    return state.params, history


def translate(params: dict, images: Float[ArrayLike, "n h w"], *, direction: str = "a2b") -> Float[Array, "n h w"]:
    """``images`` translated by ``G`` (``"a2b"``) or ``F`` (``"b2a"``)."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    return _generator_jit(params["G" if direction == "a2b" else "F"], jnp.asarray(images, jnp.float32))


_generator_jit = jax.jit(generator)


def _remap(x, xp=jnp):
    """The "MR-like" intensity of CT in [0, 1]: peaks at soft tissue, low for air and bone
    (``xp``: the array module, NumPy for the constant below)."""
    return xp.exp(-(((x - 0.45) / 0.18) ** 2)) + 0.3 * x


#: The remap's maximum over [0, 1]: the fixed scale of :func:`mr_like`.
_REMAP_MAX = float(np.max(_remap(np.linspace(0.0, 1.0, 100001), np)))


def mr_like(key: PRNGKeyArray, ct: Float[ArrayLike, "n h w"], *, bias_strength: float = 0.3) -> Float[Array, "n h w"]:
    """A synthetic "MR-like" contrast of CT slices in ``[-1, 1]`` (a demo domain, not a physical
    model): a non-monotonic intensity remap (soft tissue bright, air and bone dark, roughly a
    T2-weighted look) times a smooth multiplicative bias field (a random low-order polynomial,
    as coil shading, mean about 1), on a fixed scale (the remap's maximum → 1, clipped there), so
    that images with and without bias, and any set of slices, share one intensity scale."""
    x = (jnp.asarray(ct, jnp.float32) + 1) / 2  # [0, 1]
    y = _remap(x)
    n, h, w = x.shape
    gy, gx = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
    c = jax.random.uniform(key, (n, 5), minval=-1.0, maxval=1.0)
    bias = 1 + bias_strength * (c[:, 0, None, None] * gx + c[:, 1, None, None] * gy + c[:, 2, None, None] * gx * gy
                                + c[:, 3, None, None] * gx**2 + c[:, 4, None, None] * gy**2) / 3
    return jnp.clip(2 * y * bias / _REMAP_MAX - 1, -1.0, 1.0)
