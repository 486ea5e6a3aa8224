"""Scoring a whole round from submissions prepared once at ingestion.

A stream sees each submission once but resolves its round up to 21 times (daily targets,
then final). So a submission is ranked when it arrives (:func:`prepare_submission`): its
stable argsort and tie runs — 2⅛ bytes per prediction for universes up to 65,535 ids —
are all any metric needs. At close, with the stakes frozen, everything that does not
depend on the targets is computed once (:func:`close_round` → :class:`RoundBasis`: the
meta model, the bootstrap meta models, every model's products with them). Each target
update then costs two gathers and three matrix-vector products (:func:`resolve_round`).

When targets are missing for some ids, every metric is taken over the ids that have one,
ranks included, so the basis is rebuilt on that subset (still without re-sorting a row).

:func:`score_round` on raw predictions runs exactly this path, so its results are
bit-identical to what the service publishes for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.bootstrap import (
    DEFAULT_DRAWS,
    DEFAULT_FRACTION,
    DEFAULT_SALT,
    bootstrap_samples,
    draw_weights,
    neutral_covariance,
    round_seed,
)
from scoring.errors import ScoringError, ShapeMismatch
from scoring.metrics import contribution_target_scale
from scoring.prepared import (
    PreparedRound,
    block_rows,
    centered_norms,
    g15_correlations,
    rank_tables,
    sorted_dots,
    sorted_dots_many,
    sorted_values,
)
from scoring.ranking import (
    rank_uniform,
    scatter_rows,
    signed_power,
    tie_kept_rank__gaussianize,
)
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_stakes, as_targets

__all__ = [
    "RoundBasis",
    "RoundScores",
    "close_round",
    "resolve_round",
    "round_samples",
    "score_prepared",
    "score_round",
]


@dataclass(frozen=True)
class RoundBasis:
    """What a round's scores need besides the targets, computed at close (stakes frozen).

    Arrays over models are in the prepared rows' order; over ids in universe order (of the
    ids scored, when built on a subset).

    Attributes:
        stakes: frozen stakes ``[n_models]``.
        meta_model: the SWMM ``[n_ids]`` (NaN when nobody has stake).
        meta_gauss: ``Φ⁻¹(tie_kept_rank(SWMM))`` — the meta model as contribution sees it.
        draws_centered: centered tie-broken uniform bootstrap meta models ``m̃_k``, ``[draws, n_ids]``.
        g_meta: ``G_i · meta_gauss`` per model; u_draws: ``ũ_i · m̃_k``, ``[n_models, draws]``.
        g15_centered_norm: ``‖G15_i − mean‖`` per model (CORR's denominator).
        corr_w_mm: CWMM per model.
    """

    stakes: NDArray[np.float64]
    meta_model: NDArray[np.float64]
    meta_gauss: NDArray[np.float64]
    draws_centered: NDArray[np.float64]
    g_meta: NDArray[np.float64]
    u_draws: NDArray[np.float64]
    g15_centered_norm: NDArray[np.float64]
    corr_w_mm: NDArray[np.float64]

    @property
    def has_meta_model(self) -> bool:
        return bool(np.isfinite(self.meta_model).all())


def close_round(prepared: PreparedRound, stakes: ArrayLike, samples: ArrayLike) -> RoundBasis:
    """Everything target-independent, once per round (or per subset of ids).

    1. id-space tie-broken uniforms ``U`` and gaussianized tie-kept ranks ``G`` (scatter by
       order), a block of rows at a time;
    2. SWMM ``= s·G / Σs`` over stakers; ``meta_gauss = Φ⁻¹(tie_kept_rank(SWMM))``;
    3. bootstrap meta models ``mm_k = w_k·U``, re-ranked tie-broken and centered;
    4. per model: ``G·meta_gauss``, ``ũ·m̃_k``, ``‖G15 − mean‖`` and CWMM.
    """
    n_models, n = prepared.n_models, prepared.n_ids
    s = as_stakes(stakes, n_models)
    sample_arr = np.asarray(samples, dtype=np.int64)
    tables = rank_tables(n)
    g15_centered_norm = centered_norms(prepared, tables, tables.g15)
    staked = s > 0
    draws = sample_arr.shape[0] if sample_arr.ndim == 2 else 0
    if not staked.any() or sample_arr.ndim != 2 or sample_arr.shape[1] == 0:
        nan_ids = np.full(n, np.nan)
        return RoundBasis(
            stakes=s,
            meta_model=nan_ids,
            meta_gauss=nan_ids,
            draws_centered=np.full((draws, n), np.nan),
            g_meta=np.full(n_models, np.nan),
            u_draws=np.full((n_models, draws), np.nan),
            g15_centered_norm=g15_centered_norm,
            corr_w_mm=np.full(n_models, np.nan),
        )
    # Pass 1, over the stakers in blocks: the SWMM's numerator Σ s·G and the bootstrap meta
    # models' numerators Σ w_k·U (weights already normalised per draw).
    weights = draw_weights(sample_arr, s)
    staker_rows = np.flatnonzero(staked)
    swmm_sum = np.zeros(n)
    draws_sum = np.zeros((weights.shape[0], n))
    step = block_rows(n)
    for start in range(0, staker_rows.size, step):
        rows = staker_rows[start : start + step]
        block = prepared.rows(rows)
        swmm_sum += s[rows] @ scatter_rows(block.order, sorted_values(block, tables, tables.g))
        draws_sum += weights[:, rows] @ scatter_rows(block.order, tables.u)
    swmm = swmm_sum / s[staked].sum()
    meta_gauss = tie_kept_rank__gaussianize(swmm)
    draws_u = rank_uniform(draws_sum, ties="break")
    draws_centered = draws_u - draws_u.mean(axis=1, keepdims=True)
    # Pass 2, over every model in blocks: ũ·m̃_k for the 2020 MMC.
    u_centered_draws = np.empty((n_models, draws_centered.shape[0]))
    centered_sums = draws_centered.sum(axis=1)
    for start in range(0, n_models, step):
        stop = min(start + step, n_models)
        u = scatter_rows(prepared.order[start:stop], tables.u)
        u_centered_draws[start:stop] = u @ draws_centered.T - u.mean(axis=1, keepdims=True) * centered_sums
    cwmm = g15_correlations(prepared, swmm, g15_centered_norm)
    return RoundBasis(
        stakes=s,
        meta_model=swmm,
        meta_gauss=meta_gauss,
        draws_centered=draws_centered,
        g_meta=sorted_dots(prepared, tables, meta_gauss, (tables.g,))[:, 0],
        u_draws=u_centered_draws,
        g15_centered_norm=g15_centered_norm,
        corr_w_mm=cwmm,
    )


@dataclass(frozen=True)
class RoundScores:
    """Every metric of one target update, arrays over models in the prepared rows' order.

    ``meta_model`` covers the whole universe, NaN at ids left out of this update.
    """

    corr: NDArray[np.float64]
    mmc: NDArray[np.float64]
    contribution: NDArray[np.float64]
    corr_w_mm: NDArray[np.float64]
    meta_model: NDArray[np.float64]
    n_ids_scored: int
    n_ids_missing: int


def resolve_round(prepared: PreparedRound, basis: RoundBasis, targets: ArrayLike) -> RoundScores:
    """Score one target update (all ids present) from the prepared rows and the round's basis.

    With ``t̃ = t − mean(t)`` and ``y = t̃^1.5 − mean``: CORR ``= G15·y / (‖G15 − mean‖ ‖y‖)``;
    contribution ``= scale·(G·t̃ − (m'·t̃)(G·m')/(m'·m')) / n``; MMC from ``ũ·t̃`` and the basis
    (:func:`scoring.bootstrap.neutral_covariance`). Two gathers of ``t̃``/``y`` by sort order,
    three row-dot products.
    """
    n = prepared.n_ids
    t = np.asarray(targets, dtype=np.float64)
    if t.shape != (n,) or not np.isfinite(t).all():
        raise ShapeMismatch(f"resolve_round needs {n} finite targets; use score_prepared for missing ones")
    tables = rank_tables(n)
    t_c = t - t.mean()
    y = signed_power(t_c, 1.5)
    y = y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        dots_y, dots_t = sorted_dots_many(prepared, tables, [(y, (tables.g15,)), (t_c, (tables.g, None))])
        corr = dots_y[:, 0] / (basis.g15_centered_norm * np.sqrt(y @ y))
    if basis.has_meta_model:
        g_t, u_t = dots_t.T
        m_g = basis.meta_gauss
        scale = contribution_target_scale(t)
        contrib = scale * (g_t - (m_g @ t_c) * basis.g_meta / (m_g @ m_g)) / n
        d = basis.draws_centered
        mmc2020 = neutral_covariance(u_t, basis.u_draws, d @ t_c, (d * d).sum(axis=1), n)
    else:
        contrib = np.full(prepared.n_models, np.nan)
        mmc2020 = np.full(prepared.n_models, np.nan)
    return RoundScores(
        corr=corr,
        mmc=mmc2020,
        contribution=contrib,
        corr_w_mm=basis.corr_w_mm,
        meta_model=basis.meta_model,
        n_ids_scored=n,
        n_ids_missing=0,
    )


def score_prepared(
    prepared: PreparedRound,
    stakes: ArrayLike,
    targets: ArrayLike,
    samples: ArrayLike,
    basis: RoundBasis | None = None,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> RoundScores:
    """Score one target update from prepared rows; reuse ``basis`` when every target is present.

    Missing targets (NaN, at most ``max_missing_ratio``): the rows are restricted to the ids
    that have one and the basis is rebuilt there, so every metric leaves those ids out.
    """
    t, present = as_targets(targets, prepared.n_ids, max_missing_ratio)
    if present.all():
        return resolve_round(prepared, basis if basis is not None else close_round(prepared, stakes, samples), t)
    sub = prepared.subset(present)
    scores = resolve_round(sub, close_round(sub, stakes, samples), t[present])
    meta = np.full(prepared.n_ids, np.nan)
    meta[present] = scores.meta_model
    return RoundScores(
        corr=scores.corr,
        mmc=scores.mmc,
        contribution=scores.contribution,
        corr_w_mm=scores.corr_w_mm,
        meta_model=meta,
        n_ids_scored=int(present.sum()),
        n_ids_missing=int((~present).sum()),
    )


def round_samples(
    stakes: ArrayLike,
    round: int,
    salt: str = DEFAULT_SALT,
    draws: int = DEFAULT_DRAWS,
    fraction: float = DEFAULT_FRACTION,
) -> NDArray[np.int64]:
    """The round's bootstrap draws over its stakers, seeded by round number and salt."""
    n_stakers = int((np.asarray(stakes, dtype=np.float64) > 0).sum())
    return bootstrap_samples(n_stakers, draws=draws, fraction=fraction, seed=round_seed(round, salt))


def score_round(
    preds: ArrayLike,
    stakes: ArrayLike,
    targets: ArrayLike,
    round: int | None = None,
    samples: ArrayLike | None = None,
    salt: str = DEFAULT_SALT,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> RoundScores:
    """Every metric for one round in one call: CORR, MMC (2020), contribution, CWMM and the meta model.

    Arguments:
        preds: ``[n_models, n_ids]`` finite predictions; stakes: ``[n_models]`` ≥ 0;
        targets: ``[n_ids]``, NaN for ids not resolved yet (≤ ``max_missing_ratio``).
        round: seeds the bootstrap draws (with ``salt``) when ``samples`` is not given.

    Returns:
        :class:`RoundScores`; ranks are shared across metrics (each row sorted once).
    """
    prepared = PreparedRound.from_predictions(preds)
    s = as_stakes(stakes, prepared.n_models)
    if samples is None:
        if round is None:
            raise ScoringError("score_round needs the round number (or explicit samples) for MMC's draws")
        samples = round_samples(s, round, salt)
    return score_prepared(prepared, s, targets, samples, max_missing_ratio=max_missing_ratio)
