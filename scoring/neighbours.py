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

Cost of :func:`crowd_neighbours`: the product is ``2·n_models·n_stakers·n_ids`` flops
(269 GFLOP at 10,000 models × 2,000 stakers × 6,720 ids; the service caps the stakers compared
with ``MMC_NEIGHBOURS_MAX_STAKERS``); everything else is linear in the rows and runs on one
helper thread while the product of the next block runs (docs/performance.md). The product stays
whole and in float64: its last bits depend on where a staker's column sits in the call, so
no smaller or float32 product could give the same bits for only the pairs that matter.

:func:`crowd_tax` lives in :mod:`scoring.tax`, the result types, statuses and defaults in
:mod:`scoring.crowd_results`; every public name of the three is importable from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.crowd_results import (
    DEFAULT_CROWD_THRESHOLD,
    DEFAULT_K,
    STATUS_NO_META_MODEL,
    STATUS_NO_NEIGHBOURS,
    STATUS_NO_STAKE_LEFT,
    STATUS_OK,
    CrowdNeighbours,
    Neighbour,
    _correlation,
    _positive_int,
)
from scoring.prepared import PreparedRound, RankTables, rank_tables
from scoring.tax import CrowdTax, crowd_tax
from scoring.validation import as_stakes

__all__ = [
    "CrowdNeighbours",
    "CrowdTax",
    "DEFAULT_CROWD_THRESHOLD",
    "DEFAULT_K",
    "KEY_DECIMALS",
    "Neighbour",
    "STATUS_NO_META_MODEL",
    "STATUS_NO_NEIGHBOURS",
    "STATUS_NO_STAKE_LEFT",
    "STATUS_OK",
    "TILE_ROWS",
    "crowd_neighbours",
    "crowd_tax",
    "standardized_rows",
]


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


def crowd_neighbours(
    prepared: PreparedRound | ArrayLike,
    stakes: ArrayLike,
    k: int = DEFAULT_K,
    threshold: float = DEFAULT_CROWD_THRESHOLD,
    block_rows: int | None = None,
    max_stakers: int | None = None,
) -> CrowdNeighbours:
    """Every model's k nearest stakers, its crowd's stake share and its own share of the meta model.

    1. standardize every model's ``G_i = Φ⁻¹(tie_kept_rank(preds_i))`` over the universe:
       ``z_i = (G_i − mean G_i) / ‖G_i − mean G_i‖`` (a constant row has no correlation with
       anything and is left out on both sides);
    2. ``corr(i, j) = z_i · z_j``: the matrix product of all models' rows with the stakers'
       rows (stake > 0, in row order; with ``max_stakers``, only the ``max_stakers`` largest
       stakes, ties to the earlier row), float64, in fixed tiles of :data:`TILE_ROWS` models;
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
            tiles; default one tile), two blocks at a time. Peak memory is about
            ``8·(n_stakers + 2·block)·n_ids`` plus ``18·block·n_stakers`` bytes. Results are
            bit-identical for every block size (and across runs, for a given BLAS and thread
            count).
        max_stakers: compare with at most this many stakers, those holding most of the stake
            (``None``: all). The product's cost is proportional to it; shares stay shares of
            the whole round's stake, and :attr:`CrowdNeighbours.compared_share` says how much
            of it the compared stakers hold (a crowd share is then a lower bound).

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
    all_stakers = np.flatnonzero(s > 0)
    total = float(s[all_stakers].sum()) if all_stakers.size else 0.0
    staker_rows = _largest(all_stakers, s, None if max_stakers is None else _positive_int(max_stakers, "max_stakers"))
    n_stakers = int(staker_rows.size)
    found = _Found.empty(m, min(k, n_stakers))

    tables = rank_tables(n)
    z_stakers, staker_valid = _standardized_stakers(rows, staker_rows, tables)
    column_of = np.full(m, -1, dtype=np.int64)
    column_of[staker_rows] = np.arange(n_stakers)
    threshold_key = _key(np.float64(threshold))
    if n_stakers:
        _scan(rows, block, tables, z_stakers, staker_valid, column_of, found.add_block(threshold, threshold_key, s[staker_rows], staker_rows, total))

    listed = found.index >= 0
    neighbour_stake = np.where(listed, s[np.where(listed, found.index, 0)], np.nan)
    return CrowdNeighbours(
        k=k,
        threshold=float(threshold),
        stakes=s,
        total_stake=total,
        index=found.index,
        correlation=found.correlation,
        stake=neighbour_stake,
        stake_share=neighbour_stake / total if total > 0 else neighbour_stake.copy(),
        count=found.count,
        crowd_share=found.crowd_share,
        crowd_size=found.crowd_size,
        own_share=s / total if total > 0 else np.full(m, np.nan),
        compared_share=float(s[staker_rows].sum()) / total if total > 0 else float("nan"),
    )


def _largest(stakers: NDArray[np.int64], stakes: NDArray[np.float64], most: int | None) -> NDArray[np.int64]:
    """The rows of the ``most`` largest stakes among ``stakers`` (ties to the earlier row), in row order."""
    if most is None or stakers.size <= most:
        return stakers
    order = np.lexsort((stakers, -stakes[stakers]))  # stake descending, then row ascending
    return np.sort(stakers[order[:most]])


def _standardized_stakers(rows: PreparedRound, staker_rows: NDArray[np.intp], tables: RankTables) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The stakers' standardized rows (:func:`standardized_rows`), :data:`TILE_ROWS` at a time."""
    n_stakers = int(staker_rows.size)
    z_stakers = np.empty((n_stakers, rows.n_ids))
    staker_valid = np.empty(n_stakers, dtype=bool)
    for start in range(0, n_stakers, TILE_ROWS):
        stop = min(start + TILE_ROWS, n_stakers)
        staker_valid[start:stop] = _standardize_into(rows.rows(staker_rows[start:stop]), tables, z_stakers[start:stop])
    return z_stakers, staker_valid


