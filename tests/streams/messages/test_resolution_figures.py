"""Unit tests of :mod:`streams.messages.resolution`'s pure helpers: percentiles, the payout score, the
per-model score values, the rolling leaderboard standing, the CWMM decile edges, a round's
crowding figures and their trend across rounds — against hand-computed values, on edge inputs
(empty, NaN/None, a single round or model, ties) and for determinism. No Redis, no Kafka.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import scoring
from streams.messages.outputs import encode
from streams.messages.resolution import (
    METRICS,
    cwmm_decile_edges,
    history_entry,
    payout,
    percentiles,
    round_figures,
    score_messages,
    standing,
    standing_score,
    trend_figures,
)
from streams.settings import Settings

SETTINGS = Settings()
AS_OF = {"round": 30, "day": 20, "final": True}
NAN = np.nan


def round_scores(corr: list[float], mmc: list[float], contribution: list[float], cwmm: list[float]) -> scoring.RoundScores:
    return scoring.RoundScores(
        corr=np.array(corr, dtype=float),
        mmc=np.array(mmc, dtype=float),
        contribution=np.array(contribution, dtype=float),
        corr_w_mm=np.array(cwmm, dtype=float),
        meta_model=np.zeros(4),
        n_ids_scored=4,
        n_ids_missing=1,
    )


# --- percentiles / payout -------------------------------------------------------------------------


def test_percentiles_are_tie_kept_uniform_ranks_among_finite_values() -> None:
    got = percentiles(np.array([0.2, NAN, 0.1, 0.2, 0.5]))
    # finite: 0.1 → rank 1, the two 0.2 → 2.5, 0.5 → 4; (rank − 0.5) / 4
    np.testing.assert_array_equal(got, [0.5, NAN, 0.125, 0.5, 0.875])


def test_percentiles_edge_cases() -> None:
    np.testing.assert_array_equal(percentiles(np.array([NAN, 0.3])), [NAN, 0.5])  # one value: the middle
    np.testing.assert_array_equal(percentiles(np.array([NAN, NAN])), [NAN, NAN])
    assert percentiles(np.array([])).shape == (0,)
    np.testing.assert_array_equal(percentiles(np.array([1.0, 1.0, 1.0])), [0.5, 0.5, 0.5])  # all tied
    np.testing.assert_array_equal(percentiles(np.array([np.inf, 0.0, 1.0])), [NAN, 0.25, 0.75])  # inf is not a value
    assert ((percentiles(np.arange(100.0)) > 0) & (percentiles(np.arange(100.0)) < 1)).all()


def test_payout_is_half_corr_plus_twice_contribution_clipped() -> None:
    corr = np.array([0.02, 0.02, 0.2, -0.2, NAN])
    contribution = np.array([0.005, -0.005, 0.0, 0.0, 0.01])
    np.testing.assert_allclose(payout(SETTINGS, corr, contribution)[:4], [0.02, 0.0, 0.05, -0.05], atol=1e-15)
    assert np.isnan(payout(SETTINGS, corr, contribution)[4])
    custom = Settings(payout_corr_multiplier=1.0, payout_mmc_multiplier=3.0, payout_clip=0.1)
    np.testing.assert_allclose(payout(custom, np.array([0.02]), np.array([0.01])), [0.05])


# --- score_messages / history_entry ---------------------------------------------------------------


def test_score_messages_one_per_model_in_order_with_nan_as_none() -> None:
    scores = round_scores([0.02, NAN, -0.01], [0.01, NAN, 0.0], [0.005, NAN, -0.002], [0.4, NAN, 0.6])
    messages = score_messages(SETTINGS, 812, 3, False, ["b", "a", "c"], np.array([5.0, 0.0, 1.5]), scores)
    assert [m["model"] for m in messages] == ["b", "a", "c"]
    first, missing, last = messages
    assert (first["round"], first["day"], first["final"], first["stake"]) == (812, 3, False, 5.0)
    assert first["payout"] == pytest.approx(0.5 * 0.02 + 2 * 0.005)  # today's MMC, not the 2020 one
    assert first["percentiles"]["corr"] == 0.75 and last["percentiles"]["corr"] == 0.25
    assert first["percentiles"]["corr_w_mm"] == 0.25 and last["percentiles"]["corr_w_mm"] == 0.75
    assert all(missing[name] is None and missing["percentiles"][name] is None for name in METRICS)
    assert (first["n_ids_scored"], first["n_ids_missing"]) == (4, 1)
    assert isinstance(first["stake"], float) and isinstance(first["corr"], float)


def test_score_messages_of_a_single_model_round() -> None:
    (msg,) = score_messages(SETTINGS, 1, 1, True, ["solo"], np.array([1.0]), round_scores([0.01], [0.0], [0.0], [1.0]))
    assert msg["percentiles"] == {name: 0.5 for name in METRICS}


def test_score_messages_of_an_empty_round() -> None:
    assert score_messages(SETTINGS, 1, 1, True, [], np.array([]), round_scores([], [], [], [])) == []


def test_history_entry_keeps_the_update_and_the_metrics_only() -> None:
    scores = round_scores([0.02], [0.01], [0.005], [0.4])
    (msg,) = score_messages(SETTINGS, 9, 4, True, ["m"], np.array([2.0]), scores)
    entry = history_entry(msg)
    assert set(entry) == {"round", "day", "final", "stake", "corr", "mmc", "contribution", "corr_w_mm", "payout"}
    assert entry["payout"] == msg["payout"] and entry["stake"] == 2.0


# --- standing / standing_score ---------------------------------------------------------------------


def entry(r: int, payout_value: float | None, stake: float = 1.0, **metrics: float | None) -> dict[str, Any]:
    base: dict[str, Any] = {"round": r, "day": 20, "final": True, "stake": stake, "corr": 0.0, "mmc": 0.0, "contribution": 0.0, "corr_w_mm": 0.5}
    return {**base, **metrics, "payout": payout_value}


def test_standing_covers_the_latest_window_of_rounds() -> None:
    history = {r: entry(r, payout_value=float(r), stake=float(r)) for r in range(1, 31)}
    row = standing(SETTINGS, "m1", history, AS_OF)
    assert row["window"] == 20 and row["rounds"] == 20 and (row["first_round"], row["last_round"]) == (11, 30)
    assert row["payout_mean"] == pytest.approx(np.mean(range(11, 31)))
    assert row["stake"] == 30.0 and row["as_of"] == AS_OF and row["model"] == "m1"


def test_standing_orders_rounds_by_number_not_by_insertion() -> None:
    history = {r: entry(r, payout_value=float(r), stake=float(r)) for r in (30, 2, 17, 5)}
    row = standing(Settings(leaderboard_window=2), "m1", history, AS_OF)
    assert (row["first_round"], row["last_round"], row["stake"]) == (17, 30, 30.0)
    assert row["payout_mean"] == pytest.approx(23.5)


def test_standing_means_skip_missing_values_and_are_correctly_rounded() -> None:
    history = {r: entry(r, payout_value=0.1, mmc=None if r % 2 else 0.3) for r in range(1, 11)}
    row = standing(SETTINGS, "m1", history, AS_OF)
    assert row["payout_mean"] == 0.1  # fsum: exactly 0.1 (a plain running sum gives 0.09999999999999999)
    assert row["mmc_mean"] == pytest.approx(0.3)  # the five rounds with a value
    none = standing(SETTINGS, "m1", {r: entry(r, payout_value=None) for r in (1, 2)}, AS_OF)
    assert none["payout_mean"] is None and none["rounds"] == 2


def test_standing_of_a_single_round_and_of_no_rounds() -> None:
    one = standing(SETTINGS, "m1", {7: entry(7, payout_value=0.02, stake=4.0, corr=0.01)}, AS_OF)
    assert (one["rounds"], one["first_round"], one["last_round"]) == (1, 7, 7)
    assert (one["payout_mean"], one["corr_mean"], one["stake"]) == (0.02, 0.01, 4.0)
    empty = standing(SETTINGS, "m1", {}, AS_OF)
    assert (empty["rounds"], empty["first_round"], empty["last_round"], empty["stake"]) == (0, None, None, 0.0)
    assert all(empty[f"{name}_mean"] is None for name in METRICS)


def test_standing_is_independent_of_history_order_to_the_bit() -> None:
    rng = np.random.default_rng(3)
    values = [float(v) for v in rng.normal(0, 0.03, 20)]
    forward = {r: entry(r, payout_value=values[r - 1]) for r in range(1, 21)}
    backward = {r: forward[r] for r in reversed(range(1, 21))}
    assert encode(standing(SETTINGS, "m1", forward, AS_OF)) == encode(standing(SETTINGS, "m1", backward, AS_OF))


def test_standing_carries_the_window_payout_statistics() -> None:
    """Std, Sharpe, drawdown, positive rounds and Σ stake × payout over the window, skipping rounds without a payout."""
    payouts = {1: 0.02, 2: -0.01, 3: None, 4: -0.03, 5: 0.04}
    stakes = {1: 100.0, 2: 100.0, 3: 50.0, 4: 200.0, 5: 10.0}
    history = {r: entry(r, payout_value=p, stake=stakes[r]) for r, p in payouts.items()}
    row = standing(SETTINGS, "m1", history, AS_OF)
    values = np.array([0.02, -0.01, -0.03, 0.04])
    assert row["payout_std"] == pytest.approx(values.std(ddof=1), abs=1e-15)
    assert row["payout_sharpe"] == pytest.approx(values.mean() / values.std(ddof=1), rel=1e-12)
    assert row["payout_max_drawdown"] == pytest.approx(0.04, abs=1e-15)  # walk 0, .02, .01, −.02, .02
    assert row["positive_rounds"] == 2
    assert row["stake_payout"] == pytest.approx(100 * 0.02 - 100 * 0.01 - 200 * 0.03 + 10 * 0.04, abs=1e-12)
    one = standing(SETTINGS, "m1", {7: entry(7, payout_value=0.02, stake=4.0)}, AS_OF)
    assert (one["payout_std"], one["payout_sharpe"], one["payout_max_drawdown"], one["positive_rounds"]) == (None, None, 0.0, 1)
    empty = standing(SETTINGS, "m1", {}, AS_OF)
    assert (empty["payout_max_drawdown"], empty["positive_rounds"], empty["stake_payout"]) == (None, 0, 0.0)


def test_standing_score_orders_by_payout_mean_with_missing_last() -> None:
    rows: list[dict[str, Any]] = [{"payout_mean": 0.01}, {"payout_mean": None}, {"payout_mean": -0.05}, {}]
    scores = [standing_score(r) for r in rows]
    assert scores[0] > scores[2] > scores[1] and scores[1] == scores[3]
    assert standing_score({"payout_mean": -0.05}) > standing_score({"payout_mean": None})


# --- cwmm_decile_edges -------------------------------------------------------------------------


def test_cwmm_decile_edges_are_the_10th_to_90th_percentiles_ignoring_nan() -> None:
    cwmm = np.array([*np.arange(0.0, 1.01, 0.1), NAN])  # 0.0 … 1.0 and a NaN
    assert cwmm_decile_edges(cwmm) == pytest.approx([0.1 * k for k in range(1, 10)])
    assert cwmm_decile_edges(np.array([NAN, NAN])) is None
    assert cwmm_decile_edges(np.array([])) is None
    assert cwmm_decile_edges(np.array([0.4])) == [0.4] * 9  # a single model: every edge at its value
    edges = cwmm_decile_edges(np.random.default_rng(1).uniform(size=57))
    assert edges is not None and len(edges) == 9 and all(e is not None for e in edges)
    assert all(a <= b for a, b in zip(edges, edges[1:], strict=False))  # type: ignore[operator]


# --- round_figures --------------------------------------------------------------------------------


def test_round_figures_by_hand() -> None:
    """Four models; the non-staker's CWMM counts in the median but not in the weighted mean."""
    models = ["w", "x", "y", "z"]
    stakes = np.array([3.0, 1.0, 0.0, 0.0])
    scores = round_scores([0.01, 0.02, 0.0, NAN], [0.004, NAN, 0.002, 0.0], [0.01, 0.0, 0.02, NAN], [0.6, 0.2, 0.1, NAN])
    f = round_figures(12, 5, False, models, stakes, scores)
    assert (f["round"], f["day"], f["final"], f["n_models"], f["n_stakers"], f["total_stake"]) == (12, 5, False, 4, 2, 4.0)
    assert f["stake_weighted_cwmm"] == pytest.approx((3 * 0.6 + 1 * 0.2) / 4)  # 0.5
    assert f["median_cwmm"] == pytest.approx(0.2)  # of 0.6, 0.2, 0.1 (NaN left out)
    assert f["gap"] == pytest.approx(0.3)
    assert f["hhi"] == pytest.approx(0.75**2 + 0.25**2) and f["effective_models"] == pytest.approx(1 / 0.625)
    assert f["top10_share"] == pytest.approx(1.0)
    assert f["top10_stakers"] == ["w", "x"]
    assert f["mean_mmc"] == pytest.approx(0.002) and f["mean_contribution"] == pytest.approx(0.01)
    assert f["cwmm_decile_edges"] == pytest.approx(list(np.quantile([0.6, 0.2, 0.1], np.arange(1, 10) / 10)))
    assert f["cwmm_p90"] == f["cwmm_decile_edges"][-1]
    assert len(f["mmc_mean_by_cwmm_decile"]) == 10 and len(f["cwmm_median_by_stake_decile"]) == 10


