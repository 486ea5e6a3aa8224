"""The stake counterfactual: a model's scores had its stake been k× (everything else equal).

Turns the "crowding tax" into a number per model: more stake pulls the meta model toward
the model, which raises its CWMM and lowers its MMC and contribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from scoring.bootstrap import DEFAULT_SALT
from scoring.errors import ScoringError
from scoring.rounds import PreparedRound, round_samples, score_prepared
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_stakes


@dataclass(frozen=True)
class StakeCounterfactual:
    """One model's scores in one round, as it was and with its stake × ``multiplier``."""

    model_index: int
    multiplier: float
    stake: float
    stake_whatif: float
    mmc: float
    mmc_whatif: float
    contribution: float
    contribution_whatif: float
    corr_w_mm: float
    corr_w_mm_whatif: float

    @property
    def mmc_change(self) -> float:
        return self.mmc_whatif - self.mmc

    @property
    def contribution_change(self) -> float:
        return self.contribution_whatif - self.contribution


def stake_counterfactual(
    prepared: PreparedRound | ArrayLike,
    stakes: ArrayLike,
    targets: ArrayLike,
    model_index: int,
    multiplier: float,
    round: int,
    salt: str = DEFAULT_SALT,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> StakeCounterfactual:
    """Re-score a round with ``stakes[model_index] × multiplier`` and every other input unchanged.

    The bootstrap draws come from the round's seed for the staker set in force, so when the
    model already had stake (the set is unchanged) both sides use the same 20 draws. A model
    with zero stake stays at zero for any multiplier (it has no weight to scale).

    Arguments:
        prepared: the round's prepared rows (or raw predictions ``[n_models, n_ids]``).
        stakes, targets: as in :func:`scoring.score_round`.
        model_index: the row of the model; multiplier: k ≥ 0.
        round: seeds the draws (with ``salt``).
    """
    rows = prepared if isinstance(prepared, PreparedRound) else PreparedRound.from_predictions(prepared)
    s = as_stakes(stakes, rows.n_models)
    if not 0 <= model_index < rows.n_models:
        raise ScoringError(f"model_index {model_index} outside the round's {rows.n_models} models")
    if not np.isfinite(multiplier) or multiplier < 0:
        raise ScoringError(f"multiplier must be a finite number >= 0, got {multiplier}")
    whatif = s.copy()
    whatif[model_index] = s[model_index] * multiplier
    actual = score_prepared(rows, s, targets, round_samples(s, round, salt), max_missing_ratio=max_missing_ratio)
    moved = score_prepared(
        rows, whatif, targets, round_samples(whatif, round, salt), max_missing_ratio=max_missing_ratio
    )
    i = model_index
    return StakeCounterfactual(
        model_index=i,
        multiplier=float(multiplier),
        stake=float(s[i]),
        stake_whatif=float(whatif[i]),
        mmc=float(actual.mmc[i]),
        mmc_whatif=float(moved.mmc[i]),
        contribution=float(actual.contribution[i]),
        contribution_whatif=float(moved.contribution[i]),
        corr_w_mm=float(actual.corr_w_mm[i]),
        corr_w_mm_whatif=float(moved.corr_w_mm[i]),
    )
