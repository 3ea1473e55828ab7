"""benchmarks/projector_peers: a peer that cannot be imported is reported as skipped, never timed."""

import sys

import numpy as np
import pytest

import jaxmedrf as jm
from benchmarks import projector_peers as PP


@pytest.fixture
def case():
    g = jm.cone_beam(n_voxel=(8, 8, 8), d_voxel=4.0, n_detector=(8, 8), d_detector=8.0, DSD=800.0, DSO=400.0, n_views=2)
    return np.zeros((8, 8, 8), np.float32), g


@pytest.mark.parametrize("module, fn, kw", [
    ("nanodrr", PP.time_nanodrr, {"backend": "torch"}),
    ("diffdrr", PP.time_diffdrr, {"renderer": "siddon"}),
    ("mbirjax", PP.time_mbirjax, {}),
])
def test_missing_peer_is_skipped(monkeypatch, case, module, fn, kw):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    out = fn(*case, repeats=1, warmup=0, **kw)
    assert set(out) <= {"skipped", "stubs"} and module in out["skipped"]


def test_step_gives_the_requested_sample_count():
    from jaxmedrf.projectors.trilinear import n_samples_for_step

    for n in ((256,) * 3, (128, 96, 64), (7, 7, 7)):
        assert n_samples_for_step(n, PP._step_for(n, 512)) == 512