def test_round_figures_top10_stakers_largest_first_ties_by_id() -> None:
    models = [f"m{i:02d}" for i in range(14)]
    stakes = np.array([5.0] * 4 + [9.0] * 2 + [1.0] * 6 + [0.0] * 2)
    scores = round_scores([0.0] * 14, [0.0] * 14, [0.0] * 14, list(np.linspace(0.1, 0.9, 14)))
    f = round_figures(1, 1, True, models, stakes, scores)
    assert f["top10_stakers"] == ["m04", "m05", "m00", "m01", "m02", "m03", "m06", "m07", "m08", "m09"]
    assert f["top10_share"] == pytest.approx((2 * 9 + 4 * 5 + 4 * 1) / (2 * 9 + 4 * 5 + 6 * 1))


def test_round_figures_without_stake_or_cwmm_are_null_not_nan() -> None:
    scores = round_scores([NAN] * 3, [NAN] * 3, [NAN] * 3, [NAN] * 3)
    f = round_figures(1, 1, False, ["a", "b", "c"], np.zeros(3), scores)
    for name in ("stake_weighted_cwmm", "median_cwmm", "gap", "cwmm_p90", "cwmm_decile_edges", "hhi", "top10_share", "mean_mmc", "mean_contribution"):
        assert f[name] is None, name
    assert f["n_stakers"] == 0 and f["top10_stakers"] == []
    assert f["mmc_mean_by_cwmm_decile"] == [None] * 10
    # stakers whose CWMM is undefined: no weighted mean, but the median of the rest stands
    some = round_scores([0.0] * 3, [0.0] * 3, [0.0] * 3, [NAN, 0.3, 0.5])
    g = round_figures(1, 1, False, ["a", "b", "c"], np.array([1.0, 0.0, 0.0]), some)
    assert g["stake_weighted_cwmm"] is None and g["median_cwmm"] == pytest.approx(0.4) and g["gap"] is None


