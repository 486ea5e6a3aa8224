"""The stake-jump event study of the crowding tax and its settling point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.crowding.common import (
    DEFAULT_DOSE_EDGES,
    DEFAULT_EVENT_MIN_SHARE,
    DEFAULT_EVENT_WINDOW,
    DEFAULT_JUMP_RATIO,
    DEFAULT_SETTLE_SPAN,
    _PlainDict,
    _ratio_or_nan,
)
from scoring.crowding.control import population_windows
from scoring.crowding.table import ScoreTable
from scoring.errors import ScoringError, ShapeMismatch

# Events are looked up in blocks of this many rows of an [events, 2·window + 1] matrix, which
# bounds the memory of the event study (~33 MB per block at window 20) whatever the count.
_EVENT_BLOCK = 100_000


@dataclass(frozen=True, eq=False)
class StakeJumpEvents(_PlainDict):
    """The crowding-tax event study (see :func:`stake_jump_events`).

    Per event (arrays of length n_events, sorted by round then model):
        model, round: the model and the round ``r`` whose stake jumped.
        stake_before, stake_after: stakes in rounds ``r − 1`` and ``r``; multiple: their ratio.
        mmc_before: mean MMC over rounds ``r − window .. r − 1`` (those present).
        mmc_after: mean MMC over rounds ``r .. r + window − 1`` (those present).
        n_before, n_after: how many rounds each mean averages (0 → the mean is NaN).
        relative_change: ``(mmc_after − mmc_before) / |mmc_before|`` (NaN when a side holds
            fewer than ``min_rounds`` rounds or ``mmc_before = 0``).
        corr_before, corr_after, corr_relative_change: the same for CORR (the control).
        population_mmc_before, population_mmc_after: the mean MMC of the models without an
            event over the same two windows (:mod:`scoring.crowding.control`).
        relative_change_vs_population: ``((mmc_after − mmc_before) − (population_mmc_after −
            population_mmc_before)) / |mmc_before|`` for the compared events: the change beyond
            the season's own drift.

    Across events:
        median_relative_change: median of the finite ``relative_change`` (NaN when none).
        median_corr_relative_change: median of the finite ``corr_relative_change``.
        mean_mmc_before, mean_mmc_after: means of ``mmc_before`` / ``mmc_after`` over the
            events with ``min_rounds`` rounds on both sides ("0.010 → 0.006" in the seed article).
        mean_corr_before, mean_corr_after: the same for CORR.
        median_relative_change_vs_population: median of the finite
            ``relative_change_vs_population``; mean_population_mmc_before,
            mean_population_mmc_after: means of the population's windows over the compared events.
        n_events: events found; n_compared: events with a finite ``relative_change`` (the
            events the study compares).
        trajectory_offset: ``k = −window .. window`` (round ``r + k``; 0 is the jump round).
        trajectory_mean_mmc: mean MMC at each ``k`` over the events present there.
        trajectory_mean_corr: mean CORR at each ``k``.
        trajectory_count: how many events contribute MMC at each ``k``.
        settling_rolling_mmc: the trailing rolling mean of ``trajectory_mean_mmc`` over
            ``settle_span`` offsets, defined at ``k ≥ settle_span − 1`` up to ``window − 1``
            (NaN elsewhere), aligned with ``trajectory_offset``.
        settling_round: the settling point, ``k`` (rounds after the jump round); −1 when
            undefined or when the rolling mean is still falling at the window's end.
        dose_low, dose_high: stake-multiple buckets ``[low, high)`` (the last ``high`` is inf).
        dose_n_events, dose_median_relative_change, dose_median_corr_relative_change,
        dose_mean_mmc_before, dose_mean_mmc_after: the summaries per bucket.
        ratio, window, min_rounds, settle_span: the parameters used; metric: the MMC column used.
    """

    model: NDArray[Any]
    round: NDArray[np.int64]
    stake_before: NDArray[np.float64]
    stake_after: NDArray[np.float64]
    multiple: NDArray[np.float64]
    mmc_before: NDArray[np.float64]
    mmc_after: NDArray[np.float64]
    n_before: NDArray[np.int64]
    n_after: NDArray[np.int64]
    relative_change: NDArray[np.float64]
    corr_before: NDArray[np.float64]
    corr_after: NDArray[np.float64]
    corr_relative_change: NDArray[np.float64]
    population_mmc_before: NDArray[np.float64]
    population_mmc_after: NDArray[np.float64]
    relative_change_vs_population: NDArray[np.float64]
    median_relative_change: float
    median_corr_relative_change: float
    mean_mmc_before: float
    mean_mmc_after: float
    mean_corr_before: float
    mean_corr_after: float
    median_relative_change_vs_population: float
    mean_population_mmc_before: float
    mean_population_mmc_after: float
    n_events: int
    n_compared: int
    trajectory_offset: NDArray[np.int64]
    trajectory_mean_mmc: NDArray[np.float64]
    trajectory_mean_corr: NDArray[np.float64]
    trajectory_count: NDArray[np.int64]
    settling_rolling_mmc: NDArray[np.float64]
    settling_round: int
    dose_low: NDArray[np.float64]
    dose_high: NDArray[np.float64]
    dose_n_events: NDArray[np.int64]
    dose_median_relative_change: NDArray[np.float64]
    dose_median_corr_relative_change: NDArray[np.float64]
    dose_mean_mmc_before: NDArray[np.float64]
    dose_mean_mmc_after: NDArray[np.float64]
    ratio: float
    window: int
    min_rounds: int
    settle_span: int
    metric: str


def _relative_change(before: NDArray[np.float64], after: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(after − before) / |before|`` where both are finite and ``before ≠ 0``, else NaN."""
    out = np.full(before.shape, np.nan)
    ok = np.isfinite(before) & np.isfinite(after) & (before != 0)
    np.divide(after - before, np.abs(before), out=out, where=ok)
    return out


