"""PNG plots of the committed GPU results (``python -m benchmarks.run --report`` draws them).

Each plot reads the result files of one benchmark (``run._all``: GPU runs, by recorded date)
and says in its title which card and files it shows:

* ``time_to_quality.png``: NAF PSNR3D against training seconds for every reconstruct case;
* ``baselines_cost.png``: FDK and the SART/CGLS iteration against volume size and view
  count, beside mbirjax's FDK and forward + back projection from the same processes;
* ``projector_cost.png``: ms per DRR against volume size and against rays per kernel launch
  (the chunk size: throughput vs batch size);
* ``hashgrid.png``: hash-grid points/s per implementation and dtype, and torch-ngp's beside
  ours from the same process.
"""

from __future__ import annotations

from pathlib import Path


def _fig(path: Path, draw, title: str, ncols: int = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(7.5 * ncols, 4.8), squeeze=False)
    draw(*axes[0])
    for a in axes[0]:
        a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def time_to_quality(runs: list[dict], path: Path) -> Path | None:
    cases = {}
    for r in runs:
        cases.update({c["case"]: c for c in r["results"] if "naf" in c})
    if not cases:
        return None

    def draw(a):
        for name, c in cases.items():
            cu = c["naf"]["curve"]
            a.plot([p["train_seconds"] for p in cu], [p["psnr3d"] for p in cu], label=name)
        a.axhline(32.4, color="k", lw=0.7, ls=":", label="NAF paper's plateau (32.4 dB)")
        a.set(xlabel="training seconds (compilation included, evaluation excluded)", ylabel="PSNR3D (dB)")
        a.legend(fontsize=7)

    return _fig(path, draw, f"NAF time to quality, {runs[-1]['environment']['device']}")


def baselines_cost(runs: list[dict], path: Path) -> Path | None:
    entries = [(c, r) for r in runs for c in r["results"] if "ours" in c]
    if not entries:
        return None
    series = {"FDK (ours)": lambda c: c["ours"]["fdk"]["time_s"],
              "FDK (mbirjax)": lambda c: c["mbirjax"]["fdk"]["time_s"],
              "mbirjax fwd + back": lambda c: c["mbirjax"]["forward_s"] + c["mbirjax"]["back_s"],
              "SART iteration (fused, exact adjoint)": lambda c: c["ours"]["sart_pallas_siddon"]["time_per_iter_s"],
              "SART iteration (fused, voxel adjoint, running residual)":
                  lambda c: c["ours"]["sart_voxel_pallas_siddon_running"]["time_per_iter_s"],
              "CGLS iteration (fused)": lambda c: c["ours"]["cgls_pallas_siddon"]["time_per_iter_s"]}

    def draw(a_size, a_views):
        for a, key, other, label in ((a_size, "n_voxel", "n_views", "N (N³ volume)"),
                                     (a_views, "n_views", "n_voxel", "views")):
            fixed = max(c[other] for c, _ in entries)
            rows = sorted((c for c, _ in entries if c[other] == fixed), key=lambda c: c[key])
            for name, get in series.items():
                pts = []
                for c in rows:
                    try:
                        pts.append((c[key], 1e3 * get(c)))
                    except (KeyError, TypeError):
                        pass
                if pts:
                    a.plot(*zip(*pts), "o-" if "ours" in name or "SART" in name or "CGLS" in name else "s--",
                           label=name)
            a.set(xlabel=label, ylabel="ms", yscale="log",
                  title=f"{'views' if key == 'n_views' else 'volume'} varied, {other.replace('n_', '')} = {fixed}")
        a_size.legend(fontsize=6)

    return _fig(path, draw, f"FDK / SART / CGLS cost beside mbirjax 0.7.3 (same process), {runs[-1]['device']}", 2)


