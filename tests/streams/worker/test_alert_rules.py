"""Unit tests of the pure alert rules in :mod:`streams.worker.alerts` (no Redis, no Kafka).

Each rule is checked on a case that fires and a near case that does not, with the thresholds
taken from the :class:`~streams.settings.Settings` defaults, on edge inputs (empty, None, NaN,
a single round, ties) and for determinism; every alert built is checked against the published
``alerts.json`` schema after the encoding the worker uses. The t-statistics of the trend cases
are constructed exactly: a straight line plus a residual pattern orthogonal to the constant and
to the round numbers, scaled to give the wanted t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from streams.messages.outputs import encode
from streams.messages.schemas import validate_output
from streams.settings import Settings
from streams.worker import alerts

SETTINGS = Settings()
EDGES: list[float | None] = [0.1 * k for k in range(1, 10)]  # decile d starts at 0.1·(d − 1)
NO_JUMPS = {"median_relative_change": None, "n_events": 0, "n_compared": 0}


def history(values: Sequence[float | None], first_round: int = 1) -> dict[int, dict[str, Any]]:
    return {first_round + i: {"corr_w_mm": v, "stake": 1.0} for i, v in enumerate(values)}


def published(alert: dict[str, Any]) -> dict[str, Any]:
    """The alert as a consumer reads it (encoded as the worker does), checked against its schema."""
    decoded: dict[str, Any] = orjson.loads(encode(alert))
    validate_output("alerts", decoded)
    return decoded


def test_the_thresholds_used_here_are_the_documented_defaults() -> None:
    """The near cases below sit next to these values (DESIGN §3, streams/settings.py)."""
    assert SETTINGS.alert_cwmm_spike_sigmas == 3.0
    assert SETTINGS.alert_cwmm_spike_delta == 0.05
    assert SETTINGS.alert_cwmm_baseline_rounds == 10
    assert SETTINGS.alert_cwmm_penalised_decile == 7
    assert SETTINGS.alert_stake_jump_ratio == 5.0
    assert SETTINGS.alert_trend_rounds == 20
    assert SETTINGS.alert_trend_min_t == 3.0
    assert SETTINGS.alert_trend_min_slope == 0.0
    assert SETTINGS.alert_min_effective_models == 10.0


# --- cwmm_baseline / decile_of / population_decile_mmc -------------------------------------------


def test_baseline_is_mean_and_sample_std_of_the_latest_rounds_before() -> None:
    past = history([0.9] * 5 + [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] + [5.0, 5.0])
    # rounds 1..17; before=16 → the ten rounds 6..15 (0.1 … 1.0); 16 and 17 are not before
    mean, std = alerts.cwmm_baseline(SETTINGS, past, before=16) or (None, None)
    assert mean == pytest.approx(0.55)
    assert std == pytest.approx(float(np.std(np.arange(1, 11) / 10, ddof=1)))


def test_baseline_skips_rounds_without_a_cwmm_and_needs_two() -> None:
    assert alerts.cwmm_baseline(SETTINGS, {}, before=5) is None
    assert alerts.cwmm_baseline(SETTINGS, history([0.3]), before=5) is None
    assert alerts.cwmm_baseline(SETTINGS, history([0.3, None, None]), before=5) is None
    assert alerts.cwmm_baseline(SETTINGS, history([0.2, None, 0.4]), before=5) == pytest.approx((0.3, math.sqrt(0.02)))
    # the latest ten rounds *with* a CWMM: Nones do not use up the window
    past = history([1.0] + [0.3] * 9 + [None] * 5 + [0.3])
    assert alerts.cwmm_baseline(SETTINGS, past, before=100) == pytest.approx((0.3, 0.0))


def test_decile_of_places_edges_in_the_upper_decile_and_ties_together() -> None:
    assert [alerts.decile_of(v, EDGES) for v in (-1.0, 0.0999, 0.1, 0.55, 0.9, 2.0)] == [1, 1, 2, 6, 10, 10]
    tied: list[float | None] = [0.3] * 9  # every model of the round at 0.3
    assert alerts.decile_of(0.3, tied) == 10 and alerts.decile_of(0.29, tied) == 1
    assert alerts.decile_of(0.5, None) is None
    assert alerts.decile_of(0.5, []) is None
    assert alerts.decile_of(0.5, [*EDGES[:8], None]) is None


def test_population_decile_mmc_keeps_the_latest_rounds_up_to_and_skips_gaps() -> None:
    trend: dict[int, dict[str, Any]] = {
        1: {"mmc_mean_by_cwmm_decile": [1.0] * 10},
        2: {"mmc_mean_by_cwmm_decile": [2.0] * 9 + [None]},
        3: {},  # a round without the figure does not use up the window
        4: {"mmc_mean_by_cwmm_decile": [4.0] * 10},
        5: {"mmc_mean_by_cwmm_decile": [100.0] * 10},  # after upto
    }
    out = alerts.population_decile_mmc(trend, upto=4, recent=2)
    assert out[:9] == pytest.approx([3.0] * 9)
    assert out[9] == 4.0  # round 2 has no tenth decile: the mean of what is there
    assert alerts.population_decile_mmc({}, upto=4, recent=2) == [None] * 10
    assert alerts.population_decile_mmc(trend, upto=0, recent=2) == [None] * 10


# --- corr_w_mm_spike: baseline trigger ------------------------------------------------------------

NOISY = [0.2, 0.4] * 5  # mean 0.3, std 0.1054: threshold 0.3 + 3·0.1054 ≈ 0.6162 (> 0.3 + 0.05)


def test_spike_baseline_fires_just_above_the_threshold_and_not_just_below() -> None:
    std = float(np.std(NOISY, ddof=1))
    threshold = 0.3 + 3 * std
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, threshold + 0.002, history(NOISY), None, None)
    assert found is not None
    assert found["kind"] == "corr_w_mm_spike" and found["trigger"] == "baseline" and found["severity"] == "warning"
    assert found["threshold"] == pytest.approx(threshold) and found["baseline"] == pytest.approx(0.3)
    assert found["baseline_std"] == pytest.approx(std) and found["value"] == pytest.approx(threshold + 0.002)
    assert found["stage"] == "close" and found["model"] == "m1" and found["round"] == 11
    assert "3.0 of its own standard deviations" in found["message"]
    published(found)
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, threshold - 0.002, history(NOISY), None, None) is None


def test_spike_baseline_on_a_flat_model_uses_the_minimum_delta_and_no_sigma_count() -> None:
    flat = history([0.25] * 10)  # exactly representable: its std is exactly 0
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, 0.299, flat, None, None) is None
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.301, flat, None, None)
    assert found is not None and found["baseline_std"] == 0.0 and found["threshold"] == pytest.approx(0.30)
    assert "standard deviations" not in found["message"]  # std 0: no division by zero
    published(found)


def test_spike_baseline_is_the_latest_window_not_the_whole_history() -> None:
    """Ten old rounds at 0.8 and the latest ten flat at 0.3: 0.4 is a spike against the latest
    ten (0.3 + 0.05) but not against all twenty (mean 0.55)."""
    past = history([0.8] * 10 + [0.3] * 10)
    found = alerts.cwmm_spike(SETTINGS, "m1", 21, 0.4, past, None, None)
    assert found is not None and found["baseline"] == pytest.approx(0.3)


def test_spike_baseline_ignores_rounds_at_or_after_the_current_one() -> None:
    """A history that already holds this round's and a later round's CWMM (a replay): only the
    rounds before count."""
    past = {**history([0.3] * 10), 11: {"corr_w_mm": 0.9}, 12: {"corr_w_mm": 0.9}}
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.4, past, None, None)
    assert found is not None and found["baseline"] == pytest.approx(0.3)


def test_spike_nothing_without_a_cwmm_or_without_history() -> None:
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, None, history([0.3] * 10), EDGES, EDGES) is None
    assert alerts.cwmm_spike(SETTINGS, "m1", 1, 0.99, {}, EDGES, EDGES) is None  # a first round
    # a single earlier round: no baseline (needs two), and a jump inside the top decile is no entry
    assert alerts.cwmm_spike(SETTINGS, "m1", 2, 0.99, history([0.91]), EDGES, EDGES) is None


# --- corr_w_mm_spike: penalised-deciles trigger -------------------------------------------------


def test_spike_entering_the_penalised_deciles_from_the_previous_round_without_a_baseline() -> None:
    """One earlier round (0.55, decile 6 of its round): 0.61 (decile 7, +0.06) fires with a null
    baseline; 0.59 (decile 6) and 0.58 → 0.61 (+0.03) do not."""
    population: list[float | None] = [0.001 * d for d in range(10)]
    found = alerts.cwmm_spike(SETTINGS, "m1", 2, 0.61, history([0.55]), EDGES, EDGES, stake=12.5, population=population)
    assert found is not None and found["trigger"] == "penalised_deciles" and found["severity"] == "info"
    assert found["baseline"] is None and found["decile"] == 7
    assert found["threshold"] == pytest.approx(0.6)  # the lower edge of decile 7
    assert found["population_mmc"] == pytest.approx(0.006) and found["stake"] == 12.5
    assert "from decile 6" in found["message"]
    published(found)
    assert alerts.cwmm_spike(SETTINGS, "m1", 2, 0.59, history([0.55]), EDGES, EDGES) is None
    assert alerts.cwmm_spike(SETTINGS, "m1", 2, 0.61, history([0.58]), EDGES, EDGES) is None


def test_spike_places_where_the_model_stood_among_the_previous_rounds_deciles() -> None:
    """Same CWMMs, but the previous round's deciles put 0.55 in decile 9: not an entry from below."""
    high_before: list[float | None] = [0.05 * k for k in range(1, 10)]  # 0.55 ≥ 0.45 → decile 10
    assert alerts.decile_of(0.55, high_before) == 10
    assert alerts.cwmm_spike(SETTINGS, "m1", 2, 0.61, history([0.55]), EDGES, high_before) is None
    assert alerts.cwmm_spike(SETTINGS, "m1", 2, 0.61, history([0.55]), EDGES, None) is None


