r"""Polychromatic X-ray physics for ``jaxmedrf simulate``: spectra, materials, beam hardening,
scatter, detector blur, and the water beam-hardening correction for ``jaxmedrf reconstruct``.

Units: energies in keV, densities in g/cm³, lengths in mm, *mass attenuation* ``k(E)`` in
mm⁻¹ per g/cm³ (μ/ρ in cm²/g divided by 10, so that μ = ρ·k in mm⁻¹). The attenuation data are
Elam, Ravel & Sieber's tables (Radiat. Phys. Chem. 63 (2002) 121, total cross-section with
coherent scattering) shipped by the ``xraydb`` package; water at 60 keV is 0.2059 cm²/g, as NIST
XCOM (:data:`jaxmedrf.io.MU_WATER`).

**Forward model.** A volume is split into water and cortical-bone density volumes
(:func:`hu_to_densities`), each is projected once (:func:`jaxmedrf.project`) into material line
integrals :math:`L_m` (g/cm³·mm), and the detector reads

.. math:: p = -\log \frac{\sum_E S(E)\,D(E)\,\exp\big(-\sum_m k_m(E) L_m\big)}{\sum_E S(E)\,D(E)}

(the polychromatic Beer–Lambert law with material-resolved attenuation, as in Alvarez & Macovski,
Phys. Med. Biol. 21 (1976) 733, with a detector weighting), with
:math:`S` the photon fluence per energy bin and :math:`D(E) = E` for an ideal energy-integrating
detector (every photon absorbed, signal ∝ its energy) or :math:`D = 1` for a photon counter
(:func:`detector_weights`). Beam hardening — cupping in water, streaks between bones — follows
from the spectrum. Optional scatter (:func:`add_scatter`) and detector blur
(:func:`gaussian_blur`) act on the normalised intensity :math:`e^{-p}` before the log; Poisson
noise (:func:`jaxmedrf.poisson_noise`) is drawn last, on that same intensity.

**Spectrum.** :func:`kvp_spectrum` is Kramers' thick-target law (Kramers, Phil. Mag. 46 (1923)
836) integrated over the electron's path in the tungsten anode with self-absorption at the anode
angle (the approach of Birch & Marshall, Phys. Med. Biol. 24 (1979) 505), the electron's energy
falling with depth by the Thomson–Whiddington law and its range from Kanaya & Okayama (J. Phys.
D 5 (1972) 43), then filtered by the added filtration. Unlike SpekPy (Poludniowski et al., Med.
Phys. 48 (2021) 3630) or TASMICS (Hernandez & Boone, Med. Phys. 41 (2014) 042101) it has no
characteristic K lines and no electron diffusion: the straight path's depth is scaled by 0.25,
fitted once to SpekPy 2.5.4's mean energies (within 1.2 keV from 80 to 140 kVp, 7–20° anodes);
its spectral shape is approximate. A measured or SpekPy spectrum can be given as a table instead
(:func:`read_spectrum`).

**Water correction.** :func:`water_correction` maps measured line integrals through the
polynomial that sends the spectrum's water curve to the monochromatic water line at a reference
energy (Herman, Phys. Med. Biol. 24 (1979) 81; the same polynomial precorrection as
Kachelrieß, Sourbelle & Kalender, Med. Phys. 33 (2006) 1269, whose *empirical* variant fits the
coefficients from the images instead of from a known spectrum — not implemented here).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "BONE_DENSITY",
    "CORTICAL_BONE",
    "DEFAULT_FILTRATION",
    "DETECTORS",
    "REFERENCE_KEV",
    "add_scatter",
    "blur_matrix",
    "detected_projections",
    "material_projections",
    "default_bone_hu",
    "detector_weights",
    "gaussian_blur",
    "hu_to_densities",
    "kvp_spectrum",
    "mass_attenuation",
    "mean_energy",
    "normalize_spectrum",
    "polychromatic_projection",
    "read_spectrum",
    "water_correction",
    "water_correction_coefficients",
    "water_curve",
]

#: keV at which the package's μ volumes are defined (:data:`jaxmedrf.io.MU_WATER` is water at 60 keV).
REFERENCE_KEV = 60.0
#: Cortical bone, ICRU Report 44 (1989), mass fractions (as in NIST's material tables).
CORTICAL_BONE = {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
                 "P": 0.103, "S": 0.003, "Ca": 0.225}
BONE_DENSITY = 1.92  # g/cm³, ICRU-44 cortical bone
#: :func:`kvp_spectrum`'s default filtration, mm: IEC 60601-1-3's minimum total filtration above 70 kV.
DEFAULT_FILTRATION = {"aluminum": 2.5}
_WATER = {"H": 0.111894, "O": 0.888106}
#: Detector responses D(E): "energy" (ideal energy-integrating, D = E) or "counting" (D = 1).
DETECTORS = ("energy", "counting")
#: A spectrum's energies or fluence: an array, or a plain list (as JSON gives it).
PerEnergy = Float[ArrayLike, " energies"] | Sequence[float]
_E_RANGE = (1.0, 500.0)  # keV where the tables are used here

# Tungsten anode: Z, A (g/mol), ρ (g/cm³) for Kanaya–Okayama's electron range
# R = 0.0276 µm · A · E^1.67 / (Z^0.889 · ρ), E in keV (J. Phys. D 5 (1972) 43).
_W_Z, _W_A, _W_RHO = 74, 183.84, 19.3
_KO_COEF, _KO_E_EXP, _KO_Z_EXP = 0.0276, 1.67, 0.889
_DEPTH_STEPS = 256  # electron energies T sampled between 0 and kVp
# The straight path overestimates how deep photons are made (electrons diffuse and backscatter):
# the depth is scaled by this factor, fitted once to SpekPy 2.5.4's mean energies (80–140 kVp,
# 2.5–4 mm Al, anode 7–20°: all six within 1.2 keV, 2026-12-04; the straight path was 2–7 keV harder).
_DEPTH_FACTOR = 0.25


def _check_energies(energies) -> np.ndarray:
    e = np.asarray(energies, np.float64)
    if e.ndim != 1 or e.size == 0 or not np.all(np.isfinite(e)):
        raise ValueError(f"energies must be a non-empty 1-D array of finite keV values, got shape {e.shape}")
    if e.min() < _E_RANGE[0] or e.max() > _E_RANGE[1]:
        raise ValueError(f"energies must lie in [{_E_RANGE[0]:g}, {_E_RANGE[1]:g}] keV, got {e.min():g} .. {e.max():g}")
    return e


def mass_attenuation(material: str, energies: PerEnergy) -> Float[np.ndarray, " energies"]:
    """Mass attenuation ``k(E)`` of a material, mm⁻¹ per g/cm³ (μ/ρ in cm²/g ÷ 10), from ``xraydb``.

    Args:
        material: ``"water"``, ``"bone"`` (ICRU-44 cortical bone, :data:`CORTICAL_BONE`), or any
            name or chemical formula ``xraydb.material_mu`` knows (``"aluminum"``, ``"Cu"``,
            ``"tungsten"``, ``"pmma"``…).
        energies: photon energies, keV (1–500).

    Returns:
        float64 ``k`` per energy; μ (mm⁻¹) = density (g/cm³) × ``k``.
    """
    import xraydb

    e_ev = _check_energies(energies) * 1e3
    mix = {"water": _WATER, "bone": CORTICAL_BONE}.get(material)
    if mix is not None:
        return sum(w * np.asarray(xraydb.mu_elam(el, e_ev), np.float64) for el, w in mix.items()) / 10.0
    try:
        return np.asarray(xraydb.material_mu(material, e_ev, density=1.0), np.float64) / 10.0
    except Exception as e:  # xraydb raises ValueError / Warning subclasses for unknown names
        raise ValueError(f"unknown material {material!r} (water, bone, or an xraydb material/formula)") from e


def normalize_spectrum(energies: PerEnergy, fluence: PerEnergy
                       ) -> tuple[Float[np.ndarray, " energies"], Float[np.ndarray, " energies"]]:
    """Checks a spectrum and scales its fluence to sum 1 (float64).

    Args:
        energies: bin centres, keV, strictly increasing, in [1, 500].
        fluence: photons per bin (any scale), ≥ 0, not all zero.

    Raises:
        ValueError: shapes, order, range, negative or non-finite values, zero total.
    """
    e = _check_energies(energies)
    f = np.asarray(fluence, np.float64)
    if f.shape != e.shape:
        raise ValueError(f"fluence has shape {f.shape}, energies {e.shape}")
    if np.any(np.diff(e) <= 0):
        raise ValueError("spectrum energies must be strictly increasing")
    if not np.all(np.isfinite(f)) or f.min() < 0 or f.sum() <= 0:
        raise ValueError("spectrum fluence must be finite, non-negative and not all zero")
    return e, f / f.sum()


def mean_energy(energies: PerEnergy, fluence: PerEnergy) -> float:
    """Fluence-weighted mean photon energy, keV."""
    e, f = normalize_spectrum(energies, fluence)
    return float(np.sum(e * f))


def detector_weights(energies: PerEnergy, fluence: PerEnergy, *,
                     detector: str = "energy") -> Float[np.ndarray, " energies"]:
    """Normalised weights ``S(E)·D(E) / Σ S·D`` of the polychromatic projection (module doc).

    Args:
        detector: ``"energy"``: ideal energy-integrating detector, D(E) = E; ``"counting"``:
            ideal photon counter, D(E) = 1.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    e, f = normalize_spectrum(energies, fluence)
    w = f * e if detector == "energy" else f
    return w / w.sum()


