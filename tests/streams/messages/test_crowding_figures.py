"""The crowding topic's figures: today's MMC per CWMM decile with the 2020 MMC beside it, the
top-10 turnover and the trend's first/last levels (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import scoring
from streams.cli import app
from streams.messages.resolution import round_figures, trend_figures
from tests.scoring.test_metrics import random_round


def test_round_figures_use_today_mmc_with_2020_beside() -> None:
    preds, stakes, targets = random_round(0)
    scores = scoring.score_round(preds, stakes, targets, round=3)
    models = [f"m{i:02d}" for i in range(len(stakes))]
    figures = round_figures(3, 20, True, models, stakes, scores)
    today = scoring.crowding.mmc_by_cwmm_decile(
        scoring.crowding.ScoreTable.from_arrays(
            np.full(len(models), 3),
            np.array(models, dtype=object),
            stakes,
            scores.corr_w_mm,
            scores.mmc,
            contribution=scores.contribution,
        )
    ).mean_mmc
    got = np.array([np.nan if x is None else x for x in figures["mmc_mean_by_cwmm_decile"]])
    np.testing.assert_allclose(got, today, rtol=1e-12)
    old = np.array([np.nan if x is None else x for x in figures["mmc_2020_mean_by_cwmm_decile"]])
    assert not np.allclose(np.nan_to_num(got), np.nan_to_num(old))
    order = np.lexsort((np.array(models), -stakes))
    assert figures["top10_stakers"] == [models[i] for i in order[:10]]


def test_trend_figures_turnover_and_ends_by_hand() -> None:
    trend = {
        1: {"stake_weighted_cwmm": 0.30, "median_cwmm": 0.25, "top10_stakers": ["a", "b"]},
        2: {"stake_weighted_cwmm": 0.40, "median_cwmm": 0.30, "top10_stakers": ["a", "c"]},
        3: {"stake_weighted_cwmm": 0.45, "median_cwmm": 0.30, "top10_stakers": ["d", "e"]},
        4: {"stake_weighted_cwmm": None, "median_cwmm": None},  # an entry without the top-10 list
    }
    out = trend_figures(trend, upto=3, recent=2)
    assert out["top10_turnover"] == [None, 0.5, 1.0]
    assert out["mean_top10_turnover"] == pytest.approx(0.75)
    # 3 rounds: the first/last fifth is one round each
    assert (out["stake_weighted_cwmm_first"], out["stake_weighted_cwmm_last"]) == (0.30, 0.45)
    assert out["stake_weighted_cwmm_change"] == pytest.approx(0.5)
    assert out["median_cwmm_change"] == pytest.approx(0.2)
    assert (out["gap_first"], out["gap_last"]) == pytest.approx((0.05, 0.15))
    assert trend_figures(trend, upto=4, recent=2)["top10_turnover"][-1] is None


def test_whatif_needs_one_of_multiplier_and_stake() -> None:
    runner = CliRunner()
    for args in (["whatif", "m1"], ["whatif", "m1", "-k", "2", "--stake", "5"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert "exactly one of --stake-multiplier K and --stake X" in result.output
