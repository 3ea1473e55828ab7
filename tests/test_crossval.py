"""Patient-level K-fold splits (jaxmedrf.crossval) and the prior benchmark's disjoint regions."""

import jax
import pytest

from jaxmedrf.crossval import group_of, kfold_volumes


def _check_partition(folds, ids):
    groups = set(ids)
    tested = [g for f in folds for g in f.test]
    assert sorted(tested) == sorted(groups)  # every volume tested exactly once
    for f in folds:
        assert not set(f.train) & set(f.test)  # never on both sides of a fold
        assert set(f.train) | set(f.test) == groups
        assert f.test  # no empty fold


@pytest.mark.parametrize("k", [2, 3, 5, 7])
def test_every_volume_tested_once_never_on_both_sides(k):
    # several cases per volume (10 and 25 views of each): a volume is never split
    names = [f"p{i}__{v}views" for i in range(7) for v in (10, 25)]
    ids = [group_of(n) for n in names]
    for key in (None, jax.random.key(0), jax.random.key(1)):
        folds = kfold_volumes(key, ids, k)
        assert len(folds) == k
        _check_partition(folds, ids)
        sizes = [len(f.test) for f in folds]
        assert max(sizes) - min(sizes) <= 1


def test_deterministic_and_shuffled():
    ids = [f"v{i}" for i in range(6)]
    assert kfold_volumes(None, ids, 3) == kfold_volumes(None, list(reversed(ids)), 3)
    a, b = kfold_volumes(jax.random.key(3), ids, 3), kfold_volumes(jax.random.key(3), ids, 3)
    assert a == b
    assert any(kfold_volumes(jax.random.key(s), ids, 3) != kfold_volumes(None, ids, 3) for s in range(5))


def test_group_of():
    assert group_of("chest1__10views") == "chest1"
    assert group_of("chest1_10views") == "chest1_10views"


@pytest.mark.parametrize("k", [0, 1, 4])
def test_bad_k(k):
    with pytest.raises(ValueError, match="folds"):
        kfold_volumes(None, ["a", "b", "a", "c"], k)


@pytest.mark.parametrize("n", [32, 64, 128])
def test_benchmark_train_and_test_regions_never_overlap(n):
    from benchmarks.ct_protocol import BLOCKS
    from benchmarks.prior import block_regions, regions_overlap

    reg = block_regions(n)
    assert regions_overlap(reg["chest0"], reg["chest0"])
    names = list(BLOCKS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not regions_overlap(reg[a], reg[b]), (a, b)
    for k in (2, 4):
        for fold in kfold_volumes(None, names, k):
            assert not any(regions_overlap(reg[t], reg[s]) for t in fold.train for s in fold.test)