def kvp_spectrum(kvp: float, *, filtration: Mapping[str, float] | None = None, anode_angle: float = 12.0,
                 bin_kev: float = 1.0) -> tuple[Float[np.ndarray, " energies"], Float[np.ndarray, " energies"]]:
    r"""Photon fluence of a tungsten-anode tube at ``kvp`` (module doc: Kramers with self-absorption).

    Kramers' thin-target law gives photons per unit energy ∝ 1/E for every electron energy T > E;
    electrons slow by the Thomson–Whiddington law :math:`T(x)^2 = T_0^2 (1 - x/R)`, with R the
    Kanaya–Okayama range in tungsten, and a photon made at depth x crosses
    :math:`x / \sin\theta` of tungsten on its way out along the central ray (anode angle θ):

    .. math:: \Phi(E) \propto \frac{1}{E}\int_E^{T_0} e^{-\mu_W(E)\,x(T)/\sin\theta}\,dT
              \cdot \prod_f e^{-\mu_f(E)\,t_f}.

    Without self-absorption the integral is Kramers' :math:`(T_0 - E)/E`.

    Args:
        kvp: tube voltage, kV (20–300).
        filtration: material → thickness in mm (e.g. ``{"aluminum": 2.5}``; names as
            :func:`mass_attenuation`). Default :data:`DEFAULT_FILTRATION` (2.5 mm Al).
        anode_angle: degrees (0 < θ ≤ 90); typical diagnostic tubes 7–20°.
        bin_kev: energy bin width, keV (bins centred at (i + ½)·bin from ``bin`` up to ``kvp``).

    Returns:
        ``(energies, fluence)``: bin centres (keV) and fluence normalised to sum 1, float64.
    """
    if not (math.isfinite(kvp) and 20.0 <= kvp <= 300.0):
        raise ValueError(f"kvp must be in [20, 300] kV, got {kvp!r}")
    if not (math.isfinite(anode_angle) and 0.0 < anode_angle <= 90.0):
        raise ValueError(f"anode_angle must be in (0, 90] degrees, got {anode_angle!r}")
    if not (math.isfinite(bin_kev) and 0.0 < bin_kev <= kvp / 10):
        raise ValueError(f"bin_kev must be positive and at most kvp/10, got {bin_kev!r}")
    filtration = dict(DEFAULT_FILTRATION if filtration is None else filtration)
    for name, t in filtration.items():
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"filtration thickness of {name} must be ≥ 0 mm, got {t!r}")
    n = int(math.floor(kvp / bin_kev))
    e = (np.arange(n) + 0.5) * bin_kev
    e = e[e >= _E_RANGE[0]]
    # Kanaya–Okayama range (µm → mm) and the electron's depth per energy T (Thomson–Whiddington).
    r_mm = _KO_COEF * _W_A * kvp**_KO_E_EXP / (_W_Z**_KO_Z_EXP * _W_RHO) * 1e-3
    t = (np.arange(_DEPTH_STEPS) + 0.5) * (kvp / _DEPTH_STEPS)
    depth = _DEPTH_FACTOR * r_mm * (1.0 - (t / kvp) ** 2)
    k_w = mass_attenuation("tungsten", e) * _W_RHO
    path = depth[None, :] / math.sin(math.radians(anode_angle))
    phi = np.sum((t[None, :] > e[:, None]) * np.exp(-k_w[:, None] * path), axis=1) * (kvp / _DEPTH_STEPS) / e
    for name, thick in filtration.items():
        if thick > 0:
            phi = phi * np.exp(-mass_attenuation(name, e) * _density(name) * thick)
    return normalize_spectrum(e, phi)


