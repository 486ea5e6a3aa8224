"""Alert rules on the article's scale: each fires on a constructed case and stays (almost) silent
on a noise-only season of the same length; the false-positive rates are measured and printed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streams import alerts
from streams.settings import Settings

SETTINGS = Settings()
SEASONS = 2000


def history(values: list[float], first_round: int = 1) -> dict[int, dict[str, Any]]:
    return {first_round + i: {"corr_w_mm": v, "stake": 1.0} for i, v in enumerate(values)}


def trend(weighted: list[float], median: list[float]) -> dict[str, Any]:
    return {"rounds": list(range(1, len(weighted) + 1)), "stake_weighted_cwmm": weighted, "median_cwmm": median}


def test_slope_t_of_a_hand_computed_line() -> None:
    """y = 2x + noise (±1 alternating) on x = 1..4: slope 1.8 by hand, t = 1.8 / sqrt(Σr²/(n−2)/Sxx)."""
    fit = alerts.slope_t([1, 2, 3, 4], [3.0, 3.0, 7.0, 7.0])
    assert fit is not None
    slope, t = fit
    assert slope == pytest.approx(1.6)  # Sxy = 8, Sxx = 5
    residuals = np.array([3, 3, 7, 7]) - (5 + 1.6 * (np.array([1, 2, 3, 4]) - 2.5))
    assert t == pytest.approx(1.6 / np.sqrt(residuals @ residuals / 2 / 5))
    assert alerts.slope_t([1, 2], [1, 2]) is None


def test_spike_fires_on_a_jump_of_several_own_deviations() -> None:
    """Baseline 0.30 ± ~0.02 over ten rounds; 0.45 in round 11 fires with trigger baseline."""
    rng = np.random.default_rng(1)
    past = list(0.30 + 0.02 * rng.standard_normal(10))
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.45, history(past), None, None)
    assert found is not None and found["trigger"] == "baseline" and found["threshold"] < 0.45
    assert found["baseline"] == pytest.approx(np.mean(past)) and found["baseline_std"] == pytest.approx(np.std(past, ddof=1))


def test_spike_needs_the_minimum_jump_even_for_a_flat_model() -> None:
    """A model whose CWMM never moved: +0.01 is not a spike (MMC_ALERT_CWMM_SPIKE_DELTA 0.05), +0.06 is."""
    flat = history([0.3] * 10)
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, 0.31, flat, None, None) is None
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, 0.36, flat, None, None) is not None


def test_spike_false_positive_rate_on_noise_only_seasons() -> None:
    """Models whose CWMM is i.i.d. noise (0.30 ± 0.05) for 30 rounds: the share of model-rounds
    that fire (baseline trigger) stays near the rule's nominal rate, well under 1.5%."""
    rng = np.random.default_rng(7)
    fired = checked = 0
    for _ in range(SEASONS // 4):
        values = list(0.30 + 0.05 * rng.standard_normal(30))
        past = history(values)
        for r in range(SETTINGS.alert_cwmm_baseline_rounds + 1, 31):
            checked += 1
            fired += alerts.cwmm_spike(SETTINGS, "m", r, values[r - 1], {k: v for k, v in past.items() if k < r}, None, None) is not None
    rate = fired / checked
    print(f"corr_w_mm_spike false positives on noise: {rate:.2%} of {checked:,} model-rounds")
    assert rate < 0.015


def test_trend_fires_on_the_article_signal_in_a_noisy_season() -> None:
    """Stake-weighted CWMM rising 0.004 per round and its gap over the median widening, with
    ±0.01 noise per round, over 20 rounds: fires, names both triggers, says the % change."""
    rng = np.random.default_rng(3)
    x = np.arange(20)
    weighted = list(0.32 + 0.004 * x + 0.01 * rng.standard_normal(20))
    median = list(0.25 + 0.001 * x + 0.01 * rng.standard_normal(20))
    found = alerts.crowding_trend(SETTINGS, 20, trend(weighted, median))
    assert found is not None and found["trigger"] == "stake_weighted+gap"
    assert found["weighted_t"] >= SETTINGS.alert_trend_min_t and found["window"] == [1, 20]
    assert "%" in found["message"]


def test_trend_needs_the_whole_window() -> None:
    """19 rounds of a perfect rise are not enough for a 20-round window."""
    rising = [0.3 + 0.01 * i for i in range(19)]
    assert alerts.crowding_trend(SETTINGS, 19, trend(rising, [0.25] * 19)) is None


def test_trend_false_positive_rate_on_noise_only_seasons() -> None:
    """Flat series with ±0.01 noise, 40 rounds, the rule checked at every round from the 20th:
    the share of checks that fire stays under 2% (two one-sided tests at p ≈ 0.004 each)."""
    rng = np.random.default_rng(11)
    fired = checked = 0
    for _ in range(SEASONS // 10):
        weighted = list(0.40 + 0.01 * rng.standard_normal(40))
        median = list(0.30 + 0.01 * rng.standard_normal(40))
        for r in range(20, 41):
            checked += 1
            fired += alerts.crowding_trend(SETTINGS, r, trend(weighted[:r], median[:r])) is not None
    rate = fired / checked
    print(f"crowding_trend false positives on noise: {rate:.2%} of {checked:,} round checks")
    assert rate < 0.02