def test_round_figures_are_deterministic_bytes() -> None:
    rng = np.random.default_rng(9)
    n = 50
    models = [f"m{i:02d}" for i in range(n)]
    stakes = rng.exponential(10, n)
    corr, mmc, contribution = (list(rng.normal(0, 0.02, n)) for _ in range(3))
    scores = round_scores(corr, mmc, contribution, list(rng.uniform(0, 1, n)))
    assert encode(round_figures(4, 2, False, models, stakes, scores)) == encode(round_figures(4, 2, False, list(models), stakes.copy(), scores))


# --- trend_figures --------------------------------------------------------------------------------


def trend_table(weighted: dict[int, float | None], median: dict[int, float | None]) -> dict[int, dict[str, Any]]:
    return {r: {"stake_weighted_cwmm": weighted[r], "median_cwmm": median[r]} for r in weighted}


def test_trend_slopes_by_round_number() -> None:
    # weighted rises 0.01 per round on rounds 10, 12, 16 (uneven spacing), median is flat
    table = trend_table({10: 0.30, 12: 0.32, 16: 0.36}, {10: 0.2, 12: 0.2, 16: 0.2})
    out = trend_figures(table, upto=16, recent=2)
    assert out["rounds"] == [10, 12, 16]
    assert out["weighted_slope"] == pytest.approx(0.01) and out["median_slope"] == pytest.approx(0.0)
    assert out["recent_rounds"] == [12, 16] and out["recent_weighted_slope"] == pytest.approx(0.01)
    noisy = trend_figures(trend_table({1: 1.0, 2: 3.0, 3: 7.0, 4: 7.0}, dict.fromkeys(range(1, 5), 0.0)), upto=4, recent=20)
    assert noisy["weighted_slope"] == pytest.approx(2.2)  # Sxy = 11, Sxx = 5


