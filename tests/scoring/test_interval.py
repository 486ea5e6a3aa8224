"""The event study median's bootstrap interval (scoring.crowding.interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring.crowding.interval import median_interval


def test_the_interval_holds_the_median_and_narrows_with_more_events() -> None:
    """Drawn from one distribution, 10 events give a wider interval than 200, each holding the
    sample's median; the interval's width is about what the median's spread is across samples."""
    rng = np.random.default_rng(1)
    few = rng.normal(-0.4, 0.5, 10)
    many = rng.normal(-0.4, 0.5, 200)
    lo_few, hi_few = median_interval(few)
    lo_many, hi_many = median_interval(many)
    assert lo_few <= np.median(few) <= hi_few
    assert lo_many <= np.median(many) <= hi_many
    assert hi_many - lo_many < (hi_few - lo_few) / 2
    # The median of 200 draws of N(−0.4, 0.5) has a standard deviation of ~1.25·0.5/√200 = 0.044:
    # a 95% interval of ~0.17.
    assert 0.10 < hi_many - lo_many < 0.26


def test_the_interval_covers_the_true_median_about_as_often_as_it_says() -> None:
    """Over 200 samples of 15 events, the 95% interval holds the true median in 88–99% of them."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(200):
        low, high = median_interval(rng.normal(-0.4, 0.5, 15), draws=500)
        hits += low <= -0.4 <= high
    assert 176 <= hits <= 198


def test_the_same_events_in_any_order_give_the_same_bytes() -> None:
    """The interval depends on the set of values only (NaN left out), not on their order."""
    rng = np.random.default_rng(3)
    values = rng.normal(-0.4, 0.5, 12)
    expected = median_interval(values)
    for _ in range(5):
        shuffled = np.concatenate([rng.permutation(values), [math.nan]])
        assert median_interval(shuffled) == expected


def test_edge_cases() -> None:
    """Equal values give a point; fewer than two values give NaN; bad arguments raise."""
    assert median_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert all(math.isnan(x) for x in median_interval([0.2]))
    assert all(math.isnan(x) for x in median_interval([math.nan, math.nan]))
    for kwargs in ({"level": 0.0}, {"level": 1.0}, {"draws": 0}):
        with pytest.raises(ValueError):
            median_interval([0.1, 0.2], **kwargs)
