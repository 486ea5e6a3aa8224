"""Every DESIGN §2.2 figure of a score table in one report."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from scoring.crowding.common import DEFAULT_ENDS_FRACTION, DEFAULT_EVENT_WINDOW, DEFAULT_JUMP_RATIO, DEFAULT_TOP_STAKES, _PlainDict
from scoring.crowding.deciles import CwmmByStakeDecile, MmcByCwmmDecile, cwmm_by_stake_decile, mmc_by_cwmm_decile
from scoring.crowding.events import StakeJumpEvents, stake_jump_events
from scoring.crowding.table import ScoreTable
from scoring.crowding.trend import CwmmTrend, RoundConcentration, TopTurnover, concentration_by_round, cwmm_trend, series_ends, top_staker_turnover


@dataclass(frozen=True, eq=False)
class CrowdingReport(_PlainDict):
    """Every §2.2 figure of a score table (see :func:`crowding_report`).

    Attributes:
        n_observations: rows of the table.
        n_models: distinct models.
        n_rounds: distinct rounds.
        metric: the MMC the MMC figures use (``"contribution"`` = today's whenever the table
            has it); the ``*_2020`` figures use the 2020 MMC, beside them.
        mean_corr: mean CORR over the rows with one (NaN without a CORR column).
        mean_mmc: mean of ``metric``; mean_mmc_2020: mean of the 2020 MMC.
        stake_deciles: :func:`cwmm_by_stake_decile` (stakers only).
        cwmm_deciles: :func:`mmc_by_cwmm_decile` on ``metric``.
        cwmm_deciles_2020: the same on the 2020 MMC.
        trend: :func:`cwmm_trend`.
        weighted_first, weighted_last, median_first, median_last, gap_first, gap_last:
            :func:`series_ends` of the trend's stake-weighted mean, median and gap.
        concentration: :func:`concentration_by_round`.
        turnover: :func:`top_staker_turnover`.
        events: :func:`stake_jump_events` on ``metric``.
        events_2020: the same on the 2020 MMC.
    """

    n_observations: int
    n_models: int
    n_rounds: int
    metric: str
    mean_corr: float
    mean_mmc: float
    mean_mmc_2020: float
    stake_deciles: CwmmByStakeDecile
    cwmm_deciles: MmcByCwmmDecile
    cwmm_deciles_2020: MmcByCwmmDecile
    trend: CwmmTrend
    weighted_first: float
    weighted_last: float
    median_first: float
    median_last: float
    gap_first: float
    gap_last: float
    concentration: RoundConcentration
    turnover: TopTurnover
    events: StakeJumpEvents
    events_2020: StakeJumpEvents


def _nan_mean(values: NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def crowding_report(
    table: ScoreTable,
    ratio: float = DEFAULT_JUMP_RATIO,
    window: int = DEFAULT_EVENT_WINDOW,
    top: int = DEFAULT_TOP_STAKES,
    metric: str | None = None,
    ends_fraction: float = DEFAULT_ENDS_FRACTION,
) -> CrowdingReport:
    """All crowding analytics of DESIGN §2.2 for one score table, in one call.

    Arguments:
        table: the score table (typically every final score so far, or a trailing window).
        ratio: stake multiple that makes an event (default 5).
        window: event-study rounds on each side (default 20).
        top: how many largest stakes the concentration share and the turnover count (10).
        metric: the MMC of the MMC figures (default: today's MMC when the table has it).
        ends_fraction: share of the rounds averaged at each end of a trend (default 20%: a fifth).

    Returns:
        :class:`CrowdingReport`; ``report.to_dict()`` is ready for ``orjson.dumps``.
    """
    metric, mmc = table.metric_column(metric)
    trend = cwmm_trend(table)
    weighted_first, weighted_last = series_ends(trend.weighted_mean, ends_fraction)
    median_first, median_last = series_ends(trend.median, ends_fraction)
    gap_first, gap_last = series_ends(trend.gap, ends_fraction)
    return CrowdingReport(
        n_observations=len(table),
        n_models=int(table.model_ids.size),
        n_rounds=int(table.round_ids.size),
        metric=metric,
        mean_corr=_nan_mean(table.corr) if table.corr is not None else math.nan,
        mean_mmc=_nan_mean(mmc),
        mean_mmc_2020=_nan_mean(table.mmc),
        stake_deciles=cwmm_by_stake_decile(table, stakers_only=True),
        cwmm_deciles=mmc_by_cwmm_decile(table, metric=metric),
        cwmm_deciles_2020=mmc_by_cwmm_decile(table, metric="mmc"),
        trend=trend,
        weighted_first=weighted_first,
        weighted_last=weighted_last,
        median_first=median_first,
        median_last=median_last,
        gap_first=gap_first,
        gap_last=gap_last,
        concentration=concentration_by_round(table, top=top),
        turnover=top_staker_turnover(table, top=top),
        events=stake_jump_events(table, ratio=ratio, window=window, metric=metric),
        events_2020=stake_jump_events(table, ratio=ratio, window=window, metric="mmc"),
    )
