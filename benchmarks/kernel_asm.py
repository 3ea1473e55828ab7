"""The Pallas kernels' machine code without a GPU: registers, spills and memory instructions.

JAX lowers a ``pallas_call`` for CUDA to Triton IR on any machine (no device is needed to
lower, only to compile), so each kernel's Triton IR is captured here from an ordinary
``jax.jit(...).trace(...).lower(lowering_platforms=("cuda",))``. With the ``triton`` package
installed (``pip install triton``, in this interpreter or in the one given by
``--triton-python``) the IR is compiled for sm_90 (H100/H200) and the report counts, per
kernel, the registers and spills (``ptxas -v``) and the global-memory instructions of the SASS
(``cuobjdump``): gathers by width (``LDG.E.64`` is an 8-byte load), stores, atomics
(``REDG.E.ADD.F32x2`` is one float2 reduction) and fences (``MEMBAR``, ``CCTL``). This is what METHOD.md asks to read before
spending device time ("are the loads 16 bytes wide? did an array spill?").

Caveat: XLA compiles the same Triton IR with its own bundled Triton, which is not the
``triton`` release used here; registers and instruction order may differ from the kernel that
runs. The counts per point or per sample follow from the IR and do not.

    python benchmarks/kernel_asm.py                          # every kernel; JSON into benchmarks/results
    python benchmarks/kernel_asm.py --triton-python /tmp/tvenv/bin/python --kernels hashgrid
    python benchmarks/kernel_asm.py --ir-only --out-dir /tmp  # Triton IR only (no triton package)

Without ``triton`` the Triton IR is still lowered and saved (``--ir-dir``), and the JSON says
why nothing was compiled.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # lowering for CUDA needs no device

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------- lowering
def lower_to_triton(fn, *specs) -> dict[str, tuple[str, int]]:
    """``{kernel name: (Triton IR text, num_warps)}`` of every ``pallas_call`` in
    ``jax.jit(fn)`` lowered for CUDA with arguments of the given shapes
    (``jax.ShapeDtypeStruct``). Reads JAX's private Pallas-Triton lowering."""
    from jax._src.pallas.triton import pallas_call_registration as registration

    lower = registration.lowering.lower_jaxpr_to_triton_module
    captured: dict[str, tuple[str, int]] = {}

    def spy(*args, **kwargs):
        result = lower(*args, **kwargs)
        result.module.operation.verify()  # an invalid module raises here, naming the op (get_asm would print it generic)
        text = result.module.operation.get_asm(enable_debug_info=False)
        name = re.search(r"tt\.func public @([\w.]+)", text).group(1)
        warps = sys._getframe(1).f_locals.get("num_warps", 4)  # pallas_call_lowering's launch setting
        captured[name] = (text, int(warps))
        return result

    registration.lowering.lower_jaxpr_to_triton_module = spy
    try:
        jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",))
    finally:
        registration.lowering.lower_jaxpr_to_triton_module = lower
    return captured


def hashgrid_cases(small: bool = False):
    """Issue 8's hash grid (L=16, F=2, T=2^19), float32 and bfloat16 tables: forward, table
    gradient and position gradient kernels (one point per thread)."""
    from jaxmedrf.fields.encodings import HashGridConfig
    from jaxmedrf.kernels.hashgrid import DEFAULT_TUNING, hash_grid_encode_pallas

    cfg = (HashGridConfig(n_levels=2, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=16)
           if small else HashGridConfig(n_levels=16, features_per_level=2, log2_table_size=19, base_resolution=16,
                                        finest_resolution=2048))  # fmt: skip
    n = 1 << (10 if small else 22)
    meta = {"config": "L=%d F=%d T=2^%d" % (cfg.n_levels, 2, cfg.log2_table_size),
            "counts": "static SASS instructions = per point (one point a thread, every level unrolled)"}
    # The last case keeps Pallas' own acq_rel atomic add, to show what the relaxed one removes.
    for dtype, tuning in (("float32", DEFAULT_TUNING), ("bfloat16", DEFAULT_TUNING),
                          ("float32", DEFAULT_TUNING._replace(relaxed_atomics=False)),
                          ("float32", DEFAULT_TUNING._replace(bwd_run=4))):
        table = jax.ShapeDtypeStruct((cfg.n_levels, cfg.table_size, cfg.features_per_level), jnp.dtype(dtype))
        x = jax.ShapeDtypeStruct((n, 3), jnp.float32)

        def fn(t, p, tuning=tuning):
            loss = lambda t, p: jnp.sum(hash_grid_encode_pallas(t, p, cfg, tuning=tuning) ** 2)  # noqa: E731
            return jax.grad(loss, argnums=(0, 1))(t, p)

        name = (f"hashgrid_{dtype}" + ("" if tuning.relaxed_atomics else "_acq_rel_atomics")
                + (f"_run{tuning.bwd_run}" if tuning.bwd_run > 1 else ""))
        yield name, meta, fn, (table, x)