def _density(material: str) -> float:
    """Nominal density, g/cm³, of a filter material."""
    if material == "water":
        return 1.0
    if material == "bone":
        return BONE_DENSITY
    import xraydb

    try:
        return float(xraydb.get_material(material)[1])
    except Exception:
        pass
    try:
        return float(xraydb.atomic_density(material))
    except Exception as e:
        raise ValueError(f"unknown filter material {material!r} (an xraydb material name or element symbol)") from e


def read_spectrum(path: str | os.PathLike) -> tuple[Float[np.ndarray, " energies"], Float[np.ndarray, " energies"]]:
    """A spectrum table from a file: ``(energies keV, fluence normalised to sum 1)``.

    Formats: ``.npy`` — an (N, 2) array of (keV, fluence); ``.csv``/``.txt`` — two columns
    (comma, semicolon, tab or space separated; a header line and ``#`` comments are skipped,
    e.g. SpekPy's ``export_spectrum``); ``.json`` — ``{"energy_kev": [...], "fluence": [...]}``.
    Rows below 1 keV holding under 1e-9 of the fluence are dropped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file or an invalid spectrum (:func:`normalize_spectrum`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such spectrum file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            from jaxmedrf._files import read_npy

            table = np.asarray(read_npy(path, what="spectrum"), np.float64)
        elif suffix == ".json":
            d = json.loads(path.read_text())
            table = np.stack([np.asarray(d["energy_kev"], np.float64), np.asarray(d["fluence"], np.float64)], axis=1)
        elif suffix in (".csv", ".txt", ".dat"):
            rows = []
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.replace(",", " ").replace(";", " ").split()
                try:
                    rows.append([float(v) for v in parts])
                except ValueError:
                    if rows:  # text after the numbers began: not a header
                        raise
                    continue
            table = np.asarray(rows, np.float64)
        else:
            raise ValueError("use .npy, .csv/.txt/.dat or .json")
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a spectrum table ({e})") from e
    if table.ndim != 2 or table.shape[1] != 2 or table.shape[0] < 1:
        raise ValueError(f"{path}: a spectrum is N rows of (energy keV, fluence), got shape {table.shape}")
    # Bins below 1 keV that a filtered spectrum leaves (all but) empty are dropped, not refused.
    soft = table[:, 0] < _E_RANGE[0]
    if soft.any() and soft.sum() < len(table) and np.all(np.isfinite(table)) \
            and np.all(np.abs(table[soft, 1]) <= 1e-9 * np.abs(table[:, 1]).sum()):
        table = table[~soft]
    try:
        return normalize_spectrum(table[:, 0], table[:, 1])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def hu_to_densities(hu: Float[ArrayLike, "*shape"], *, soft_threshold: float = 100.0,
                    bone_hu: float | None = None) -> Float[Array, "2 *shape"]:
    r"""Water and cortical-bone densities (g/cm³) of each voxel: a two-material split of HU.

    Piecewise linear in HU (t = ``soft_threshold``, b = ``bone_hu``):

    - HU ≤ t: water of density :math:`\max(0, 1 + \mathrm{HU}/1000)`, no bone (air, fat, soft tissue);
    - t < HU < b: a mix, bone fraction f = (HU − t)/(b − t): water :math:`(1-f)(1 + t/1000)`,
      bone :math:`f \cdot \rho_\text{bone}`;
    - HU ≥ b: bone of density :math:`\rho_\text{bone}(1000 + \mathrm{HU})/(1000 + b)`.

    With the default b — the HU of ICRU-44 cortical bone at :data:`REFERENCE_KEV` — the split
    reproduces μ = μ_water(1 + HU/1000) exactly at that energy, so a μ volume at 60 keV keeps its
    values there and gains the energy dependence of water and bone elsewhere. This is the
    water/bone model of two-material beam-hardening work (Joseph & Spital, J. Comput. Assist.
    Tomogr. 2 (1978) 100; Kyriakou et al., Med. Phys. 37 (2010) 5179, the EBHC's threshold
    segmentation made continuous), coarser than Schneider, Bortfeld & Schlegel's tissue
    table (Phys. Med. Biol. 45 (2000) 459).

    Args:
        hu: Hounsfield units.
        soft_threshold: HU up to which a voxel is water-like (default 100 HU).
        bone_hu: HU of pure cortical bone (> ``soft_threshold``); default from the tables.

    Returns:
        ``(2, *shape)``: water density, bone density (g/cm³), in the input's float dtype.
    """
    if bone_hu is None:
        bone_hu = default_bone_hu()
    if not (math.isfinite(soft_threshold) and math.isfinite(bone_hu) and -1000.0 < soft_threshold < bone_hu):
        raise ValueError(f"need -1000 < soft_threshold < bone_hu, got {soft_threshold!r} and {bone_hu!r}")
    hu = jnp.asarray(hu)
    hu = hu.astype(hu.dtype if jnp.issubdtype(hu.dtype, jnp.floating) else jnp.float32)
    t, b = soft_threshold, bone_hu
    f = jnp.clip((hu - t) / (b - t), 0.0, 1.0)
    water = jnp.where(hu <= t, jnp.maximum(1.0 + hu / 1000.0, 0.0), (1.0 - f) * (1.0 + t / 1000.0))
    bone = jnp.where(hu >= b, BONE_DENSITY * (1000.0 + hu) / (1000.0 + b), f * BONE_DENSITY)
    return jnp.stack([water, bone]).astype(hu.dtype)


def default_bone_hu(reference_kev: float = REFERENCE_KEV) -> float:
    """HU of ICRU-44 cortical bone at ``reference_kev`` (≈ 1940 HU at 60 keV)."""
    e = np.array([reference_kev])
    return float(1000.0 * (BONE_DENSITY * mass_attenuation("bone", e)[0] / mass_attenuation("water", e)[0] - 1.0))


def polychromatic_projection(line_integrals: Float[ArrayLike, "materials *shape"],
                             mass_attenuations: Float[ArrayLike, "materials energies"],
                             weights: PerEnergy) -> Float[Array, "*shape"]:
    r"""Polychromatic line integrals :math:`p = -\log \sum_E w_E \exp(-\sum_m k_m(E) L_m)`.

    Computed as a running log-sum-exp over energies (one pass per energy, memory of one
    projection), so one energy with weight 1 returns :math:`\sum_m k_m L_m` exactly and deep
    shadows do not underflow.

    Args:
        line_integrals: :math:`L_m`, density line integrals per material, g/cm³·mm.
        mass_attenuations: :math:`k_m(E)`, mm⁻¹ per g/cm³ (:func:`mass_attenuation`).
        weights: spectrum × detector response per energy (:func:`detector_weights`; normalised here).

    Returns:
        ``p``, dimensionless, the shape of one material's line integrals.
    """
    L = jnp.asarray(line_integrals)
    dtype = L.dtype if jnp.issubdtype(L.dtype, jnp.floating) else jnp.float32
    L = L.astype(dtype)
    k = jnp.asarray(mass_attenuations, dtype)
    w = jnp.asarray(weights, jnp.float32)
    if k.shape[0] != L.shape[0] or k.shape[1] != w.shape[0]:
        raise ValueError(f"shapes: line_integrals {L.shape}, mass_attenuations {k.shape}, weights {w.shape}")
    # Zero-weight bins get a finite, negligible log-weight (-inf would make the first step NaN).
    log_w = jnp.maximum(jnp.log(w) - jnp.log(jnp.sum(w)), -1e30).astype(dtype)

    def step(carry, kw):
        m, s = carry
        k_e, lw = kw
        x = lw - jnp.tensordot(k_e, L, axes=1, precision=jax.lax.Precision.HIGHEST)
        m_new = jnp.maximum(m, x)
        s = s * jnp.exp(m - m_new) + jnp.exp(x - m_new)
        return (m_new, s), None

    init = (jnp.full(L.shape[1:], -jnp.inf, dtype), jnp.zeros(L.shape[1:], dtype))
    (m, s), _ = jax.lax.scan(step, init, (k.T, log_w))
    return -(m + jnp.log(s))


def blur_matrix(n: int, sigma: float) -> Float[np.ndarray, "n n"]:
    """The ``n × n`` matrix of a 1-D Gaussian blur of ``sigma`` pixels with mirrored edges.

    The same operator as ``scipy.ndimage.gaussian_filter1d(mode="reflect", truncate=4)``:
    kernel radius ``int(4·sigma + 0.5)``, edges mirrored about the half pixel
    (d c b a | a b c d | d c b a, repeated when the kernel is wider than the row). The matrix is
    symmetric and its rows sum to 1, so a blur keeps constants and the total exactly.
    ``sigma = 0`` is the identity.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be ≥ 0 pixels, got {sigma!r}")
    if sigma == 0:
        return np.eye(n)
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    rows = np.repeat(np.arange(n), x.size)
    cols = (np.arange(n)[:, None] + x[None, :]).ravel() % (2 * n)
    cols = np.where(cols >= n, 2 * n - 1 - cols, cols)
    m = np.zeros((n, n))
    np.add.at(m, (rows, cols), np.tile(g, n))
    return m


