"""Shared pieces of the crowding analytics: the defaults, the grouping helpers and the JSON conversion."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Number of quantile bins of the §2.2 tables (the seed article reports deciles).
N_DECILES = 10

# The event study's defaults: "stake rose ≥ 5× between adjacent rounds", "20 rounds before
# vs the 20 after" (DESIGN §2.2).
DEFAULT_JUMP_RATIO = 5.0
DEFAULT_EVENT_WINDOW = 20
# An event is compared only when each side of it holds at least this share of the window's
# rounds (10 of 20): one or two rounds after a jump near the end of the table would otherwise
# weigh as much as twenty in the median.
DEFAULT_EVENT_MIN_SHARE = 0.5

# "share of the top 10" stakes (DESIGN §2.2).
DEFAULT_TOP_STAKES = 10

# Dose–response of the event study: the inner edges of the stake-multiple buckets
# [ratio, 10×), [10×, 20×), [20×, ∞).
DEFAULT_DOSE_EDGES: tuple[float, ...] = (10.0, 20.0)

# The settling point's rolling mean spans this many relative rounds (see stake_jump_events).
DEFAULT_SETTLE_SPAN = 3

# "First" and "last" of a per-round series: the mean over this fraction of its rounds.
DEFAULT_ENDS_FRACTION = 0.2

#: The MMC columns a crowding analytic can use, and how a label names each.
METRIC_LABELS: dict[str, str] = {
    "contribution": "MMC (today's: contribution)",
    "mmc": "MMC 2020 (bootstrap)",
}


# --------------------------------------------------------------------------- grouping


def _group_medians(groups: NDArray[np.intp], values: NDArray[np.float64], n_groups: int) -> NDArray[np.float64]:
    """Median of ``values`` per group id in ``0..n_groups-1`` (NaN for an empty group).

    One lexsort by (group, value); the median of a group of ``c`` sorted values is the mean
    of its elements ``(c-1)//2`` and ``c//2``, the same number ``np.median`` returns.
    """
    counts = np.bincount(groups, minlength=n_groups)
    ordered = values[np.lexsort((values, groups))]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    medians = np.full(n_groups, np.nan)
    has = counts > 0
    low = ordered[starts[has] + (counts[has] - 1) // 2]
    high = ordered[starts[has] + counts[has] // 2]
    medians[has] = (low + high) / 2
    return medians


def _group_sums(groups: NDArray[np.intp], values: NDArray[np.float64], n_groups: int) -> NDArray[np.float64]:
    """Sum of ``values`` per group id in ``0..n_groups-1`` (0 for an empty group)."""
    return np.asarray(np.bincount(groups, weights=values, minlength=n_groups), dtype=np.float64)


def _group_counts(groups: NDArray[np.intp], n_groups: int) -> NDArray[np.int64]:
    """Rows per group id in ``0..n_groups-1``."""
    return np.bincount(groups, minlength=n_groups).astype(np.int64)


def _ratio_or_nan(total: NDArray[np.float64], count: NDArray[np.int64]) -> NDArray[np.float64]:
    """``total / count`` where ``count > 0``, else NaN."""
    out = np.full(np.shape(total), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _group_means(groups: NDArray[np.intp], values: NDArray[np.float64], n_groups: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Mean of ``values`` per group id (NaN for an empty group) and the group sizes."""
    counts = _group_counts(groups, n_groups)
    return _ratio_or_nan(_group_sums(groups, values, n_groups), counts), counts


def _slope(x: NDArray[Any], y: NDArray[np.float64]) -> float:
    """Least-squares slope of ``y`` on ``x`` over the finite ``y``; NaN with < 2 distinct x.

    ``slope = Σ (x − x̄)(y − ȳ) / Σ (x − x̄)²``.
    """
    ok = np.isfinite(y)
    xs = x[ok].astype(np.float64)
    ys = y[ok]
    if xs.size < 2:
        return math.nan
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        return math.nan
    return float(dx @ (ys - ys.mean())) / sxx


# --------------------------------------------------------------------------- JSON conversion


def _plain(value: Any) -> Any:
    """JSON-friendly plain Python: dataclasses → dict, arrays → lists, non-finite → None."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.init}
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":  # vectorized: one object array, non-finite → None
            boxed = value.astype(object)
            boxed[~np.isfinite(value)] = None
            return boxed.tolist()
        if value.dtype.kind in "iubU":
            return value.tolist()
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.str_):
        return str(value)
    return value


class _PlainDict:
    """Mixin: ``to_dict()`` for the result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly plain Python (lists, numbers, strings; NaN → None)."""
        plain: dict[str, Any] = _plain(self)
        return plain
