"""Who crowds a model: its nearest stakers in the meta model, its crowd's stake, and the tax it pays.

The rows compared are the ones the meta model is built from: each model's
``G_i = Φ⁻¹(tie_kept_rank(preds_i))`` over the round's whole universe (numerai-tools
``gaussian(tie_kept_rank(·))``; the SWMM is their stake-weighted mean). Not CORR's and CWMM's
signed power 1.5 of them, not the 2020 MMC's tie-broken uniform ranks.

- :func:`crowd_neighbours` — for every model (staked or not) its k nearest stakers by
  Pearson correlation of those rows, the stake share of every other staker correlated at
  least ``threshold`` with it ("its crowd") and its own share of the meta model's stake.
  Target-independent: computable at close.
- :func:`crowd_tax` — the contribution (today's MMC) each model would have earned had its
  k nearest stakers staked nothing, everything else equal, and the tax
  ``contribution − that counterfactual``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.errors import ScoringError, ShapeMismatch
from scoring.metrics import contribution_target_scale
from scoring.ranking import doubled_tie_kept_rank, scatter_rows, sort_structure, tie_kept_rank__gaussianize
from scoring.rounds import PreparedRound, RankTables, rank_tables, sorted_values
from scoring.rounds import block_rows as close_block_rows
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_stakes, as_targets

#: Nearest stakers listed per model.
DEFAULT_K = 10
#: Correlation from which another staker counts in a model's crowd.
DEFAULT_CROWD_THRESHOLD = 0.8
#: Models per matrix product with the stakers' rows. Tiles start at multiples of this row
#: number whatever the block size, so every model's correlations come from one product call
#: of the same shape and contents: a BLAS product's last bits depend on the shape of the call
#: (and on where a row sits in it), so fixed tiles are what makes the block size invisible.
TILE_ROWS = 512
#: Correlations are ordered and compared with the threshold at this many decimals. A float64
#: dot product of n terms is off the exact value by up to about n·1.1e-16 (7e-13 at 6,720 ids),
#: and the same staker row in two columns of one product can come out a few ulps apart; at
#: 12 decimals copies tie and a copy's correlation counts as 1.
KEY_DECIMALS = 12
_KEY_SCALE = 10.0**KEY_DECIMALS
#: A correlation whose key is at least another value's key is at least that value minus this.
_KEY_MARGIN = 2.0 / _KEY_SCALE
#: Bytes of neighbours' rows gathered at once for the counterfactual meta models.
_GATHER_BYTES = 16 << 20

#: Why a model's counterfactual is what it is (``CrowdTax.status``).
STATUS_OK = "ok"
STATUS_NO_NEIGHBOURS = "no_neighbours"
STATUS_NO_STAKE_LEFT = "no_stake_left"
STATUS_NO_META_MODEL = "no_meta_model"


@dataclass(frozen=True)
class Neighbour:
    """One of a model's nearest stakers."""

    index: int
    model: str | None
    correlation: float
    stake: float
    stake_share: float


@dataclass(frozen=True, eq=False)
class CrowdNeighbours:
    """Every model's nearest stakers and crowd in one round; arrays over models in row order.

    Attributes:
        k, threshold: the arguments of :func:`crowd_neighbours`.
        stakes: the round's stakes ``[n_models]``; total_stake: their sum over the stakers
            (the meta model's denominator; 0 when nobody has stake).
        index: ``[n_models, min(k, n_stakers)]`` rows of the nearest stakers, nearest first;
            −1 past ``count``.
        correlation: same shape, Pearson correlation of the ``G`` rows; NaN past ``count``.
        stake, stake_share: same shape, each neighbour's stake and its share of
            ``total_stake``; NaN past ``count``.
        count: ``[n_models]`` neighbours found (fewer than k when fewer other stakers have a
            defined correlation with the model).
        crowd_share: ``[n_models]`` share of ``total_stake`` held by the *other* stakers
            correlated ≥ ``threshold`` with the model; NaN when nobody has stake or the model's
            correlation is undefined (constant predictions).
        crowd_size: ``[n_models]`` how many stakers that is.
        own_share: ``[n_models]`` the model's own share of ``total_stake`` (NaN when 0).
    """

    k: int
    threshold: float
    stakes: NDArray[np.float64]
    total_stake: float
    index: NDArray[np.int64]
    correlation: NDArray[np.float64]
    stake: NDArray[np.float64]
    stake_share: NDArray[np.float64]
    count: NDArray[np.int64]
    crowd_share: NDArray[np.float64]
    crowd_size: NDArray[np.int64]
    own_share: NDArray[np.float64]

    @property
    def n_models(self) -> int:
        return int(self.index.shape[0])

    def of(self, model_index: int, models: list[str] | None = None) -> list[Neighbour]:
        """The nearest stakers of the model at ``model_index``, nearest first (with ids from ``models``)."""
        if not 0 <= model_index < self.n_models:
            raise ScoringError(f"model_index {model_index} outside the round's {self.n_models} models")
        if models is not None and len(models) != self.n_models:
            raise ShapeMismatch(f"models must name the {self.n_models} rows, got {len(models)}")
        out = []
        for c in range(int(self.count[model_index])):
            j = int(self.index[model_index, c])
            out.append(
                Neighbour(
                    index=j,
                    model=None if models is None else models[j],
                    correlation=float(self.correlation[model_index, c]),
                    stake=float(self.stake[model_index, c]),
                    stake_share=float(self.stake_share[model_index, c]),
                )
            )
        return out


