"""Every Pallas kernel lowers for CUDA (Triton IR) on this CPU machine: interpret mode, which
the value tests use, never runs the Triton lowering, so an op that Pallas-Triton cannot
express would otherwise first fail on a GPU. Also: gradient atomics are relaxed (no fences)."""

import re

import pytest

from benchmarks import kernel_asm


@pytest.mark.parametrize("kind", ["hashgrid", "projector", "field"])
def test_every_kernel_lowers_for_cuda_with_relaxed_atomics(kind):
    names = set()
    for case, _, fn, specs in kernel_asm.CASES[kind](small=True):
        kernels = kernel_asm.lower_to_triton(fn, *specs)
        assert kernels, case
        for name, (ir, warps) in kernels.items():
            names.add(name)
            assert "tt.func public" in ir and warps >= 1
            atomics = re.findall(r"tt\.atomic_rmw fadd, (\w+)", ir)
            if name.endswith(("adjoint", "table_grad")) and "acq_rel" not in case:
                assert atomics and set(atomics) == {"relaxed"}, (case, name, atomics)
    expected = {"hashgrid": {"hash_grid_forward", "hash_grid_table_grad", "hash_grid_position_grad"},
                "field": {"fused_field_forward", "fused_field_backward", "hash_grid_table_grad"},
                "projector": {"trilinear_march_grad", "trilinear_march_adjoint", "siddon_walk", "siddon_walk_adjoint"}}[kind]
    assert names == expected


def test_fused_field_dots_follow_the_default_matmul_precision():
    """Pallas-Triton reads only a dot's own precision (None: TF32); the fused field passes on
    ``jax_default_matmul_precision`` as XLA's dots do, so at "highest" both paths are exact float32."""
    import jax

    def precisions():
        out = set()
        for case, _, fn, specs in kernel_asm.CASES["field"](small=True):
            if case == "field_float32":
                for name, (ir, _) in kernel_asm.lower_to_triton(fn, *specs).items():
                    if name.startswith("fused_field"):
                        assert "tt.dot " in ir, name
                        out |= set(re.findall(r"tt\.dot .*inputPrecision = (\w+)", ir)) or {"ieee"}
        return out

    assert precisions() == {"tf32"}
    with jax.default_matmul_precision("highest"):
        assert precisions() == {"ieee"}