def projector_cases(small: bool = False):
    """The fused projector (256³ → 256², 512 samples; 16³ with ``small``): trilinear march for
    each storage dtype and ``pack`` layout, with the pose gradient and the adjoint; Siddon."""
    import jaxmedrf as jm
    from jaxmedrf.kernels import projector as P

    n, det, samples = (16, 8, 16) if small else (256, 256, 512)
    g = jm.cone_beam(n_voxel=(n,) * 3, d_voxel=256.0 / n, n_detector=(det, det), d_detector=409.6 / det, DSD=1500.0,
                     DSO=1000.0, n_views=1)
    kw = dict(chunk=P.DEFAULT_CHUNK, block_rays=P.DEFAULT_BLOCK, tile=P.default_tile(P.DEFAULT_BLOCK), lanes="u",
              unroll=2, num_warps=P.DEFAULT_WARPS, interpret=False)
    layouts = [("float32", None, "corners"), ("float32", "z", "corners"), ("float32", "yz", "corners"),
               ("bfloat16", None, "corners"), ("bfloat16", "z", "corners"), ("bfloat16", "yz", "corners"),
               ("float32", None, "quads"), ("bfloat16", "z", "quads"), ("float32", None, "runs"), ("bfloat16", "z", "runs")]
    for dtype, pack, adjoint in layouts:
        def fn(v, dtype=dtype, pack=pack, adjoint=adjoint):
            def loss(v, rot):
                drr = P.project_kernel(v, g.replace(rotation=rot), method="trilinear", n_samples=samples, pack=pack,
                                       adjoint=adjoint, **kw)
                return jnp.sum(drr**2)

            return jax.grad(loss, argnums=(0, 1))(v, jnp.broadcast_to(jnp.eye(3), (1, 3, 3)))

        meta = {"n_samples": samples, "adjoint": adjoint, "counts": "static SASS instructions; the march loop body "
                "holds unroll = 2 samples of one ray a thread (8 corners each: 16 plain gathers, 8 with pack='z', 4 "
                "with 'yz'; 16 atomic adds in the adjoint, 4 four-wide ones with adjoint='quads' or 'runs', predicated on "
                "leaving the cell with 'runs')"}
        name = f"trilinear_{dtype}_{pack or 'plain'}" + ("" if adjoint == "corners" else f"_{adjoint}")
        yield name, meta, fn, (jax.ShapeDtypeStruct((n,) * 3, jnp.dtype(dtype)),)

    def siddon(v):
        return jax.grad(lambda v: jnp.sum(P.project_kernel(v, g, method="siddon", n_samples=1, pack=None, **kw) ** 2))(v)

    yield "siddon_float32", {"counts": "static SASS instructions; the walk loop body is one segment of one ray"}, siddon, (jax.ShapeDtypeStruct((n,) * 3, jnp.float32),)


def field_cases(small: bool = False):
    """The fused field (NAF's default: hash grid L=16 F=2 T=2^19 up to 512 cells, four layers of
    32, skip at 2, softplus): forward and backward kernels, float32 and bfloat16 MLP dots."""
    from jaxmedrf.fields import FieldConfig, HashGridConfig
    from jaxmedrf.fields.field import _fused_mu, field_init

    enc = (HashGridConfig(n_levels=2, log2_table_size=10, base_resolution=4, finest_resolution=16) if small
           else HashGridConfig(finest_resolution=512))
    n = 1 << (10 if small else 20)
    for dtype in ("float32", "bfloat16"):
        cfg = FieldConfig(encoding=enc, out_activation="softplus", compute_dtype=dtype)
        params = jax.eval_shape(lambda: field_init(jax.random.key(0), cfg))

        def fn(p, u, cfg=cfg):
            return jax.grad(lambda p: jnp.sum(_fused_mu(p["encoding"], p["mlp"], u, cfg, False, None) ** 2))(p)

        meta = {"config": f"L={enc.n_levels} F=2 T=2^{enc.log2_table_size}, MLP {cfg.sizes} skips {cfg.skips}, "
                          f"{dtype} dots", "counts": "static SASS instructions per program"}
        yield f"field_{dtype}", meta, fn, (params, jax.ShapeDtypeStruct((n, 3), jnp.float32))


