"""CORR, the meta model, CWMM, contribution and payout against hand values and numerai-tools."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring as nt

from scoring import (
    contribution,
    corr_with_meta_model,
    meta_model,
    numerai_corr,
    payout_score,
)
from scoring.errors import NegativeStake, NonFiniteInput, ShapeMismatch, TooManyMissingTargets

TOL = 1e-6  # DESIGN §2: max abs difference vs the references on float64 inputs


def random_round(seed: int, n_models: int = 25, n_ids: int = 400, ties: bool = True):
    """Predictions (some rows heavily tied), stakes (some zero) and bucketed targets."""
    rng = np.random.default_rng(seed)
    preds = rng.normal(size=(n_models, n_ids))
    if ties:
        preds[::3] = np.round(preds[::3], 1)
        preds[1] = np.round(preds[1])
    stakes = rng.exponential(100.0, size=n_models)
    stakes[::5] = 0.0
    targets = rng.integers(0, 5, size=n_ids) / 4.0
    return preds, stakes, targets


def as_frame(preds: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(preds.T, columns=[f"m{i}" for i in range(preds.shape[0])])


def nt_meta_model(preds: np.ndarray, stakes: np.ndarray) -> pd.Series:
    df = nt.gaussian(nt.tie_kept_rank(as_frame(preds)))
    staked = pd.Series(stakes, index=df.columns)
    return nt.stake_weight(df, staked[staked > 0])


def test_numerai_corr_hand_values() -> None:
    """On a 5-id toy CORR is the Pearson of Φ⁻¹(.1,.3,.5,.7,.9)^1.5 with (t−.5)^1.5, and odd in the ranking."""
    t = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    g = np.array([-1.2815515655446004, -0.5244005127080407, 0.0, 0.5244005127080407, 1.2815515655446004])
    x = np.sign(g) * np.abs(g) ** 1.5
    y = np.sign(t - 0.5) * np.abs(t - 0.5) ** 1.5
    expected = np.corrcoef(x, y)[0, 1]
    assert 0.99 < expected < 1.0  # the two shapes differ slightly, so not exactly 1
    assert numerai_corr(np.arange(5.0), t) == pytest.approx(expected, abs=1e-15)
    assert numerai_corr(-np.arange(5.0), t) == pytest.approx(-expected, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerai_corr_matches_numerai_tools(seed: int) -> None:
    """CORR equals numerai-tools' numerai_corr on random data with ties."""
    preds, _, targets = random_round(seed)
    expected = nt.numerai_corr(as_frame(preds), pd.Series(targets, name="target")).to_numpy()
    np.testing.assert_allclose(numerai_corr(preds, targets), expected, atol=TOL, rtol=0)


def test_numerai_corr_with_missing_targets_matches_numerai_tools() -> None:
    """Missing targets are dropped before ranking, as numerai-tools' filter_sort_index does."""
    preds, _, targets = random_round(3)
    targets[::7] = np.nan
    expected = nt.numerai_corr(as_frame(preds), pd.Series(targets, name="target")).to_numpy()
    np.testing.assert_allclose(numerai_corr(preds, targets), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 4])
def test_meta_model_matches_numerai_tools_stake_weight(seed: int) -> None:
    """SWMM equals numerai-tools stake_weight of gaussianized tie-kept ranks (stakers only)."""
    preds, stakes, _ = random_round(seed)
    np.testing.assert_allclose(meta_model(preds, stakes), nt_meta_model(preds, stakes).to_numpy(), atol=TOL, rtol=0)


def test_meta_model_without_stakers_is_nan() -> None:
    """Nobody staked: no meta model exists."""
    preds, _, _ = random_round(0)
    assert np.isnan(meta_model(preds, np.zeros(preds.shape[0]))).all()


@pytest.mark.parametrize("seed", [0, 5])
def test_contribution_matches_numerai_tools(seed: int) -> None:
    """Contribution equals numerai-tools correlation_contribution on random data with ties."""
    preds, stakes, targets = random_round(seed)
    mm = nt_meta_model(preds, stakes)
    expected = nt.correlation_contribution(as_frame(preds), mm, pd.Series(targets, name="target")).to_numpy()
    got = contribution(preds, meta_model(preds, stakes), targets)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