def projector_cost(runs: list[dict], path: Path) -> Path | None:
    if not runs:
        return None
    r = runs[-1]
    rows = r["results"]

    def draw(a_size, a_chunk):
        for method in ("siddon", "trilinear"):
            whole = sorted((x for x in rows if x["method"] == method and x["chunk_size"] is None and x["views"] == 64),
                           key=lambda x: x["n_voxel"])
            a_size.plot([x["n_voxel"] for x in whole], [x["forward_ms_per_drr"] for x in whole], "o-",
                        label=f"{method} forward")
            a_size.plot([x["n_voxel"] for x in whole], [x["forward_backward_ms_per_drr"] for x in whole], "s--",
                        label=f"{method} forward + backward")
            chunk = sorted((x for x in rows if x["method"] == method and x["chunk_size"]), key=lambda x: x["chunk_size"])
            a_chunk.plot([x["chunk_size"] for x in chunk], [x["forward_ms_per_drr"] for x in chunk], "o-",
                         label=f"{method} forward")
        a_size.set(xlabel="N (N³ volume)", ylabel="ms per 256² DRR", title="cost vs volume size (64 views)")
        a_chunk.set(xlabel="rays per launch (chunk_size)", ylabel="ms per 256² DRR", xscale="log",
                    title="cost vs batch size (256³)")
        a_size.legend(fontsize=7)
        a_chunk.legend(fontsize=7)

    return _fig(path, draw, f"XLA projector, {r['environment']['device']}", 2)


def hashgrid(runs: list[dict], path: Path) -> Path | None:
    """Left: the newest run that timed the Pallas kernel (every variant from one process);
    right: the newest torch-ngp comparison (its per-level scale 2, ours in the same process)."""
    main = next((r for r in reversed(runs) if any(x.get("implementation") == "pallas" for x in r.get("records", []))), None)
    cmp_ = next((r for r in reversed(runs) if r.get("peer_comparison", {}).get("peer", {}).get("records")), None)
    if main is None:
        return None

    def label(x):
        return " · ".join(v for v in (x["mode"], x.get("implementation", "torch-ngp CUDA"), x.get("backward", ""),
                                      x["table_dtype"]) if v)

    def bars(a, recs, title):
        recs = [x for x in recs if "points_per_second" in x]
        a.barh(range(len(recs)), [x["points_per_second"] for x in recs],
               color=["C1" if "implementation" not in x else "C0" for x in recs])
        a.set_yticks(range(len(recs)), [label(x) for x in recs], fontsize=7)
        for t, ls in ((0.25e9, ":"), (1.5e9, "--")):
            a.axvline(t, color="k", lw=0.8, ls=ls)
        a.set(xlabel="points / s (dotted: 0.25e9 reference; dashed: 1.5e9 target)", title=title)

    def draw(a_main, a_peer):
        bars(a_main, main["records"], f"run of {main['date'][:16]}, 4M points, L=16 F=2 T=2^19")
        if cmp_ is not None:
            pc = cmp_["peer_comparison"]
            bars(a_peer, pc.get("jaxmedrf", []) + pc["peer"]["records"],
                 f"torch-ngp (orange), same process, scale 2, {cmp_['date'][:16]}")
        else:
            a_peer.axis("off")

    return _fig(path, draw, f"hash-grid encoding, {main['device']}", 2)


def plot_all(results: Path, out_dir: Path) -> list[Path]:
    """Draws every plot whose results exist; returns the PNGs written."""
    from benchmarks.run import _all

    out_dir.mkdir(parents=True, exist_ok=True)
    made = [
        time_to_quality(_all("reconstruct_*.json", results), out_dir / "time_to_quality.png"),
        baselines_cost(_all("baselines_*.json", results, exclude="baselines_memory"), out_dir / "baselines_cost.png"),
        projector_cost(_all("projector_*.json", results, exclude=("projector_peers", "projector_kernels")),
                       out_dir / "projector_cost.png"),
        hashgrid(_all("hashgrid_*.json", results), out_dir / "hashgrid.png"),
    ]
    return [p for p in made if p is not None]
