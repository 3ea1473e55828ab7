"""Cohort mode: K scans sharded over 8 CPU devices on the case axis equal separate runs."""

import jax
import numpy as np
import pytest

from jaxmedrf.parallel import make_mesh
from jaxmedrf.recon.naf import train_naf
from tests.test_naf import CASES, SMALL_FIELD, assert_cases_equal_separate_runs, cfg, scan


def test_cohort_sharded_cases_equal_separate_runs():
    g, _, proj_a = scan(mu_scale=1.0)
    _, _, proj_b = scan(mu_scale=0.5)
    stack = np.stack([proj_a, proj_b])
    c = cfg(**CASES)  # the separate runs' step is test_naf.py's
    keys = jax.random.split(jax.random.key(7), 2)
    mesh = make_mesh()
    assert mesh.size == 8
    lines = []
    together = train_naf(stack, g, c, case_keys=keys, mesh=mesh, shard_cases=True, progress=False,
                         log=lines.append)
    assert any("padding with 6 dummy" in ln for ln in lines), lines  # 2 cases -> 8
    assert together.volume.shape == (2, *g.n_voxel)
    leaf = jax.tree_util.tree_leaves(together.params)[0]
    assert leaf.shape[0] == 2
    # stated tolerance (float32, same keys and rays, only the reduction order may differ): rtol 1e-4
    assert_cases_equal_separate_runs(together, stack, g, c, keys)


def test_cohort_state_is_sharded_on_the_case_axis():
    from jaxmedrf.recon.naf import init_state
    from jaxmedrf.parallel import batch_sharding

    c = cfg(field=SMALL_FIELD)
    mesh = make_mesh()
    state = init_state(c, jax.random.split(jax.random.key(0), 8))
    state = jax.tree_util.tree_map(lambda x: jax.device_put(x, batch_sharding(mesh, x.ndim)), state)
    leaf = jax.tree_util.tree_leaves(state.params)[0]
    assert len(leaf.addressable_shards) == 8 and leaf.addressable_shards[0].data.shape[0] == 1


def test_shard_cases_needs_a_mesh():
    g, _, proj = scan()
    with pytest.raises(ValueError, match="shard_cases"):
        train_naf(proj, g, cfg(n_iters=10), shard_cases=True, progress=False)
