"""score_round and the prepared-row path: agreement with the per-metric functions, bit-identity, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import (
    PreparedRound,
    PreparedSubmission,
    close_round,
    contribution,
    corr_with_meta_model,
    meta_model,
    mmc,
    numerai_corr,
    prepare_submission,
    resolve_round,
    round_samples,
    score_prepared,
    score_round,
)
from scoring.errors import NonFiniteInput, ScoringError, ShapeMismatch, TooManyMissingTargets
from tests.scoring.test_metrics import random_round

TOL = 1e-12


def assert_scores_match_definitions(preds, stakes, targets, rnd: int) -> None:
    scores = score_round(preds, stakes, targets, round=rnd)
    keep = ~np.isnan(targets)
    mm = meta_model(preds[:, keep], stakes)
    np.testing.assert_allclose(scores.corr, numerai_corr(preds, targets), atol=TOL, rtol=0)
    np.testing.assert_allclose(scores.corr_w_mm, corr_with_meta_model(preds[:, keep], mm), atol=TOL, rtol=0)
    np.testing.assert_allclose(scores.contribution, contribution(preds[:, keep], mm, targets[keep]), atol=TOL, rtol=0)
    np.testing.assert_allclose(scores.mmc, mmc(preds, stakes, targets, round=rnd), atol=TOL, rtol=0)
    np.testing.assert_allclose(scores.meta_model[keep], mm, atol=TOL, rtol=0)
    assert np.isnan(scores.meta_model[~keep]).all()
    assert scores.n_ids_scored == keep.sum() and scores.n_ids_missing == (~keep).sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_score_round_equals_each_metric(seed: int) -> None:
    """One call gives what the five per-metric functions give, ties included."""
    preds, stakes, targets = random_round(seed)
    assert_scores_match_definitions(preds, stakes, targets, 800 + seed)


def test_score_round_with_missing_targets_equals_each_metric_on_kept_ids() -> None:
    """Up to 20% missing targets: every metric leaves those ids out, ranks included."""
    preds, stakes, targets = random_round(4)
    targets[np.random.default_rng(4).choice(targets.size, 60, replace=False)] = np.nan
    assert_scores_match_definitions(preds, stakes, targets, 804)


def test_score_round_refuses_too_many_missing_targets() -> None:
    """Past 20% missing the update is not scored and says so."""
    preds, stakes, targets = random_round(5)
    targets[:100] = np.nan
    with pytest.raises(TooManyMissingTargets, match="100 of 400"):
        score_round(preds, stakes, targets, round=1)


def test_score_round_needs_a_round_or_samples() -> None:
    """Without a round number the bootstrap has no seed: a typed error."""
    preds, stakes, targets = random_round(6)
    with pytest.raises(ScoringError):
        score_round(preds, stakes, targets)


def test_prepared_rows_give_bit_identical_scores() -> None:
    """Rows prepared one by one, serialized and stacked score exactly like score_round on raw predictions."""
    preds, stakes, targets = random_round(7)
    rows = [PreparedSubmission.from_bytes(prepare_submission(p).to_bytes(), preds.shape[1]) for p in preds]
    prepared = PreparedRound.stack(rows)
    samples = round_samples(stakes, 812)
    basis = close_round(prepared, stakes, samples)
    via_basis = resolve_round(prepared, basis, targets)
    direct = score_round(preds, stakes, targets, round=812)
    for name in ("corr", "mmc", "contribution", "corr_w_mm", "meta_model"):
        np.testing.assert_array_equal(getattr(via_basis, name), getattr(direct, name), err_msg=name)


def test_one_basis_serves_every_daily_update() -> None:
    """The basis computed at close gives the same scores as recomputing it for each update."""
    preds, stakes, _ = random_round(8)
    prepared = PreparedRound.from_predictions(preds)
    samples = round_samples(stakes, 9)
    basis = close_round(prepared, stakes, samples)
    rng = np.random.default_rng(8)
    for _day in range(3):
        t = rng.integers(0, 5, preds.shape[1]) / 4
        a = score_prepared(prepared, stakes, t, samples, basis=basis)
        b = score_prepared(prepared, stakes, t, samples)
        np.testing.assert_array_equal(a.mmc, b.mmc)
        np.testing.assert_array_equal(a.corr, b.corr)


def test_prepared_bytes_stay_under_three_per_prediction() -> None:
    """uint16 order + packed tie bits: 2⅛ bytes per prediction up to 65,535 ids, uint32 beyond."""
    small = prepare_submission(np.random.default_rng(0).normal(size=6720))
    assert len(small.to_bytes()) == 6720 * 2 + 840
    big = prepare_submission(np.random.default_rng(0).normal(size=70_000))
    assert big.order.dtype == np.uint32
    assert PreparedSubmission.from_bytes(big.to_bytes(), 70_000).order.tolist() == big.order.tolist()


def test_prepared_bytes_of_wrong_length_are_refused() -> None:
    """A truncated blob raises ShapeMismatch instead of decoding garbage."""
    blob = prepare_submission(np.arange(10.0)).to_bytes()
    with pytest.raises(ShapeMismatch):
        PreparedSubmission.from_bytes(blob[:-1], 10)


def test_an_order_beyond_the_universe_is_refused() -> None:
    """Gathers skip numpy's bounds check, so a corrupt order must be refused when the rows are built."""
    blob = bytearray(prepare_submission(np.arange(10.0)).to_bytes())
    blob[0:2] = (10).to_bytes(2, "little")  # id 10 in a universe of 10
    with pytest.raises(ShapeMismatch):
        PreparedRound.stack([PreparedSubmission.from_bytes(bytes(blob), 10)])


