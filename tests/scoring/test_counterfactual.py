"""The stake counterfactual: k× stake, everything else equal."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import PreparedRound, round_samples, score_round, stake_counterfactual
from scoring.counterfactual import mechanical_part
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


def test_a_zero_stake_model_can_ask_what_if_it_staked() -> None:
    """stake=X on a zero-stake model equals re-scoring with that stake set to X (its draws over
    the larger staker set); a multiple of zero stays zero."""
    preds, stakes, targets = random_round(4)
    i = int(np.flatnonzero(stakes == 0)[0])
    cf = stake_counterfactual(preds, stakes, targets, i, None, round=11, stake=250.0)
    moved = stakes.copy()
    moved[i] = 250.0
    assert cf.stake == 0.0 and cf.stake_whatif == 250.0 and np.isnan(cf.multiplier)
    assert cf.contribution_whatif == score_round(preds, moved, targets, round=11).contribution[i]
    assert cf.corr_w_mm_whatif > cf.corr_w_mm
    same = stake_counterfactual(preds, stakes, targets, i, 3.0, round=11)
    assert same.stake_whatif == 0.0 and same.contribution_whatif == same.contribution
    with pytest.raises(ScoringError):
        stake_counterfactual(preds, stakes, targets, i, 2.0, round=11, stake=1.0)
    with pytest.raises(ScoringError):
        stake_counterfactual(preds, stakes, targets, i, None, round=11)


def test_configured_draws_and_fraction_are_used() -> None:
    """The actual side equals score_round with the same draws/fraction samples, not the defaults."""
    preds, stakes, targets = random_round(5)
    i = int(np.flatnonzero(stakes > 0)[0])
    samples = round_samples(stakes, 13, draws=7, fraction=0.5)
    expected = score_round(preds, stakes, targets, samples=samples).mmc[i]
    cf = stake_counterfactual(preds, stakes, targets, i, 1.0, round=13, draws=7, fraction=0.5)
    assert cf.mmc == expected
    assert cf.mmc != score_round(preds, stakes, targets, round=13).mmc[i]


def test_mechanical_part_is_actual_minus_at_the_old_stake() -> None:
    """Re-scored at the stake before a 6× jump, the mechanical part is mean(actual − at old stake)."""
    preds, stakes, targets = random_round(6)
    i = int(np.flatnonzero(stakes > 0)[0])
    jumped = stakes.copy()
    jumped[i] *= 6
    cfs = [stake_counterfactual(preds, jumped, targets, i, None, round=r, stake=float(stakes[i])) for r in (1, 2)]
    part = mechanical_part(cfs)
    want = np.mean([c.contribution - c.contribution_whatif for c in cfs])
    assert part.contribution == pytest.approx(want) and part.n_rounds_contribution == 2
    assert part.mmc == pytest.approx(np.mean([c.mmc - c.mmc_whatif for c in cfs]))
