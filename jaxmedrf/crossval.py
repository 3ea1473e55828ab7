"""Patient-level cross-validation: K folds over *volumes*, never over slices.

A learned model (e.g. the denoising prior of :mod:`jaxmedrf.priors`) and its evaluation must
never share a patient: slices or patches of one volume are strongly correlated, and a split
by slice reports the memorised anatomy, not the method (Roberts et al., "Cross-validation
strategies for data with temporal, spatial, hierarchical, or phylogenetic structure",
Ecography 40, 2017; Kapoor & Narayanan, "Leakage and the reproducibility crisis in
machine-learning-based science", Patterns 4, 2023). Here every *group* (patient, or a
non-overlapping region of one patient's scan) is tested exactly once and is never on the
training side of its own fold.

Group names: a case name ``"<group>__<rest>"`` (two underscores) belongs to ``<group>``
(:func:`group_of`), so that several scans of one volume (e.g. ``chest1__10views`` and
``chest1__25views``) fall into the same fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Fold", "GROUP_SEP", "group_of", "kfold_volumes"]

GROUP_SEP = "__"


class Fold(NamedTuple):
    """One fold: the groups to train on and the groups to test on (disjoint, sorted)."""

    train: tuple[str, ...]
    test: tuple[str, ...]


def group_of(name: str) -> str:
    """The volume (patient) a case name belongs to: the part before ``"__"``, else the name."""
    return name.split(GROUP_SEP, 1)[0]


def kfold_volumes(key, ids: Sequence[str], k: int) -> tuple[Fold, ...]:
    """K folds over the distinct volumes in ``ids``: each is tested once, trained on K − 1 times.

    Repeated ids (several cases of one volume) count once: a volume is never split. Volumes
    are dealt round-robin into ``k`` folds of sizes differing by at most one, after a
    shuffle by ``key`` (a JAX PRNG key) or, with ``key=None``, in sorted order (deterministic).

    Args:
      key: PRNG key for the shuffle, or ``None``.
      ids: volume (patient) ids, e.g. ``[group_of(n) for n in case_names]``.
      k: number of folds, 2 ≤ k ≤ number of distinct volumes (k = that number: leave one out).

    Returns:
      ``k`` :class:`Fold`\\ s; fold ``i``'s ``test`` holds the volumes dealt to it, its
      ``train`` all the others.

    Raises:
      ValueError: ``k`` out of range.
    """
    groups = sorted(set(str(i) for i in ids))
    if int(k) != k or not 2 <= k <= len(groups):
        raise ValueError(f"folds must be an integer in [2, {len(groups)}] (the number of distinct volumes), got {k!r}")
    k = int(k)
    order = np.arange(len(groups))
    if key is not None:
        import jax

        order = np.asarray(jax.random.permutation(key, len(groups)))
    dealt = [[] for _ in range(k)]
    for pos, gi in enumerate(order):
        dealt[pos % k].append(groups[gi])
    folds = []
    for i in range(k):
        test = tuple(sorted(dealt[i]))
        folds.append(Fold(tuple(g for g in groups if g not in test), test))
    return tuple(folds)