def gaussian_blur(images: Float[ArrayLike, "*batch nv nu"], sigma: float | tuple[float, float]
                  ) -> Float[Array, "*batch nv nu"]:
    """Gaussian blur of detector images (a detector's point-spread function, or scatter's kernel).

    Separable, with mirrored edges (:func:`blur_matrix`): a flat field stays flat and the total
    of each image is kept.

    Args:
        images: intensities (e.g. normalised transmission ``exp(-p)``), last two axes (nv, nu).
        sigma: standard deviation in pixels, one value or ``(sigma_v, sigma_u)``.
    """
    sv, su = (sigma, sigma) if np.ndim(sigma) == 0 else tuple(sigma)
    x = jnp.asarray(images)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    bv = jnp.asarray(blur_matrix(x.shape[-2], float(sv)), dtype)
    bu = jnp.asarray(blur_matrix(x.shape[-1], float(su)), dtype)
    hp = jax.lax.Precision.HIGHEST
    return jnp.einsum("ij,...jk,lk->...il", bv, x, bu, precision=hp)


def add_scatter(transmission: Float[ArrayLike, "*batch nv nu"], *, amplitude: float,
                sigma: float | tuple[float, float]) -> Float[Array, "*batch nv nu"]:
    r"""Primary plus a smooth scatter estimate, in normalised intensity (air = 1).

    Scatter is modelled as a wide Gaussian kernel fed by each pencil beam in proportion to
    :math:`T\,(-\ln T)` (Ohnesorge, Flohr & Klingenbeck-Regn, Eur. Radiol. 9 (1999) 563: a
    pencil beam scatters nothing in air, T = 1, and nothing when absorbed, T = 0):

    .. math:: I = T + a\, G_\sigma * \big(T\,(-\ln T)\big).

    Behind a uniform slab wider than the kernel the scatter-to-primary ratio is
    :math:`a \cdot p` (e.g. a = 0.1 and 20 cm of water, p ≈ 4: SPR ≈ 0.4).

    Args:
        transmission: primary intensity :math:`T = e^{-p}`, in (0, 1].
        amplitude: :math:`a` ≥ 0.
        sigma: kernel standard deviation in pixels (one value or ``(sigma_v, sigma_u)``).
    """
    if not (math.isfinite(amplitude) and amplitude >= 0):
        raise ValueError(f"scatter amplitude must be ≥ 0, got {amplitude!r}")
    t = jnp.asarray(transmission)
    tiny = jnp.finfo(t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32).tiny
    source = t * -jnp.log(jnp.maximum(t, tiny))
    return t + amplitude * gaussian_blur(source, sigma)


