"""The tournament's per-round metrics, one function each, on raw predictions.

These are the direct, readable definitions. :func:`scoring.rounds.score_round` computes the
same numbers for a whole round at once from prepared rows (tests hold the two together).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.ranking import signed_power, tie_kept_rank__gaussianize, tie_kept_rank__gaussianize__pow_1_5
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_prediction_matrix, as_stakes, as_targets

# Numerai's targets live in {0, .25, .5, .75, 1}; contribution scales them ×4 to the
# buckets {−2, −1, 0, 1, 2} after centering (numerai-tools correlation_contribution).
CONTRIBUTION_TARGET_SCALE = 4.0


def pearson_rows(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pearson correlation of every row of ``x`` with ``y``; NaN where either is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((xc @ yc) / np.sqrt((xc * xc).sum(axis=1) * (yc @ yc)), dtype=np.float64)


def contribution_target_scale(targets: NDArray[np.float64]) -> float:
    """×4 when every target lies in [0, 1] (Numerai's buckets), else ×1."""
    return CONTRIBUTION_TARGET_SCALE if bool(((targets >= 0) & (targets <= 1)).all()) else 1.0


def numerai_corr(preds: ArrayLike, targets: ArrayLike, max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO) -> NDArray[np.float64]:
    """CORR, Numerai's canonical correlation (numerai-tools ``numerai_corr``).

    1. center the targets on 0 (over the ids that have one) and drop ids without a target;
    2. tie-kept rank each model's predictions over the remaining ids, gaussianize, signed power 1.5;
    3. signed power 1.5 of the centered targets;
    4. Pearson correlation of each model's transformed predictions with the transformed targets.

    Arguments:
        preds: ``[n_models, n_ids]`` (or one row), finite.
        targets: ``[n_ids]``; NaN marks an id not resolved yet (≤ ``max_missing_ratio``).

    Returns:
        float64 ``[n_models]`` (a scalar array for a 1-D row); NaN for constant predictions.
    """
    p = as_prediction_matrix(preds)
    t, present = as_targets(targets, p.shape[1], max_missing_ratio)
    t = t[present]
    y = signed_power(t - t.mean(), 1.5)
    corr = pearson_rows(tie_kept_rank__gaussianize__pow_1_5(p[:, present]), y)
    return corr if np.ndim(preds) == 2 else corr[0]


def meta_model(preds: ArrayLike, stakes: ArrayLike) -> NDArray[np.float64]:
    """The stake-weighted meta model (SWMM).

    ``SWMM = Σ_i s_i · Φ⁻¹(tie_kept_rank(preds_i)) / Σ_i s_i`` over models with stake > 0
    (Numerai docs "definitions"; numerai-tools ``stake_weight`` on gaussianized ranks).

    Returns:
        float64 ``[n_ids]``; all NaN when no model has stake (no meta model exists).
    """
    p = as_prediction_matrix(preds)
    s = as_stakes(stakes, p.shape[0])
    staked = s > 0
    if not staked.any():
        return np.full(p.shape[1], np.nan)
    g = tie_kept_rank__gaussianize(p[staked])
    return np.asarray(s[staked] @ g / s[staked].sum(), dtype=np.float64)


def corr_with_meta_model(preds: ArrayLike, meta: ArrayLike) -> NDArray[np.float64]:
    """CWMM: Pearson correlation of ``tie_kept_rank → gaussianize → pow 1.5`` of each model with the meta model.

    Numerai docs "definitions" (``corr_w_meta_model``). NaN when the meta model is undefined
    or either side is constant.
    """
    p = as_prediction_matrix(preds)
    m = np.asarray(meta, dtype=np.float64)
    cwmm = pearson_rows(tie_kept_rank__gaussianize__pow_1_5(p), m)
    return cwmm if np.ndim(preds) == 2 else cwmm[0]


def contribution(
    preds: ArrayLike,
    meta: ArrayLike,
    targets: ArrayLike,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> NDArray[np.float64]:
    """Today's MMC, the contribution to the meta model's correlation (numerai-tools ``correlation_contribution``).

    1. drop ids without a target; tie-kept rank and gaussianize each model (``p``) and the meta model (``m``);
    2. orthogonalize: ``p⊥ = p − m (p·m)/(m·m)``;
    3. targets ×4 when they lie in [0, 1], then centered: ``t̃``;
    4. ``contribution = (t̃ · p⊥) / n_ids``.

    Returns:
        float64 ``[n_models]``; NaN when the meta model is undefined.
    """
    p = as_prediction_matrix(preds)
    t, present = as_targets(targets, p.shape[1], max_missing_ratio)
    m_raw = np.asarray(meta, dtype=np.float64)
    out: NDArray[np.float64]
    if np.isnan(m_raw).any():
        out = np.full(p.shape[0], np.nan)
        return out if np.ndim(preds) == 2 else out[0]
    t = t[present] * contribution_target_scale(t[present])
    t = t - t.mean()
    g = tie_kept_rank__gaussianize(p[:, present])
    m = tie_kept_rank__gaussianize(m_raw[present])
    neutral = g - np.outer(g @ m / (m @ m), m)
    out = neutral @ t / t.size
    return out if np.ndim(preds) == 2 else out[0]


def payout_score(
    corr: ArrayLike,
    mmc: ArrayLike,
    corr_multiplier: float = 0.5,
    mmc_multiplier: float = 2.0,
    clip: float = 0.05,
) -> NDArray[np.float64]:
    """``clip(0.5·corr + 2·mmc, −0.05, 0.05)`` — Numerai's payout score for rounds from 2024 (docs "staking")."""
    raw = corr_multiplier * np.asarray(corr, dtype=np.float64) + mmc_multiplier * np.asarray(mmc, dtype=np.float64)
    return np.asarray(np.clip(raw, -clip, clip), dtype=np.float64)
