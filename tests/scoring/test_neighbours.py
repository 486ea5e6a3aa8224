"""Nearest stakers, crowd shares and the crowd tax: hand-made rounds, a brute-force oracle, rescoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

import scoring.neighbours as neighbours_module
from scoring import CrowdNeighbours, crowd_neighbours, crowd_tax, score_round
from scoring.errors import NegativeStake, NonFiniteInput, ScoringError, ShapeMismatch

TOL = 1e-12


# --------------------------------------------------------------------------- the oracle


def gaussian_rows(preds: np.ndarray) -> np.ndarray:
    """pandas ``rank(method="average")`` → ``(rank − 0.5)/n`` → normal ppf, row by row."""
    n = preds.shape[1]
    return np.array([norm.ppf((pd.Series(row).rank(method="average").to_numpy() - 0.5) / n) for row in preds])


def brute_force(preds: np.ndarray, stakes: np.ndarray, k: int, threshold: float) -> list[dict]:
    """Per model: np.corrcoef with every other staker in a loop, sorted by (correlation at 12 decimals ↓, row ↑)."""
    g = gaussian_rows(preds)
    total = stakes[stakes > 0].sum()
    constant = [np.ptp(row) == 0 for row in g]
    out = []
    for i in range(len(preds)):
        pairs = []
        for j in range(len(preds)):
            if j == i or stakes[j] <= 0 or constant[i] or constant[j]:
                continue
            pairs.append((j, float(np.corrcoef(g[i], g[j])[0, 1])))
        pairs.sort(key=lambda p: (-np.rint(p[1] * 1e12), p[0]))
        crowd = [j for j, c in pairs if np.rint(c * 1e12) >= np.rint(threshold * 1e12)]
        out.append(
            {
                "index": [j for j, _ in pairs[:k]],
                "correlation": [c for _, c in pairs[:k]],
                "crowd_share": np.nan if constant[i] or total == 0 else stakes[crowd].sum() / total,
                "crowd_size": len(crowd),
                "own_share": stakes[i] / total if total > 0 else np.nan,
            }
        )
    return out


def assert_matches_brute_force(preds: np.ndarray, stakes: np.ndarray, k: int, threshold: float) -> CrowdNeighbours:
    got = crowd_neighbours(preds, stakes, k=k, threshold=threshold)
    expected = brute_force(preds, stakes, k, threshold)
    total = stakes[stakes > 0].sum()
    for i, e in enumerate(expected):
        n = int(got.count[i])
        assert list(got.index[i, :n]) == e["index"], f"model {i}"
        assert (got.index[i, n:] == -1).all() and np.isnan(got.correlation[i, n:]).all()
        np.testing.assert_allclose(got.correlation[i, :n], e["correlation"], atol=TOL, rtol=0)
        np.testing.assert_array_equal(got.stake[i, :n], stakes[e["index"]])
        np.testing.assert_allclose(got.stake_share[i, :n], stakes[e["index"]] / total, rtol=1e-15)
        np.testing.assert_allclose(got.crowd_share[i], e["crowd_share"], atol=TOL, rtol=0)
        assert got.crowd_size[i] == e["crowd_size"]
        np.testing.assert_allclose(got.own_share[i], e["own_share"], atol=TOL, rtol=0)
    return got


def crowded_round(seed: int, n_models: int = 30, n_ids: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Models loading 0–0.95 on one shared signal (correlations spread from ~0 to ~0.9), with copies,
    rounded (tied) rows, a constant row, zero stakes and bucketed targets."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n_ids)
    loading = rng.uniform(0, 0.95, size=n_models)[:, np.newaxis]
    preds = loading * signal + np.sqrt(1 - loading**2) * rng.normal(size=(n_models, n_ids))
    preds[3] = preds[7]  # a copy of a staker
    preds[11] = preds[7]
    preds[::4] = np.round(preds[::4], 1)
    preds[5] = 0.5  # constant predictions
    stakes = rng.lognormal(3.0, 1.5, size=n_models)
    stakes[::3] = 0.0
    targets = rng.integers(0, 5, size=n_ids) / 4.0
    return preds, stakes, targets


# --------------------------------------------------------------------------- hand-made


def test_hand_made_round() -> None:
    """up, its copy, its reverse and a near-copy: correlations ±1 and a tie broken by row index."""
    up = np.arange(6.0)
    near = np.array([1.0, 0.0, 2.0, 3.0, 4.0, 5.0])  # up with its first two ids swapped
    preds = np.stack([up, up, up[::-1], near])
    stakes = np.array([10.0, 30.0, 60.0, 0.0])
    got = crowd_neighbours(preds, stakes, k=2, threshold=0.8)
    assert got.index.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]
    np.testing.assert_allclose(got.correlation[:3], [[1, -1], [1, -1], [-1, -1]], atol=TOL)
    g = norm.ppf((np.arange(6) + 0.5) / 6)
    swapped = g[[1, 0, 2, 3, 4, 5]]
    c = swapped @ g / (g @ g)  # both rows have mean 0 and the same norm
    np.testing.assert_allclose(got.correlation[3], [c, c], atol=TOL)
    np.testing.assert_allclose(got.stake_share, [[0.3, 0.6], [0.1, 0.6], [0.1, 0.3], [0.1, 0.3]])
    np.testing.assert_allclose(got.crowd_share, [0.3, 0.1, 0.0, 0.4])
    assert got.crowd_size.tolist() == [1, 1, 0, 2]
    np.testing.assert_allclose(got.own_share, [0.1, 0.3, 0.6, 0.0])
    assert got.total_stake == 100.0
    first = got.of(3, models=["a", "b", "c", "d"])
    assert [(n.index, n.model, n.stake) for n in first] == [(0, "a", 10.0), (1, "b", 30.0)]


def test_threshold_one_counts_copies() -> None:
    """A copy's correlation is 1 at 12 decimals, so it is in the crowd even at threshold 1."""
    preds, stakes, _ = crowded_round(0)
    got = crowd_neighbours(preds, stakes, k=3, threshold=1.0)
    assert stakes[7] > 0 and stakes[11] > 0
    assert got.index[3, :2].tolist() == [7, 11]
    np.testing.assert_allclose(got.crowd_share[3], (stakes[7] + stakes[11]) / stakes.sum())


