"""MMC as the 2020 seed document defines it: bootstrap meta models of tie-broken uniform ranks.

Numerai's "MMC2" (docs page "Meta Model Contribution", forum "MMC2 announcement",
example-scripts of Sept 2020); DESIGN §2.1.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.errors import ScoringError, ShapeMismatch
from scoring.ranking import rank_uniform
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_prediction_matrix, as_stakes, as_targets

DEFAULT_DRAWS = 20
# The seed document samples 67% of the stakers for each bootstrap meta model.
DEFAULT_FRACTION = 0.67
# 0.29² ≈ 1/12, the variance of a uniform variable: puts MMC on the scale of a correlation.
UNIFORM_VARIANCE = 0.0841
DEFAULT_SALT = "mmc-stream"


def round_seed(round_number: int, salt: str = DEFAULT_SALT) -> int:
    """The round's bootstrap seed: the first 8 bytes of ``SHA-256("{salt}:{round}")`` (never the clock)."""
    digest = hashlib.sha256(f"{salt}:{int(round_number)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sample_size(n_stakers: int, fraction: float = DEFAULT_FRACTION) -> int:
    """``round(fraction · n_stakers)`` (Python's round-half-to-even), at least 1 when there are stakers."""
    if n_stakers <= 0:
        return 0
    return max(1, int(round(fraction * n_stakers)))


def bootstrap_samples(n_stakers: int, draws: int = DEFAULT_DRAWS, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> NDArray[np.int64]:
    """Bootstrap draws of stakers, with replacement.

    Arguments:
        n_stakers: number of rows with stake > 0; entries index them in row order.
        draws: number of bootstrap meta models (20 in the seed document).
        fraction: share of stakers per draw (0.67).
        seed: from :func:`round_seed` for a round; PCG64 via ``numpy.random.default_rng``.

    Returns:
        int64 ``[draws, round(fraction · n_stakers)]``.
    """
    if n_stakers < 0 or draws < 1 or not 0 < fraction <= 1:
        raise ScoringError(f"bad bootstrap parameters: n_stakers={n_stakers}, draws={draws}, fraction={fraction}")
    k = sample_size(n_stakers, fraction)
    if k == 0:
        return np.zeros((draws, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n_stakers, size=(draws, k), dtype=np.int64)


def draw_weights(samples: NDArray[np.int64], stakes: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per draw, the normalised weight of every model: ``c_ik s_i / Σ_i c_ik s_i`` (0 for non-stakers).

    ``c_ik`` counts how often staker i appears in draw k.
    """
    stakers = np.flatnonzero(stakes > 0)
    samples = np.asarray(samples, dtype=np.int64)
    if samples.ndim != 2:
        raise ShapeMismatch(f"samples must be [draws, k], got shape {samples.shape}")
    if samples.size and (samples.min() < 0 or samples.max() >= stakers.size):
        raise ShapeMismatch(f"samples index {stakers.size} stakers, got values outside [0, {stakers.size})")
    draws = samples.shape[0]
    counts = np.zeros((draws, stakes.size), dtype=np.float64)
    rows = np.repeat(np.arange(draws), samples.shape[1])
    np.add.at(counts, (rows, stakers[samples.ravel()]), 1.0)
    weighted = counts * stakes
    normalised: NDArray[np.float64] = weighted / weighted.sum(axis=1, keepdims=True)
    return normalised


def neutral_covariance(
    u_t: NDArray[np.float64],
    u_m: NDArray[np.float64],
    m_t: NDArray[np.float64],
    m_m: NDArray[np.float64],
    n: int,
) -> NDArray[np.float64]:
    """Mean over draws of ``cov(residual(u | [m_k, 1]), t) / 0.0841``, from dot products of centered vectors.

    With ``ũ, m̃_k, t̃`` centered: the OLS residual is ``ũ − β m̃_k``, ``β = ũ·m̃_k / m̃_k·m̃_k``, so
    ``cov = (ũ·t̃ − (ũ·m̃_k)(m̃_k·t̃)/(m̃_k·m̃_k)) / (n − 1)``.

    Arguments:
        u_t: ``[n_models]`` ũ·t̃;  u_m: ``[n_models, draws]`` ũ·m̃_k;
        m_t: ``[draws]`` m̃_k·t̃;  m_m: ``[draws]`` m̃_k·m̃_k;  n: ids scored.
    """
    cov = (u_t[:, np.newaxis] - u_m * (m_t / m_m)) / (n - 1)
    return np.asarray(cov.mean(axis=1) / UNIFORM_VARIANCE, dtype=np.float64)


def mmc(
    preds: ArrayLike,
    stakes: ArrayLike,
    targets: ArrayLike,
    samples: ArrayLike | None = None,
    round: int | None = None,
    salt: str = DEFAULT_SALT,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> NDArray[np.float64]:
    """The seed document's MMC for every model of a round (DESIGN §2.1).

    1. draw ``round(0.67·|S|)`` stakers with replacement (``samples``, shared by all users);
    2. ``mm_k = Σ c_i s_i u_i / Σ c_i s_i`` with ``u_i = rank_uniform(preds_i, ties="break")``;
    3. ``m_k = rank_uniform(mm_k, ties="break")``;
    4. neutralize each user's ``u`` against ``[m_k, 1]`` (OLS residual);
    5. covariance (n − 1) of the residual with the targets; 6. ÷ 0.0841; 7. mean over draws.

    Arguments:
        preds: ``[n_models, n_ids]``; stakes: ``[n_models]``; targets: ``[n_ids]`` (NaN = missing).
        samples: from :func:`bootstrap_samples`; drawn from ``round_seed(round, salt)`` when omitted.

    Returns:
        float64 ``[n_models]``; NaN for every model when nobody has stake.
    """
    p = as_prediction_matrix(preds)
    s = as_stakes(stakes, p.shape[0])
    t, present = as_targets(targets, p.shape[1], max_missing_ratio)
    n_stakers = int((s > 0).sum())
    if samples is None:
        if round is None:
            raise ScoringError("mmc needs either samples or the round number to draw them")
        samples = bootstrap_samples(n_stakers, seed=round_seed(round, salt))
    sample_arr = np.asarray(samples, dtype=np.int64)
    if n_stakers == 0 or sample_arr.shape[1] == 0:
        return np.full(p.shape[0], np.nan)
    u = rank_uniform(p[:, present], ties="break")
    t_c = t[present] - t[present].mean()
    mm = draw_weights(sample_arr, s) @ u
    m_c = rank_uniform(mm, ties="break")
    m_c = m_c - m_c.mean(axis=1, keepdims=True)
    u_c = u - u.mean(axis=1, keepdims=True)
    return neutral_covariance(u_c @ t_c, u_c @ m_c.T, m_c @ t_c, (m_c * m_c).sum(axis=1), t_c.size)
