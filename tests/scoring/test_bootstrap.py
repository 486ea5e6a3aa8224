"""MMC as the 2020 seed document defines it: forum check vector, draws, literal oracle."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from scoring import bootstrap_samples, mmc, round_seed
from scoring.bootstrap import neutral_covariance, sample_size
from scoring.errors import ScoringError, ShapeMismatch
from tests.scoring.oracles import literal_mmc, neutralize_with_constant
from tests.scoring.test_metrics import random_round

# DESIGN §2.1, from the 2020 forum thread "MMC Calculation 'Punishes' Originality".
TARGET = np.array([0, 0, 0, 0, 0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 1, 1, 1, 1])
META = np.array([1, 0, 0.25, 1, 0.5, 0.75, 0.5, 0.5, 1, 0.75, 0.75, 0, 0, 0.25, 0.25, 1, 0, 0.25, 0.5, 0.75])
HI = np.array([1, 0, 0.25, 1, 0.25, 0.75, 0.5, 0.5, 1, 0.75, 0.75, 0, 0, 0.25, 0.25, 1, 0, 0.5, 0.5, 0.75])
LO = np.array([1, 1, 0.75, 0, 0.5, 0.25, 0.5, 0.25, 0, 0.5, 0.25, 1, 1, 0.75, 0.75, 0, 0, 0.75, 0.5, 0.25])


@pytest.mark.parametrize("user, expected", [(HI, 0.10854089742787426), (LO, -0.43709712747981727)])
def test_forum_check_vector_literal(user: np.ndarray, expected: float) -> None:
    """Steps 4–6 by lstsq residual and np.cov reproduce the forum's numbers."""
    residual = neutralize_with_constant(user, META)
    assert np.cov(residual, TARGET)[0, 1] / 0.0841 == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("user, expected", [(HI, 0.10854089742787426), (LO, -0.43709712747981727)])
def test_forum_check_vector_through_the_dot_product_form(user: np.ndarray, expected: float) -> None:
    """The library's centered dot-product form of steps 4–6 gives the same numbers."""
    u, m, t = user - user.mean(), META - META.mean(), TARGET - TARGET.mean()
    got = neutral_covariance(np.array([u @ t]), np.array([[u @ m]]), np.array([m @ t]), np.array([m @ m]), t.size)
    assert got[0] == pytest.approx(expected, abs=1e-12)


def test_sample_size_is_rounded_share_of_stakers() -> None:
    """round(0.67·n), at least one staker when there are any, none when there are none."""
    assert [sample_size(n) for n in (0, 1, 2, 3, 10, 100)] == [0, 1, 1, 2, 7, 67]


def test_bootstrap_samples_shape_range_and_replacement() -> None:
    """[draws, round(0.67n)] indices into the stakers, drawn with replacement."""
    s = bootstrap_samples(30, seed=round_seed(812))
    assert s.shape == (20, 20) and s.dtype == np.int64
    assert s.min() >= 0 and s.max() < 30
    assert any(len(set(row)) < len(row) for row in s)  # with replacement: some draw repeats a staker


def test_bootstrap_samples_are_deterministic_per_round_and_salt() -> None:
    """Same round and salt → same draws; another round or salt → other draws."""
    a = bootstrap_samples(50, seed=round_seed(812))
    np.testing.assert_array_equal(a, bootstrap_samples(50, seed=round_seed(812)))
    assert not np.array_equal(a, bootstrap_samples(50, seed=round_seed(813)))
    assert not np.array_equal(a, bootstrap_samples(50, seed=round_seed(812, salt="other")))


def test_round_seed_is_the_same_in_another_process() -> None:
    """The seed comes from SHA-256 of salt and round, not from the clock or hash randomization."""
    code = "from scoring import round_seed; print(round_seed(812))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == round_seed(812)


def test_bootstrap_rejects_bad_parameters() -> None:
    """Negative counts and fractions outside (0, 1] raise ScoringError."""
    with pytest.raises(ScoringError):
        bootstrap_samples(-1)
    with pytest.raises(ScoringError):
        bootstrap_samples(10, fraction=1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mmc_matches_literal_per_user_loop(seed: int) -> None:
    """The matrix form equals the literal §2.1 loop with the same draws (ties included)."""
    preds, stakes, targets = random_round(seed, n_models=12, n_ids=120)
    samples = bootstrap_samples(int((stakes > 0).sum()), seed=seed)
    np.testing.assert_allclose(mmc(preds, stakes, targets, samples=samples), literal_mmc(preds, stakes, targets, samples), atol=1e-12, rtol=0)


def test_mmc_draws_from_the_round_seed_when_samples_are_omitted() -> None:
    """mmc(round=r) equals mmc with bootstrap_samples(seed=round_seed(r))."""
    preds, stakes, targets = random_round(3, n_models=10, n_ids=80)
    samples = bootstrap_samples(int((stakes > 0).sum()), seed=round_seed(812))
    np.testing.assert_array_equal(mmc(preds, stakes, targets, round=812), mmc(preds, stakes, targets, samples=samples))
    with pytest.raises(ScoringError):
        mmc(preds, stakes, targets)


def test_mmc_of_a_single_staker_is_zero_for_itself() -> None:
    """With one staker every draw is that staker: its residual vanishes."""
    preds, _, targets = random_round(4, n_models=6, n_ids=60)
    stakes = np.zeros(6)
    stakes[3] = 5.0
    out = mmc(preds, stakes, targets, round=1)
    assert out[3] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(out, literal_mmc(preds, stakes, targets, bootstrap_samples(1, seed=round_seed(1))), atol=1e-12)


def test_mmc_without_stakers_is_nan() -> None:
    """No stake, no meta model: MMC is undefined for everyone."""
    preds, _, targets = random_round(5, n_models=4, n_ids=40)
    assert np.isnan(mmc(preds, np.zeros(4), targets, round=1)).all()


def test_mmc_rejects_samples_out_of_range() -> None:
    """A draw that indexes past the stakers raises ShapeMismatch."""
    preds, stakes, targets = random_round(6, n_models=5, n_ids=40)
    with pytest.raises(ShapeMismatch):
        mmc(preds, stakes, targets, samples=np.full((2, 3), 99))


def test_mmc_with_missing_targets_equals_mmc_on_the_kept_ids() -> None:
    """Missing targets drop those ids before ranking, exactly as scoring the kept ids alone."""
    preds, stakes, targets = random_round(7, n_models=8, n_ids=100)
    samples = bootstrap_samples(int((stakes > 0).sum()), seed=7)
    targets[::10] = np.nan
    keep = ~np.isnan(targets)
    np.testing.assert_allclose(mmc(preds, stakes, targets, samples=samples), literal_mmc(preds[:, keep], stakes, targets[keep], samples), atol=1e-12)
