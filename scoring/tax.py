"""The crowding tax: each model's contribution had its nearest stakers staked nothing (:func:`crowd_tax`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.crowd_results import STATUS_NO_META_MODEL, STATUS_NO_NEIGHBOURS, STATUS_NO_STAKE_LEFT, STATUS_OK, CrowdNeighbours, _model_rows, _positive_int
from scoring.errors import ShapeMismatch
from scoring.metrics import contribution_target_scale
from scoring.prepared import PreparedRound, RankTables, rank_tables, sorted_values
from scoring.prepared import block_rows as close_block_rows
from scoring.ranking import doubled_tie_kept_rank, scatter_rows, sort_structure, tie_kept_rank__gaussianize
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_targets

#: Bytes of neighbours' rows gathered at once for the counterfactual meta models.
_GATHER_BYTES = 16 << 20


@dataclass(frozen=True, eq=False)
class CrowdTax:
    """Each model's contribution with and without its nearest stakers' stake; arrays over ``models``.

    Attributes:
        models: the rows scored (as asked, in that order).
        contribution: today's MMC as the round scores it.
        contribution_without_crowd: the same with the model's nearest stakers' stakes set to 0.
        tax: ``contribution − contribution_without_crowd`` (positive: the crowd costs the model).
        removed_stake, removed_share: the neighbours' stake, and its share of the total.
        status: per model, why the counterfactual is what it is —
            ``"ok"``; ``"no_neighbours"`` (no staker has a defined correlation with it, or it is
            the only staker: nothing is removed, tax 0); ``"no_stake_left"`` (the model has no
            stake and its neighbours are all the stakers: without them there is no meta model,
            so no contribution — NaN); ``"no_meta_model"`` (nobody has stake: NaN throughout).
        n_ids_scored: ids with a target (every score leaves the others out).
    """

    models: NDArray[np.int64]
    contribution: NDArray[np.float64]
    contribution_without_crowd: NDArray[np.float64]
    tax: NDArray[np.float64]
    removed_stake: NDArray[np.float64]
    removed_share: NDArray[np.float64]
    status: NDArray[np.str_]
    n_ids_scored: int


def crowd_tax(
    prepared: PreparedRound | ArrayLike,
    targets: ArrayLike,
    neighbours: CrowdNeighbours,
    models: ArrayLike | None = None,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
    block_rows: int | None = None,
) -> CrowdTax:
    """Each model's contribution had its ``neighbours.k`` nearest stakers staked nothing, and the tax.

    Scored as :func:`scoring.score_round` scores the round with those stakes set to 0 (ids
    without a target left out, ranks taken over the rest): only the meta model changes, and
    contribution orthogonalizes against its re-ranked, gaussianized form
    ``Φ⁻¹(tie_kept_rank(SWMM'))``. That ranking is not linear, so the rank-k update of the
    SWMM does not carry over to contribution; per model:

    1. ``SWMM' = (Σ_stakers s_j G_j − Σ_{j∈N} s_j G_j) / (Σ s − Σ_{j∈N} s_j)`` for its neighbours
       N (the stakers' sum as the round's basis builds it; when N holds more than half of the
       stake, the sum over the remaining stakers instead, so no cancellation creeps in);
    2. ``m' = Φ⁻¹(tie_kept_rank(SWMM'))`` (one sort of the ids);
    3. ``contribution' = scale·(G·t̃ − (m'·t̃)(G·m')/(m'·m')) / n``, as in
       :func:`scoring.resolve_round`; ``tax = contribution − contribution'``.

    The neighbours are the round's (:func:`crowd_neighbours`, over the whole universe); their
    stakes are the ones the neighbours were found with. Edge cases are in
    :attr:`CrowdTax.status`; a staked model whose neighbours hold all other stake is left
    alone in the meta model, orthogonal to itself: contribution' is 0 up to rounding.

    Arguments:
        prepared: the round's prepared rows (or raw predictions ``[n_models, n_ids]``).
        targets: ``[n_ids]``, NaN for ids not resolved yet (≤ ``max_missing_ratio``).
        neighbours: :func:`crowd_neighbours` of the same rows and stakes.
        models: the rows to score, in that order. Default: the stakers (stake > 0, row order),
            the models whose payout the crowd taxes. Each model costs one sort of the ids
            (about 0.5 ms at 6,720 ids: ~1 s for 2,000 stakers, ~5 s for 10,000 models), so
            scoring every model is an explicit choice.
        block_rows: models handled at once (default: as many as one 16 MB float64 block holds).
            Peak memory is about ``8·(n_stakers + 8·block)·n_ids`` bytes (the stakers' rows are
            held for the whole call).
    """
    rows = prepared if isinstance(prepared, PreparedRound) else PreparedRound.from_predictions(prepared)
    m = rows.n_models
    if neighbours.n_models != m:
        raise ShapeMismatch(f"neighbours cover {neighbours.n_models} models, the round has {m}")
    s = neighbours.stakes
    t, present = as_targets(targets, rows.n_ids, max_missing_ratio)
    sub = rows if present.all() else rows.subset(present)
    t = t[present]
    n = sub.n_ids
    chosen = np.flatnonzero(s > 0).astype(np.int64) if models is None else _model_rows(models, m)
    step = close_block_rows(n) if block_rows is None else _positive_int(block_rows, "block_rows")
    size = chosen.size
    removed = np.where(neighbours.index[chosen] >= 0, s[np.maximum(neighbours.index[chosen], 0)], 0.0).sum(axis=1)
    total = neighbours.total_stake
    if not (s > 0).any():
        nan = np.full(size, np.nan)
        return CrowdTax(chosen, nan, nan.copy(), nan.copy(), removed, nan.copy(), np.full(size, STATUS_NO_META_MODEL), n)

    basis = _TaxBasis.of(sub, t, s, total)
    actual = np.empty(size)
    without = np.empty(size)
    status = np.full(size, STATUS_OK, dtype=f"<U{max(len(STATUS_NO_NEIGHBOURS), len(STATUS_NO_STAKE_LEFT), len(STATUS_NO_META_MODEL))}")
    # A meta model of constant rows only is constant: 0/0, NaN, as the round's own scores.
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, size, step):
            part = slice(start, min(start + step, size))
            _tax_block(basis, neighbours, chosen[part], actual[part], without[part], status[part])
    tax = actual - without
    return CrowdTax(
        models=chosen,
        contribution=actual,
        contribution_without_crowd=without,
        tax=tax,
        removed_stake=removed,
        removed_share=removed / total,
        status=status,
        n_ids_scored=n,
    )


@dataclass(frozen=True, eq=False)
class _TaxBasis:
    """What every model's counterfactual shares: the stakers' G rows, the SWMM's numerator, the meta model.

    ``t_c`` is the centred targets, ``scale`` contribution's target scale, ``meta_t`` and
    ``meta_meta`` the meta model's products with ``t_c`` and itself, ``column_of`` each
    model's column among the stakers (−1 for a model without stake).
    """

    sub: PreparedRound
    tables: RankTables
    staker_stakes: NDArray[np.float64]
    total: float
    g_stakers: NDArray[np.float64]
    swmm_sum: NDArray[np.float64]
    meta: NDArray[np.float64]
    t_c: NDArray[np.float64]
    scale: float
    meta_t: float
    meta_meta: float
    column_of: NDArray[np.int64]

    @classmethod
    def of(cls, sub: PreparedRound, t: NDArray[np.float64], s: NDArray[np.float64], total: float) -> _TaxBasis:
        """The basis of rows ``sub`` (ids with a target ``t``) and stakes ``s`` (some > 0)."""
        n = sub.n_ids
        tables = rank_tables(n)
        staker_rows = np.flatnonzero(s > 0)
        n_stakers = int(staker_rows.size)
        # The stakers' G rows and the SWMM's numerator, summed as close_round sums them.
        g_stakers = np.empty((n_stakers, n))
        swmm_sum = np.zeros(n)
        sum_step = close_block_rows(n)
        for start in range(0, n_stakers, sum_step):
            picked = staker_rows[start : start + sum_step]
            block = sub.rows(picked)
            g = scatter_rows(block.order, sorted_values(block, tables, tables.g))
            g_stakers[start : start + picked.size] = g
            swmm_sum += s[picked] @ g
        meta = tie_kept_rank__gaussianize(swmm_sum / s[staker_rows].sum())
        t_c = t - t.mean()
        column_of = np.full(s.size, -1, dtype=np.int64)
        column_of[staker_rows] = np.arange(n_stakers)
        return cls(
            sub=sub,
            tables=tables,
            staker_stakes=s[staker_rows],
            total=total,
            g_stakers=g_stakers,
            swmm_sum=swmm_sum,
            meta=meta,
            t_c=t_c,
            scale=contribution_target_scale(t),
            meta_t=float(meta @ t_c),
            meta_meta=float(meta @ meta),
            column_of=column_of,
        )


def _tax_block(
    basis: _TaxBasis,
    neighbours: CrowdNeighbours,
    picked: NDArray[np.int64],
    actual: NDArray[np.float64],
    without: NDArray[np.float64],
    status: NDArray[np.str_],
) -> None:
    """Contribution, contribution without the crowd and status of the models ``picked``, into the given views."""
    n = basis.sub.n_ids
    block = basis.sub.rows(picked)
    g = scatter_rows(block.order, sorted_values(block, basis.tables, basis.tables.g))
    g_t = np.vecdot(g, basis.t_c)
    actual[:] = basis.scale * (g_t - basis.meta_t * np.vecdot(g, basis.meta) / basis.meta_meta) / n
    found = neighbours.count[picked]
    nothing = found == 0
    no_stake_left = ~nothing & (found == basis.staker_stakes.size)
    status[nothing] = STATUS_NO_NEIGHBOURS
    status[no_stake_left] = STATUS_NO_STAKE_LEFT
    without[nothing] = actual[nothing]
    without[no_stake_left] = np.nan
    moved = np.flatnonzero(~nothing & ~no_stake_left)
    if moved.size:
        columns = basis.column_of[neighbours.index[picked[moved]]]
        swmm = _swmm_without(basis.swmm_sum, basis.g_stakers, basis.staker_stakes, basis.total, columns)
        order, new_group = sort_structure(swmm)
        m_sorted = _gaussianized_sorted(new_group, basis.tables)
        m_t = np.vecdot(m_sorted, basis.t_c[order])
        g_m = np.vecdot(m_sorted, np.take_along_axis(g[moved], order, axis=1))
        m_m = np.vecdot(m_sorted, m_sorted)
        without[moved] = basis.scale * (g_t[moved] - m_t * g_m / m_m) / n


def _swmm_without(
    swmm_sum: NDArray[np.float64],
    g_stakers: NDArray[np.float64],
    staker_stakes: NDArray[np.float64],
    total: float,
    removed_columns: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Per row of ``removed_columns`` (staker columns, −1 = none), the SWMM without those stakers.

    Each row's value depends on that row only: its neighbours' weighted rows are one
    ``(1 × k) @ (k × n_ids)`` product (absent ones weighted 0); when they hold more than half of
    the stake the remaining stakers are summed instead.
    """
    present = removed_columns >= 0
    columns = np.where(present, removed_columns, 0)
    weights = np.where(present, staker_stakes[columns], 0.0)
    removed = weights.sum(axis=1)
    out = np.empty((removed_columns.shape[0], swmm_sum.size))
    chunk = max(1, _GATHER_BYTES // (8 * swmm_sum.size * max(1, columns.shape[1])))
    for start in range(0, out.shape[0], chunk):
        stop = min(start + chunk, out.shape[0])
        neighbour_sum = np.matmul(weights[start:stop, np.newaxis, :], g_stakers[columns[start:stop]])[:, 0, :]
        np.subtract(swmm_sum, neighbour_sum, out=out[start:stop])
    out /= (total - removed)[:, np.newaxis]
    for r in np.flatnonzero(removed > total / 2):
        remaining = staker_stakes.copy()
        remaining[columns[r, present[r]]] = 0.0
        out[r] = (remaining @ g_stakers) / remaining.sum()
    return out


def _gaussianized_sorted(new_group: NDArray[np.bool_], tables: RankTables) -> NDArray[np.float64]:
    """Per row, ``Φ⁻¹(tie_kept_rank)`` by sorted position, from where the row's runs of equal values start."""
    out = np.broadcast_to(tables.sorted_without_ties(tables.g), new_group.shape).copy()
    tie_rows = np.flatnonzero(~new_group.all(axis=1))
    if tie_rows.size:
        out[tie_rows] = tables.g[doubled_tie_kept_rank(new_group[tie_rows])]
    return out
