"""Atomic adds for the Pallas kernels' gradients: relaxed ordering, and an interpreter path.

``plgpu.atomic_add`` lowers to ``atom.acq_rel.gpu``: on sm_90 each add becomes an ``ATOMG``
that returns the old value, wrapped in ``MEMBAR.ALL.GPU``, two ``ERRBAR`` and a
``CCTL.IVALL`` that invalidates the L1 cache (read off the SASS by
``benchmarks/kernel_asm.py``). Accumulating a gradient needs atomicity only: the relaxed form
(``red.relaxed.gpu``, SASS ``REDG``, no fences; float2 pairs become one ``REDG...F32x2``) gives
the same sums, in an order that is unspecified either way.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu

__all__ = ["RELAXED_ADD", "scatter_add"]


def _make_relaxed_add():
    """Pallas-Triton's atomic add lowered with relaxed memory ordering, or ``None``.

    This reuses Pallas' own lowering rule with the ordering argument swapped, through private
    JAX modules: if they have changed, it returns ``None`` and ``plgpu.atomic_add`` is used.
    """
    try:
        from jax._src import core as jax_core
        from jax._src import tree_util
        from jax._src.lib.triton import dialect as tt_dialect
        from jax._src.pallas.triton import lowering as tl
        from jax._src.pallas.triton import primitives as tp
        from jax._src.state import primitives as sp

        base_rule = tl.triton_lowering_rules[tp.atomic_rmw_p]
        relaxed = tt_dialect.MemSemantic.RELAXED
        add_type = tp.AtomicOpType.ADD
        prim = jax_core.Primitive("jaxmedrf_atomic_add_relaxed")
        prim.def_effectful_abstract_eval(tp.atomic_rmw_p.abstract_eval)
        original = tl._atomic_rmw

        def rule(ctx, *args, **params):
            tl._atomic_rmw = partial(original, semantic=relaxed)
            try:
                return base_rule(ctx, *args, **params)
            finally:
                tl._atomic_rmw = original

        tl.register_lowering(prim)(rule)

        def add(ref, idx, val, mask=None):
            x_ref, transforms = sp.get_ref_and_transforms(ref, idx, "atomic_rmw")
            flat, tree = tree_util.tree_flatten((x_ref, transforms, val, mask))
            return prim.bind(*flat, args_tree=tree, atomic_type=add_type)

        return add
    except Exception:  # noqa: BLE001 - any change of the private API: use the public op
        return None


RELAXED_ADD = _make_relaxed_add()


def scatter_add(ref, offsets, vals, mask, interpret: bool, relaxed: bool = True):
    """``ref[offsets] += vals`` where ``mask``: relaxed (or, with ``relaxed=False``, acq_rel)
    atomics on GPU; ``.at[].add`` in interpret mode, whose ``atomic_add`` applies duplicate
    indices of one call only once."""
    if interpret:
        ref[...] = ref[...].at[offsets].add(jnp.where(mask, vals, 0.0))
    elif relaxed and RELAXED_ADD is not None:
        RELAXED_ADD(ref, offsets, vals, mask=mask)
    else:
        plgpu.atomic_add(ref, offsets, vals, mask=mask)
