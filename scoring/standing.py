"""A model's standing over a window of rounds: what a staker decides from (pure Python floats, no I/O).

Each function takes the window's payout scores in round order (one per round with a payout;
rounds without one are left out by the caller) and, for :func:`stake_payout`, the stake each
round was weighted with. Sums are ``math.fsum`` (correctly rounded, independent of order), so
the same window gives the same bits in every process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scoring.errors import ShapeMismatch

#: Fewer rounds than this leave the standard deviation (n − 1 denominator) and the Sharpe undefined.
MIN_ROUNDS_FOR_SPREAD = 2


def window_mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean ``Σ x / n``; None for an empty window."""
    return math.fsum(values) / len(values) if values else None


def window_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation ``sqrt(Σ (x − mean)² / (n − 1))``.

    Returns:
        None with fewer than 2 values; exactly 0.0 when every value is equal.
    """
    if len(values) < MIN_ROUNDS_FOR_SPREAD:
        return None
    if min(values) == max(values):
        return 0.0
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (len(values) - 1))


def sharpe(values: Sequence[float]) -> float | None:
    """``mean / std`` per round (not annualised); None with fewer than 2 values or when std is 0."""
    std = window_std(values)
    if std is None or std == 0.0:
        return None
    return math.fsum(values) / len(values) / std


def max_drawdown(values: Sequence[float]) -> float | None:
    """Largest fall of the cumulative score from a running peak, as a non-negative number.

    1. cumulative sums ``C_0 = 0, C_k = x_1 + … + x_k`` (the walk starts at 0, so a first
       negative round is already a drawdown);
    2. ``drawdown = max_k (max_{j ≤ k} C_j − C_k)``.

    Returns:
        0.0 when the cumulative score never falls; None for an empty window.
    """
    if not values:
        return None
    peak = total = worst = 0.0
    seen: list[float] = []
    for x in values:
        seen.append(x)
        total = math.fsum(seen)
        peak = max(peak, total)
        worst = max(worst, peak - total)
    return worst


def positive_rounds(values: Sequence[float]) -> int:
    """How many rounds have a payout score strictly above 0."""
    return sum(1 for x in values if x > 0)


def stake_payout(stakes: Sequence[float], values: Sequence[float]) -> float:
    """``Σ stake_r × payout_r``: the payout in stake terms (NMR) over the window; 0.0 for an empty one.

    Raises:
        ShapeMismatch: when the two sequences differ in length.
    """
    if len(stakes) != len(values):
        raise ShapeMismatch(f"{len(stakes)} stakes for {len(values)} payout scores")
    return math.fsum(s * x for s, x in zip(stakes, values, strict=True))
