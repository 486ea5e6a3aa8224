"""How far the event study's median can be trusted: a bootstrap interval over the events."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

#: Resamples of the events for :func:`median_interval`.
DEFAULT_INTERVAL_DRAWS = 2_000
#: Coverage of :func:`median_interval`.
DEFAULT_INTERVAL_LEVEL = 0.95


def median_interval(values: ArrayLike, level: float = DEFAULT_INTERVAL_LEVEL, draws: int = DEFAULT_INTERVAL_DRAWS, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of the finite ``values``.

    The events are resampled with replacement ``draws`` times from a fixed seed, and the
    interval is the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the resampled medians.
    The values are sorted first, so the interval depends on the set of values only, never on
    their order: the same events give the same bytes. With 10 events a 95% interval typically
    spans tens of percentage points, which is what one event study on a small population can
    say.

    Arguments:
        values: per-event figures (NaN entries are left out).
        level: coverage, in (0, 1).
        draws: resamples (≥ 1).
        seed: the resampling's seed.

    Returns:
        ``(low, high)``; ``(nan, nan)`` with fewer than two finite values.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws!r}")
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan, math.nan
    picks = np.random.default_rng(seed).integers(0, x.size, size=(draws, x.size))
    medians = np.median(x[picks], axis=1)
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
