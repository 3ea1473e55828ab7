"""The physics options of ``simulate`` and ``reconstruct`` (:mod:`jaxmedrf.physics`): the
spectrum (``--spectrum FILE`` or ``--kvp`` with filtration), the detector, and for ``simulate``
the material split, scatter and detector blur. Defaults are the library functions'."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["add_physics_arguments", "physics_settings", "simulate_physics", "spectrum_of"]


def add_physics_arguments(p, *, simulate: bool) -> None:
    """Adds the spectrum options (and, for ``simulate``, materials/scatter/blur) to parser ``p``."""
    from jaxmedrf import physics
    from jaxmedrf.cli._config_args import param_default

    g = p.add_argument_group("physics (jaxmedrf.physics; README: 'Polychromatic physics')")
    g.add_argument("--spectrum", default=None, metavar="FILE",
                   help="polychromatic spectrum table: .csv/.txt (two columns keV, fluence), .npy (N, 2) or "
                        ".json {energy_kev, fluence}")
    g.add_argument("--kvp", type=float, default=None,
                   help="polychromatic: tungsten tube spectrum at this kVp (Kramers with anode self-absorption)")
    g.add_argument("--filter-al", type=float, default=None, metavar="MM",
                   help=f"with --kvp: aluminium filtration, mm (default {physics.DEFAULT_FILTRATION['aluminum']:g})")
    g.add_argument("--filter-cu", type=float, default=0.0, metavar="MM", help="with --kvp: copper filtration, mm")
    g.add_argument("--anode-angle", type=float, default=param_default(physics.kvp_spectrum, "anode_angle"),
                   metavar="DEG", help="with --kvp: anode angle, degrees")
    g.add_argument("--response", default=param_default(physics.detector_weights, "detector"), choices=physics.DETECTORS,
                   help="detector response: energy-integrating (signal ∝ E) or photon counting")
    if not simulate:
        return
    g.add_argument("--bone-threshold", type=float, default=param_default(physics.hu_to_densities, "soft_threshold"),
                   metavar="HU", help="HU above which voxels mix in cortical bone (water below)")
    g.add_argument("--scatter", type=float, default=0.0, metavar="A",
                   help="scatter amplitude: SPR = A·p behind a wide slab of line integral p (0 = none)")
    g.add_argument("--scatter-sigma", type=float, default=40.0, metavar="MM",
                   help="scatter kernel standard deviation at the detector, mm")
    g.add_argument("--blur", type=float, default=0.0, metavar="MM",
                   help="detector blur: Gaussian PSF standard deviation at the detector, mm (0 = none)")


def spectrum_of(a) -> dict | None:
    """``{"energy_kev", "fluence", "source"}`` from ``--spectrum`` / ``--kvp``, or ``None`` if neither."""
    from jaxmedrf import physics

    if a.spectrum is not None and a.kvp is not None:
        raise ValueError("give --spectrum or --kvp, not both")
    if a.kvp is None and (a.filter_al is not None or a.filter_cu):
        raise ValueError("--filter-al and --filter-cu need --kvp")
    if a.spectrum is not None:
        e, f = physics.read_spectrum(a.spectrum)
        source = f"table {a.spectrum}"
    elif a.kvp is not None:
        al = physics.DEFAULT_FILTRATION["aluminum"] if a.filter_al is None else a.filter_al
        filtration = {"aluminum": al, **({"copper": a.filter_cu} if a.filter_cu else {})}
        e, f = physics.kvp_spectrum(a.kvp, filtration=filtration, anode_angle=a.anode_angle)
        source = f"{a.kvp:g} kVp, W anode {a.anode_angle:g}°, " + ", ".join(f"{t:g} mm {m}" for m, t in filtration.items())
    else:
        return None
    return {"energy_kev": e.tolist(), "fluence": f.tolist(), "source": source}


def physics_settings(a) -> dict | None:
    """``simulate``'s physics settings (stored in the ``.npz``), or ``None`` when none is asked for."""
    spectrum = spectrum_of(a)
    for name, v in (("--scatter", a.scatter), ("--scatter-sigma", a.scatter_sigma), ("--blur", a.blur)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be ≥ 0, got {v}")
    if spectrum is None and a.scatter == 0 and a.blur == 0:
        return None
    if spectrum is not None and a.method == "analytic":
        raise ValueError("--spectrum/--kvp project material volumes: use --method siddon or trilinear, not analytic")
    from jaxmedrf import physics

    bone_hu = physics.default_bone_hu()
    if spectrum is not None and not -1000.0 < a.bone_threshold < bone_hu:
        raise ValueError(f"--bone-threshold must be in (-1000, {bone_hu:.0f}) HU, got {a.bone_threshold}")
    return {"spectrum": spectrum, "detector": a.response,
            "materials": None if spectrum is None else {
                "names": ["water", "bone"], "soft_threshold_hu": a.bone_threshold, "bone_hu": bone_hu,
                "reference_kev": physics.REFERENCE_KEV},
            "scatter": {"amplitude": a.scatter, "sigma_mm": a.scatter_sigma} if a.scatter else None,
            "blur_sigma_mm": a.blur}


def simulate_physics(settings: dict, mu_volume, mono, geometry, *, method: str, step: float) -> np.ndarray:
    """The detected projections for ``settings`` (:func:`physics_settings`): ``mono`` (the plain μ
    projections) when there is no spectrum, else the two materials' projections; float32."""
    from jaxmedrf import physics

    px = np.asarray(geometry.d_detector, np.float64)
    scatter = settings["scatter"] or {"amplitude": 0.0, "sigma_mm": 0.0}
    kw = {"scatter": scatter["amplitude"], "scatter_sigma": tuple(scatter["sigma_mm"] / px),
          "blur_sigma": tuple(settings["blur_sigma_mm"] / px)}
    s = settings["spectrum"]
    if s is None:
        return np.asarray(physics.detected_projections(np.asarray(mono)[None], np.ones((1, 1)), np.ones(1), **kw))
    m = settings["materials"]
    lines = physics.material_projections(mu_volume, geometry, method=method, step=step,
                                         soft_threshold=m["soft_threshold_hu"])
    k = np.stack([physics.mass_attenuation(name, s["energy_kev"]) for name in m["names"]])
    w = physics.detector_weights(s["energy_kev"], s["fluence"], detector=settings["detector"])
    return np.asarray(physics.detected_projections(lines, k, w, **kw), np.float32)
