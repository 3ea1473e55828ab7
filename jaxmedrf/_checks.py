"""Argument checks shared by the training configurations (NAF, INR, SMORE, registration)."""

from __future__ import annotations

import math


def check_numbers(config, *, positive_ints=(), nonneg_ints=(), positive=(), nonneg=()) -> None:
    """Raise ``ValueError`` naming ``Class.field`` for the first field of ``config`` that is not
    a positive integer / non-negative integer / finite positive / finite non-negative number."""
    prefix = type(config).__name__
    rules = ((positive_ints, lambda v: int(v) == v and v >= 1, "a positive integer"),
             (nonneg_ints, lambda v: int(v) == v and v >= 0, "a non-negative integer"),
             (positive, lambda v: math.isfinite(v) and v > 0, "positive"),
             (nonneg, lambda v: math.isfinite(v) and v >= 0, "non-negative"))  # fmt: skip
    for names, ok, what in rules:
        for name in names:
            v = getattr(config, name)
            if not ok(v):
                raise ValueError(f"{prefix}.{name} must be {what}, got {v!r}")