CASES = {"hashgrid": hashgrid_cases, "projector": projector_cases, "field": field_cases}


# ---------------------------------------------------------------------------------------- compiling
_COMPILE = r"""
import json, sys, triton
from triton.backends.compiler import GPUTarget
path, warps = sys.argv[1], int(sys.argv[2])
k = triton.compile(path, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 1})
open(path[:-5] + ".ptx", "w").write(k.asm["ptx"])
open(path[:-5] + ".cubin", "wb").write(k.asm["cubin"])
print(json.dumps({"triton": triton.__version__, "bin": str(__import__("pathlib").Path(triton.__file__).parent
                  / "backends" / "nvidia" / "bin")}))
"""

_SASS_MEMORY = re.compile(r"\b((?:LDG|STG|REDG|RED|ATOMG|ATOM|LDS|STS|MEMBAR|CCTL)(?:\.[A-Z0-9x]+)*)")


def compile_and_count(name: str, ir: str, workdir: Path, python: str, num_warps: int) -> dict:
    """Compile one kernel's Triton IR for sm_90 and read its resources and memory instructions."""
    src = workdir / f"{name}.ttir"
    src.write_text(ir)
    res = subprocess.run([python, "-c", _COMPILE, str(src), str(num_warps)], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["triton compile failed"])[-1][:400]}
    info = json.loads(res.stdout.strip().splitlines()[-1])
    out = {"triton": info["triton"], "num_warps": num_warps}
    bindir = Path(info["bin"])
    ptx = src.with_suffix(".ptx")
    for ptxas in sorted(bindir.glob("ptxas*"), reverse=True):  # the newest first (ptxas-blackwell)
        r = subprocess.run([str(ptxas), "-v", "-arch=sm_90a", str(ptx), "-o", os.devnull], capture_output=True,
                           text=True)
        if r.returncode == 0:
            text = r.stdout + r.stderr
            regs = re.search(r"Used (\d+) registers", text)
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
            out["registers"] = int(regs.group(1)) if regs else None
            out["spill_bytes"] = [int(spill.group(1)), int(spill.group(2))] if spill else None
            break
    cuobjdump = bindir / "cuobjdump"
    if cuobjdump.exists():
        sass = subprocess.run([str(cuobjdump), "--dump-sass", str(src.with_suffix(".cubin"))], capture_output=True,
                              text=True).stdout
        out["sass_memory_instructions"] = dict(collections.Counter(_SASS_MEMORY.findall(sass)).most_common())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--small", action="store_true", help="tiny shapes (a quick check that every kernel lowers)")
    ap.add_argument("--triton-python", default=sys.executable, help="an interpreter with the triton package")
    ap.add_argument("--ir-only", action="store_true", help="lower and save the Triton IR, compile nothing")
    ap.add_argument("--ir-dir", type=Path, default=None, help="keep the .ttir/.ptx/.cubin files there")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    a = ap.parse_args(argv)

    have_triton = not a.ir_only and subprocess.run([a.triton_python, "-c", "import triton"],
                                                   capture_output=True).returncode == 0
    workdir = a.ir_dir or Path(tempfile.mkdtemp(prefix="kernel_asm_"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "kernel_asm", "target": "sm_90a (H100/H200)", "jax_version": jax.__version__,
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "small": a.small,
              "caveat": "compiled with the triton package, not XLA's bundled Triton: registers may differ from the "
                        "kernel that runs; instruction counts per point/sample follow from the IR",
              "cases": {}}  # fmt: skip
    if not have_triton:
        report["compiled"] = "no: " + ("--ir-only" if a.ir_only else f"{a.triton_python} cannot import triton")
    for kind in a.kernels:
        for case, meta, fn, specs in CASES[kind](a.small):
            kernels = lower_to_triton(fn, *specs)
            entry = {**meta, "kernels": {}}
            for name, (ir, warps) in kernels.items():
                (workdir / f"{case}.{name}.ttir").write_text(ir)
                entry["kernels"][name] = (compile_and_count(f"{case}.{name}", ir, workdir, a.triton_python, warps)
                                          if have_triton else {"lowered": True, "num_warps": warps})
            report["cases"][case] = entry
            print(case, json.dumps(entry["kernels"]), flush=True)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    out = a.out_dir / f"kernel_asm_sm90{'_small' if a.small else ''}_{_dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(report, indent=1))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