def crowd_neighbours(
    prepared: PreparedRound | ArrayLike,
    stakes: ArrayLike,
    k: int = DEFAULT_K,
    threshold: float = DEFAULT_CROWD_THRESHOLD,
    block_rows: int | None = None,
) -> CrowdNeighbours:
    """Every model's k nearest stakers, its crowd's stake share and its own share of the meta model.

    1. standardize every model's ``G_i = Φ⁻¹(tie_kept_rank(preds_i))`` over the universe:
       ``z_i = (G_i − mean G_i) / ‖G_i − mean G_i‖`` (a constant row has no correlation with
       anything and is left out on both sides);
    2. ``corr(i, j) = z_i · z_j``: the matrix product of all models' rows with the stakers'
       rows (stake > 0, in row order), float64, in fixed tiles of :data:`TILE_ROWS` models;
    3. per model, the k stakers other than itself with the highest correlation, by
       correlation (at :data:`KEY_DECIMALS` decimals) descending, then row index ascending;
       fewer when fewer other stakers have a defined correlation with it;
    4. its crowd: the stakers other than itself with correlation ≥ ``threshold`` (same
       decimals); shares are of the total stake of the round's stakers.

    Arguments:
        prepared: the round's prepared rows (or raw predictions ``[n_models, n_ids]``).
        stakes: ``[n_models]`` ≥ 0, the stakes the round closed with.
        k: neighbours per model, ≥ 1.
        threshold: crowd correlation, in [−1, 1].
        block_rows: models whose rows and correlations are held at once (rounded up to whole
            tiles; default one tile). Peak memory is about ``8·(n_stakers + block)·n_ids``
            plus ``24·block·n_stakers`` bytes. Results are bit-identical for every block size
            (and across runs, for a given BLAS and thread count).

    Cost: the product is ``2·n_models·n_stakers·n_ids`` flops, 269 GFLOP at 10,000 models ×
    2,000 stakers × 6,720 ids; everything else is linear in the rows (docs/performance.md).

    Returns:
        :class:`CrowdNeighbours`.
    """
    rows = prepared if isinstance(prepared, PreparedRound) else PreparedRound.from_predictions(prepared)
    m, n = rows.n_models, rows.n_ids
    s = as_stakes(stakes, m)
    k = _positive_int(k, "k")
    threshold = _correlation(threshold)
    tile_blocks = 1 if block_rows is None else -(-_positive_int(block_rows, "block_rows") // TILE_ROWS)
    block = tile_blocks * TILE_ROWS
    staker_rows = np.flatnonzero(s > 0)
    n_stakers = int(staker_rows.size)
    total = float(s[staker_rows].sum()) if n_stakers else 0.0
    staker_stakes = s[staker_rows]

    width = min(k, n_stakers)
    index = np.full((m, width), -1, dtype=np.int64)
    correlation = np.full((m, width), np.nan)
    count = np.zeros(m, dtype=np.int64)
    crowd_share = np.full(m, np.nan)
    crowd_size = np.zeros(m, dtype=np.int64)
    own_share = s / total if total > 0 else np.full(m, np.nan)

    tables = rank_tables(n)
    z_stakers = np.empty((n_stakers, n))
    staker_valid = np.empty(n_stakers, dtype=bool)
    for start in range(0, n_stakers, TILE_ROWS):
        stop = min(start + TILE_ROWS, n_stakers)
        z_stakers[start:stop], staker_valid[start:stop] = standardized_rows(rows.rows(staker_rows[start:stop]), tables)
    column_of = np.full(m, -1, dtype=np.int64)
    column_of[staker_rows] = np.arange(n_stakers)
    threshold_key = _key(np.float64(threshold))

    for start in range(0, m if n_stakers else 0, block):
        stop = min(start + block, m)
        z, valid = standardized_rows(rows.rows(np.arange(start, stop)), tables)
        corr = np.empty((stop - start, n_stakers))
        for tile in range(start, stop, TILE_ROWS):
            end = min(tile + TILE_ROWS, stop)
            np.matmul(z[tile - start : end - start], z_stakers.T, out=corr[tile - start : end - start])
        # Pairs without a correlation (constant rows, a model with itself) never qualify.
        corr[~valid] = -np.inf
        corr[:, ~staker_valid] = -np.inf
        own = column_of[start:stop]
        staked_rows = np.flatnonzero(own >= 0)
        corr[staked_rows, own[staked_rows]] = -np.inf
        rows_at, columns = _nearest(corr, width)
        ranks = np.arange(rows_at.size) - np.searchsorted(rows_at, rows_at)  # position within the row
        index[start + rows_at, ranks] = staker_rows[columns]
        correlation[start + rows_at, ranks] = corr[rows_at, columns]
        count[start:stop] = np.bincount(rows_at, minlength=stop - start)
        # The crowd: keys at or above the threshold's; a key ≥ K needs a value ≥ its K − 2e-12.
        rows_at, columns = np.nonzero(corr >= threshold - _KEY_MARGIN)
        inside = _key(corr[rows_at, columns]) >= threshold_key
        rows_at, columns = rows_at[inside], columns[inside]
        crowd_size[start:stop] = np.bincount(rows_at, minlength=stop - start)
        crowd_stake = np.bincount(rows_at, weights=staker_stakes[columns], minlength=stop - start)
        crowd_share[start:stop] = np.where(valid, crowd_stake / total, np.nan)

    listed = index >= 0
    neighbour_stake = np.where(listed, s[np.where(listed, index, 0)], np.nan)
    return CrowdNeighbours(
        k=k,
        threshold=float(threshold),
        stakes=s,
        total_stake=total,
        index=index,
        correlation=correlation,
        stake=neighbour_stake,
        stake_share=neighbour_stake / total if total > 0 else neighbour_stake.copy(),
        count=count,
        crowd_share=crowd_share,
        crowd_size=crowd_size,
        own_share=own_share,
    )


def _key(correlation: NDArray[np.float64] | np.float64) -> NDArray[np.int64]:
    """The correlation at :data:`KEY_DECIMALS` decimals, as an integer."""
    return np.rint(np.asarray(correlation) * _KEY_SCALE).astype(np.int64)


def _nearest(corr: NDArray[np.float64], width: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Per row of ``corr`` (−inf = not a candidate), its ``width`` nearest columns, nearest first.

    Nearest: larger :func:`_key`, then the lower column. Returned as (row, column) pairs
    sorted by row, then nearness. Only columns within :data:`_KEY_MARGIN` of the row's
    ``width``-th largest value can rank among its first ``width`` (their key is at least that
    value's key, which is at least the ``width``-th largest key), so only those are keyed.
    """
    n_rows, n_columns = corr.shape
    if width == 0 or n_rows == 0:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    kth = np.partition(corr, n_columns - width, axis=1)[:, n_columns - width]
    rows_at, columns = np.nonzero((corr >= (kth - _KEY_MARGIN)[:, np.newaxis]) & (corr > -np.inf))
    keys = _key(corr[rows_at, columns])
    order = np.lexsort((columns, -keys, rows_at))
    rows_at, columns = rows_at[order], columns[order]
    kept = np.arange(rows_at.size) - np.searchsorted(rows_at, rows_at) < width
    return rows_at[kept], columns[kept]


@functools.lru_cache(maxsize=16)
def _tie_free_standardized(n: int) -> NDArray[np.float64]:
    """Standardized ``G`` values of a row without ties, by sorted position (the same for every such row)."""
    base = rank_tables(n).sorted_without_ties(rank_tables(n).g)
    centered = base - base.mean()
    out: NDArray[np.float64] = centered / np.sqrt(centered @ centered)
    out.flags.writeable = False
    return out


def standardized_rows(prepared: PreparedRound, tables: RankTables) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Id-space ``(G_i − mean) / ‖G_i − mean‖`` per row and whether it is defined (not constant).

    Rows without ties share one standardized vector in sorted space; a row with ties is
    standardized on its own. Either way a row's values depend on that row only. Each row is
    put in id order by its own scatter (cheaper than one scatter of the whole block, whose
    flat index array is as large as the block).
    """
    out = np.empty(prepared.order.shape)
    valid: NDArray[np.bool_] = np.asarray(prepared.new_group[:, 1:].any(axis=1))
    tie_free = _tie_free_standardized(prepared.n_ids)
    tied_rows = np.zeros(prepared.n_models, dtype=bool)
    tied_rows[prepared.tie_rows] = True
    for i in np.flatnonzero(~tied_rows):
        out[i, prepared.order[i]] = tie_free
    if prepared.tie_rows.size:
        tied = tables.g[prepared.tie_ranks]
        tied -= tied.mean(axis=1, keepdims=True)
        norm = np.sqrt((tied * tied).sum(axis=1))
        defined = valid[prepared.tie_rows]
        tied[defined] /= norm[defined, np.newaxis]
        tied[~defined] = 0.0
        for values, i in zip(tied, prepared.tie_rows, strict=True):
            out[i, prepared.order[i]] = values
    return out, valid


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
    staker_rows = np.flatnonzero(s > 0)
    n_stakers = int(staker_rows.size)
    size = chosen.size
    removed = np.where(neighbours.index[chosen] >= 0, s[np.maximum(neighbours.index[chosen], 0)], 0.0).sum(axis=1)
    total = neighbours.total_stake
    if n_stakers == 0:
        nan = np.full(size, np.nan)
        return CrowdTax(chosen, nan, nan.copy(), nan.copy(), removed, nan.copy(), np.full(size, STATUS_NO_META_MODEL), n)

    tables = rank_tables(n)
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
    scale = contribution_target_scale(t)
    meta_t, meta_meta = float(meta @ t_c), float(meta @ meta)
    column_of = np.full(m, -1, dtype=np.int64)
    column_of[staker_rows] = np.arange(n_stakers)

    actual = np.empty(size)
    without = np.empty(size)
    status = np.full(size, STATUS_OK, dtype=f"<U{max(len(STATUS_NO_NEIGHBOURS), len(STATUS_NO_STAKE_LEFT), len(STATUS_NO_META_MODEL))}")
    # A meta model of constant rows only is constant: 0/0, NaN, as the round's own scores.
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, size, step):
            stop = min(start + step, size)
            picked = chosen[start:stop]
            block = sub.rows(picked)
            g = scatter_rows(block.order, sorted_values(block, tables, tables.g))
            g_t = np.vecdot(g, t_c)
            actual[start:stop] = scale * (g_t - meta_t * np.vecdot(g, meta) / meta_meta) / n
            found = neighbours.count[picked]
            nothing = found == 0
            no_stake_left = ~nothing & (found == n_stakers)
            status[start:stop][nothing] = STATUS_NO_NEIGHBOURS
            status[start:stop][no_stake_left] = STATUS_NO_STAKE_LEFT
            without[start:stop][nothing] = actual[start:stop][nothing]
            without[start:stop][no_stake_left] = np.nan
            moved = np.flatnonzero(~nothing & ~no_stake_left)
            if moved.size:
                swmm = _swmm_without(swmm_sum, g_stakers, s[staker_rows], total, column_of[neighbours.index[picked[moved]]])
                order, new_group = sort_structure(swmm)
                m_sorted = _gaussianized_sorted(new_group, tables)
                m_t = np.vecdot(m_sorted, t_c[order])
                g_m = np.vecdot(m_sorted, np.take_along_axis(g[moved], order, axis=1))
                m_m = np.vecdot(m_sorted, m_sorted)
                without[start:stop][moved] = scale * (g_t[moved] - m_t * g_m / m_m) / n
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


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ScoringError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _correlation(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not -1.0 <= float(value) <= 1.0:
        raise ScoringError(f"threshold must be a correlation in [-1, 1], got {value!r}")
    return float(value)


def _model_rows(models: ArrayLike, n_models: int) -> NDArray[np.int64]:
    picked = np.asarray(models)
    if picked.ndim != 1 or (picked.size and picked.dtype.kind not in "iu"):
        raise ShapeMismatch(f"models must be a 1-D array of row indices, got {picked.dtype} of shape {picked.shape}")
    picked = picked.astype(np.int64)
    if picked.size and (picked.min() < 0 or picked.max() >= n_models):
        raise ScoringError(f"models must be rows of the round's {n_models} models")
    return picked