def _block_rows(
    rows: PreparedRound,
    start: int,
    stop: int,
    tables: RankTables,
    z_stakers: NDArray[np.float64],
    own: NDArray[np.int64],
    out: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Standardized rows of models ``start:stop`` into ``out``; which of them are defined.

    A staker's row is copied from ``z_stakers`` (``own`` is each model's column there, −1
    for a model without stake): the same values, since a row's values depend on that row only.
    """
    block = PreparedRound(order=rows.order[start:stop], new_group=rows.new_group[start:stop])
    staked = own >= 0
    valid = _standardize_into(block, tables, out, skip=staked)
    out[staked] = z_stakers[own[staked]]
    return valid


def _block_correlation(
    z: NDArray[np.float64],
    valid: NDArray[np.bool_],
    z_stakers: NDArray[np.float64],
    staker_valid: NDArray[np.bool_],
    own: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:
    """Correlations of a block's standardized rows ``z`` with every staker into ``out``, −inf where a pair has none.

    ``valid``: which of the block's rows are defined; ``own``: each model's column among the
    stakers (−1 for a model without stake). The product runs in tiles of :data:`TILE_ROWS`
    rows (blocks start at multiples of it).
    """
    for tile in range(0, z.shape[0], TILE_ROWS):
        end = min(tile + TILE_ROWS, z.shape[0])
        np.matmul(z[tile:end], z_stakers.T, out=out[tile:end])
    # Pairs without a correlation (constant rows, a model with itself) never qualify.
    undefined = np.flatnonzero(~valid)
    if undefined.size:
        out[undefined] = -np.inf
    undefined_stakers = np.flatnonzero(~staker_valid)
    if undefined_stakers.size:
        out[:, undefined_stakers] = -np.inf
    staked_rows = np.flatnonzero(own >= 0)
    out[staked_rows, own[staked_rows]] = -np.inf


def _scan(
    rows: PreparedRound,
    block: int,
    tables: RankTables,
    z_stakers: NDArray[np.float64],
    staker_valid: NDArray[np.bool_],
    column_of: NDArray[np.int64],
    take: Callable[[NDArray[np.float64], NDArray[np.bool_], int], None],
) -> None:
    """Every block's correlations with the stakers, handed to ``take(corr, valid, start)`` in block order.

    The product runs on the calling thread (BLAS's threads); one helper thread standardizes
    the next block's rows and reads the previous block's correlations meanwhile, into two
    buffers each used in turn. Every step is row-local and fills its own rows, so the
    overlap changes no bit.
    """
    m = rows.n_models
    starts = range(0, m, block)
    height = min(block, m)
    z = [np.empty((height, rows.n_ids)), np.empty((height, rows.n_ids))]
    corr = [np.empty((height, z_stakers.shape[0])), np.empty((height, z_stakers.shape[0]))]

    def standardize(t: int) -> NDArray[np.bool_]:
        start = starts[t]
        stop = min(start + block, m)
        return _block_rows(rows, start, stop, tables, z_stakers, column_of[start:stop], z[t % 2][: stop - start])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crowd") as helper:
        next_valid = helper.submit(standardize, 0)
        taken: Future[None] | None = None
        for t, start in enumerate(starts):
            b = min(start + block, m) - start
            valid = next_valid.result()
            if t + 1 < len(starts):
                next_valid = helper.submit(standardize, t + 1)  # while this block's product runs
            _block_correlation(z[t % 2][:b], valid, z_stakers, staker_valid, column_of[start : start + b], corr[t % 2][:b])
            if taken is not None:
                taken.result()  # the previous block's correlations are read: its buffer is free
            taken = helper.submit(take, corr[t % 2][:b], valid, start)
        if taken is not None:
            taken.result()


@dataclass(frozen=True, eq=False)
class _Found:
    """Every model's nearest stakers and crowd, filled one block of models at a time."""

    index: NDArray[np.int64]
    correlation: NDArray[np.float64]
    count: NDArray[np.int64]
    crowd_share: NDArray[np.float64]
    crowd_size: NDArray[np.int64]

    @classmethod
    def empty(cls, m: int, width: int) -> _Found:
        return cls(
            index=np.full((m, width), -1, dtype=np.int64),
            correlation=np.full((m, width), np.nan),
            count=np.zeros(m, dtype=np.int64),
            crowd_share=np.full(m, np.nan),
            crowd_size=np.zeros(m, dtype=np.int64),
        )

    def add_block(
        self,
        threshold: float,
        threshold_key: NDArray[np.int64],
        staker_stakes: NDArray[np.float64],
        staker_rows: NDArray[np.intp],
        total: float,
    ) -> Callable[[NDArray[np.float64], NDArray[np.bool_], int], None]:
        """What :func:`_scan` calls with each block's correlations: its nearest stakers and crowd."""

        def take(corr: NDArray[np.float64], valid: NDArray[np.bool_], start: int) -> None:
            self.add_nearest(corr, start, staker_rows)
            self.add_crowd(corr, valid, start, threshold, threshold_key, staker_stakes, total)

        return take

    def add_nearest(self, corr: NDArray[np.float64], start: int, staker_rows: NDArray[np.intp]) -> None:
        """The nearest stakers of models ``start : start + len(corr)`` from their correlations."""
        stop = start + corr.shape[0]
        rows_at, columns = _nearest(corr, self.index.shape[1])
        ranks = np.arange(rows_at.size) - np.searchsorted(rows_at, rows_at)  # position within the row
        self.index[start + rows_at, ranks] = staker_rows[columns]
        self.correlation[start + rows_at, ranks] = corr[rows_at, columns]
        self.count[start:stop] = np.bincount(rows_at, minlength=stop - start)

    def add_crowd(
        self,
        corr: NDArray[np.float64],
        valid: NDArray[np.bool_],
        start: int,
        threshold: float,
        threshold_key: NDArray[np.int64],
        staker_stakes: NDArray[np.float64],
        total: float,
    ) -> None:
        """The crowd of models ``start : start + len(corr)``: size and stake share."""
        stop = start + corr.shape[0]
        # The crowd: keys at or above the threshold's; a key ≥ K needs a value ≥ its K − 2e-12.
        rows_at, columns = _where(corr >= threshold - _KEY_MARGIN)
        inside = _key(corr[rows_at, columns]) >= threshold_key
        rows_at, columns = rows_at[inside], columns[inside]
        self.crowd_size[start:stop] = np.bincount(rows_at, minlength=stop - start)
        crowd_stake = np.bincount(rows_at, weights=staker_stakes[columns], minlength=stop - start)
        self.crowd_share[start:stop] = np.where(valid, crowd_stake / total, np.nan)


def _key(correlation: NDArray[np.float64] | np.float64) -> NDArray[np.int64]:
    """The correlation at :data:`KEY_DECIMALS` decimals, as an integer."""
    return np.rint(np.asarray(correlation) * _KEY_SCALE).astype(np.int64)


def _nearest(corr: NDArray[np.float64], width: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Per row of ``corr`` (−inf = not a candidate), its ``width`` nearest columns, nearest first.

    Nearest: larger :func:`_key`, then the lower column. Returned as (row, column) pairs
    sorted by row, then nearness. Only columns within :data:`_KEY_MARGIN` of the row's
    ``width``-th largest value can rank among its first ``width`` (their key is at least that
    value's key, which is at least the ``width``-th largest key), so only columns at or above
    :func:`_kth_floor` (at most that value, minus the margin) are keyed.
    """
    n_rows = corr.shape[0]
    if width == 0 or n_rows == 0:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    rows_at, columns = _where(corr >= _kth_floor(corr, width)[:, np.newaxis])
    keys = _key(corr[rows_at, columns])
    order = np.lexsort((columns, -keys, rows_at))
    rows_at, columns = rows_at[order], columns[order]
    kept = np.arange(rows_at.size) - np.searchsorted(rows_at, rows_at) < width
    return rows_at[kept], columns[kept]


def _kth_floor(corr: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """Per row, a value at most its ``width``-th largest minus :data:`_KEY_MARGIN` and above −inf.

    The columns are cut into ``g ≥ width`` runs; the ``width``-th largest of the runs' maxima
    is at most the row's ``width``-th largest value (``width`` distinct runs each hold a value
    at least that large). Cheaper than partitioning every row, and a few runs per neighbour
    leave few extra candidates. Where it is −inf (fewer than ``width`` defined values), the
    floor is the lowest finite float, so every defined value and no −inf passes.
    """
    n_columns = corr.shape[1]
    runs = min(n_columns, 4 * width)
    maxima = np.maximum.reduceat(corr, (np.arange(runs) * n_columns) // runs, axis=1)
    bound = np.partition(maxima, runs - width, axis=1)[:, runs - width]
    floor: NDArray[np.float64] = np.where(bound > -np.inf, bound - _KEY_MARGIN, -np.finfo(np.float64).max)
    return floor


def _where(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``np.nonzero`` of a 2-d mask (rows, then columns, row-major), through the flat index: several times faster."""
    rows_at, columns = np.divmod(np.flatnonzero(mask), mask.shape[1])
    return rows_at, columns


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
    return out, _standardize_into(prepared, tables, out)


def _standardize_into(
    prepared: PreparedRound,
    tables: RankTables,
    out: NDArray[np.float64],
    skip: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """:func:`standardized_rows` written into ``out``, leaving the rows where ``skip`` is True untouched."""
    valid: NDArray[np.bool_] = np.asarray(prepared.new_group[:, 1:].any(axis=1))
    tie_free = _tie_free_standardized(prepared.n_ids)
    tied_rows = np.zeros(prepared.n_models, dtype=bool)
    tied_rows[prepared.tie_rows] = True
    left_out = tied_rows if skip is None else tied_rows | skip
    for i in np.flatnonzero(~left_out):
        # A 1-d scatter by a native-integer index is the cheapest numpy has (no cast per element).
        out[i][prepared.order[i].astype(np.intp)] = tie_free
    tie_rows = prepared.tie_rows if skip is None else prepared.tie_rows[~skip[prepared.tie_rows]]
    if tie_rows.size:
        tied = tables.g[prepared.tie_ranks if skip is None else prepared.tie_ranks[~skip[prepared.tie_rows]]]
        tied -= tied.mean(axis=1, keepdims=True)
        norm = np.sqrt((tied * tied).sum(axis=1))
        defined = valid[tie_rows]
        tied[defined] /= norm[defined, np.newaxis]
        tied[~defined] = 0.0
        for values, i in zip(tied, tie_rows, strict=True):
            out[i][prepared.order[i].astype(np.intp)] = values
    return valid
