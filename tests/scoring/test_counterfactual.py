"""The stake counterfactual: k× stake, everything else equal."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import PreparedRound, score_round, stake_counterfactual
from scoring.errors import ScoringError
from tests.scoring.test_metrics import random_round


def test_multiplier_one_reproduces_the_actual_scores() -> None:
    """×1 changes nothing and the 'actual' side equals score_round."""
    preds, stakes, targets = random_round(0)
    i = int(np.flatnonzero(stakes > 0)[0])
    cf = stake_counterfactual(preds, stakes, targets, i, 1.0, round=812)
    actual = score_round(preds, stakes, targets, round=812)
    assert cf.mmc == actual.mmc[i] and cf.mmc_whatif == cf.mmc
    assert cf.contribution == actual.contribution[i] and cf.corr_w_mm == actual.corr_w_mm[i]


def test_more_stake_means_more_crowding() -> None:
    """×20 stake pulls the meta model toward the model: CWMM rises and what it adds (±) shrinks toward 0."""
    preds, stakes, targets = random_round(1)
    i = int(np.flatnonzero(stakes > 0)[1])
    cf = stake_counterfactual(PreparedRound.from_predictions(preds), stakes, targets, i, 20.0, round=5)
    assert cf.stake_whatif == pytest.approx(20 * cf.stake)
    assert cf.corr_w_mm_whatif > cf.corr_w_mm
    assert abs(cf.contribution_whatif) < abs(cf.contribution)
    assert abs(cf.mmc_whatif) < abs(cf.mmc)
    assert cf.mmc_change == cf.mmc_whatif - cf.mmc


def test_counterfactual_equals_rescoring_with_the_new_stake() -> None:
    """The what-if side is score_round with that one stake changed."""
    preds, stakes, targets = random_round(2)
    i = int(np.flatnonzero(stakes > 0)[0])
    moved = stakes.copy()
    moved[i] *= 5
    cf = stake_counterfactual(preds, stakes, targets, i, 5.0, round=9)
    assert cf.mmc_whatif == score_round(preds, moved, targets, round=9).mmc[i]


def test_bad_counterfactual_arguments_raise() -> None:
    """Unknown model rows and negative multipliers raise ScoringError."""
    preds, stakes, targets = random_round(3)
    with pytest.raises(ScoringError):
        stake_counterfactual(preds, stakes, targets, 999, 2.0, round=1)
    with pytest.raises(ScoringError):
        stake_counterfactual(preds, stakes, targets, 0, -1.0, round=1)
