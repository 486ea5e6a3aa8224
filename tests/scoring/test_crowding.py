"""Tests of scoring.crowding: hand-computed vectors first, then oracles, then properties."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.crowding import (
    InvalidScoreTable,
    ScoreTable,
    concentration_by_round,
    crowding_report,
    cwmm_by_stake_decile,
    cwmm_trend,
    decile_of,
    mmc_by_cwmm_decile,
    percent_change,
    series_ends,
    settling_point,
    stake_concentration,
    stake_jump_events,
    top_staker_turnover,
    top_stakers,
)
from scoring.errors import NegativeStake, NonFiniteInput, ScoringError, ShapeMismatch

NAN = math.nan


def make_table(
    rows: list[tuple[int, str, float, float, float]],
) -> ScoreTable:
    """A ScoreTable from (round, model, stake, corr_w_mm, mmc) tuples."""
    rounds, models, stakes, cwmm, mmc = zip(*rows, strict=True)
    return ScoreTable(
        rounds=np.array(rounds),
        models=np.array(models, dtype=object),
        stakes=np.array(stakes),
        corr_w_mm=np.array(cwmm),
        mmc=np.array(mmc),
    )


def random_table(seed: int, n_models: int = 60, n_rounds: int = 40) -> ScoreTable:
    """A random table with zero stakes, tied stakes, NaN scores and missing rows."""
    rng = np.random.default_rng(seed)
    model_grid, round_grid = np.meshgrid(np.arange(n_models), np.arange(100, 100 + n_rounds))
    keep = rng.random(model_grid.size) < 0.9  # some (round, model) rows absent
    models = np.array([f"m{i:03d}" for i in model_grid.ravel()[keep]], dtype=object)
    rounds = round_grid.ravel()[keep]
    n = rounds.size
    stakes = np.round(rng.lognormal(2.0, 1.5, n), 1)  # rounding makes ties
    stakes[rng.random(n) < 0.25] = 0.0
    jump = rng.random(n) < 0.05
    stakes[jump] *= rng.choice([4.0, 5.0, 8.0, 30.0], jump.sum())
    cwmm = rng.uniform(-0.2, 0.9, n)
    cwmm[rng.random(n) < 0.05] = NAN
    mmc = rng.normal(0.005, 0.02, n)
    mmc[rng.random(n) < 0.05] = NAN
    return ScoreTable(rounds=rounds, models=models, stakes=stakes, corr_w_mm=cwmm, mmc=mmc)


def table_frame(table: ScoreTable) -> pd.DataFrame:
    """The table as a pandas DataFrame (test oracles only)."""
    return pd.DataFrame(
        {
            "round": table.rounds,
            "model": table.models,
            "stake": table.stakes,
            "cwmm": table.corr_w_mm,
            "mmc": table.mmc,
        }
    )


def pandas_deciles(values: pd.Series) -> pd.Series:
    """The documented decile rule written with pandas: floor(10·(average rank − 0.5)/n)."""
    ranks = values.rank(method="average")
    return np.floor(10 * (ranks - 0.5) / len(values)).astype(int)


# --------------------------------------------------------------------------- deciles


def test_decile_of_ten_distinct_values_is_rank_minus_one() -> None:
    """Ten distinct values get deciles equal to their 0-based rank, whatever their order."""
    values = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 1.0, 0.4, 0.8, 0.6])
    assert decile_of(values).tolist() == [4, 0, 8, 2, 6, 1, 9, 3, 7, 5]


def test_decile_of_twenty_values_puts_two_in_each_decile() -> None:
    """With 20 distinct values, ranks 1–2 are decile 0, ranks 3–4 decile 1, … 19–20 decile 9."""
    values = np.arange(20.0)[::-1]
    expected = [9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    assert decile_of(values).tolist() == expected


def test_decile_of_fewer_than_ten_values_uses_rank_midpoints() -> None:
    """Five values land on ⌊10·(r − 0.5)/5⌋ = 1, 3, 5, 7, 9 and a single value on 5."""
    assert decile_of([10.0, 20.0, 30.0, 40.0, 50.0]).tolist() == [1, 3, 5, 7, 9]
    assert decile_of([3.0]).tolist() == [5]


def test_decile_of_ties_share_the_decile_of_their_average_rank() -> None:
    """[1, 1, 2, 2]: average ranks 1.5 and 3.5 give ⌊10·1/4⌋ = 2 and ⌊10·3/4⌋ = 7."""
    assert decile_of([2.0, 1.0, 1.0, 2.0]).tolist() == [7, 2, 2, 7]
    assert decile_of([4.0, 4.0, 4.0]).tolist() == [5, 5, 5]


def test_decile_of_nan_is_minus_one_and_left_out_of_n() -> None:
    """NaN gets −1 and the other values are ranked among themselves (n = 2 → deciles 2 and 7)."""
    assert decile_of([NAN, 5.0, NAN, 1.0]).tolist() == [-1, 7, -1, 2]
    assert decile_of([NAN, NAN]).tolist() == [-1, -1]
    assert decile_of(np.zeros(0)).tolist() == []


def test_decile_of_rejects_a_matrix() -> None:
    """A 2-D input is a ShapeMismatch."""
    with pytest.raises(ShapeMismatch):
        decile_of(np.zeros((2, 3)))


@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=200))
def test_decile_of_is_monotone_tie_consistent_and_rank_invariant(values: list[int]) -> None:
    """Deciles lie in 0..9, never decrease with the value, agree on ties and survive 3x + 7."""
    x = np.array(values, dtype=np.float64)
    d = decile_of(x)
    assert ((d >= 0) & (d <= 9)).all()
    order = np.argsort(x, kind="stable")
    assert (np.diff(d[order]) >= 0).all()
    for value in np.unique(x):
        assert np.unique(d[x == value]).size == 1
    assert (decile_of(3 * x + 7) == d).all()


@given(st.integers(1, 30))
def test_decile_of_distinct_values_fill_deciles_equally(tenths: int) -> None:
    """10·k distinct values put exactly k values in every decile."""
    rng = np.random.default_rng(tenths)
    d = decile_of(rng.permutation(10 * tenths).astype(np.float64))
    assert np.bincount(d, minlength=10).tolist() == [tenths] * 10


# --------------------------------------------------------------------------- stake deciles


def test_cwmm_by_stake_decile_by_hand() -> None:
    """Stakes 1..20 with corr_w_mm = stake/100: decile d has median (2d + 1.5)/100."""
    rows = [(1, f"m{s}", float(s), s / 100, 0.0) for s in range(1, 21)]
    rows += [(1, "zero", 0.0, 0.99, 0.0), (1, "unscored_whale", 500.0, NAN, 0.0)]
    result = cwmm_by_stake_decile(make_table(rows))
    np.testing.assert_allclose(result.median_corr_w_mm, (2 * np.arange(10) + 1.5) / 100)
    assert result.count.tolist() == [2] * 10
    assert result.decile.tolist() == list(range(10))
    assert result.top_median == pytest.approx(0.195)
    assert result.bottom_median == pytest.approx(0.015)
    assert result.top_minus_bottom == pytest.approx(0.18)


def test_cwmm_by_stake_decile_with_zero_stakes_counts_them_as_one_tie() -> None:
    """stakers_only=False ranks the 10 zero stakes together (average rank 5.5 → decile 2)."""
    rows = [(1, f"z{i}", 0.0, 0.1, 0.0) for i in range(10)]
    rows += [(1, f"s{i}", float(i + 1), 0.5, 0.0) for i in range(10)]
    everyone = cwmm_by_stake_decile(make_table(rows), stakers_only=False)
    assert everyone.count.tolist() == [0, 0, 10, 0, 0, 2, 2, 2, 2, 2]
    assert everyone.median_corr_w_mm[2] == pytest.approx(0.1)
    assert math.isnan(everyone.bottom_median)
    stakers = cwmm_by_stake_decile(make_table(rows))
    assert stakers.count.tolist() == [1] * 10


# --------------------------------------------------------------------------- MMC deciles


def test_mmc_by_cwmm_decile_by_hand() -> None:
    """Two rows per corr_w_mm decile: the decile mean, its steps and the steepest drop (into 7)."""
    per_decile = [0.012, 0.011, 0.012, 0.010, 0.011, 0.009, 0.006, 0.002, -0.001, -0.003]
    rows = []
    for d, level in enumerate(per_decile):
        rows.append((1, f"a{d}", 1.0, 0.05 * d, level - 0.001))
        rows.append((2, f"b{d}", 1.0, 0.05 * d + 0.01, level + 0.001))
    rows.append((3, "no_mmc", 1.0, 0.99, NAN))  # left out: would shift the deciles
    result = mmc_by_cwmm_decile(make_table(rows))
    np.testing.assert_allclose(result.mean_mmc, per_decile, atol=1e-15)
    np.testing.assert_allclose(result.step, np.diff(per_decile), atol=1e-15)
    assert result.count.tolist() == [2] * 10
    assert result.steepest_drop_into == 7


def test_mmc_by_cwmm_decile_without_any_drop() -> None:
    """Rising MMC has no drop (−1); a table without scores gives NaN means and zero counts."""
    rows = [(1, f"m{i}", 1.0, i / 10, i / 1000) for i in range(10)]
    assert mmc_by_cwmm_decile(make_table(rows)).steepest_drop_into == -1
    empty = mmc_by_cwmm_decile(make_table([(1, "m", 1.0, NAN, NAN)]))
    assert empty.count.tolist() == [0] * 10
    assert np.isnan(empty.mean_mmc).all()
    assert empty.steepest_drop_into == -1


# --------------------------------------------------------------------------- trend


def test_cwmm_trend_on_linear_series() -> None:
    """a (stake 3) = 0.5 + 0.02t, b (stake 1) = 0.1 + 0.01t, c (stake 0) = 0.2 + 0.005t.

    Weighted mean (3a + b)/4 = 0.4 + 0.0175t, median c, gap 0.2 + 0.0125t.
    """
    rows = []
    for t in range(4):
        r = 10 + t
        rows += [
            (r, "a", 3.0, 0.5 + 0.02 * t, 0.0),
            (r, "b", 1.0, 0.1 + 0.01 * t, 0.0),
            (r, "c", 0.0, 0.2 + 0.005 * t, 0.0),
        ]
    trend = cwmm_trend(make_table(rows))
    steps = np.arange(4)
    assert trend.round.tolist() == [10, 11, 12, 13]
    np.testing.assert_allclose(trend.weighted_mean, 0.4 + 0.0175 * steps)
    np.testing.assert_allclose(trend.median, 0.2 + 0.005 * steps)
    np.testing.assert_allclose(trend.gap, 0.2 + 0.0125 * steps)
    assert trend.weighted_mean_slope == pytest.approx(0.0175)
    assert trend.median_slope == pytest.approx(0.005)
    assert trend.gap_slope == pytest.approx(0.0125)
    assert trend.count.tolist() == [3] * 4
    assert trend.total_stake.tolist() == [4.0] * 4


def test_cwmm_trend_unstaked_round_and_single_round() -> None:
    """An unstaked round has a NaN weighted mean that the slope skips; one round has NaN slopes."""
    rows = [
        (1, "a", 1.0, 0.2, 0.0),
        (2, "a", 0.0, 0.9, 0.0),
        (3, "a", 1.0, 0.4, 0.0),
        (3, "b", 1.0, NAN, 0.0),  # NaN: neither weighted nor in the median
    ]
    trend = cwmm_trend(make_table(rows))
    assert trend.weighted_mean[0] == pytest.approx(0.2)
    assert math.isnan(trend.weighted_mean[1])
    assert trend.weighted_mean[2] == pytest.approx(0.4)
    assert trend.median.tolist() == pytest.approx([0.2, 0.9, 0.4])
    assert trend.weighted_mean_slope == pytest.approx(0.1)
    assert trend.count.tolist() == [1, 1, 1]
    single = cwmm_trend(make_table([(7, "a", 1.0, 0.3, 0.0)]))
    assert math.isnan(single.weighted_mean_slope)
    assert math.isnan(single.median_slope)
    assert math.isnan(single.gap_slope)


# --------------------------------------------------------------------------- pandas oracle


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decile_tables_and_trend_match_pandas_groupby(seed: int) -> None:
    """cwmm_by_stake_decile, mmc_by_cwmm_decile and cwmm_trend equal a pandas groupby."""
    table = random_table(seed)
    df = table_frame(table)

    for stakers_only in (True, False):
        sub = df[df.cwmm.notna() & ((df.stake > 0) | (not stakers_only))].copy()
        sub["decile"] = pandas_deciles(sub.stake)
        expected = sub.groupby("decile").cwmm.agg(["median", "size"]).reindex(range(10))
        result = cwmm_by_stake_decile(table, stakers_only=stakers_only)
        np.testing.assert_allclose(result.median_corr_w_mm, expected["median"], rtol=1e-12)
        assert result.count.tolist() == expected["size"].fillna(0).astype(int).tolist()

    sub = df[df.cwmm.notna() & df.mmc.notna()].copy()
    sub["decile"] = pandas_deciles(sub.cwmm)
    expected = sub.groupby("decile").mmc.agg(["mean", "size"]).reindex(range(10))
    result_mmc = mmc_by_cwmm_decile(table)
    np.testing.assert_allclose(result_mmc.mean_mmc, expected["mean"], rtol=1e-10)
    assert result_mmc.count.tolist() == expected["size"].astype(int).tolist()

    sub = df[df.cwmm.notna()].assign(weighted=lambda f: f.stake * f.cwmm)
    by_round = sub.groupby("round").agg(weighted=("weighted", "sum"), stake=("stake", "sum"), median=("cwmm", "median"))
    weighted_mean = by_round.weighted / by_round.stake
    trend = cwmm_trend(table)
    assert trend.round.tolist() == by_round.index.tolist()
    np.testing.assert_allclose(trend.weighted_mean, weighted_mean, rtol=1e-10)
    np.testing.assert_allclose(trend.median, by_round["median"], rtol=1e-12)
    rounds = by_round.index.to_numpy(dtype=np.float64)
    assert trend.weighted_mean_slope == pytest.approx(np.polyfit(rounds, weighted_mean, 1)[0])
    assert trend.median_slope == pytest.approx(np.polyfit(rounds, by_round["median"], 1)[0])


# --------------------------------------------------------------------------- concentration


def test_stake_concentration_equal_stakes() -> None:
    """n equal stakes: HHI = 1/n, effective number n, top-10 share 10/n."""
    result = stake_concentration(np.full(40, 2.5))
    assert result.hhi == pytest.approx(1 / 40)
    assert result.effective_number == pytest.approx(40)
    assert result.top_share == pytest.approx(10 / 40)
    assert (result.n_models, result.n_stakers, result.total_stake) == (40, 40, 100.0)


def test_stake_concentration_one_whale() -> None:
    """One stake of 1e6 among 99 stakes of 1: HHI ≈ 1 and effective number ≈ 1."""
    stakes = np.concatenate(([1e6], np.ones(99)))
    result = stake_concentration(stakes)
    total = 1e6 + 99
    assert result.hhi == pytest.approx((1e6 / total) ** 2 + 99 / total**2)
    assert result.hhi > 0.999
    assert 1.0 < result.effective_number < 1.001
    assert result.top_share == pytest.approx((1e6 + 9) / total)


def test_stake_concentration_top_ten_share_by_hand() -> None:
    """Stakes 1..20 (sum 210): the top 10 (11..20) hold 155/210; zeros change nothing."""
    stakes = np.concatenate((np.arange(1.0, 21.0), np.zeros(5)))
    result = stake_concentration(np.random.default_rng(0).permutation(stakes))
    assert result.top_share == pytest.approx(155 / 210)
    assert result.n_stakers == 20
    assert result.n_models == 25
    assert stake_concentration([1.0, 3.0]).top_share == 1.0
    assert stake_concentration([1.0, 3.0, 4.0], top=1).top_share == pytest.approx(0.5)


def test_stake_concentration_zero_total() -> None:
    """No stake at all: HHI NaN, effective number 0, share NaN (also for no models)."""
    for stakes in (np.zeros(5), np.zeros(0)):
        result = stake_concentration(stakes)
        assert math.isnan(result.hhi)
        assert result.effective_number == 0.0
        assert math.isnan(result.top_share)


def test_stake_concentration_rejects_bad_stakes() -> None:
    """Negative, NaN or 2-D stakes and a top below 1 raise typed errors."""
    with pytest.raises(NegativeStake):
        stake_concentration([1.0, -1.0])
    with pytest.raises(NonFiniteInput):
        stake_concentration([1.0, NAN])
    with pytest.raises(ShapeMismatch):
        stake_concentration(np.ones((2, 2)))
    with pytest.raises(ScoringError):
        stake_concentration([1.0], top=0)


stake_lists = st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1e6)), min_size=1, max_size=60).filter(lambda stakes: any(s > 0 for s in stakes))


@settings(max_examples=200)
@given(stakes=stake_lists, scale=st.floats(1e-3, 1e3), data=st.data())
def test_stake_concentration_properties(stakes: list[float], scale: float, data: Any) -> None:
    """Invariant to scaling and permutation; 1 ≤ effective ≤ stakers; top-k share ≥ k/stakers."""
    base = stake_concentration(stakes)
    scaled = stake_concentration(np.array(stakes) * scale)
    shuffled = stake_concentration(data.draw(st.permutations(stakes)))
    for other in (scaled, shuffled):
        assert other.hhi == pytest.approx(base.hhi, rel=1e-9)
        assert other.effective_number == pytest.approx(base.effective_number, rel=1e-9)
        assert other.top_share == pytest.approx(base.top_share, rel=1e-9)
    n = base.n_stakers
    assert 1 - 1e-9 <= base.effective_number <= n * (1 + 1e-9)
    assert min(10, n) / n - 1e-9 <= base.top_share <= 1 + 1e-9


@pytest.mark.parametrize("seed", [0, 3])
def test_concentration_by_round_matches_stake_concentration(seed: int) -> None:
    """The all-rounds computation equals stake_concentration round by round."""
    table = random_table(seed, n_models=30, n_rounds=12)
    stakes = table.stakes.copy()
    stakes[table.rounds == table.round_ids[0]] = 0.0  # one round without stake
    table = ScoreTable(table.rounds, table.models, stakes, table.corr_w_mm, table.mmc)
    by_round = concentration_by_round(table, top=5)
    for i, r in enumerate(by_round.round):
        one = stake_concentration(table.stakes[table.rounds == r], top=5)
        np.testing.assert_allclose(by_round.hhi[i], one.hhi, rtol=1e-12)
        np.testing.assert_allclose(by_round.effective_number[i], one.effective_number, rtol=1e-12)
        np.testing.assert_allclose(by_round.top_share[i], one.top_share, rtol=1e-12)
        assert by_round.n_models[i] == one.n_models
        assert by_round.n_stakers[i] == one.n_stakers
    assert math.isnan(by_round.hhi[0])
    assert by_round.effective_number[0] == 0.0


# --------------------------------------------------------------------------- event study


def whale_table() -> ScoreTable:
    """'whale' stakes 1 until round 29 and 6 from round 30; MMC 0.01 before, 0.006 from 30."""
    rows = []
    for r in range(1, 61):
        rows.append((r, "whale", 1.0 if r < 30 else 6.0, 0.5, 0.01 if r < 30 else 0.006))
        rows.append((r, "steady", 2.0, 0.3, -0.002))
    return make_table(rows)


def test_stake_jump_event_study_by_hand() -> None:
    """A 6× jump at round 30 with MMC 0.01 → 0.006 is one event with relative change −0.4."""
    result = stake_jump_events(whale_table())
    assert result.n_events == 1
    assert result.model.tolist() == ["whale"]
    assert result.round.tolist() == [30]
    assert result.stake_before.tolist() == [1.0]
    assert result.stake_after.tolist() == [6.0]
    assert result.mmc_before[0] == pytest.approx(0.01, rel=1e-12)
    assert result.mmc_after[0] == pytest.approx(0.006, rel=1e-12)
    assert result.n_before.tolist() == [20]
    assert result.n_after.tolist() == [20]
    assert result.relative_change[0] == pytest.approx(-0.4, rel=1e-12)
    assert result.median_relative_change == pytest.approx(-0.4, rel=1e-12)
    assert result.n_compared == 1
    assert result.trajectory_offset.tolist() == list(range(-20, 21))
    expected = np.where(np.arange(-20, 21) < 0, 0.01, 0.006)
    np.testing.assert_allclose(result.trajectory_mean_mmc, expected, rtol=1e-12)
    assert result.trajectory_count.tolist() == [1] * 41


def test_event_study_population_control_by_hand() -> None:
    """The models without an event are the control: 'steady' earns 0.0 before round 30 and
    0.002 from it, so the whale's change 0.01 → 0.006 is −0.4 alone and −0.6 beyond the
    population's +0.002; a flat population leaves the two equal."""
    rows = []
    for r in range(1, 61):
        rows.append((r, "whale", 1.0 if r < 30 else 6.0, 0.5, 0.01 if r < 30 else 0.006))
        rows.append((r, "steady", 2.0, 0.3, 0.0 if r < 30 else 0.002))
        rows.append((r, "other", 2.0, 0.3, NAN if r == 40 else (0.0 if r < 30 else 0.002)))
    result = stake_jump_events(make_table(rows))
    assert result.relative_change[0] == pytest.approx(-0.4, rel=1e-12)
    assert result.population_mmc_before[0] == pytest.approx(0.0, abs=1e-15)
    assert result.population_mmc_after[0] == pytest.approx(0.002, rel=1e-12)
    assert result.relative_change_vs_population[0] == pytest.approx(-0.6, rel=1e-12)
    assert result.median_relative_change_vs_population == pytest.approx(-0.6, rel=1e-12)
    assert (result.mean_population_mmc_before, result.mean_population_mmc_after) == pytest.approx((0.0, 0.002), abs=1e-15)
    flat = stake_jump_events(whale_table())
    assert flat.population_mmc_before[0] == flat.population_mmc_after[0] == pytest.approx(-0.002)
    assert flat.median_relative_change_vs_population == pytest.approx(flat.median_relative_change, rel=1e-12)


