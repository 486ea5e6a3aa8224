"""mmc-stream's scoring core: the tournament's math as pure numpy (no I/O, clock or environment).

Public API (DESIGN §2): :func:`rank_uniform`, :func:`gaussianize`, :func:`numerai_corr`,
:func:`meta_model`, :func:`corr_with_meta_model`, :func:`contribution`,
:func:`bootstrap_samples`, :func:`mmc`, :func:`score_round`, :func:`payout_score`; the
prepared-row path a stream uses (:func:`prepare_submission`, :func:`close_round`,
:func:`resolve_round`, :func:`score_prepared`); the stake counterfactual; who crowds a model
(:func:`crowd_neighbours`, :func:`crowd_tax`); crowding analytics in :mod:`scoring.crowding`.
"""

from scoring.bootstrap import bootstrap_samples, mmc, round_seed
from scoring.counterfactual import StakeCounterfactual, stake_counterfactual
from scoring.errors import (
    NegativeStake,
    NonFiniteInput,
    ScoringError,
    ShapeMismatch,
    TooManyMissingTargets,
)
from scoring.metrics import contribution, corr_with_meta_model, meta_model, numerai_corr, payout_score
from scoring.neighbours import CrowdNeighbours, CrowdTax, Neighbour, crowd_neighbours, crowd_tax
from scoring.prepared import PreparedRound, PreparedSubmission, gaussian_ranks, prepare_submission
from scoring.ranking import gaussianize, rank_uniform, signed_power
from scoring.rounds import (
    RoundBasis,
    RoundScores,
    close_round,
    resolve_round,
    round_samples,
    score_prepared,
    score_round,
)

__all__ = [
    "CrowdNeighbours",
    "CrowdTax",
    "NegativeStake",
    "Neighbour",
    "NonFiniteInput",
    "PreparedRound",
    "PreparedSubmission",
    "RoundBasis",
    "RoundScores",
    "ScoringError",
    "ShapeMismatch",
    "StakeCounterfactual",
    "TooManyMissingTargets",
    "bootstrap_samples",
    "close_round",
    "contribution",
    "corr_with_meta_model",
    "crowd_neighbours",
    "crowd_tax",
    "gaussian_ranks",
    "gaussianize",
    "meta_model",
    "mmc",
    "numerai_corr",
    "payout_score",
    "prepare_submission",
    "rank_uniform",
    "resolve_round",
    "round_samples",
    "round_seed",
    "score_prepared",
    "score_round",
    "signed_power",
    "stake_counterfactual",
]
