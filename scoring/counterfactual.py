"""The stake counterfactual: a model's scores had its stake been k× or X (everything else equal).

Turns the "crowding tax" into a number per model: more stake pulls the meta model toward
the model, which raises its CWMM and lowers its MMC and contribution. Re-scored at the stake
a model had *before* a stake jump, it is the jump's mechanical part: what the meta model's
move toward the model took, everything else (the model's predictions, the other models,
the targets) held fixed — see :func:`mechanical_part`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from scoring.bootstrap import DEFAULT_DRAWS, DEFAULT_FRACTION, DEFAULT_SALT
from scoring.errors import ScoringError
from scoring.prepared import PreparedRound
from scoring.rounds import round_samples, score_prepared
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_stakes


@dataclass(frozen=True)
class StakeCounterfactual:
    """One model's scores in one round, as it was and at the what-if stake.

    ``multiplier`` is ``stake_whatif / stake`` (NaN when the actual stake is 0).
    """

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
    multiplier: float | None,
    round: int,
    salt: str = DEFAULT_SALT,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
    stake: float | None = None,
    draws: int = DEFAULT_DRAWS,
    fraction: float = DEFAULT_FRACTION,
) -> StakeCounterfactual:
    """Re-score a round with the model's stake changed and every other input unchanged.

    The what-if stake is ``stakes[model_index] × multiplier`` or, with ``stake``, that amount
    (then ``multiplier`` must be None) — the only way to ask "what if I staked X" for a model
    with no stake, since a multiple of zero stays zero.

    Both sides draw their bootstrap samples from the round's seed (``round``, ``salt``) with
    ``draws`` and ``fraction`` — pass the deployment's settings so the actual side equals the
    published scores. When the staker set is unchanged (the model had stake and keeps some)
    both sides use the same draws; giving a zero-stake model a stake adds a staker, so the
    what-if side draws over the larger set, as the round would have.

    Arguments:
        prepared: the round's prepared rows (or raw predictions ``[n_models, n_ids]``).
        stakes, targets: as in :func:`scoring.score_round`.
        model_index: the row of the model.
        multiplier: k ≥ 0, or None when ``stake`` is given.
        round: seeds the draws (with ``salt``).
        stake: the what-if stake X ≥ 0 (instead of a multiplier).
        draws, fraction: the bootstrap's draws and fraction of stakers per draw.
    """
    rows = prepared if isinstance(prepared, PreparedRound) else PreparedRound.from_predictions(prepared)
    s = as_stakes(stakes, rows.n_models)
    if not 0 <= model_index < rows.n_models:
        raise ScoringError(f"model_index {model_index} outside the round's {rows.n_models} models")
    if (multiplier is None) == (stake is None):
        raise ScoringError("give exactly one of multiplier and stake")
    whatif = s.copy()
    if stake is not None:
        if not np.isfinite(stake) or stake < 0:
            raise ScoringError(f"stake must be a finite number >= 0, got {stake}")
        whatif[model_index] = float(stake)
    elif multiplier is not None:  # the check above leaves exactly one of the two
        if not np.isfinite(multiplier) or multiplier < 0:
            raise ScoringError(f"multiplier must be a finite number >= 0, got {multiplier}")
        whatif[model_index] = s[model_index] * multiplier
    actual = score_prepared(rows, s, targets, round_samples(s, round, salt, draws, fraction), max_missing_ratio=max_missing_ratio)
    moved = score_prepared(
        rows,
        whatif,
        targets,
        round_samples(whatif, round, salt, draws, fraction),
        max_missing_ratio=max_missing_ratio,
    )
    i = model_index
    return StakeCounterfactual(
        model_index=i,
        multiplier=float(whatif[i] / s[i]) if s[i] > 0 else math.nan,
        stake=float(s[i]),
        stake_whatif=float(whatif[i]),
        mmc=float(actual.mmc[i]),
        mmc_whatif=float(moved.mmc[i]),
        contribution=float(actual.contribution[i]),
        contribution_whatif=float(moved.contribution[i]),
        corr_w_mm=float(actual.corr_w_mm[i]),
        corr_w_mm_whatif=float(moved.corr_w_mm[i]),
    )


@dataclass(frozen=True)
class MechanicalPart:
    """The part of a model's scores its stake itself caused, over some rounds.

    ``contribution`` and ``mmc`` are means over the rounds of ``actual − what-if``: with the
    what-if at the stake the model had before a jump, the (usually negative) change the
    larger stake caused through the meta model alone. ``n_rounds`` counts the rounds with a
    finite value of each (today's MMC first).
    """

    contribution: float
    mmc: float
    n_rounds_contribution: int
    n_rounds_mmc: int


def mechanical_part(rows: Iterable[StakeCounterfactual]) -> MechanicalPart:
    """Mean ``actual − what-if`` of today's MMC (contribution) and of the 2020 MMC.

    Feed it :func:`stake_counterfactual` results at the old stake (``stake=stake_before``)
    for the rounds after a jump; NaN scores are left out, NaN when none is left.
    """
    cfs = list(rows)
    contribution = np.array([-c.contribution_change for c in cfs], dtype=float)
    mmc = np.array([-c.mmc_change for c in cfs], dtype=float)
    ok_c, ok_m = np.isfinite(contribution), np.isfinite(mmc)
    return MechanicalPart(
        contribution=float(contribution[ok_c].mean()) if ok_c.any() else math.nan,
        mmc=float(mmc[ok_m].mean()) if ok_m.any() else math.nan,
        n_rounds_contribution=int(ok_c.sum()),
        n_rounds_mmc=int(ok_m.sum()),
    )