def test_spike_uses_the_baseline_rather_than_last_round_once_it_has_one() -> None:
    """Baseline 0.55 (decile 6, noisy so no baseline spike); the last round alone was 0.69
    (decile 7). 0.75 counts as an entry from decile 6; against the last round it would not."""
    past = history([0.40, 0.56, 0.69])  # mean 0.55
    found = alerts.cwmm_spike(SETTINGS, "m1", 4, 0.75, past, EDGES, EDGES)
    assert found is not None and found["trigger"] == "penalised_deciles"
    assert found["baseline"] == pytest.approx(0.55) and "from decile 6" in found["message"]


def test_spike_when_both_triggers_hold_the_baseline_one_is_reported() -> None:
    past = history([0.30] * 10)  # flat, decile 4: threshold 0.35
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.75, past, EDGES, EDGES, stake=3.0, population=[0.0] * 10)
    assert found is not None and found["trigger"] == "baseline" and found["decile"] == 8
    published(found)


def test_spike_context_is_null_when_the_round_deciles_are_unknown() -> None:
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.75, history([0.30] * 10), None, None, population=[0.01] * 10)
    assert found is not None
    assert (found["decile"], found["population_mmc"], found["stake"]) == (None, None, None)
    published(found)


def test_spike_live_stage_is_carried_and_valid() -> None:
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.75, history([0.30] * 10), None, None, stage="live")
    assert found is not None and found["stage"] == "live" and found["day"] is None
    published(found)


