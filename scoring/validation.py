"""Input checks shared by the scoring functions: shapes, finiteness, signs, missing targets.

Every check raises a typed :class:`~scoring.errors.ScoringError` (never ``assert``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.errors import NegativeStake, NonFiniteInput, ShapeMismatch, TooManyMissingTargets

# numerai-tools' filter_sort_index bound: an update may leave out at most 20% of the ids.
DEFAULT_MAX_MISSING_RATIO = 0.2


def as_prediction_matrix(preds: ArrayLike) -> NDArray[np.float64]:
    """Predictions as a float64 ``[n_models, n_ids]`` matrix (a 1-D row becomes one model)."""
    x = np.asarray(preds, dtype=np.float64)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise ShapeMismatch(f"predictions must be 1-D or 2-D [n_models, n_ids], got shape {x.shape}")
    if x.shape[1] < 2:
        raise ShapeMismatch(f"need at least 2 ids to rank, got {x.shape[1]}")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise NonFiniteInput(f"predictions hold NaN or inf (first at model {bad[0]}, id {bad[1]})")
    return x


def as_stakes(stakes: ArrayLike, n_models: int) -> NDArray[np.float64]:
    """Stakes as a float64 vector of length ``n_models``, finite and ≥ 0."""
    s = np.asarray(stakes, dtype=np.float64)
    if s.ndim == 0:
        s = s[np.newaxis]
    if s.shape != (n_models,):
        raise ShapeMismatch(f"stakes must have one entry per model ({n_models}), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise NonFiniteInput("stakes hold NaN or inf")
    if (s < 0).any():
        raise NegativeStake(f"stakes must be >= 0, got min {s.min()}")
    return s


def as_targets(targets: ArrayLike, n_ids: int, max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Targets as float64 plus the mask of ids that have one (NaN = not resolved yet).

    Raises :class:`TooManyMissingTargets` when more than ``max_missing_ratio`` of the ids
    are missing, and :class:`NonFiniteInput` for ±inf.
    """
    t = np.asarray(targets, dtype=np.float64)
    if t.shape != (n_ids,):
        raise ShapeMismatch(f"targets must have one entry per id ({n_ids}), got shape {t.shape}")
    if np.isinf(t).any():
        raise NonFiniteInput("targets hold inf")
    present = ~np.isnan(t)
    n_present = int(present.sum())
    if n_present < 2 or n_present < (1.0 - max_missing_ratio) * n_ids:
        raise TooManyMissingTargets(
            f"{n_ids - n_present} of {n_ids} targets are missing (at most {max_missing_ratio:.0%} may be, and at least 2 must be present)"
        )
    return t, present
