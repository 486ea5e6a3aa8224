"""The window statistics of a model's standing against hand values and a direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.errors import ShapeMismatch
from scoring.standing import max_drawdown, positive_rounds, sharpe, stake_payout, window_mean, window_std


def direct_drawdown(values: list[float]) -> float:
    """Peak-to-trough of the cumulative sum starting at 0, by every (peak, trough) pair."""
    walk = [0.0, *np.cumsum(values).tolist()]
    return max(walk[i] - walk[j] for j in range(len(walk)) for i in range(j + 1))


WINDOWS = [
    [0.02],
    [0.01, -0.03, 0.02, 0.05, -0.01],
    [-0.01, -0.02, -0.03],
    [0.03, 0.01, 0.04],
    [0.05, -0.05, 0.05, -0.05, -0.05, 0.01],
]


@pytest.mark.parametrize("values", WINDOWS)
def test_statistics_match_a_direct_computation(values: list[float]) -> None:
    """Mean, sample std, Sharpe, drawdown, positive rounds equal numpy's and a pairwise search."""
    x = np.array(values)
    assert window_mean(values) == pytest.approx(x.mean(), abs=1e-15)
    if len(values) >= 2:
        assert window_std(values) == pytest.approx(x.std(ddof=1), abs=1e-15)
        assert sharpe(values) == pytest.approx(x.mean() / x.std(ddof=1), rel=1e-12)
    assert max_drawdown(values) == pytest.approx(direct_drawdown(values), abs=1e-15)
    assert positive_rounds(values) == int((x > 0).sum())


def test_one_round() -> None:
    """One round: a mean, no spread, no Sharpe; its drawdown is its loss when it loses."""
    assert window_mean([0.02]) == 0.02
    assert window_std([0.02]) is None
    assert sharpe([0.02]) is None
    assert max_drawdown([0.02]) == 0.0
    assert max_drawdown([-0.02]) == 0.02
    assert positive_rounds([0.02]) == 1


def test_all_equal_values_have_no_sharpe() -> None:
    """Equal payouts: std exactly 0 (not a rounding residue), so the Sharpe is undefined."""
    values = [0.1, 0.1, 0.1]
    assert window_std(values) == 0.0
    assert sharpe(values) is None
    assert max_drawdown(values) == 0.0


def test_negative_run() -> None:
    """Only losses: the drawdown is the whole loss, no positive round, a negative Sharpe."""
    values = [-0.01, -0.02, -0.03]
    assert max_drawdown(values) == pytest.approx(0.06, abs=1e-15)
    assert positive_rounds(values) == 0
    assert sharpe(values) == pytest.approx(-0.02 / 0.01, rel=1e-12)


def test_drawdown_after_a_peak() -> None:
    """+3, −1, −4, +2 (in hundredths): the walk peaks at 3 and bottoms at −2: drawdown 5."""
    assert max_drawdown([0.03, -0.01, -0.04, 0.02]) == pytest.approx(0.05, abs=1e-15)


def test_empty_window() -> None:
    """No rounds: no mean, no drawdown, nothing paid."""
    assert window_mean([]) is None
    assert max_drawdown([]) is None
    assert stake_payout([], []) == 0.0


def test_stake_payout() -> None:
    """Σ stake × payout: 100 × 0.02 + 50 × (−0.04) + 0 × 0.05 = 0."""
    assert stake_payout([100.0, 50.0, 0.0], [0.02, -0.04, 0.05]) == pytest.approx(0.0, abs=1e-15)
    assert stake_payout([10.0], [0.05]) == pytest.approx(0.5, abs=1e-15)
    with pytest.raises(ShapeMismatch):
        stake_payout([1.0], [0.01, 0.02])
