"""Beam hardening of water cylinders and the water correction (jaxmedrf.physics).

For each tube voltage and cylinder diameter: parallel-beam FBP of the monochromatic projections
(μ at 60 keV), of the polychromatic ones (Kramers tube spectrum, 2.5 mm Al, energy-integrating
detector) and of the water-corrected ones; the cupping (edge ring − centre) / edge ring of each,
the mean μ of the water, and the spectrum's mean energy. Also the time of the polychromatic
forward model for the projections (CPU or GPU, whatever JAX runs on).

    python -m benchmarks.physics            # 64² slices, 90 views -> benchmarks/results/physics_<device>_<date>.json
    python -m benchmarks.physics --small    # the test's size (24², 36 views)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import environment, write_json


def cylinder_case(kvp: float, diameter_mm: float, *, n: int, n_views: int) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxmedrf as jm
    from jaxmedrf import physics as ph
    from jaxmedrf.io.intensity import MU_WATER
    from jaxmedrf.phantoms import Phantom

    r = diameter_mm / 2
    d = 1.2 * diameter_mm / n  # the field of view 20 % wider than the cylinder
    g = jm.parallel_beam(n_voxel=(n, n, 4), d_voxel=d, n_detector=(4, int(1.4 * n)), d_detector=(d, d * 0.9),
                         n_views=n_views)
    cyl = Phantom(centers=np.zeros((1, 3)), semi_axes=np.array([[r, r, 1e4]]), phi=np.zeros(1),
                  values=np.array([MU_WATER]))
    mu = jm.phantoms.voxelize(cyl, g, supersample=2)
    e, f = ph.kvp_spectrum(kvp)
    k = np.stack([ph.mass_attenuation(m, e) for m in ("water", "bone")])
    w = ph.detector_weights(e, f)
    lines = ph.material_projections(mu, g)
    forward = jax.jit(lambda L: ph.detected_projections(L, k, w))
    p_poly = forward(lines).block_until_ready()
    t = time.perf_counter()
    forward(lines).block_until_ready()
    t_forward = time.perf_counter() - t
    x = (np.arange(n) - (n - 1) / 2) * d
    rr = np.hypot(*np.meshgrid(x, x, indexing="ij"))

    def stats(p):
        v = np.asarray(jm.fdk(jnp.asarray(p), g).volume)[:, :, 1:3].mean(-1)
        centre, ring = v[rr < 0.3 * r].mean(), v[(rr > 0.57 * r) & (rr < 0.8 * r)].mean()
        return {"cupping": float((ring - centre) / ring), "mean_mu_water_mm-1": float(v[rr < 0.8 * r].mean())}

    return {"kvp": kvp, "diameter_mm": diameter_mm, "mean_energy_kev": ph.mean_energy(e, f),
            "voxels": [n, n, 4], "voxel_mm": d, "views": n_views, "max_line_integral": float(np.max(p_poly)),
            "polychromatic_forward_s": t_forward,
            "monochromatic": stats(jm.project(mu, g)), "polychromatic": stats(p_poly),
            "water_corrected": stats(ph.water_correction(p_poly, e, f))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="test size")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    n, views = (24, 36) if a.small else (64, 90)
    cases = [(80.0, 300.0)] if a.small else [(80.0, 200.0), (80.0, 300.0), (120.0, 200.0), (120.0, 300.0)]
    rows = [cylinder_case(kvp, dia, n=n, n_views=views) for kvp, dia in cases]
    for row in rows:
        print(f"{row['kvp']:.0f} kVp, {row['diameter_mm']:.0f} mm water: cupping mono {row['monochromatic']['cupping']:+.4f}, "
              f"poly {row['polychromatic']['cupping']:+.4f}, corrected {row['water_corrected']['cupping']:+.4f}; "
              f"water μ {row['polychromatic']['mean_mu_water_mm-1']:.5f} -> {row['water_corrected']['mean_mu_water_mm-1']:.5f} mm⁻¹")
    name = "physics_small" if a.small else "physics"
    path = write_json(name, {"environment": environment(), "reference_mu_water_mm-1": 0.02059,
                             "results": rows}, a.out_dir)
    print(path)
    return path


if __name__ == "__main__":
    main()