def test_event_study_without_a_control_population() -> None:
    """When every model has an event, the population's windows and the change beyond them are NaN."""
    result = stake_jump_events(make_table([(r, "whale", 1.0 if r < 30 else 6.0, 0.5, 0.01) for r in range(1, 61)]))
    assert result.n_compared == 1
    assert np.isnan(result.population_mmc_before).all() and np.isnan(result.relative_change_vs_population).all()
    assert math.isnan(result.median_relative_change_vs_population)
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_jump_without_half_a_window_after_it_is_listed_not_compared() -> None:
    """A jump two rounds before the table ends is an event with its means, but the study
    compares only events with half a window (10 rounds) on each side; ``min_rounds`` sets it."""
    rows = [(r, "late", 1.0 if r < 59 else 8.0, 0.5, 0.01 if r < 59 else -0.05) for r in range(1, 61)]
    rows += [(r, "whale", 1.0 if r < 30 else 6.0, 0.5, 0.01 if r < 30 else 0.006) for r in range(1, 61)]
    result = stake_jump_events(make_table(rows))
    assert result.model.tolist() == ["whale", "late"]
    assert result.n_events == 2 and result.n_compared == 1
    assert result.n_after.tolist() == [20, 2]
    assert result.mmc_after[1] == pytest.approx(-0.05)
    assert math.isnan(result.relative_change[1])
    assert result.median_relative_change == pytest.approx(-0.4)
    assert (result.mean_mmc_before, result.mean_mmc_after) == pytest.approx((0.01, 0.006))
    assert result.dose_n_events.tolist() == [2, 0, 0]  # both listed by multiple
    everything = stake_jump_events(make_table(rows), min_rounds=1)
    assert everything.n_compared == 2
    assert everything.relative_change[1] == pytest.approx(-6.0)