def test_spike_is_deterministic() -> None:
    args = (SETTINGS, "m1", 4, 0.75, history([0.40, 0.56, 0.69]), EDGES, EDGES)
    first, second = alerts.cwmm_spike(*args, stake=1.0), alerts.cwmm_spike(*args, stake=1.0)
    assert first is not None and second is not None and encode(first) == encode(second)


# --- crowding_tax ---------------------------------------------------------------------------------


def test_crowding_tax_fires_at_five_times_and_not_just_below() -> None:
    found = alerts.crowding_tax(SETTINGS, "m1", 9, 500.0, 100.0, NO_JUMPS, day=3)
    assert found is not None and found["kind"] == "crowding_tax"
    assert found["value"] == pytest.approx(5.0) and found["threshold"] == 5.0
    assert (found["stake"], found["previous_stake"], found["day"]) == (500.0, 100.0, 3)
    assert "own_forecast" not in found and "no earlier jumps" in found["message"]
    published(found)
    assert alerts.crowding_tax(SETTINGS, "m1", 9, 499.0, 100.0, NO_JUMPS) is None


def test_crowding_tax_needs_a_positive_previous_stake() -> None:
    for previous in (None, 0.0, -1.0):
        assert alerts.crowding_tax(SETTINGS, "m1", 9, 500.0, previous, NO_JUMPS) is None


def test_crowding_tax_carries_forecast_and_population_change() -> None:
    population = {"median_relative_change": -0.375, "n_events": 12, "n_compared": 8}
    forecast = {"contribution_at_new_stake": 0.004, "contribution_at_old_stake": 0.0065, "tax": -0.0025}
    found = alerts.crowding_tax(SETTINGS, "m1", 9, 1000.0, 100.0, population, forecast=forecast)
    assert found is not None and found["own_forecast"] == forecast and found["population"] == population
    assert "-38% over 8 events" in found["message"] and "tax -0.0025" in found["message"]
    assert found["value"] == pytest.approx(10.0)
    published(found)
    # a forecast without a tax (a metric undefined) is attached but not quoted
    blank = {"contribution_at_new_stake": None, "contribution_at_old_stake": None, "tax": None}
    found = alerts.crowding_tax(SETTINGS, "m1", 9, 1000.0, 100.0, population, forecast=blank)
    assert found is not None and "tax" not in found["message"]
    published(found)