# --------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k, threshold", [(1, 0.8), (5, 0.5), (10, -0.2)])
def test_matches_brute_force(seed: int, k: int, threshold: float) -> None:
    """Ties, copies, a constant row and zero stakes: the same neighbours, values and shares as the loop."""
    preds, stakes, _ = crowded_round(seed)
    got = assert_matches_brute_force(preds, stakes, k, threshold)
    assert got.count[5] == 0 and np.isnan(got.crowd_share[5])  # the constant row has no correlation
    assert 5 not in got.index


@st.composite
def small_rounds(draw):
    """A few models over a few ids, some rows rounded (ties), copies, zero stakes."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_models = draw(st.integers(1, 9))
    n_ids = draw(st.integers(3, 30))
    rng = np.random.default_rng(seed)
    preds = rng.normal(size=(n_models, n_ids))
    tied = rng.random(n_models) < 0.3
    preds[tied] = np.round(preds[tied])
    if draw(st.booleans()):
        preds = np.round(preds, 1)
    if n_models > 2 and draw(st.booleans()):
        preds[-1] = preds[0]
    stakes = np.where(rng.random(n_models) < 0.4, 0.0, rng.exponential(50.0, size=n_models))
    return preds, stakes


@settings(max_examples=60, deadline=None)
@given(small_rounds(), st.integers(1, 6), st.floats(-1.0, 1.0))
def test_any_small_round_matches_brute_force(r, k, threshold) -> None:
    """Whatever the round (one model, no staker, ties everywhere), the result is the brute-force loop's."""
    preds, stakes = r
    assert_matches_brute_force(preds, stakes, k, threshold)


# --------------------------------------------------------------------------- edge cases


