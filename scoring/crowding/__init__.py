"""Crowding analytics (DESIGN §2.2, the "crowding tax") over a table of per-round scores.

Input is a *score table*: one row per (round, model) observation with the model's frozen
stake, its correlation with the stake-weighted meta model (``corr_w_mm``), its MMC and,
optionally, its CORR.

Which MMC. Two MMC columns can be present: ``contribution`` — today's MMC, the one payouts
use and the one the seed article measured (rounds 400 to ~1,000+, the 2× payout multiplier) —
and ``mmc``, the 2020 bootstrap MMC. Every analytic that uses MMC takes ``metric``
(``"contribution"`` or ``"mmc"``); left at ``None`` it is :attr:`ScoreTable.default_metric`:
today's MMC whenever the table was given a ``contribution`` column, the 2020 MMC only for a
table built without one (callers that only hold the 2020 field). Each result records the
``metric`` it used, so a label can say which (:data:`METRIC_LABELS`).
Everything here is pure numpy over that table (no I/O, clock or environment), grouped with
``np.unique`` / ``lexsort`` / ``bincount`` so a table of ~1e6 rows costs a few sorts.

Conventions shared by every function:

- ``corr_w_mm``, ``mmc``, ``contribution`` and ``corr`` may hold NaN (a model not scored yet); a statistic that uses a
  column leaves out the rows where that column is NaN. Stakes are always finite and ≥ 0.
- Deciles are by rank with ties kept: ``decile = ⌊10·(r − 0.5)/n⌋`` with ``r`` the average
  rank (see :func:`decile_of`), so equal values always share a decile.
- Empty groups give NaN statistics and count 0; nothing raises on empty inputs.
- ``to_dict()`` on every result returns JSON-friendly plain Python: lists, ints, floats,
  strings, with NaN (and ±inf) as ``None``; arrays stay column-oriented.

Modules: :mod:`~scoring.crowding.table` (the score table), :mod:`~scoring.crowding.deciles`,
:mod:`~scoring.crowding.trend` (per-round series), :mod:`~scoring.crowding.events` (the
stake-jump event study) and :mod:`~scoring.crowding.control` (its population control),
:mod:`~scoring.crowding.interval` (its median's bootstrap interval),
:mod:`~scoring.crowding.report`; :mod:`~scoring.crowding.common`
holds the defaults and shared helpers.
"""

from scoring.crowding.common import (
    DEFAULT_DOSE_EDGES,
    DEFAULT_ENDS_FRACTION,
    DEFAULT_EVENT_WINDOW,
    DEFAULT_JUMP_RATIO,
    DEFAULT_SETTLE_SPAN,
    DEFAULT_TOP_STAKES,
    METRIC_LABELS,
    N_DECILES,
)
from scoring.crowding.deciles import CwmmByStakeDecile, MmcByCwmmDecile, cwmm_by_stake_decile, decile_of, mmc_by_cwmm_decile
from scoring.crowding.events import StakeJumpEvents, settling_point, stake_jump_events
from scoring.crowding.report import CrowdingReport, crowding_report
from scoring.crowding.table import ScoreTable
from scoring.crowding.trend import (
    CwmmTrend,
    RoundConcentration,
    StakeConcentration,
    TopTurnover,
    concentration_by_round,
    cwmm_trend,
    percent_change,
    series_ends,
    stake_concentration,
    top_staker_turnover,
    top_stakers,
    turnover_share,
)
from scoring.errors import InvalidScoreTable

__all__ = [
    "CrowdingReport",
    "CwmmByStakeDecile",
    "CwmmTrend",
    "DEFAULT_DOSE_EDGES",
    "DEFAULT_ENDS_FRACTION",
    "DEFAULT_EVENT_WINDOW",
    "DEFAULT_JUMP_RATIO",
    "DEFAULT_SETTLE_SPAN",
    "DEFAULT_TOP_STAKES",
    "InvalidScoreTable",
    "METRIC_LABELS",
    "MmcByCwmmDecile",
    "N_DECILES",
    "RoundConcentration",
    "ScoreTable",
    "StakeConcentration",
    "StakeJumpEvents",
    "TopTurnover",
    "concentration_by_round",
    "crowding_report",
    "cwmm_by_stake_decile",
    "cwmm_trend",
    "decile_of",
    "mmc_by_cwmm_decile",
    "percent_change",
    "series_ends",
    "settling_point",
    "stake_concentration",
    "stake_jump_events",
    "top_staker_turnover",
    "top_stakers",
    "turnover_share",
]