def test_trend_slopes_skip_rounds_without_a_value_and_need_two_points() -> None:
    table = trend_table({1: 0.3, 2: None, 3: 0.5, 4: None}, {1: None, 2: None, 3: 0.2, 4: None})
    out = trend_figures(table, upto=4, recent=20)
    assert out["rounds"] == [1, 2, 3, 4] and out["stake_weighted_cwmm"] == [0.3, None, 0.5, None]
    assert out["weighted_slope"] == pytest.approx(0.1)
    assert out["median_slope"] is None  # one round with a median
    assert (out["gap_first"], out["gap_last"]) == pytest.approx((0.3, 0.3))  # the only round with both


def test_trend_of_a_single_round_and_of_none() -> None:
    one = trend_figures(trend_table({5: 0.4}, {5: 0.3}), upto=5, recent=20)
    assert one["rounds"] == [5] and one["weighted_slope"] is None and one["recent_weighted_slope"] is None
    assert one["stake_weighted_cwmm_first"] == one["stake_weighted_cwmm_last"] == 0.4
    assert one["stake_weighted_cwmm_change"] == 0.0
    assert one["top10_turnover"] == [None] and one["mean_top10_turnover"] is None
    empty = trend_figures({}, upto=5, recent=20)
    assert empty["rounds"] == [] and all(empty[k] is None for k in ("weighted_slope", "stake_weighted_cwmm_first", "gap_last", "mean_top10_turnover"))


