"""benchmarks/cyclegan.py's slice splits: disjoint sets; ``chunks`` samples the whole scan in each
set, ``halves`` holds out the middle."""

import numpy as np
import pytest

from benchmarks.cyclegan import split


def _ids(x):
    return set(x[:, 0, 0].astype(int).tolist())


@pytest.mark.parametrize("n", [100, 133])
def test_splits_are_disjoint_and_cover_the_scan(n):
    ct = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 2, 2))
    for how in ("chunks", "halves"):
        a, b, t = (_ids(s) for s in split(ct, how))
        assert not (a & b or a & t or b & t) and a | b | t == set(range(n)), how
    a, b, t = (_ids(s) for s in split(ct, "chunks"))
    # runs of 8 dealt A, B, A, B, test: every set has slices from the first and the last third
    assert all(min(s) < n / 3 and max(s) > 2 * n / 3 for s in (a, b, t))
    assert {i // 8 % 5 for i in a} == {0, 2} and {i // 8 % 5 for i in b} == {1, 3} and {i // 8 % 5 for i in t} == {4}
    a, b, t = (_ids(s) for s in split(ct, "halves"))
    assert max(a) < min(t) and max(t) < min(b)
    with pytest.raises(ValueError, match="split"):
        split(ct, "random")