# --- slope_t / crowding_trend ---------------------------------------------------------------------

ROUNDS = [float(r) for r in range(1, 21)]
# ±1 in blocks of (+, −, −, +): sums to 0 and is orthogonal to any run of consecutive rounds.
PATTERN = np.array([1.0, -1.0, -1.0, 1.0] * 5)
SXX = float(np.sum((np.arange(1, 21) - 10.5) ** 2))  # 665


def line(slope: float, t: float, level: float = 0.3) -> list[float]:
    """``level + slope·round`` plus a residual scaled so that its least-squares fit has t-statistic ``t``."""
    scale = slope * math.sqrt(SXX * 18 / 20) / t
    return list(level + slope * np.arange(1, 21) + scale * PATTERN)


def trend_of(weighted: Sequence[float | None], median: Sequence[float | None], rounds: list[int] | None = None) -> dict[str, Any]:
    return {"rounds": rounds or list(range(1, len(weighted) + 1)), "stake_weighted_cwmm": list(weighted), "median_cwmm": list(median)}


def test_slope_t_of_a_constructed_line() -> None:
    fit = alerts.slope_t(ROUNDS, line(0.004, 3.5))
    assert fit is not None
    assert fit[0] == pytest.approx(0.004) and fit[1] == pytest.approx(3.5)


def test_slope_t_edge_cases() -> None:
    assert alerts.slope_t([], []) is None
    assert alerts.slope_t([1, 2], [0.1, 0.2]) is None
    assert alerts.slope_t([5, 5, 5], [0.1, 0.2, 0.3]) is None  # no spread in x
    # a perfect fit (exactly representable, so the residuals are exactly 0) has an infinite t
    assert alerts.slope_t([1, 2, 3], [0.25, 0.5, 0.75]) == (0.25, math.inf)
    assert alerts.slope_t([1, 2, 3], [3.0, 2.0, 1.0]) == (-1.0, -math.inf)
    assert alerts.slope_t([1, 2, 3], [0.5, 0.5, 0.5]) == (0.0, 0.0)


def test_trend_fires_at_t_just_above_the_threshold_and_not_just_below() -> None:
    median = [0.25] * 20  # flat median: the gap has the same slope and t as the weighted series
    found = alerts.crowding_trend(SETTINGS, 20, trend_of(line(0.004, 3.05), median), day=1)
    assert found is not None and found["kind"] == "crowding_trend" and found["model"] is None
    assert found["trigger"] == "stake_weighted+gap"
    assert found["weighted_t"] == pytest.approx(3.05) and found["gap_t"] == pytest.approx(3.05)
    assert found["weighted_slope"] == pytest.approx(0.004) and found["value"] == pytest.approx(0.004)
    assert found["threshold"] == 3.0 and found["window"] == [1, 20] and found["day"] == 1
    published(found)
    assert alerts.crowding_trend(SETTINGS, 20, trend_of(line(0.004, 2.95), median)) is None


def test_trend_gap_alone() -> None:
    """The stake-weighted CWMM is flat and noisy, the median falls: only the gap rises."""
    weighted = list(0.4 + 0.01 * PATTERN)
    median = [w - g for w, g in zip(weighted, line(0.004, 4.0, level=0.1), strict=True)]  # gap = the line
    found = alerts.crowding_trend(SETTINGS, 20, trend_of(weighted, median))
    assert found is not None and found["trigger"] == "gap"
    assert found["gap_t"] == pytest.approx(4.0) and found["weighted_slope"] == pytest.approx(0.0, abs=1e-12)
    published(found)


def test_trend_stake_weighted_alone() -> None:
    """Both rise together: the gap has no slope, only the stake-weighted trigger fires."""
    weighted = line(0.004, 4.0)
    median = [w - 0.05 + 0.02 * p for w, p in zip(weighted, PATTERN, strict=True)]
    found = alerts.crowding_trend(SETTINGS, 20, trend_of(weighted, median))
    assert found is not None and found["trigger"] == "stake_weighted"
    published(found)


def test_trend_is_one_sided_and_respects_the_minimum_slope() -> None:
    falling = [0.6 - 0.01 * r for r in ROUNDS]
    assert alerts.crowding_trend(SETTINGS, 20, trend_of(falling, [0.25] * 20)) is None
    strict = Settings(alert_trend_min_slope=0.005)
    assert alerts.crowding_trend(strict, 20, trend_of(line(0.004, 10.0), [0.25] * 20)) is None
    assert alerts.crowding_trend(strict, 20, trend_of(line(0.006, 10.0), [0.25] * 20)) is not None