def test_fewer_stakers_than_k() -> None:
    """Three stakers and k = 10: the arrays are 3 wide, a staker lists the 2 others, a non-staker all 3."""
    preds, stakes, _ = crowded_round(1)
    few = np.zeros_like(stakes)
    few[[1, 2, 4]] = [5.0, 1.0, 4.0]
    got = crowd_neighbours(preds, few, k=10)
    assert got.index.shape == (len(stakes), 3)
    assert got.count[1] == 2 and set(got.index[1, :2]) == {2, 4}
    assert got.count[0] == 3


def test_one_staker() -> None:
    """The only staker has no neighbours (tax 0); everyone else's one neighbour holds all stake (no meta model without it)."""
    preds, _, targets = crowded_round(2)
    stakes = np.zeros(len(preds))
    stakes[4] = 7.0
    got = crowd_neighbours(preds, stakes)
    assert got.count[4] == 0 and got.crowd_share[4] == 0.0 and got.own_share[4] == 1.0
    others = np.flatnonzero((np.arange(len(preds)) != 4) & (np.arange(len(preds)) != 5))
    assert (got.index[others, 0] == 4).all() and (got.stake_share[others, 0] == 1.0).all()
    tax = crowd_tax(preds, targets, got, models=np.arange(len(preds)))
    assert tax.status[4] == "no_neighbours" and tax.tax[4] == 0.0
    assert tax.contribution_without_crowd[4] == tax.contribution[4]
    assert (tax.status[others] == "no_stake_left").all() and np.isnan(tax.contribution_without_crowd[others]).all()
    assert np.isnan(score_round(preds, np.zeros(len(preds)), targets, round=1).contribution).all()


def test_no_stake_at_all() -> None:
    """Nobody staked: no neighbours, every share NaN, no contribution with or without a crowd."""
    preds, _, targets = crowded_round(3)
    stakes = np.zeros(len(preds))
    got = crowd_neighbours(preds, stakes)
    assert got.index.shape == (len(preds), 0) and (got.count == 0).all()
    assert np.isnan(got.crowd_share).all() and np.isnan(got.own_share).all() and got.total_stake == 0.0
    tax = crowd_tax(preds, targets, got, models=np.arange(len(preds)))
    assert (tax.status == "no_meta_model").all() and np.isnan(tax.tax).all()


def test_a_staked_model_alone_in_the_meta_model() -> None:
    """With k ≥ the other stakers, a staker's counterfactual meta model is itself: contribution 0 (up to
    rounding), as rescoring says; the tax is its whole contribution."""
    preds, _, targets = crowded_round(4)
    stakes = np.zeros(len(preds))
    stakes[[0, 2, 6]] = [1e-3, 50.0, 20.0]  # the neighbours hold nearly all stake: the sum over the rest
    got = crowd_neighbours(preds, stakes, k=5)
    tax = crowd_tax(preds, targets, got, models=np.arange(len(preds)))
    for i in (0, 2, 6):
        alone = np.where(np.arange(len(preds)) == i, stakes, 0.0)
        expected = score_round(preds, alone, targets, round=1).contribution[i]
        assert abs(expected) < 1e-15 and abs(tax.contribution_without_crowd[i]) < 1e-15
        assert tax.tax[i] == pytest.approx(tax.contribution[i], abs=1e-15)
    assert (tax.status[[0, 2, 6]] == "ok").all()