def water_curve(lengths: Float[ArrayLike, " n"], energies: PerEnergy,
                fluence: PerEnergy, *, detector: str = "energy") -> Float[np.ndarray, " n"]:
    """Polychromatic line integral of ``lengths`` mm of water (density 1) for a spectrum (float64)."""
    from scipy.special import logsumexp

    w = detector_weights(energies, fluence, detector=detector)
    k = mass_attenuation("water", energies)
    L = np.asarray(lengths, np.float64)
    with np.errstate(divide="ignore"):  # empty bins: log 0 = -inf, which logsumexp skips
        log_w = np.log(w)
    return -logsumexp(log_w[None, :] - L[:, None] * k[None, :], axis=1)


def water_correction_coefficients(energies: PerEnergy, fluence: PerEnergy,
                                  *, p_max: float, detector: str = "energy", order: int = 4,
                                  reference_kev: float = REFERENCE_KEV) -> Float[np.ndarray, " order"]:
    r"""Coefficients :math:`c_1..c_n` of the water precorrection :math:`q = \sum_k c_k p^k`.

    Fitted by least squares over the spectrum's water curve :math:`p(L)` (:func:`water_curve`)
    for water lengths from 0 up to where :math:`p(L)` reaches ``1.1 · p_max``, to the monochromatic
    line :math:`q = k_\text{water}(E_\text{ref})\,L` (Herman 1979). No constant term: no water,
    no correction.

    Args:
        p_max: the largest measured line integral to be corrected (> 0).
        order: polynomial degree (1–8).
        reference_kev: energy of the monochromatic line (default 60 keV, the energy of the
            package's μ volumes and of :data:`jaxmedrf.io.MU_WATER`).
    """
    if not (math.isfinite(p_max) and p_max > 0):
        raise ValueError(f"p_max must be positive, got {p_max!r}")
    if not 1 <= order <= 8:
        raise ValueError(f"order must be in 1..8, got {order!r}")
    k_ref = mass_attenuation("water", np.array([reference_kev]))[0]
    k_min = mass_attenuation("water", energies).min()
    lengths = np.linspace(0.0, 1.1 * p_max / k_min, 2048)
    p = water_curve(lengths, energies, fluence, detector=detector)
    n = int(np.searchsorted(p, 1.1 * p_max)) + 1  # p(L) increases; keep up to the first point past 1.1·p_max
    p, q = p[:n], k_ref * lengths[:n]
    scale = p.max()
    powers = (p[:, None] / scale) ** np.arange(1, order + 1)[None, :]
    c, *_ = np.linalg.lstsq(powers, q, rcond=None)
    return c / scale ** np.arange(1, order + 1)