def test_contribution_uses_raw_targets_outside_unit_interval() -> None:
    """Targets outside [0, 1] (e.g. returns) are centered but not ×4, like numerai-tools."""
    preds, stakes, _ = random_round(6)
    targets = np.random.default_rng(6).normal(size=preds.shape[1])
    mm = nt_meta_model(preds, stakes)
    expected = nt.correlation_contribution(as_frame(preds), mm, pd.Series(targets, name="target")).to_numpy()
    np.testing.assert_allclose(contribution(preds, meta_model(preds, stakes), targets), expected, atol=TOL, rtol=0)


def test_contribution_of_the_only_staker_is_zero() -> None:
    """A single staker *is* the meta model: nothing is left after orthogonalizing."""
    preds, _, targets = random_round(8)
    stakes = np.zeros(preds.shape[0])
    stakes[2] = 10.0
    assert contribution(preds[2], meta_model(preds, stakes), targets) == pytest.approx(0.0, abs=1e-12)


def test_corr_with_meta_model_definition() -> None:
    """CWMM equals a Pearson of numerai-tools' rank→gauss→pow1.5 with the SWMM."""
    preds, stakes, _ = random_round(9)
    mm = meta_model(preds, stakes)
    transformed = nt.tie_kept_rank__gaussianize__pow_1_5(as_frame(preds))
    expected = transformed.corrwith(pd.Series(mm)).to_numpy()
    np.testing.assert_allclose(corr_with_meta_model(preds, mm), expected, atol=TOL, rtol=0)


def test_constant_predictions_have_nan_correlations_and_zero_contribution() -> None:
    """A constant model has no ranking: CORR and CWMM undefined (NaN), contribution 0."""
    preds, stakes, targets = random_round(10)
    preds[4] = 0.5
    stakes[4] = 0.0
    assert np.isnan(numerai_corr(preds, targets)[4])
    mm = meta_model(preds, stakes)
    assert np.isnan(corr_with_meta_model(preds, mm)[4])
    assert contribution(preds, mm, targets)[4] == pytest.approx(0.0, abs=1e-15)


def test_missing_targets_beyond_twenty_percent_raise() -> None:
    """More than 20% of ids without a target: a typed error, not a score."""
    preds, _, targets = random_round(11)
    targets[: int(0.25 * targets.size)] = np.nan
    with pytest.raises(TooManyMissingTargets):
        numerai_corr(preds, targets)
    targets[: int(0.25 * targets.size)] = 0.5
    targets[: int(0.2 * targets.size)] = np.nan
    assert np.isfinite(numerai_corr(preds, targets)).all()


def test_bad_inputs_raise_typed_errors() -> None:
    """NaN predictions, inf targets, negative stakes and misaligned shapes raise ScoringError subclasses."""
    preds, stakes, targets = random_round(12)
    bad = preds.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteInput):
        numerai_corr(bad, targets)
    bad_t = targets.copy()
    bad_t[0] = np.inf
    with pytest.raises(NonFiniteInput):
        numerai_corr(preds, bad_t)
    with pytest.raises(NegativeStake):
        meta_model(preds, -stakes)
    with pytest.raises(ShapeMismatch):
        meta_model(preds, stakes[:-1])
    with pytest.raises(ShapeMismatch):
        numerai_corr(preds, targets[:-1])


def test_payout_score_clips() -> None:
    """0.5·corr + 2·mmc, clipped to ±0.05, with the multipliers as parameters."""
    np.testing.assert_allclose(payout_score([0.02, 0.2, -0.2], [0.01, 0.0, 0.0]), [0.03, 0.05, -0.05])
    assert payout_score(0.02, 0.01, corr_multiplier=1.0, mmc_multiplier=1.0, clip=1.0) == pytest.approx(0.03)