# --------------------------------------------------------------------------- the counterfactual


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("missing", [False, True])
def test_without_the_crowd_equals_rescoring_with_those_stakes_zero(seed: int, missing: bool) -> None:
    """Each model's counterfactual is score_round with its k nearest stakers' stakes set to 0
    (also with targets missing: ids left out, ranks over the rest); the actual side is score_round's."""
    preds, stakes, targets = crowded_round(seed + 10)
    if missing:
        targets[np.random.default_rng(seed).choice(targets.size, targets.size // 10, replace=False)] = np.nan
    stakes[7] = 40 * stakes.sum()  # its copies (3, 11) and others: neighbours holding most of the stake
    got = crowd_neighbours(preds, stakes, k=4)
    tax = crowd_tax(preds, targets, got, models=np.arange(len(preds)))
    assert (tax.removed_share > 0.5).any() and ((tax.removed_share < 0.5) & (tax.status == "ok")).any()  # both sums
    actual = score_round(preds, stakes, targets, round=seed)
    np.testing.assert_allclose(tax.contribution, actual.contribution, atol=TOL, rtol=0)
    for i in range(len(preds)):
        zeroed = stakes.copy()
        zeroed[got.index[i, : got.count[i]]] = 0.0
        expected = score_round(preds, zeroed, targets, round=seed).contribution[i]
        np.testing.assert_allclose(tax.contribution_without_crowd[i], expected, atol=TOL, rtol=0, err_msg=f"model {i}")
        assert tax.removed_stake[i] == pytest.approx(stakes[got.index[i, : got.count[i]]].sum(), rel=1e-15)
    np.testing.assert_array_equal(tax.tax, tax.contribution - tax.contribution_without_crowd)
    assert tax.n_ids_scored == int((~np.isnan(targets)).sum())


def test_chosen_models_only() -> None:
    """``models`` scores those rows, in that order, with the same values as the whole round; by default the stakers."""
    preds, stakes, targets = crowded_round(5)
    got = crowd_neighbours(preds, stakes, k=3)
    whole = crowd_tax(preds, targets, got, models=np.arange(len(preds)))
    picked = np.array([9, 2, 2, 0])
    some = crowd_tax(preds, targets, got, models=picked)
    assert some.models.tolist() == picked.tolist()
    np.testing.assert_array_equal(some.tax, whole.tax[picked])
    np.testing.assert_array_equal(some.status, whole.status[picked])
    stakers = crowd_tax(preds, targets, got)  # by default the stakers, the models a crowd taxes
    assert stakers.models.tolist() == np.flatnonzero(stakes > 0).tolist()
    np.testing.assert_array_equal(stakers.tax, whole.tax[stakes > 0])


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("block_rows", [1, 8, 20, 64, 10_000])
def test_block_size_changes_no_bit(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    """Every array is the same bits whatever the block size (tiles of 8 here, so blocks hold 1 to 8 tiles)."""
    monkeypatch.setattr(neighbours_module, "TILE_ROWS", 8)
    preds, stakes, targets = crowded_round(6, n_models=60, n_ids=203)  # rows not 64-byte multiples
    reference = crowd_neighbours(preds, stakes, k=4, threshold=0.3, block_rows=8)
    got = crowd_neighbours(preds, stakes, k=4, threshold=0.3, block_rows=block_rows)
    for name in ("index", "correlation", "stake", "stake_share", "count", "crowd_share", "crowd_size", "own_share"):
        np.testing.assert_array_equal(getattr(got, name), getattr(reference, name), err_msg=name)
    everyone = np.arange(len(preds))
    tax_reference = crowd_tax(preds, targets, reference, models=everyone, block_rows=7)
    tax = crowd_tax(preds, targets, got, models=everyone, block_rows=block_rows)
    for name in ("contribution", "contribution_without_crowd", "tax", "removed_stake", "status"):
        np.testing.assert_array_equal(getattr(tax, name), getattr(tax_reference, name), err_msg=name)


def test_ranks_only() -> None:
    """An increasing transform of a model's predictions changes no bit of anything."""
    preds, stakes, targets = crowded_round(7)
    moved = preds.copy()
    moved[[0, 7]] = np.exp(moved[[0, 7]])
    a, b = crowd_neighbours(preds, stakes), crowd_neighbours(moved, stakes)
    np.testing.assert_array_equal(a.correlation, b.correlation)
    np.testing.assert_array_equal(crowd_tax(preds, targets, a).tax, crowd_tax(moved, targets, b).tax)


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_raise_typed_errors() -> None:
    """k < 1 or not an integer, a threshold outside [−1, 1], misshapen or negative stakes, NaN
    predictions, neighbours of another round and unknown rows raise the scoring errors."""
    preds, stakes, targets = crowded_round(8)
    for k in (0, -1, 2.5, True, "3"):
        with pytest.raises(ScoringError, match="k must be"):
            crowd_neighbours(preds, stakes, k=k)  # type: ignore[arg-type]
    for threshold in (1.5, -1.01, float("nan"), float("inf"), "high"):
        with pytest.raises(ScoringError, match="threshold"):
            crowd_neighbours(preds, stakes, threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(ScoringError, match="block_rows"):
        crowd_neighbours(preds, stakes, block_rows=0)
    with pytest.raises(ShapeMismatch):
        crowd_neighbours(preds, stakes[:-1])
    with pytest.raises(NegativeStake):
        crowd_neighbours(preds, -stakes)
    bad = preds.copy()
    bad[2, 3] = np.nan
    with pytest.raises(NonFiniteInput):
        crowd_neighbours(bad, stakes)
    got = crowd_neighbours(preds, stakes)
    with pytest.raises(ShapeMismatch):
        crowd_tax(preds[:-1], targets, got)
    with pytest.raises(ShapeMismatch):
        crowd_tax(preds, targets[:-1], got)
    with pytest.raises(ScoringError):
        crowd_tax(preds, targets, got, models=[len(preds)])
    with pytest.raises(ShapeMismatch):
        crowd_tax(preds, targets, got, models=[[0, 1]])
    with pytest.raises(ScoringError):
        got.of(len(preds))


# --------------------------------------------------------------------------- the largest stakers only


@pytest.mark.parametrize("most", [1, 3, 7])
def test_max_stakers_compares_with_the_largest_stakes_only(most: int) -> None:
    """With ``max_stakers``, the result is the one of a round where only the ``most`` largest
    stakes (ties to the earlier row) were stakes — the same neighbours, correlations and crowds,
    bit for bit — with every share still of the whole round's stake, and ``compared_share``
    the kept stakers' share of it."""
    preds, stakes, _ = crowded_round(11)
    stakes = stakes.copy()
    stakes[[2, 6]] = stakes[1]  # a tie at the boundary goes to the earlier row
    stakers = np.flatnonzero(stakes > 0)
    assert stakers.size > most
    kept = sorted(stakers, key=lambda r: (-stakes[r], r))[:most]
    only_kept = np.where(np.isin(np.arange(len(stakes)), kept), stakes, 0.0)

    got = crowd_neighbours(preds, stakes, k=4, threshold=0.3, max_stakers=most)
    reference = crowd_neighbours(preds, only_kept, k=4, threshold=0.3)

    for name in ("index", "correlation", "stake", "count", "crowd_size"):
        assert np.array_equal(getattr(got, name), getattr(reference, name), equal_nan=True), name
    total, kept_total = stakes[stakers].sum(), stakes[kept].sum()
    assert got.total_stake == total
    assert got.compared_share == pytest.approx(kept_total / total, rel=1e-15)
    np.testing.assert_allclose(got.crowd_share * total, reference.crowd_share * kept_total, rtol=1e-12)
    np.testing.assert_allclose(got.stake_share * total, reference.stake_share * kept_total, rtol=1e-12)
    np.testing.assert_array_equal(got.own_share, stakes / total)


def test_max_stakers_at_or_above_the_stakers_changes_nothing() -> None:
    """A cap the round's stakers fit under gives the uncapped result, bit for bit, and a compared share of 1."""
    preds, stakes, _ = crowded_round(12)
    n = int((stakes > 0).sum())
    full = crowd_neighbours(preds, stakes, k=3)
    for most in (n, n + 5):
        capped = crowd_neighbours(preds, stakes, k=3, max_stakers=most)
        assert capped.compared_share == 1.0
        for name in ("index", "correlation", "stake_share", "count", "crowd_share", "crowd_size", "own_share"):
            assert np.array_equal(getattr(capped, name), getattr(full, name), equal_nan=True), name
    with pytest.raises(ScoringError):
        crowd_neighbours(preds, stakes, max_stakers=0)