def test_stake_jump_events_none() -> None:
    """4.9× rises, a jump across a missing round and a jump from stake 0 are not events."""
    rows = [
        (1, "slow", 1.0, 0.5, 0.01),
        (2, "slow", 4.9, 0.5, 0.01),
        (1, "gap", 1.0, 0.5, 0.01),
        (3, "gap", 10.0, 0.5, 0.01),
        (1, "fresh", 0.0, 0.5, 0.01),
        (2, "fresh", 10.0, 0.5, 0.01),
    ]
    result = stake_jump_events(make_table(rows))
    assert result.n_events == 0
    assert result.model.size == 0
    assert math.isnan(result.median_relative_change)
    assert result.trajectory_count.tolist() == [0] * 41
    assert np.isnan(result.trajectory_mean_mmc).all()
    json.dumps(result.to_dict(), allow_nan=False)


def test_stake_jump_events_edges_and_nan() -> None:
    """Exactly 5× counts; windows shrink at the table's edge; NaN MMC rounds are skipped."""
    rows = [(r, "m", 1.0 if r < 3 else 5.0, 0.5, 0.02) for r in range(1, 11)]
    rows[1] = (2, "m", 1.0, 0.5, NAN)  # round 2's MMC is missing
    rows[3] = (4, "m", 5.0, 0.5, 0.005)
    result = stake_jump_events(make_table(rows), window=3)
    assert result.round.tolist() == [3]
    assert result.n_before.tolist() == [1]  # round 0 absent, round 1 counts, round 2 NaN
    assert result.n_after.tolist() == [3]  # rounds 3, 4, 5
    assert result.mmc_before[0] == pytest.approx(0.02)
    assert result.mmc_after[0] == pytest.approx(0.015)
    assert result.relative_change[0] == pytest.approx(-0.25)
    assert result.trajectory_count.tolist() == [0, 1, 0, 1, 1, 1, 1]  # k = -3 .. 3