@pytest.mark.parametrize("threads, block_bytes", [(1, 2 << 20), (3, 256 << 10), (2, 64 << 10)])
def test_resolution_does_not_depend_on_threads(monkeypatch: pytest.MonkeyPatch, threads: int, block_bytes: int) -> None:
    """Every row's scores are the same bits whatever the gather threads (blocks fixed by size only)."""
    import scoring.prepared as rounds

    preds, stakes, targets = random_round(7, n_models=300, n_ids=700)
    targets = np.where(np.isnan(targets), 0.5, targets)
    prepared = PreparedRound.from_predictions(preds)
    samples = round_samples(stakes, 7)
    monkeypatch.setattr(rounds, "GATHER_BLOCK_BYTES", block_bytes)
    reference = resolve_round(prepared, close_round(prepared, stakes, samples), targets)
    assert len(range(0, 300, max(1, block_bytes // (16 * 700)))) > threads  # every thread gets blocks
    monkeypatch.setattr(rounds, "GATHER_THREADS", threads)
    again = resolve_round(prepared, close_round(prepared, stakes, samples), targets)
    for name in ("corr", "mmc", "contribution", "corr_w_mm"):
        assert getattr(again, name).tobytes() == getattr(reference, name).tobytes(), name


def test_prepare_submission_rejects_non_finite() -> None:
    """NaN in a submission raises NonFiniteInput at ingestion."""
    with pytest.raises(NonFiniteInput):
        prepare_submission(np.array([0.1, np.nan, 0.2]))


def test_subset_keeps_ties_and_order() -> None:
    """Restricting prepared rows to some ids equals preparing the restricted predictions."""
    preds = np.round(np.random.default_rng(9).normal(size=(6, 50)), 1)
    keep = np.ones(50, dtype=bool)
    keep[::4] = False
    sub = PreparedRound.from_predictions(preds).subset(keep)
    direct = PreparedRound.from_predictions(preds[:, keep])
    np.testing.assert_array_equal(sub.order, direct.order)
    np.testing.assert_array_equal(sub.new_group, direct.new_group)


def test_no_stakers_scores_corr_only() -> None:
    """Without stake: CORR is defined, the meta-model metrics are NaN."""
    preds, _, targets = random_round(10)
    scores = score_round(preds, np.zeros(preds.shape[0]), targets, round=1)
    assert np.isfinite(scores.corr[~np.isnan(scores.corr)]).all() and np.isfinite(scores.corr).sum() > 0
    for name in ("mmc", "contribution", "corr_w_mm", "meta_model"):
        assert np.isnan(getattr(scores, name)).all(), name


def test_single_staker_is_the_meta_model() -> None:
    """One staker: its CWMM is the correlation of its own pow-1.5 with itself (≈1) and its MMC 0."""
    preds, _, targets = random_round(11)
    stakes = np.zeros(preds.shape[0])
    stakes[5] = 1.0
    scores = score_round(preds, stakes, targets, round=3)
    assert scores.mmc[5] == pytest.approx(0.0, abs=1e-12)
    assert scores.contribution[5] == pytest.approx(0.0, abs=1e-12)
    assert scores.corr_w_mm[5] > 0.95


def test_zero_stakes_carry_no_weight() -> None:
    """A model with stake 0 is scored but changes nothing about the others' scores."""
    preds, stakes, targets = random_round(12)
    stakes[0] = 0.0
    base = score_round(preds, stakes, targets, round=5)
    moved = preds.copy()
    moved[0] = np.random.default_rng(1).normal(size=preds.shape[1])
    other = score_round(moved, stakes, targets, round=5)
    np.testing.assert_array_equal(base.meta_model, other.meta_model)
    np.testing.assert_array_equal(base.mmc[1:], other.mmc[1:])
    assert np.isfinite(other.mmc[0])


def test_resolve_round_refuses_missing_targets() -> None:
    """The fast path needs every target; missing ones go through score_prepared."""
    preds, stakes, targets = random_round(13)
    prepared = PreparedRound.from_predictions(preds)
    basis = close_round(prepared, stakes, round_samples(stakes, 1))
    targets[0] = np.nan
    with pytest.raises(ShapeMismatch):
        resolve_round(prepared, basis, targets)


def test_gaussian_ranks_equal_the_transform_on_raw_predictions() -> None:
    """Id-space gaussianized ranks from prepared rows equal the direct transforms (ties included)."""
    from scoring.prepared import gaussian_ranks
    from scoring.ranking import tie_kept_rank__gaussianize, tie_kept_rank__gaussianize__pow_1_5

    preds, _, _ = random_round(14)
    prepared = PreparedRound.from_predictions(preds)
    np.testing.assert_array_equal(gaussian_ranks(prepared), tie_kept_rank__gaussianize(preds))
    np.testing.assert_allclose(gaussian_ranks(prepared, pow_1_5=True), tie_kept_rank__gaussianize__pow_1_5(preds), atol=1e-15)