def _nan_median(values: NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _paired_means(before: NDArray[np.float64], after: NDArray[np.float64]) -> tuple[float, float]:
    """Means of ``before`` and ``after`` over the entries where both are finite (NaN if none)."""
    ok = np.isfinite(before) & np.isfinite(after)
    if not ok.any():
        return math.nan, math.nan
    return float(before[ok].mean()), float(after[ok].mean())


def settling_point(trajectory: ArrayLike, window: int, span: int = DEFAULT_SETTLE_SPAN) -> tuple[NDArray[np.float64], int]:
    """The settling point of a post-event MMC trajectory.

    ``trajectory`` holds the mean MMC at offsets ``k = −window .. window`` (index
    ``k + window``); only the post-event offsets ``k = 0 .. window − 1`` (the jump round and
    the ``window − 1`` after it — the "after" side of the event study) are used.

    1. Rolling mean: ``R_k = mean(T_{k−span+1}, …, T_k)`` for ``k = span − 1 .. window − 1``,
       defined only when all ``span`` values are finite (it never reaches back before the
       jump round, so pre-event rounds never enter it).
    2. The rolling mean *stops falling* at the first ``k`` from which it never goes lower:
       the smallest ``k`` with ``R_k ≤ R_j`` for every later defined ``j`` — i.e. the first
       position of the minimum of ``R``.
    3. When that minimum is at the last defined offset the rolling mean is still falling at
       the window's end: the settling point is censored and reported as −1 (also −1 when
       fewer than two ``R_k`` are defined).

    Arguments:
        trajectory: ``2·window + 1`` values (NaN where no event contributes).
        window: the event study's window.
        span: rolling-mean span in rounds (integer ≥ 1; default 3).

    Returns:
        ``(R, k)``: ``R`` aligned with ``trajectory`` (NaN where undefined) and the settling
        point ``k`` (rounds after the jump round; 0 = the jump round itself), or −1.
    """
    if isinstance(span, bool) or not isinstance(span, int | np.integer) or span < 1:
        raise ScoringError(f"span must be an integer >= 1, got {span!r}")
    t = np.asarray(trajectory, dtype=np.float64)
    if t.shape != (2 * window + 1,):
        raise ShapeMismatch(f"trajectory must have 2·window + 1 = {2 * window + 1} values, got {t.shape}")
    rolling = np.full(t.size, np.nan)
    after = t[window : 2 * window]  # k = 0 .. window − 1
    for k in range(int(span) - 1, window):
        part = after[k - int(span) + 1 : k + 1]
        if np.isfinite(part).all():
            rolling[window + k] = float(part.mean())
    defined = np.flatnonzero(np.isfinite(rolling))
    if defined.size < 2:
        return rolling, -1
    values = rolling[defined]
    lowest = int(defined[int(np.argmin(values))])
    if lowest == defined[-1]:
        return rolling, -1
    return rolling, lowest - window


def stake_jump_events(
    table: ScoreTable,
    ratio: float = DEFAULT_JUMP_RATIO,
    window: int = DEFAULT_EVENT_WINDOW,
    metric: str | None = None,
    dose_edges: tuple[float, ...] = DEFAULT_DOSE_EDGES,
    settle_span: int = DEFAULT_SETTLE_SPAN,
    min_rounds: int | None = None,
) -> StakeJumpEvents:
    """Event study of the crowding tax: MMC before vs after a model's stake jumps ≥ ``ratio``×.

    1. An **event** is a (model, round ``r``) with rows for both ``r − 1`` and ``r`` (adjacent
       round numbers, not merely the model's previous appearance), ``stake_{r−1} > 0`` and
       ``stake_r ≥ ratio · stake_{r−1}``. A model may have several events.
    2. ``mmc_before = mean{mmc_t : r − window ≤ t ≤ r − 1}`` and
       ``mmc_after = mean{mmc_t : r ≤ t ≤ r + window − 1}`` over the model's rounds present
       with an MMC (missing rounds and NaN scores are skipped, not filled).
       The jump round ``r`` counts as *after*: its stake was frozen at close and is already
       the model's weight in round ``r``'s meta model, so ``r`` is the first round that can
       pay the tax; "before" and "after" are then ``window`` rounds each, without a gap.
    3. An event is **compared** when each side holds at least ``min_rounds`` rounds with an
       MMC: ``relative_change = (mmc_after − mmc_before) / |mmc_before|`` for those (NaN for
       the others); the summary is the median over events where it is finite. The mean MMC
       before → after is the mean of ``mmc_before`` and of ``mmc_after`` over the compared
       events. A jump in the table's last rounds is listed with its means and counts but not
       compared until its after-window fills: a round or two after it would weigh as much as
       twenty in the median.
    4. The control: the same windows, means and relative change for CORR. Crowding lowers
       MMC through the meta model moving toward the model; it leaves the model's own CORR
       alone, so a flat CORR beside a falling MMC says "crowding, not model decay". The
       population's control: the mean MMC of the models without an event over the same
       windows (:func:`scoring.crowding.control.population_windows`); the event's change
       beyond the population's, relative to its MMC before, separates the event's own change
       from the season's drift (every model's MMC moves as the stake concentrates or spreads).
    5. Trajectory: for ``k = −window .. window``, the mean over events of ``mmc_{r+k}`` (and
       of ``corr_{r+k}``), events lacking round ``r + k`` left out (counts reported).
    6. Settling point: :func:`settling_point` of the MMC trajectory with ``settle_span``.
    7. Dose–response: events by stake multiple ``stake_r / stake_{r−1}`` in the buckets
       ``[ratio, e_1), [e_1, e_2), …, [e_last, ∞)`` with ``dose_edges = (e_1, …)`` (edges
       at or below ``ratio`` dropped); per bucket the count, the median relative MMC and
       CORR changes and the mean MMC before → after.

    Events near the table's edges use the rounds they have (and are compared when they have
    ``min_rounds`` on each side); the trajectory counts every event; windows of successive
    events of one model may overlap (each event is still reported on its own).

    Arguments:
        table: the score table.
        ratio: minimal stake multiple between adjacent rounds (finite, > 0; default 5).
        window: rounds on each side (integer ≥ 1; default 20).
        metric: which MMC (see :meth:`ScoreTable.metric_column`; default today's MMC).
        dose_edges: inner edges of the dose–response buckets (default 10×, 20×).
        settle_span: span of the settling point's rolling mean (default 3).
        min_rounds: rounds with an MMC needed on each side for an event to be compared
            (integer, 1 ≤ ``min_rounds`` ≤ ``window``; default half the window, at least 1:
            10 of 20).

    Returns:
        :class:`StakeJumpEvents`.
    """
    parameters = _event_arguments(ratio, window, settle_span, min_rounds)
    ratio, window = parameters[0], parameters[1]
    metric, mmc_column = table.metric_column(metric)
    rows = _event_rows(table, mmc_column, ratio)
    offsets = np.arange(-window, window + 1, dtype=np.int64)
    sums = _window_sums(table, rows, offsets, window)
    return _event_study(table, mmc_column, rows, sums, offsets, parameters, metric, dose_edges)


def _event_study(
    table: ScoreTable,
    mmc_column: NDArray[np.float64],
    rows: _EventRows,
    sums: _WindowSums,
    offsets: NDArray[np.int64],
    parameters: tuple[float, int, int, int],
    metric: str,
    dose_edges: tuple[float, ...],
) -> StakeJumpEvents:
    """The event study's per-event means, relative changes, summaries, settling point and dose–response."""
    ratio, window, min_rounds, settle_span = parameters
    mmc_before, corr_before = sums.means_before()
    mmc_after, corr_after = sums.means_after()
    trajectory_mmc, trajectory_corr = sums.trajectories()
    compare = (sums.n_before[0] >= min_rounds) & (sums.n_after[0] >= min_rounds)

    def compared(values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.where(compare, values, np.nan)

    relative_change = compared(_relative_change(mmc_before, mmc_after))
    population = population_windows(table, mmc_column, rows.model[rows.at], rows.round[rows.at], window)
    vs_population = compared(_relative_change(mmc_before, mmc_after - (population.after - population.before)))
    mean_population_before, mean_population_after = _paired_means(compared(population.before), compared(population.after))
    corr_relative_change = compared(_relative_change(corr_before, corr_after))
    mean_mmc_before, mean_mmc_after = _paired_means(compared(mmc_before), compared(mmc_after))
    mean_corr_before, mean_corr_after = _paired_means(compared(corr_before), compared(corr_after))
    rolling, settled = settling_point(trajectory_mmc, window, settle_span)

    at = rows.at
    stake_before, stake_after = rows.stake[at - 1].copy(), rows.stake[at].copy()
    multiple = stake_after / stake_before if at.size else np.zeros(0)
    dose = _dose_response(multiple, ratio, dose_edges, relative_change, corr_relative_change, compared(mmc_before), compared(mmc_after))
    return StakeJumpEvents(
        model=table.model_ids[rows.model[at]],
        round=rows.round[at].copy(),
        stake_before=stake_before,
        stake_after=stake_after,
        multiple=multiple,
        mmc_before=mmc_before,
        mmc_after=mmc_after,
        n_before=sums.n_before[0],
        n_after=sums.n_after[0],
        relative_change=relative_change,
        corr_before=corr_before,
        corr_after=corr_after,
        corr_relative_change=corr_relative_change,
        population_mmc_before=population.before,
        population_mmc_after=population.after,
        relative_change_vs_population=vs_population,
        median_relative_change=_nan_median(relative_change),
        median_corr_relative_change=_nan_median(corr_relative_change),
        mean_mmc_before=mean_mmc_before,
        mean_mmc_after=mean_mmc_after,
        mean_corr_before=mean_corr_before,
        mean_corr_after=mean_corr_after,
        median_relative_change_vs_population=_nan_median(vs_population),
        mean_population_mmc_before=mean_population_before,
        mean_population_mmc_after=mean_population_after,
        n_events=int(at.size),
        n_compared=int(np.isfinite(relative_change).sum()),
        trajectory_offset=offsets,
        trajectory_mean_mmc=trajectory_mmc,
        trajectory_mean_corr=trajectory_corr,
        trajectory_count=sums.trajectory_count[0],
        settling_rolling_mmc=rolling,
        settling_round=settled,
        dose_low=dose.low,
        dose_high=dose.high,
        dose_n_events=dose.n_events,
        dose_median_relative_change=dose.median_relative_change,
        dose_median_corr_relative_change=dose.median_corr_relative_change,
        dose_mean_mmc_before=dose.mean_mmc_before,
        dose_mean_mmc_after=dose.mean_mmc_after,
        ratio=ratio,
        window=window,
        min_rounds=min_rounds,
        settle_span=settle_span,
        metric=metric,
    )


def _event_arguments(ratio: float, window: int, settle_span: int, min_rounds: int | None) -> tuple[float, int, int, int]:
    """``ratio``, ``window``, ``min_rounds`` (None: half the window, at least 1) and
    ``settle_span`` checked and as float, int, int, int."""
    if not (isinstance(ratio, float | int | np.floating | np.integer) and np.isfinite(ratio)):
        raise ScoringError(f"ratio must be a finite number, got {ratio!r}")
    if ratio <= 0:
        raise ScoringError(f"ratio must be > 0, got {ratio!r}")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ScoringError(f"window must be an integer >= 1, got {window!r}")
    if isinstance(settle_span, bool) or not isinstance(settle_span, int | np.integer) or settle_span < 1:
        raise ScoringError(f"settle_span must be an integer >= 1, got {settle_span!r}")
    if min_rounds is None:
        min_rounds = max(1, math.floor(window * DEFAULT_EVENT_MIN_SHARE))
    if isinstance(min_rounds, bool) or not isinstance(min_rounds, int | np.integer) or not 1 <= min_rounds <= window:
        raise ScoringError(f"min_rounds must be an integer in 1..window ({window}), got {min_rounds!r}")
    return float(ratio), int(window), int(min_rounds), int(settle_span)


@dataclass(frozen=True, eq=False)
class _EventRows:
    """The table's rows sorted by (model, round) and the positions of the events among them.

    A model's history is one contiguous, ascending run of the sorted rows; ``key`` is
    ``model_index · n_round_ids + round_index`` of each sorted row, ``columns`` the MMC and
    CORR columns in that order and ``at`` the events' positions, by round, then model.
    """

    key: NDArray[np.int64]
    model: NDArray[np.intp]
    round: NDArray[np.int64]
    stake: NDArray[np.float64]
    columns: tuple[NDArray[np.float64], NDArray[np.float64]]
    at: NDArray[np.intp]


def _event_rows(table: ScoreTable, mmc_column: NDArray[np.float64], ratio: float) -> _EventRows:
    """The sorted rows of ``table`` and its events: adjacent rounds, stake rising ≥ ``ratio``×."""
    n_round_ids = max(table.round_ids.size, 1)
    key = table.model_index.astype(np.int64) * n_round_ids + table.round_index
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    model_s = table.model_index[order]
    round_s = table.rounds[order]
    stake_s = table.stakes[order]
    corr = table.corr if table.corr is not None else np.full(len(table), np.nan)  # NaN-filled on construction
    columns = (mmc_column[order], corr[order])

    previous_stake = stake_s[:-1]
    is_event = (model_s[1:] == model_s[:-1]) & (round_s[1:] - round_s[:-1] == 1) & (previous_stake > 0) & (stake_s[1:] >= ratio * previous_stake)
    at = np.flatnonzero(is_event) + 1
    at = at[np.lexsort((model_s[at], round_s[at]))]  # report by round, then model
    return _EventRows(sorted_key, model_s, round_s, stake_s, columns, at)


@dataclass(frozen=True, eq=False)
class _WindowSums:
    """Per event and column (MMC, CORR): sums and counts of the scores before and after, and per offset."""

    sum_before: list[NDArray[np.float64]]
    sum_after: list[NDArray[np.float64]]
    n_before: list[NDArray[np.int64]]
    n_after: list[NDArray[np.int64]]
    trajectory_sum: list[NDArray[np.float64]]
    trajectory_count: list[NDArray[np.int64]]

    def means_before(self) -> list[NDArray[np.float64]]:
        return [_ratio_or_nan(total, count) for total, count in zip(self.sum_before, self.n_before, strict=True)]

    def means_after(self) -> list[NDArray[np.float64]]:
        return [_ratio_or_nan(total, count) for total, count in zip(self.sum_after, self.n_after, strict=True)]

    def trajectories(self) -> list[NDArray[np.float64]]:
        return [_ratio_or_nan(total, count) for total, count in zip(self.trajectory_sum, self.trajectory_count, strict=True)]


def _window_sums(table: ScoreTable, rows: _EventRows, offsets: NDArray[np.int64], window: int) -> _WindowSums:
    """Each event's rounds ``r + k`` for every offset looked up, :data:`_EVENT_BLOCK` events at a time."""
    n_events = rows.at.size
    n_round_ids = max(table.round_ids.size, 1)
    sums = _WindowSums(
        sum_before=[np.zeros(n_events), np.zeros(n_events)],
        sum_after=[np.zeros(n_events), np.zeros(n_events)],
        n_before=[np.zeros(n_events, dtype=np.int64), np.zeros(n_events, dtype=np.int64)],
        n_after=[np.zeros(n_events, dtype=np.int64), np.zeros(n_events, dtype=np.int64)],
        trajectory_sum=[np.zeros(offsets.size), np.zeros(offsets.size)],
        trajectory_count=[np.zeros(offsets.size, dtype=np.int64), np.zeros(offsets.size, dtype=np.int64)],
    )
    for block in range(0, n_events, _EVENT_BLOCK):
        at = rows.at[block : block + _EVENT_BLOCK]
        wanted_round = rows.round[at, np.newaxis] + offsets[np.newaxis, :]
        code = np.minimum(np.searchsorted(table.round_ids, wanted_round), n_round_ids - 1)
        wanted_key = rows.model[at, np.newaxis].astype(np.int64) * n_round_ids + code
        position = np.minimum(np.searchsorted(rows.key, wanted_key), rows.key.size - 1)
        found = (table.round_ids[code] == wanted_round) & (rows.key[position] == wanted_key)
        part = slice(block, block + at.size)
        for c, column in enumerate(rows.columns):
            values = np.where(found, column[position], np.nan)
            present = ~np.isnan(values)
            values = np.where(present, values, 0.0)
            sums.sum_before[c][part] = values[:, :window].sum(axis=1)
            sums.sum_after[c][part] = values[:, window : 2 * window].sum(axis=1)
            sums.n_before[c][part] = present[:, :window].sum(axis=1)
            sums.n_after[c][part] = present[:, window : 2 * window].sum(axis=1)
            sums.trajectory_sum[c] += values.sum(axis=0)
            sums.trajectory_count[c] += present.sum(axis=0)
    return sums


@dataclass(frozen=True, eq=False)
class _DoseResponse:
    """Per stake-multiple bucket ``[low, high)``: event count, median relative changes, mean MMC."""

    low: NDArray[np.float64]
    high: NDArray[np.float64]
    n_events: NDArray[np.int64]
    median_relative_change: NDArray[np.float64]
    median_corr_relative_change: NDArray[np.float64]
    mean_mmc_before: NDArray[np.float64]
    mean_mmc_after: NDArray[np.float64]


def _dose_response(
    multiple: NDArray[np.float64],
    ratio: float,
    dose_edges: tuple[float, ...],
    relative_change: NDArray[np.float64],
    corr_relative_change: NDArray[np.float64],
    mmc_before: NDArray[np.float64],
    mmc_after: NDArray[np.float64],
) -> _DoseResponse:
    """The events by stake multiple in ``[ratio, e_1), …, [e_last, ∞)`` (edges ≤ ``ratio`` dropped)."""
    inner = sorted(float(e) for e in dose_edges if float(e) > ratio)
    lows = np.array([ratio, *inner])
    highs = np.array([*inner, math.inf])
    bucket = np.searchsorted(highs, multiple, side="right")  # multiple < highs[bucket]
    dose_n = np.zeros(lows.size, dtype=np.int64)
    dose_median = np.full(lows.size, np.nan)
    dose_corr_median = np.full(lows.size, np.nan)
    dose_before = np.full(lows.size, np.nan)
    dose_after = np.full(lows.size, np.nan)
    for b in range(lows.size):
        members = bucket == b
        dose_n[b] = int(members.sum())
        dose_median[b] = _nan_median(relative_change[members])
        dose_corr_median[b] = _nan_median(corr_relative_change[members])
        dose_before[b], dose_after[b] = _paired_means(mmc_before[members], mmc_after[members])
    return _DoseResponse(lows, highs, dose_n, dose_median, dose_corr_median, dose_before, dose_after)