def test_stake_jump_events_zero_before_mean_is_not_compared() -> None:
    """An event whose before-mean is 0 has a NaN relative change and is left out of the median."""
    rows = [(1, "a", 1.0, 0.5, 0.0), (2, "a", 9.0, 0.5, 0.01)]
    rows += [(1, "b", 1.0, 0.5, 0.01), (2, "b", 9.0, 0.5, 0.005)]
    result = stake_jump_events(make_table(rows), min_rounds=1)
    assert result.model.tolist() == ["a", "b"]
    assert math.isnan(result.relative_change[0])
    assert result.median_relative_change == pytest.approx(-0.5)
    assert result.n_compared == 1


def test_stake_jump_events_reject_bad_parameters() -> None:
    """window below 1 or non-integer, a non-positive or infinite ratio and min_rounds outside
    1..window are ScoringErrors."""
    table = whale_table()
    for kwargs in ({"window": 0}, {"window": 2.5}, {"ratio": 0.0}, {"ratio": math.inf}, {"min_rounds": 0}, {"min_rounds": 21}, {"min_rounds": 2.5}):
        with pytest.raises(ScoringError):
            stake_jump_events(table, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stake_jump_events_match_a_literal_loop(seed: int) -> None:
    """The vectorized event study equals a per-model loop over dictionaries."""
    table = random_table(seed, n_models=40, n_rounds=50)
    window = 6
    history: dict[str, dict[int, tuple[float, float]]] = {}
    for r, m, s, x in zip(table.rounds, table.models, table.stakes, table.mmc, strict=True):
        history.setdefault(str(m), {})[int(r)] = (float(s), float(x))
    expected = []
    for m, rounds in history.items():
        for r, (stake, _) in rounds.items():
            if r - 1 not in rounds or rounds[r - 1][0] <= 0 or stake < 5 * rounds[r - 1][0]:
                continue
            before = [rounds[t][1] for t in range(r - window, r) if t in rounds]
            after = [rounds[t][1] for t in range(r, r + window) if t in rounds]
            before = [x for x in before if not math.isnan(x)]
            after = [x for x in after if not math.isnan(x)]
            mean_before = float(np.mean(before)) if before else NAN
            mean_after = float(np.mean(after)) if after else NAN
            compared = min(len(before), len(after)) >= window // 2  # the default min_rounds
            expected.append((r, m, mean_before, mean_after, compared))
    expected.sort()
    result = stake_jump_events(table, window=window)
    assert len(expected) >= 3  # the random table does produce events
    assert list(zip(result.round.tolist(), result.model.tolist(), strict=True)) == [(r, m) for r, m, *_ in expected]
    np.testing.assert_allclose(result.mmc_before, [e[2] for e in expected], rtol=1e-12)
    np.testing.assert_allclose(result.mmc_after, [e[3] for e in expected], rtol=1e-12)
    changes = [(a - b) / abs(b) for _, _, b, a, compared in expected if compared and b != 0]
    assert 0 < len(changes) < len(expected)  # some events lack half a window on a side
    assert result.n_compared == len(changes)
    assert result.median_relative_change == pytest.approx(np.median(changes))
    assert result.trajectory_count[window] == sum(1 for r, m, *_ in expected if not math.isnan(history[m][r][1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_population_control_matches_a_literal_loop(seed: int) -> None:
    """The population's windows and the change beyond them equal a loop over the rows of the
    models without an event (a random table plus models with a steady stake, rows missing and
    NaN scores among them)."""
    base = random_table(seed, n_models=30, n_rounds=50)
    rng = np.random.default_rng(seed + 100)
    steady = [
        (r, f"c{i:02d}", 3.0, 0.5, NAN if rng.random() < 0.05 else float(rng.normal(0.001 * (r - 100) / 10, 0.02)))
        for i in range(15)
        for r in range(100, 150)
        if rng.random() < 0.9
    ]
    table = make_table(
        [*zip(base.rounds.tolist(), base.models.tolist(), base.stakes.tolist(), base.corr_w_mm.tolist(), base.mmc.tolist(), strict=True), *steady]
    )
    window = 6
    result = stake_jump_events(table, window=window)
    jumpers = set(result.model.tolist())
    assert jumpers and not any(m.startswith("c") for m in jumpers)
    rows = list(zip(table.rounds.tolist(), table.models.tolist(), table.mmc.tolist(), strict=True))

    def population(first: int, stop: int) -> float:
        values = [x for r, m, x in rows if m not in jumpers and first <= r < stop and not math.isnan(x)]
        return float(np.mean(values)) if values else NAN

    pop_before = [population(r - window, r) for r in result.round.tolist()]
    pop_after = [population(r, r + window) for r in result.round.tolist()]
    np.testing.assert_allclose(result.population_mmc_before, pop_before, rtol=1e-12)
    np.testing.assert_allclose(result.population_mmc_after, pop_after, rtol=1e-12)
    compared = np.isfinite(result.relative_change)
    beyond = ((result.mmc_after - result.mmc_before) - (np.array(pop_after) - np.array(pop_before))) / np.abs(result.mmc_before)
    assert compared.sum() >= 3
    np.testing.assert_allclose(result.relative_change_vs_population[compared], beyond[compared], rtol=1e-12)
    assert np.isnan(result.relative_change_vs_population[~compared]).all()
    assert result.median_relative_change_vs_population == pytest.approx(np.median(beyond[compared]))
    assert (result.mean_population_mmc_before, result.mean_population_mmc_after) == pytest.approx(
        (np.mean(np.array(pop_before)[compared]), np.mean(np.array(pop_after)[compared]))
    )


# --------------------------------------------------------------------------- table and report


def test_score_table_validation_errors_are_typed() -> None:
    """Bad columns raise the matching ScoringError subclass."""
    good: dict[str, Any] = {
        "rounds": [1, 1],
        "models": ["a", "b"],
        "stakes": [1.0, 0.0],
        "corr_w_mm": [0.1, NAN],
        "mmc": [NAN, 0.0],
    }
    ScoreTable.from_arrays(**good)  # NaN scores are allowed
    cases: list[tuple[dict[str, Any], type[ScoringError]]] = [
        ({"stakes": [1.0]}, ShapeMismatch),
        ({"mmc": [[0.0, 0.0]]}, ShapeMismatch),
        ({"stakes": [1.0, -0.5]}, NegativeStake),
        ({"stakes": [1.0, NAN]}, NonFiniteInput),
        ({"stakes": [math.inf, 1.0]}, NonFiniteInput),
        ({"corr_w_mm": [0.1, math.inf]}, NonFiniteInput),
        ({"mmc": [-math.inf, 0.0]}, NonFiniteInput),
        ({"rounds": [1.5, 2.0]}, InvalidScoreTable),
        ({"rounds": [NAN, 2.0]}, NonFiniteInput),
        ({"rounds": ["1", "2"]}, InvalidScoreTable),
        ({"stakes": ["a", "b"]}, InvalidScoreTable),
        ({"models": ["a", "a"]}, InvalidScoreTable),
        ({"models": np.array(["a", None], dtype=object)}, InvalidScoreTable),
        ({"models": np.array([1, 2], dtype=object)}, InvalidScoreTable),
        ({"models": [1, 2]}, InvalidScoreTable),
    ]
    for change, error in cases:
        with pytest.raises(error):
            ScoreTable.from_arrays(**{**good, **change})
    assert issubclass(InvalidScoreTable, ScoringError)


def test_score_table_normalizes_and_freezes_columns() -> None:
    """Lists and integral float rounds are accepted, copied and read-only."""
    stakes = np.array([1.0, 2.0])
    table = ScoreTable.from_arrays([2.0, 1.0], ["b", "a"], stakes, [0.1, 0.2], [0.0, 0.0])
    stakes[0] = 99.0
    assert table.stakes.tolist() == [1.0, 2.0]
    assert table.rounds.dtype == np.int64
    assert table.round_ids.tolist() == [1, 2]
    assert table.model_ids.tolist() == ["a", "b"]
    assert len(table) == 2
    with pytest.raises(ValueError):
        table.stakes[0] = 3.0


def test_crowding_report_to_dict_is_plain_json() -> None:
    """The report holds every part and to_dict() is strict JSON with NaN as None."""
    table = whale_table()
    report = crowding_report(table)
    assert (report.n_observations, report.n_models, report.n_rounds) == (120, 2, 60)
    assert report.events.n_events == 1
    assert report.concentration.round.tolist() == list(range(1, 61))
    assert report.concentration.effective_number[0] == pytest.approx(1 / (1 / 9 + 4 / 9))
    plain = report.to_dict()
    text = json.dumps(plain, allow_nan=False)
    assert json.loads(text) == plain
    assert plain["events"]["model"] == ["whale"]
    assert plain["events"]["relative_change"][0] == pytest.approx(-0.4)
    assert plain["stake_deciles"]["decile"] == list(range(10))
    assert None in plain["stake_deciles"]["median_corr_w_mm"]  # empty deciles are null
    assert set(plain) == {
        "n_observations",
        "n_models",
        "n_rounds",
        "metric",
        "mean_corr",
        "mean_mmc",
        "mean_mmc_2020",
        "stake_deciles",
        "cwmm_deciles",
        "cwmm_deciles_2020",
        "trend",
        "weighted_first",
        "weighted_last",
        "median_first",
        "median_last",
        "gap_first",
        "gap_last",
        "concentration",
        "turnover",
        "events",
        "events_2020",
    }
    assert plain["metric"] == "mmc"  # built without a contribution column


def test_crowding_report_on_an_empty_table() -> None:
    """An empty table gives an empty, still serializable report."""
    table = ScoreTable.from_arrays([], [], [], [], [])
    plain = crowding_report(table).to_dict()
    json.dumps(plain, allow_nan=False)
    assert plain["n_observations"] == 0
    assert plain["trend"]["round"] == []
    assert plain["events"]["n_events"] == 0
    assert plain["stake_deciles"]["count"] == [0] * 10


# --------------------------------------------------------------------------- today's MMC, the control, settling, turnover


def test_today_mmc_is_the_default_and_2020_is_selectable() -> None:
    """With a contribution column, the deciles and the event study use it; metric='mmc' the 2020 one."""
    rows = [(r, "w", 1.0 if r < 3 else 6.0, 0.5, 0.02) for r in range(1, 5)]
    table = ScoreTable.from_arrays(
        *zip(*rows, strict=True),
        contribution=[0.010, 0.010, 0.006, 0.006],
        corr=[0.020, 0.020, 0.020, 0.020],
    )
    assert table.default_metric == "contribution"
    events = stake_jump_events(table, window=2)
    assert events.metric == "contribution"
    assert events.relative_change[0] == pytest.approx(-0.4)  # 0.010 → 0.006
    assert stake_jump_events(table, window=2, metric="mmc").relative_change[0] == 0.0
    assert mmc_by_cwmm_decile(table).mean_mmc[5] == pytest.approx(0.008)
    assert mmc_by_cwmm_decile(table, metric="mmc").mean_mmc[5] == pytest.approx(0.02)
    with pytest.raises(ScoringError):
        mmc_by_cwmm_decile(table, metric="corr")


def test_event_study_control_and_dose_response_by_hand() -> None:
    """Three events of 6×, 12× and 30×: CORR before → after, per-bucket medians and counts."""
    rows, contribution, corr = [], [], []
    for name, multiple, after_mmc, after_corr in (("a", 6.0, 0.008, 0.022), ("b", 12.0, 0.005, 0.020), ("c", 30.0, 0.002, 0.018)):
        for r in (1, 2, 3, 4):
            rows.append((r, name, 1.0 if r < 3 else multiple, 0.5, NAN))
            contribution.append(0.010 if r < 3 else after_mmc)
            corr.append(0.020 if r < 3 else after_corr)
    table = ScoreTable.from_arrays(*zip(*rows, strict=True), contribution=contribution, corr=corr)
    events = stake_jump_events(table, window=2)
    assert events.model.tolist() == ["a", "b", "c"]
    assert events.multiple.tolist() == [6.0, 12.0, 30.0]
    np.testing.assert_allclose(events.relative_change, [-0.2, -0.5, -0.8])
    assert events.median_relative_change == pytest.approx(-0.5)
    assert events.mean_mmc_before == pytest.approx(0.010)
    assert events.mean_mmc_after == pytest.approx(0.005)
    np.testing.assert_allclose(events.corr_relative_change, [0.1, 0.0, -0.1])
    assert events.median_corr_relative_change == pytest.approx(0.0)
    assert (events.mean_corr_before, events.mean_corr_after) == pytest.approx((0.020, 0.020))
    assert events.dose_low.tolist() == [5.0, 10.0, 20.0]
    assert events.dose_high.tolist() == [10.0, 20.0, math.inf]
    assert events.dose_n_events.tolist() == [1, 1, 1]
    np.testing.assert_allclose(events.dose_median_relative_change, [-0.2, -0.5, -0.8])
    json.dumps(events.to_dict(), allow_nan=False)


def test_settling_point_by_hand() -> None:
    """Post-event MMC 10, 8, 6, 4, 5, 6 (×1e-3), span 2: rolling 9, 7, 5, 4.5, 5.5 → settles at k = 4."""
    window = 6
    trajectory = np.full(2 * window + 1, 0.010)
    trajectory[window : 2 * window] = [0.010, 0.008, 0.006, 0.004, 0.005, 0.006]
    rolling, k = settling_point(trajectory, window, span=2)
    np.testing.assert_allclose(rolling[window + 1 : 2 * window], [0.009, 0.007, 0.005, 0.0045, 0.0055])
    assert np.isnan(rolling[: window + 1]).all() and np.isnan(rolling[2 * window])
    assert k == 4
    still_falling = trajectory.copy()
    still_falling[window : 2 * window] = [0.010, 0.009, 0.008, 0.007, 0.006, 0.005]
    assert settling_point(still_falling, window, span=2)[1] == -1  # censored at the window's end


def test_stake_jump_events_report_the_settling_point() -> None:
    """The whale's MMC steps down at the jump and stays: the 3-round rolling mean bottoms out at k = 2."""
    events = stake_jump_events(whale_table())
    # rolling means from k = 2 on are all 0.006: the first minimum is k = 2
    assert events.settling_round == 2
    assert events.settle_span == 3


def test_top_staker_turnover_by_hand() -> None:
    """top=2: round 1 {a, b}; round 2 {a, c} (half new); round 3 {d, e} (all new); ties by id."""
    rows = [
        (1, "a", 9.0, 0.5, 0.0),
        (1, "b", 8.0, 0.5, 0.0),
        (1, "c", 1.0, 0.5, 0.0),
        (2, "a", 9.0, 0.5, 0.0),
        (2, "b", 1.0, 0.5, 0.0),
        (2, "c", 5.0, 0.5, 0.0),
        (3, "a", 1.0, 0.5, 0.0),
        (3, "d", 7.0, 0.5, 0.0),
        (3, "e", 7.0, 0.5, 0.0),
        (3, "f", 7.0, 0.5, 0.0),
    ]
    result = top_staker_turnover(make_table(rows), top=2)
    assert result.round.tolist() == [1, 2, 3]
    assert math.isnan(result.turnover[0])
    assert result.turnover[1:].tolist() == [0.5, 1.0]
    assert result.mean_turnover == pytest.approx(0.75)
    assert top_stakers(["f", "e", "d"], [7.0, 7.0, 7.0], top=2) == ["d", "e"]
    assert top_stakers(["a", "b"], [0.0, 0.0]) == []


def test_series_ends_by_hand() -> None:
    """20 values: the first/last fifth (default) are the first/last 4, 10% the first/last 2 (NaN
    skipped); tiny series use one value."""
    values = np.arange(1.0, 21.0)
    values[0] = NAN  # 19 finite: k = ⌈3.8⌉ = 4 by default, ⌈1.9⌉ = 2 at 10%
    assert series_ends(values) == (pytest.approx(3.5), pytest.approx(18.5))  # (2+3+4+5)/4, (17+…+20)/4
    assert series_ends(values, 0.1) == (pytest.approx(2.5), pytest.approx(19.5))  # (2+3)/2, (19+20)/2
    assert series_ends([0.25, 0.3, 0.33]) == (0.25, 0.33)
    assert all(math.isnan(x) for x in series_ends([NAN]))
    assert percent_change(0.25, 0.33) == pytest.approx(0.32)
    assert math.isnan(percent_change(0.0, 1.0))