def water_correction(projections: Float[ArrayLike, "*shape"], energies: PerEnergy,
                     fluence: PerEnergy, *, detector: str = "energy", order: int = 4,
                     reference_kev: float = REFERENCE_KEV) -> Float[Array, "*shape"]:
    """Water beam-hardening correction of measured line integrals (Herman 1979; module doc).

    Each ``p`` becomes the water-equivalent monochromatic line integral at ``reference_kev``
    (:func:`water_correction_coefficients`, fitted up to the data's largest value), so that
    FDK/SART/NAF of the result give μ at that energy for water-like tissue without cupping.
    Bone keeps a residual error (streaks; a second, bone pass would be needed).

    Args:
        projections: polychromatic line integrals (dimensionless).
        energies, fluence: the spectrum (keV, any scale).
        detector, order, reference_kev: as :func:`water_correction_coefficients`.
    """
    p = jnp.asarray(projections)
    p_max = float(jnp.max(p))
    if not p_max > 0:
        return p
    c = water_correction_coefficients(energies, fluence, p_max=p_max, detector=detector, order=order,
                                      reference_kev=reference_kev)
    out = jnp.zeros_like(p)
    for ck in c[::-1]:  # Horner, no constant term
        out = (out + jnp.asarray(ck, p.dtype)) * p
    return out