def test_trend_stops_at_upto_and_ends_are_fifths() -> None:
    table = trend_table({r: 0.30 + 0.01 * r for r in range(1, 13)}, dict.fromkeys(range(1, 13), 0.25))
    out = trend_figures(table, upto=10, recent=20)
    assert out["rounds"] == list(range(1, 11))
    # ten rounds: the first / last fifth is two rounds each
    assert out["stake_weighted_cwmm_first"] == pytest.approx(0.315) and out["stake_weighted_cwmm_last"] == pytest.approx(0.395)
    assert out["stake_weighted_cwmm_change"] == pytest.approx(0.08 / 0.315)
    assert out["median_cwmm_change"] == pytest.approx(0.0)


def test_trend_change_is_null_from_a_zero_level() -> None:
    out = trend_figures(trend_table({1: 0.0, 2: 0.1}, {1: 0.0, 2: 0.0}), upto=2, recent=20)
    assert out["stake_weighted_cwmm_change"] is None and out["median_cwmm_change"] is None


def test_trend_is_deterministic_bytes() -> None:
    rng = np.random.default_rng(2)
    table = {
        r: {"stake_weighted_cwmm": float(rng.uniform()), "median_cwmm": float(rng.uniform()), "top10_stakers": [f"m{rng.integers(5)}"]} for r in range(1, 40)
    }
    assert encode(trend_figures(table, upto=39, recent=20)) == encode(trend_figures(dict(reversed(table.items())), upto=39, recent=20))
    assert not math.isnan(trend_figures(table, upto=39, recent=20)["weighted_slope"])
