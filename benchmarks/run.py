"""One entry point for the benchmark suite.

    python -m benchmarks.run --suite gpu            # the headline tables, about 10 minutes on one GPU
    python -m benchmarks.run --suite all            # every benchmark at its GPU sizes (an hour or more)
    python -m benchmarks.run --suite cpu            # every benchmark at tiny sizes (smoke run)
    python -m benchmarks.run --suite cpu --only projector hashgrid
    python -m benchmarks.run --report               # regenerate benchmarks/README.md and plots/ from results/

Each benchmark writes its own JSON (device, versions, date, figures) to ``--out-dir``
(default ``benchmarks/results``). ``--suite gpu`` / ``all`` on a machine without a GPU says so
and exits 0. ``--suite gpu`` runs the headline tables only, each in its own process with a time
cap (600 s in all): the projector beside nanodrr, the hash grid beside torch-ngp's kernel, the
field (fused kernel against XLA ops) and NAF's time-to-quality with the fused and the XLA field.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> (command after `python`, extra arguments for the CPU smoke run)
BENCHMARKS = {
    "projector": (["-m", "benchmarks.projector"], ["--small"]),
    "projector_peers": (["-m", "benchmarks.projector_peers"], ["--small"]),
    "hashgrid": ([str(HERE / "hashgrid.py")], ["--small"]),
    "reconstruct": (["-m", "benchmarks.reconstruct"], ["--small", "--cases", "naf128_50"]),
    "baselines": ([str(HERE / "baselines.py")], ["--small", "--no-mbirjax"]),
    "register": ([str(HERE / "register.py")], ["--small"]),
    "render": (["-m", "benchmarks.render"], ["--small"]),
    "naf_profile": ([str(HERE / "naf_profile.py")], ["--small"]),
    "field": ([str(HERE / "field.py")], ["--small"]),
    "naf_cpu_profile": ([str(HERE / "naf_cpu_profile.py")],
                        ["--small", "--implementations", "level_major", "--backwards", "segment_sum"]),
    "occupancy": (["-m", "benchmarks.occupancy"], ["--small"]),
    "ct_protocol": (["-m", "benchmarks.ct_protocol"],
                    ["--small", "--cases", "chest1", "--views", "25", "--noise", "none", "--methods", "fdk,sart,naf"]),
}


# The headline tables of ``--suite gpu``: name -> (command after `python`, time cap in seconds).
HEADLINE = {
    "projector_peers": (["-m", "benchmarks.projector_peers", "--peers", "jaxmedrf_pallas_siddon",
                         "jaxmedrf_pallas_trilinear_bf16z", "jaxmedrf_xla_trilinear", "nanodrr_triton", "nanodrr_torch",
                         "--budget-s", "150"], 200),
    "hashgrid": ([str(HERE / "hashgrid.py"), "--impls", "level_major", "pallas", "--backwards", "segment_sum",
                  "--dtypes", "float32", "--peer", "--peer-dtypes", "float32", "--deadline-s", "120"], 180),
    "field": ([str(HERE / "field.py"), "--tunings", "128:4:64:4:1:0", "--dtypes", "float32"], 90),
    "reconstruct": (["-m", "benchmarks.reconstruct", "--cases", "naf128_50_xla,naf128_50"], 130),
}


def _all(pattern: str, results: Path, exclude: str | tuple[str, ...] | None = None) -> list[dict]:
    """The GPU result files matching ``pattern``, oldest first by the date they record
    (file times are those of the checkout, not of the run)."""
    files = [f for f in results.glob(pattern) if "small" not in f.name and "cpu" not in f.name.lower()
             and not (exclude and f.name.startswith(exclude))]
    loaded = [(json.loads(f.read_text()), f.name) for f in files]

    def when(item):
        d, name = item
        return str(d.get("date") or d.get("environment", {}).get("date") or ""), name

    return [d for d, _ in sorted(loaded, key=when)]


def _latest(pattern: str, results: Path, exclude: str | tuple[str, ...] | None = None) -> dict | None:
    found = _all(pattern, results, exclude)
    return found[-1] if found else None


def report(results: Path = HERE / "results") -> str:
    """A markdown table of the latest GPU figures, with the peers' figures where measured."""
    rows = ["| benchmark | figure | jaxmedrf | peer (same run) | file |", "|---|---|---|---|---|"]
    p = _latest("projector_*.json", results, exclude=("projector_peers", "projector_kernels"))
    if p:
        for r in p["results"]:
            if r.get("chunk_size") is None and "forward_ms_per_drr" in r and r["views"] == 64:
                fb = r.get("forward_backward_ms_per_drr")
                rows.append(f"| projector {r['method']} {r['n_voxel']}³ → 256² | ms per DRR fwd / fwd+bwd | "
                            f"{r['forward_ms_per_drr']:.2f} / {fb:.2f} | not run | projector ({p['environment']['device']}) |")
    k = _latest("projector_kernels_*.json", results)
    if k:
        env = k["environment"]
        # A --kernels run lists sizes under "results"; the first H100 probe under main128/main256/sweep256.
        sizes = k.get("results") or [k[s] for s in ("main128", "main256") if s in k]
        rows_all = [r for size in sizes for r in size.get("rows", [])] + k.get("sweep256", [])
        for n in sorted({r["n_voxel"] for r in rows_all}):
            ok = [r for r in rows_all if r["n_voxel"] == n and "forward_backward_pose_ms_per_drr" in r
                  and r.get("method", "trilinear") == "trilinear"]
            xla = [r for r in ok if r["implementation"] == "xla"]
            pal = [r for r in ok if r["implementation"] == "pallas" and r["dtype"] == "float32"]
            if not (xla and pal):
                continue
            best = min(pal, key=lambda r: r["forward_ms_per_drr"] + r["forward_backward_pose_ms_per_drr"])
            f = lambda r: (f"{r['forward_ms_per_drr']:.2f} / {r['forward_backward_pose_ms_per_drr']:.2f} / "  # noqa: E731
                           f"{r['forward_backward_volume_ms_per_drr']:.2f}")
            rows.append(f"| projector fused Pallas trilinear {n}³ → 256², 512 samples, 8 views a batch | ms per DRR fwd / "
                        f"fwd+bwd pose / fwd+bwd volume | {f(best)} | XLA trilinear {f(xla[0])} | "
                        f"projector_kernels ({env['device']}) |")
    pp = _latest("projector_peers_*.json", results)
    if pp:
        c, res = pp["case"], pp["results"]

        def figs(r):
            if "forward_ms_per_drr" not in r:
                return r.get("skipped") or r.get("error") or "not run"
            fb = r.get("forward_backward_pose_ms_per_drr")
            return f"{r['forward_ms_per_drr']:.2f} / " + (f"{fb:.2f}" if fb is not None else "–")

        peers = "; ".join(f"{k} {figs(v)}" for k, v in res.items() if not k.startswith("jaxmedrf"))
        ours = "; ".join(f"{v.get('projector', k)} {figs(v)}"
                         + (f" / {v['forward_backward_volume_ms_per_drr']:.2f}" if "forward_backward_volume_ms_per_drr" in v
                            else "") for k, v in res.items() if k.startswith("jaxmedrf"))
        rows.append(f"| DRR peers {c['n_voxel']}³ → {c['n_detector']}², {c['views']} views, {c['n_samples']} samples | "
                    f"ms per DRR fwd / fwd+bwd (pose) [/ fwd+bwd (volume), ours] | {ours} | {peers} | "
                    f"projector_peers ({pp['environment']['device']}) |")
    hs = _all("hashgrid_*.json", results)
    # the newest run that timed the Pallas kernel, and the newest one with the torch-ngp peer
    h = next((d for d in reversed(hs) if any(r.get("implementation") == "pallas" for r in d.get("records", []))),
             hs[-1] if hs else None)
    if h:
        b = h["best"]
        peer = "not run"
        hp = next((d for d in reversed(hs) if d.get("peer_comparison", {}).get("peer", {}).get("records")), h)
        pc = hp.get("peer_comparison", {}).get("peer", {})
        pr = {r["mode"]: r for r in pc.get("records", []) if r.get("table_dtype") == "float32" and "points_per_second" in r}
        if len(pr) == 2:
            ours = {r["mode"]: r for r in hp["peer_comparison"].get("jaxmedrf", [])
                    if r.get("table_dtype") == "float32" and "points_per_second" in r}
            same = (f"; in that process jaxmedrf {'/'.join({r['implementation'] for r in ours.values()})} "
                    f"{ours['forward']['points_per_second']:.3g} / {ours['forward+backward']['points_per_second']:.3g}"
                    if len(ours) == 2 else "")
            peer = (f"torch-ngp CUDA (scale 2) {pr['forward']['points_per_second']:.3g} / "
                    f"{pr['forward+backward']['points_per_second']:.3g}{same} (run of {hp['date'][:16]})")
        elif "skipped" in pc:
            peer = f"torch-ngp: {pc['skipped'][:60]}"
        rows.append(f"| hash grid L16 F2 T2^19, 4M points (best: fwd {b['forward'].get('implementation', '')} "
                    f"{b['forward']['table_dtype']}, fwd+bwd {b['forward+backward'].get('implementation', '')} "
                    f"{b['forward+backward']['table_dtype']}) | points/s fwd / fwd+bwd | "
                    f"{b['forward']['points_per_second']:.3g} / {b['forward+backward']['points_per_second']:.3g} | "
                    f"{peer} | hashgrid ({h['device']}) |")
    fd = _latest("field_*.json", results, exclude="field_highest")
    if fd:
        rows32 = [r for r in fd["rows"] if r.get("compute_dtype") == "float32" and "forward_ms" in r]
        xla = next((r for r in rows32 if r["variant"] == "xla"), None)
        fused = [r for r in rows32 if r["variant"].startswith("fused")]
        if xla and fused:
            best = min(fused, key=lambda r: r["forward_backward_ms"])
            rows.append(f"| field (hash grid + MLP), {fd['points']} points of a NAF step | ms fwd / fwd+grad (compile s) | "
                        f"{best['variant']} {best['forward_ms']:.2f} / {best['forward_backward_ms']:.2f} "
                        f"({best['first_call_s']['forward_backward']:.1f}) | XLA ops {xla['forward_ms']:.2f} / "
                        f"{xla['forward_backward_ms']:.2f} | field ({fd['environment']['device']}) |")
    cases = {}  # newest run of each case
    for r in _all("reconstruct_*.json", results):
        cases.update({c["case"]: (c, r) for c in r["results"] if "naf" in c})
    for c, r in cases.values():
        base = (f"SART {c['sart']['psnr3d']:.2f} dB, FDK {c['fdk']['psnr3d']:.2f} dB" if "sart" in c
                else "(speed variant: same data as naf128_50)")
        occ = f", occupied {c['naf']['occupied_fraction']:.2f}" if "occupied_fraction" in c["naf"] else ""
        rows.append(f"| NAF {c['case']} | PSNR3D final / s to 32.4 dB / steps/s | {c['naf']['final']['psnr3d']:.2f} dB / "
                    f"{c['naf']['seconds_to_32.4dB'] or float('nan'):.1f} s / {c['naf']['steps_per_s']:.0f}{occ} | {base} | "
                    f"reconstruct ({r['environment']['device']}) |")
    entries = sorted(((c, bl) for bl in _all("baselines_*.json", results, exclude="baselines_memory") for c in bl["results"]),
                     key=lambda e: (e[0]["n_voxel"], -e[0]["n_views"]))
    for c, bl in entries:
        m = c.get("mbirjax", {})
        mb_ops = (f"fwd+back {(m['forward_s'] + m['back_s']) * 1e3:.0f} ms" if "back_s" in m
                  else f"fwd {m.get('forward_s', float('nan')) * 1e3:.0f} ms")
        peer = (f"mbirjax FDK {m['fdk']['time_s'] * 1e3:.0f} ms, {mb_ops}, MBIR {m['mbir']['psnr3d']:.1f} dB"
                if "fdk" in m and "mbir" in m else f"mbirjax: {m.get('skipped', 'not run')}")
        o = c["ours"]
        its = "; ".join(f"{k.replace('_', ' ')} {v['time_per_iter_s'] * 1e3:.1f}" for k, v in o.items()
                        if isinstance(v, dict) and "time_per_iter_s" in v)
        rows.append(f"| baselines {c['n_voxel']}³, {c['n_views']} views, {bl['n_iters']} it. | FDK ms / ms per iteration | "
                    f"FDK {o['fdk']['time_s'] * 1e3:.1f}; {its} | {peer} | baselines ({bl['device']}) |")
    rg = _latest("register_*.json", results)
    if rg:
        for name, r in rg["results"].items():
            summ = r.get("summary") or {}

            def reg(label):
                x = summ.get(label)
                return (f"{100 * x['success_rate_mtre_lt_1mm']:.0f}% / {x['median_mtre_mm']:.3f} mm / "
                        f"{x['median_time_s']:.2f} s ({x['trials']} trials)") if x else "not run"

            multi = next((k for k in summ if k.startswith("multi")), None)
            skipped = rg.get("nanodrr", {}).get("skipped")
            nano = reg("nanodrr") if "nanodrr" in summ else f"not run ({skipped})" if skipped else "not run"
            rows.append(f"| registration {name}, ±{rg['settings']['init_deg']:g}° / ±{rg['settings']['init_mm']:g} mm | "
                        f"success (mTRE < 1 mm) / median mTRE / median s | single {reg('single')}; "
                        f"{multi} {reg(multi) if multi else 'not run'} | nanodrr {nano} | register ({rg['device']}) |")
    rd = _latest("render_*.json", results)
    if rd:
        for c in rd["results"]:
            field = [r for r in c["rows"] if r["source"] == "field"]
            vol = {r["method"]: r for r in c["rows"] if r["source"] == "volume"}
            figs = ", ".join(f"{r['n_samples']}+{r['n_importance']} samples {r['frames_per_s']:.1f}" for r in field)
            rows.append(f"| render {c['size']}² DRRs of a trained field (128³, {c['train_steps']} steps) | frames/s (target ≥ 30) | "
                        f"{figs} | volume: trilinear {vol['trilinear']['frames_per_s']:.0f}, siddon {vol['siddon']['frames_per_s']:.0f} "
                        f"| render ({rd['environment']['device']}) |")
    ip = _latest("interpolate_*.json", results, exclude="interpolate_real")  # the phantom protocol (--real has its own layout)
    if ip:
        cases = {(c["k"], c["stacks"], c["axis"], c["method"]): c for c in ip["cases"]}
        for k in sorted({c["k"] for c in ip["cases"]}):
            pooled = lambda key: cases[key]["removed"]["psnr_pooled"] if key in cases else float("nan")  # noqa: E731
            rows.append(f"| MRI slice interpolation, phantom {'×'.join(map(str, ip['settings']['shape']))}, k = {k} | "
                        f"PSNR on removed axial slices, pooled (dB) | INR 1 stack {pooled((k, 1, 2, 'inr')):.2f}, SMORE "
                        f"{pooled((k, 1, 2, 'smore')):.2f}, INR 2 stacks {pooled((k, 2, 2, 'inr')):.2f}, INR 3 stacks "
                        f"{pooled((k, 3, 2, 'inr')):.2f} | cubic {pooled((k, 1, 2, 'cubic')):.2f}, linear {pooled((k, 1, 2, 'linear')):.2f} "
                        f"(published CNN+cubic 25.01 dB on BRATS: other data) | interpolate ({ip['environment']['device']}) |")
    sc = _latest("scaling_*.json", results)
    if sc:
        for mode in ("weak", "strong", "cohort"):
            if sc.get(mode):
                figs = ", ".join(f"{r['devices']} GPU: {r['efficiency'] * 100:.0f} %" for r in sc[mode])
                rows.append(f"| NAF {mode} scaling | efficiency | {figs} | – | scaling ({sc['environment']['device']}) |")
    text = "# Benchmark results (generated by `python -m benchmarks.run --report`)\n\n" + "\n".join(rows) + "\n"
    text += "\nEvery figure comes from the newest JSON of that benchmark in `benchmarks/results/`, " \
            "which records device, JAX version and date.\n"
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["gpu", "all", "cpu"])
    ap.add_argument("--only", nargs="+", choices=sorted(set(BENCHMARKS) | set(HEADLINE)), default=None)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--report", action="store_true", help="regenerate benchmarks/README.md and print it")
    a = ap.parse_args(argv)
    if a.report:
        from benchmarks.plots import plot_all

        text = report(Path(a.out_dir))
        pngs = plot_all(Path(a.out_dir), HERE / "plots")
        text += "\nPlots (`benchmarks/plots.py`): " + ", ".join(f"[{p.stem}](plots/{p.name})" for p in pngs) + ".\n"
        (HERE / "README.md").write_text(text)
        print(text)
        return 0
    if a.suite is None:
        ap.error("give --suite gpu|all|cpu or --report")
    if a.suite in ("gpu", "all"):
        import jax

        if jax.devices()[0].platform != "gpu":
            print(f"--suite {a.suite} needs a GPU; this machine has only {jax.devices()[0].platform}: nothing run")
            return 0
    if a.suite == "gpu":
        table = {k: v for k, v in HEADLINE.items() if a.only is None or k in a.only}
    else:
        table = {k: (BENCHMARKS[k][0] + (BENCHMARKS[k][1] if a.suite == "cpu" else []), None)
                 for k in (a.only or BENCHMARKS) if k in BENCHMARKS}
    failed = []
    for name, (cmd, cap) in table.items():
        args = [sys.executable, *cmd, "--out-dir", a.out_dir]
        print("==", name, " ".join(args[1:]), f"(cap {cap} s)" if cap else "", flush=True)
        try:
            if subprocess.run(args, cwd=HERE.parent, timeout=cap).returncode:
                failed.append(name)
        except subprocess.TimeoutExpired:  # what it saved so far stays in --out-dir
            failed.append(f"{name} (stopped at its {cap} s cap)")
    print("failed:", ", ".join(failed) if failed else "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
