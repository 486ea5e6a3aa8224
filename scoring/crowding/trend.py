"""Per-round crowding series: the CWMM trend, stake concentration, top-staker turnover and series ends."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.crowding.common import DEFAULT_ENDS_FRACTION, DEFAULT_TOP_STAKES, _group_medians, _group_sums, _PlainDict, _slope
from scoring.crowding.table import ScoreTable
from scoring.errors import NegativeStake, NonFiniteInput, ScoringError, ShapeMismatch


@dataclass(frozen=True, eq=False)
class CwmmTrend(_PlainDict):
    """Per-round crowding series and their trends (see :func:`cwmm_trend`).

    Attributes:
        round: the round ids, ascending.
        weighted_mean: stake-weighted mean ``corr_w_mm`` (NaN when the round has no stake).
        median: unweighted median ``corr_w_mm`` (NaN when the round has no score).
        gap: ``weighted_mean − median``.
        count: rows with a ``corr_w_mm`` per round.
        total_stake: stake behind those rows.
        weighted_mean_slope: least-squares slope of ``weighted_mean`` per round number.
        median_slope: least-squares slope of ``median`` per round number.
        gap_slope: least-squares slope of ``gap`` per round number.
    """

    round: NDArray[np.int64]
    weighted_mean: NDArray[np.float64]
    median: NDArray[np.float64]
    gap: NDArray[np.float64]
    count: NDArray[np.int64]
    total_stake: NDArray[np.float64]
    weighted_mean_slope: float
    median_slope: float
    gap_slope: float


def cwmm_trend(table: ScoreTable) -> CwmmTrend:
    """Stake-weighted mean vs unweighted median of ``corr_w_mm`` per round, and their trends.

    Over the rows of round ``r`` with a ``corr_w_mm`` (NaN rows left out of both):

    - ``weighted_mean_r = Σ s_i·c_i / Σ s_i`` (NaN when ``Σ s_i = 0``);
    - ``median_r = median{c_i}``;
    - ``gap_r = weighted_mean_r − median_r`` (positive: the money sits closer to the meta
      model than the typical model does — crowding);
    - each slope is ``Σ (r − r̄)(y_r − ȳ) / Σ (r − r̄)²`` over the rounds where ``y_r`` is
      not NaN, in units per round number; NaN with fewer than 2 such rounds.

    Arguments:
        table: the score table.

    Returns:
        :class:`CwmmTrend` with one entry per round of the table (rounds without any
        ``corr_w_mm`` included, as NaN).
    """
    n_rounds = table.round_ids.size
    keep = ~np.isnan(table.corr_w_mm)
    groups = table.round_index[keep]
    cwmm = table.corr_w_mm[keep]
    stakes = table.stakes[keep]
    total_stake = _group_sums(groups, stakes, n_rounds)
    weighted_sum = _group_sums(groups, stakes * cwmm, n_rounds)
    weighted_mean = np.full(n_rounds, np.nan)
    np.divide(weighted_sum, total_stake, out=weighted_mean, where=total_stake > 0)
    median = _group_medians(groups, cwmm, n_rounds)
    gap = weighted_mean - median
    return CwmmTrend(
        round=table.round_ids.copy(),
        weighted_mean=weighted_mean,
        median=median,
        gap=gap,
        count=np.bincount(groups, minlength=n_rounds).astype(np.int64),
        total_stake=total_stake,
        weighted_mean_slope=_slope(table.round_ids, weighted_mean),
        median_slope=_slope(table.round_ids, median),
        gap_slope=_slope(table.round_ids, gap),
    )


# --------------------------------------------------------------------------- concentration


@dataclass(frozen=True, eq=False)
class StakeConcentration(_PlainDict):
    """Concentration of one round's stakes (see :func:`stake_concentration`).

    Attributes:
        hhi: Herfindahl index ``Σ p_i²`` (NaN when the total stake is 0).
        effective_number: ``1/hhi`` (0 when the total stake is 0).
        top_share: share of the total held by the ``top`` largest stakes (NaN when 0 total).
        top: how many stakes ``top_share`` counts.
        n_models: stakes given (zeros included).
        n_stakers: stakes > 0.
        total_stake: ``Σ s_i``.
    """

    hhi: float
    effective_number: float
    top_share: float
    top: int
    n_models: int
    n_stakers: int
    total_stake: float


def _check_top(top: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise ScoringError(f"top must be an integer >= 1, got {top!r}")


def stake_concentration(stakes: ArrayLike, top: int = DEFAULT_TOP_STAKES) -> StakeConcentration:
    """Herfindahl index, effective number of models and top-``top`` share of one round's stakes.

    With ``S = Σ s_i`` and ``p_i = s_i / S``:

    - ``HHI = Σ p_i²`` — 1/n for n equal stakes, → 1 when one whale holds nearly everything;
    - ``effective number = 1 / HHI`` — how many equal stakers would give the same HHI,
      between 1 and the number of stakers;
    - ``top share = (sum of the `top` largest s_i) / S`` — 1 when there are ≤ ``top`` stakers.

    A round with zero total stake (or no models) has no distribution: ``HHI = NaN``,
    ``effective number = 0`` (no one carries weight, and 0 keeps "effective number below a
    threshold" alerts firing), ``top share = NaN``.

    Arguments:
        stakes: 1-D stakes of one round, finite and ≥ 0.
        top: how many of the largest stakes the share counts (default 10).

    Returns:
        :class:`StakeConcentration`.
    """
    _check_top(top)
    s = np.asarray(stakes, dtype=np.float64)
    if s.ndim != 1:
        raise ShapeMismatch(f"stakes must be 1-D, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise NonFiniteInput("stakes hold NaN or inf")
    if (s < 0).any():
        raise NegativeStake(f"stakes must be >= 0, got min {s.min()}")
    total = float(s.sum())
    n_stakers = int((s > 0).sum())
    if total == 0.0:
        hhi, effective, share = math.nan, 0.0, math.nan
    else:
        p = s / total
        hhi = float(p @ p)
        effective = 1.0 / hhi
        share = float(np.sort(s)[-top:].sum()) / total
    return StakeConcentration(
        hhi=hhi,
        effective_number=effective,
        top_share=share,
        top=int(top),
        n_models=int(s.size),
        n_stakers=n_stakers,
        total_stake=total,
    )


@dataclass(frozen=True, eq=False)
class RoundConcentration(_PlainDict):
    """:class:`StakeConcentration` for every round of a table, as arrays over rounds."""

    round: NDArray[np.int64]
    hhi: NDArray[np.float64]
    effective_number: NDArray[np.float64]
    top_share: NDArray[np.float64]
    top: int
    n_models: NDArray[np.int64]
    n_stakers: NDArray[np.int64]
    total_stake: NDArray[np.float64]


def concentration_by_round(table: ScoreTable, top: int = DEFAULT_TOP_STAKES) -> RoundConcentration:
    """:func:`stake_concentration` of each round's stakes, computed for all rounds at once.

    Same formulas and zero-stake conventions; the ``top`` largest stakes of each round are
    found with one lexsort by (round, −stake).

    Arguments:
        table: the score table (every row counts, whatever its scores).
        top: how many of the largest stakes the share counts (default 10).

    Returns:
        :class:`RoundConcentration`, one entry per round id (ascending).
    """
    _check_top(top)
    n_rounds = table.round_ids.size
    groups = table.round_index
    s = table.stakes
    total = _group_sums(groups, s, n_rounds)
    has_stake = total > 0
    p = np.zeros_like(s)
    np.divide(s, total[groups], out=p, where=has_stake[groups])
    hhi = np.where(has_stake, np.bincount(groups, weights=p * p, minlength=n_rounds), np.nan)
    effective = np.zeros(n_rounds)
    np.divide(1.0, hhi, out=effective, where=has_stake)

    order = np.lexsort((-s, groups))
    n_models = np.bincount(groups, minlength=n_rounds).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(n_models)[:-1]))
    position = np.arange(s.size) - starts[groups[order]]
    in_top = position < top
    top_sum = np.bincount(groups[order][in_top], weights=s[order][in_top], minlength=n_rounds)
    share = np.full(n_rounds, np.nan)
    np.divide(top_sum, total, out=share, where=has_stake)
    return RoundConcentration(
        round=table.round_ids.copy(),
        hhi=hhi,
        effective_number=effective,
        top_share=share,
        top=int(top),
        n_models=n_models,
        n_stakers=np.bincount(groups, weights=s > 0, minlength=n_rounds).astype(np.int64),
        total_stake=total,
    )


@dataclass(frozen=True, eq=False)
class TopTurnover(_PlainDict):
    """Turnover of the largest stakers from round to round (see :func:`top_staker_turnover`).

    Attributes:
        round: the round ids, ascending.
        turnover: share of the round's top stakers that were not among the previous round's
            (NaN for the first round and for a round without stakers).
        n_top: how many top stakers the round has (``min(top, stakers)``).
        mean_turnover: mean of the finite ``turnover`` (NaN when none).
        top: the ``top`` used.
    """

    round: NDArray[np.int64]
    turnover: NDArray[np.float64]
    n_top: NDArray[np.int64]
    mean_turnover: float
    top: int


def top_stakers(models: ArrayLike, stakes: ArrayLike, top: int = DEFAULT_TOP_STAKES) -> list[str]:
    """The ``top`` largest stakers of one round, largest first; ties by model id, stake 0 excluded."""
    _check_top(top)
    m = [str(x) for x in np.asarray(models, dtype=object).tolist()]
    s = np.asarray(stakes, dtype=np.float64)
    ranked = sorted((-float(v), name) for name, v in zip(m, s.tolist(), strict=True) if v > 0)
    return [name for _, name in ranked[:top]]


def turnover_share(current: list[str], previous: list[str] | None) -> float:
    """Share of ``current`` not in ``previous``; NaN when ``previous`` is None or ``current`` empty."""
    if previous is None or not current:
        return math.nan
    before = set(previous)
    return sum(1 for m in current if m not in before) / len(current)


def top_staker_turnover(table: ScoreTable, top: int = DEFAULT_TOP_STAKES) -> TopTurnover:
    """Per round, the share of the ``top`` largest stakers that are new since the previous round.

    ``T_r`` = the round's ``top`` largest stakes > 0 (:func:`top_stakers`: ties broken by
    model id, so the set is deterministic); ``turnover_r = |T_r \\ T_p| / |T_r|`` with ``p``
    the previous round present in the table. The first round has no previous one (NaN); a
    round after one without stakers has turnover 1 (every top staker is new).

    Arguments:
        table: the score table (every row counts, whatever its scores).
        top: how many largest stakers (default 10).

    Returns:
        :class:`TopTurnover`.
    """
    _check_top(top)
    n_rounds = table.round_ids.size
    order = np.argsort(table.round_index, kind="stable")
    bounds = np.searchsorted(table.round_index[order], np.arange(n_rounds + 1))
    turnover = np.full(n_rounds, np.nan)
    n_top = np.zeros(n_rounds, dtype=np.int64)
    previous: list[str] | None = None
    for i in range(n_rounds):
        rows = order[bounds[i] : bounds[i + 1]]
        current = top_stakers(table.models[rows], table.stakes[rows], top)
        n_top[i] = len(current)
        turnover[i] = turnover_share(current, previous)
        previous = current
    finite = turnover[np.isfinite(turnover)]
    return TopTurnover(
        round=table.round_ids.copy(),
        turnover=turnover,
        n_top=n_top,
        mean_turnover=float(finite.mean()) if finite.size else math.nan,
        top=int(top),
    )


def series_ends(values: ArrayLike, fraction: float = DEFAULT_ENDS_FRACTION) -> tuple[float, float]:
    """The "first" and "last" level of a per-round series.

    Over the ``n`` finite values in round order, ``k = max(1, ⌈fraction · n⌉)``; "first" is
    the mean of the first ``k`` and "last" the mean of the last ``k`` (NaN, NaN when
    ``n = 0``). With the default 20% (a fifth), a 600-round season compares its first and last 120
    rounds — a level, not one noisy round.

    Arguments:
        values: the series (NaN = a round without the figure).
        fraction: share of the rounds at each end, in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ScoringError(f"fraction must be in (0, 1], got {fraction!r}")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    k = max(1, math.ceil(fraction * x.size - 1e-9))
    return float(x[:k].mean()), float(x[-k:].mean())


def percent_change(first: float, last: float) -> float:
    """``(last − first) / |first|``, NaN when either is NaN or ``first = 0``."""
    if not (math.isfinite(first) and math.isfinite(last)) or first == 0:
        return math.nan
    return (last - first) / abs(first)