def test_trend_uses_only_the_latest_window_of_rounds_with_both_figures() -> None:
    """A steep rise in rounds 1–10 followed by 20 flat noisy rounds: the latest 20 do not rise."""
    early = [0.1 + 0.03 * r for r in range(1, 11)]
    flat = list(0.5 + 0.01 * PATTERN)
    assert alerts.crowding_trend(SETTINGS, 30, trend_of(early + flat, [0.25] * 30)) is None
    # rounds missing a figure are skipped, not counted: 20 rising rounds with 3 gaps still fire
    rising: list[float | None] = list(line(0.004, 5.0))
    median: list[float | None] = [0.25] * 20
    for at in (5, 10, 15):
        rising.insert(at, None)
        median.insert(at, 0.25)
    found = alerts.crowding_trend(SETTINGS, 23, trend_of(rising, median))
    assert found is not None and found["window"] == [1, 23]
    # …but 19 rounds with both figures are not a window
    assert alerts.crowding_trend(SETTINGS, 23, trend_of([None, *rising[1:]], median)) is None


def test_trend_slope_is_per_round_number_not_per_entry() -> None:
    """Rounds 2, 4, … 40: the same values rise half as fast per round."""
    found = alerts.crowding_trend(SETTINGS, 40, trend_of(line(0.004, 5.0), [0.25] * 20, rounds=[2 * r for r in range(1, 21)]))
    assert found is not None and found["weighted_slope"] == pytest.approx(0.002) and found["window"] == [2, 40]
    assert found["weighted_t"] == pytest.approx(5.0)  # t does not depend on the x scale


def test_trend_perfect_fit_publishes_null_t() -> None:
    perfect = [0.25 + r / 512 for r in ROUNDS]  # exactly representable: residuals exactly 0
    found = alerts.crowding_trend(SETTINGS, 20, trend_of(perfect, [0.25] * 20))
    assert found is not None and found["weighted_t"] is None and found["gap_t"] is None
    assert "∞" in found["message"]
    published(found)


def test_trend_nothing_on_empty_or_short_input() -> None:
    assert alerts.crowding_trend(SETTINGS, 1, {}) is None
    assert alerts.crowding_trend(SETTINGS, 1, trend_of([0.3], [0.2])) is None
    assert alerts.crowding_trend(SETTINGS, 19, trend_of(line(0.004, 10.0)[:19], [0.25] * 19)) is None


def test_trend_is_deterministic() -> None:
    data = trend_of(line(0.004, 3.5), [0.25] * 20)
    first, second = alerts.crowding_trend(SETTINGS, 20, data), alerts.crowding_trend(SETTINGS, 20, data)
    assert first is not None and second is not None and encode(first) == encode(second)


# --- concentration --------------------------------------------------------------------------------


def test_concentration_fires_below_the_threshold_only() -> None:
    found = alerts.concentration(SETTINGS, 7, 9.99, day=20)
    assert found is not None and found["kind"] == "concentration" and found["model"] is None
    assert (found["value"], found["threshold"], found["round"], found["day"]) == (9.99, 10.0, 7, 20)
    assert "10.0 models" in found["message"]  # 9.99 to one decimal
    published(found)
    assert alerts.concentration(SETTINGS, 7, 10.0) is None
    assert alerts.concentration(SETTINGS, 7, 250.0) is None
    assert alerts.concentration(SETTINGS, 7, None) is None


def test_nan_figures_raise_no_alert() -> None:
    assert alerts.concentration(SETTINGS, 7, float("nan")) is None
    assert alerts.crowding_tax(SETTINGS, "m1", 9, float("nan"), 100.0, NO_JUMPS) is None


def test_concentration_fires_for_a_round_without_stake() -> None:
    assert alerts.concentration(SETTINGS, 7, 0.0) is not None


def test_a_line_that_is_not_exactly_representable_is_still_a_perfect_fit() -> None:
    """0.1, 0.2, 0.3 … leave residuals of rounding only: the t-statistic is infinite (published as null)."""
    fit = alerts.slope_t([1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4])
    assert fit is not None and fit[1] == np.inf


def test_a_flat_cwmm_history_has_no_spread() -> None:
    """Ten rounds at exactly 0.3 average with a rounding spread of ~6e-17: the baseline says 0, so
    the spike is judged by the minimum jump, not in 1e15 of its own standard deviations."""
    baseline = alerts.cwmm_baseline(SETTINGS, {r: {"corr_w_mm": 0.3} for r in range(1, 11)}, 11)
    assert baseline is not None and baseline[1] == 0.0