def material_projections(mu_volume: Float[ArrayLike, "nx ny nz"], geometry, *, method: str = "siddon",
                         step: float = 0.5, soft_threshold: float = 100.0) -> Float[Array, "2 views nv nu"]:
    """Water and bone density line integrals (g/cm³·mm) of a μ volume given at :data:`REFERENCE_KEV`.

    μ (mm⁻¹) → HU (:func:`jaxmedrf.io.mu_to_hu`) → densities (:func:`hu_to_densities`), each
    density volume projected once with :func:`jaxmedrf.project` (``method``, ``step``).
    """
    from jaxmedrf.io.intensity import mu_to_hu
    from jaxmedrf.projectors import project

    densities = hu_to_densities(mu_to_hu(jnp.asarray(mu_volume, jnp.float32)), soft_threshold=soft_threshold)
    return jnp.stack([project(d, geometry, method=method, step=step) for d in densities])


def detected_projections(line_integrals: Float[ArrayLike, "materials views nv nu"],
                         mass_attenuations: Float[ArrayLike, "materials energies"],
                         weights: PerEnergy, *, scatter: float = 0.0,
                         scatter_sigma: float | tuple[float, float] = 0.0,
                         blur_sigma: float | tuple[float, float] = 0.0) -> Float[Array, "views nv nu"]:
    """What the detector records, as line integrals: the polychromatic projection
    (:func:`polychromatic_projection`), then scatter (:func:`add_scatter`, amplitude ``scatter``,
    kernel ``scatter_sigma`` pixels) and detector blur (:func:`gaussian_blur`, ``blur_sigma``
    pixels) on the normalised intensity, then ``-log``. A single material with ``k = 1`` and one
    energy is the monochromatic case (``line_integrals`` are then μ line integrals).
    """
    p = polychromatic_projection(line_integrals, mass_attenuations, weights)
    if scatter == 0 and np.all(np.asarray(blur_sigma) == 0):
        return p
    t = jnp.exp(-p)
    if scatter > 0:
        t = add_scatter(t, amplitude=scatter, sigma=scatter_sigma)
    if np.any(np.asarray(blur_sigma) > 0):
        t = gaussian_blur(t, blur_sigma)
    return -jnp.log(jnp.maximum(t, jnp.finfo(t.dtype).tiny))
