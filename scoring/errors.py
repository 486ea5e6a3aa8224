"""Typed errors of the scoring library (never ``assert``: checks must survive ``python -O``)."""

from __future__ import annotations


class ScoringError(ValueError):
    """Root of the scoring library's errors: the inputs cannot be scored as given."""

    reason = "invalid_input"


class NonFiniteInput(ScoringError):
    """Predictions, stakes or targets hold NaN or ±inf where finite numbers are required."""

    reason = "non_finite"


class ShapeMismatch(ScoringError):
    """Arrays do not line up (models × ids, stakes per model, targets per id)."""

    reason = "shape_mismatch"


class NegativeStake(ScoringError):
    """A stake is below zero; stakes are NMR amounts ≥ 0."""

    reason = "negative_stake"


class TooManyMissingTargets(ScoringError):
    """More than the allowed share of the round's ids has no target yet; the update is not scored."""

    reason = "too_many_missing_targets"


class InvalidScoreTable(ScoringError):
    """The score table cannot be analysed as given: rounds that are not integers, models that
    are not strings, or a (round, model) pair that appears twice. Keep one row per model and
    round (the model's latest score for that round) and integer round numbers."""

    reason = "invalid_score_table"


# --------------------------------------------------------------------------- the input table
