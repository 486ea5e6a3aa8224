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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from scoring.errors import InvalidScoreTable, NegativeStake, NonFiniteInput, ScoringError, ShapeMismatch

# Number of quantile bins of the §2.2 tables (the seed article reports deciles).
N_DECILES = 10

# The event study's defaults: "stake rose ≥ 5× between adjacent rounds", "20 rounds before
# vs the 20 after" (DESIGN §2.2).
DEFAULT_JUMP_RATIO = 5.0
DEFAULT_EVENT_WINDOW = 20

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

# Events are looked up in blocks of this many rows of an [events, 2·window + 1] matrix, which
# bounds the memory of the event study (~33 MB per block at window 20) whatever the count.
_EVENT_BLOCK = 100_000


@dataclass(frozen=True, eq=False)
class ScoreTable:
    """One row per (round, model) observation, as equal-length 1-D arrays.

    Constructing one validates and normalizes the columns (the arrays are copied and made
    read-only) and factorizes rounds and models once for the grouping functions.

    Arguments:
        rounds: int64 round numbers (integral floats are accepted).
        models: model ids, strings (object or unicode dtype).
        stakes: float64 frozen stakes, finite and ≥ 0.
        corr_w_mm: float64 correlation with the meta model; NaN = not scored.
        mmc: float64 2020 bootstrap MMC; NaN = not scored.
        contribution: float64 today's MMC; NaN = not scored. ``None`` (the default): the
            column is all NaN and :attr:`default_metric` falls back to ``"mmc"``.
        corr: float64 CORR (the event study's control); ``None``: all NaN.

    Raises:
        ShapeMismatch: a column is not 1-D or the lengths differ.
        NonFiniteInput: a stake is NaN/±inf, or a score column holds ±inf.
        NegativeStake: a stake is below zero.
        InvalidScoreTable: non-integer rounds, non-string models, duplicate (round, model).
    """

    rounds: NDArray[np.int64]
    models: NDArray[Any]
    stakes: NDArray[np.float64]
    corr_w_mm: NDArray[np.float64]
    mmc: NDArray[np.float64]
    contribution: NDArray[np.float64] | None = None
    corr: NDArray[np.float64] | None = None
    # Derived in __post_init__: sorted distinct ids and each row's index into them.
    has_contribution: bool = field(init=False, repr=False)
    has_corr: bool = field(init=False, repr=False)
    round_ids: NDArray[np.int64] = field(init=False, repr=False)
    round_index: NDArray[np.intp] = field(init=False, repr=False)
    model_ids: NDArray[Any] = field(init=False, repr=False)
    model_index: NDArray[np.intp] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rounds = _as_round_column(self.rounds)
        models = _as_model_column(self.models)
        stakes = _as_float_column(self.stakes, "stakes")
        corr_w_mm = _as_float_column(self.corr_w_mm, "corr_w_mm")
        mmc = _as_float_column(self.mmc, "mmc")
        has_contribution = self.contribution is not None
        has_corr = self.corr is not None
        contribution = _as_float_column(self.contribution, "contribution") if self.contribution is not None else np.full(mmc.size, np.nan)
        corr = _as_float_column(self.corr, "corr") if self.corr is not None else np.full(mmc.size, np.nan)
        lengths = {
            "rounds": rounds.size,
            "models": models.size,
            "stakes": stakes.size,
            "corr_w_mm": corr_w_mm.size,
            "mmc": mmc.size,
            "contribution": contribution.size,
            "corr": corr.size,
        }
        if len(set(lengths.values())) > 1:
            raise ShapeMismatch(f"score table columns differ in length: {lengths}")
        if not np.isfinite(stakes).all():
            raise NonFiniteInput("stakes hold NaN or inf")
        if (stakes < 0).any():
            raise NegativeStake(f"stakes must be >= 0, got min {stakes.min()}")
        for name, column in (
            ("corr_w_mm", corr_w_mm),
            ("mmc", mmc),
            ("contribution", contribution),
            ("corr", corr),
        ):
            if np.isinf(column).any():
                raise NonFiniteInput(f"{name} holds inf (NaN marks a missing score; inf is not)")

        round_ids, round_index = np.unique(rounds, return_inverse=True)
        try:
            model_ids, model_index = np.unique(models, return_inverse=True)
        except TypeError as exc:  # an object column mixing strings with None, numbers, ...
            raise InvalidScoreTable(f"models must all be strings: {exc}") from None
        if not all(isinstance(m, str) for m in model_ids.tolist()):
            raise InvalidScoreTable("models must all be strings")
        pair = model_index.astype(np.int64) * max(round_ids.size, 1) + round_index
        if np.unique(pair).size != pair.size:
            sorted_pair = np.sort(pair)
            dup = int(sorted_pair[1:][sorted_pair[1:] == sorted_pair[:-1]][0])
            raise InvalidScoreTable(
                f"(round, model) appears more than once, e.g. round {round_ids[dup % round_ids.size]} model {model_ids[dup // round_ids.size]!r}"
            )

        for name, value in (
            ("rounds", rounds),
            ("models", models),
            ("stakes", stakes),
            ("corr_w_mm", corr_w_mm),
            ("mmc", mmc),
            ("contribution", contribution),
            ("corr", corr),
            ("round_ids", round_ids),
            ("round_index", round_index.ravel()),
            ("model_ids", model_ids),
            ("model_index", model_index.ravel()),
        ):
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "has_contribution", has_contribution)
        object.__setattr__(self, "has_corr", has_corr)

    @classmethod
    def from_arrays(
        cls,
        rounds: ArrayLike,
        models: ArrayLike,
        stakes: ArrayLike,
        corr_w_mm: ArrayLike,
        mmc: ArrayLike,
        contribution: ArrayLike | None = None,
        corr: ArrayLike | None = None,
    ) -> ScoreTable:
        """A validated table from any array-likes (lists, numpy arrays, pandas columns).

        Arguments:
            rounds, models, stakes, corr_w_mm, mmc, contribution, corr: the columns, as for
                the class (``contribution`` and ``corr`` optional).

        Returns:
            the :class:`ScoreTable` (same checks and errors as the constructor).
        """
        return cls(
            rounds=np.asarray(rounds),
            models=np.asarray(models),
            stakes=np.asarray(stakes),
            corr_w_mm=np.asarray(corr_w_mm),
            mmc=np.asarray(mmc),
            contribution=None if contribution is None else np.asarray(contribution),
            corr=None if corr is None else np.asarray(corr),
        )

    def __len__(self) -> int:
        return int(self.rounds.size)

    @property
    def default_metric(self) -> str:
        """``"contribution"`` (today's MMC) when the table has that column, else ``"mmc"``."""
        return "contribution" if self.has_contribution else "mmc"

    def metric_column(self, metric: str | None = None) -> tuple[str, NDArray[np.float64]]:
        """The MMC column an analytic uses: ``(name, values)``.

        Arguments:
            metric: ``"contribution"`` (today's MMC), ``"mmc"`` (2020) or ``None`` for
                :attr:`default_metric`.

        Raises:
            ScoringError: an unknown metric.
        """
        name = self.default_metric if metric is None else metric
        if name not in METRIC_LABELS:
            raise ScoringError(f"metric must be one of {sorted(METRIC_LABELS)}, got {metric!r}")
        column: NDArray[np.float64] = self.contribution if name == "contribution" else self.mmc  # type: ignore[assignment]
        return name, column


def _as_round_column(values: ArrayLike) -> NDArray[np.int64]:
    """Round numbers as a fresh int64 vector (integral floats accepted)."""
    x = np.array(values)
    if x.ndim != 1:
        raise ShapeMismatch(f"rounds must be 1-D, got shape {x.shape}")
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise NonFiniteInput("rounds hold NaN or inf")
        if (x != np.round(x)).any():
            raise InvalidScoreTable("rounds must be integers")
        return x.astype(np.int64)
    raise InvalidScoreTable(f"rounds must be integers, got dtype {x.dtype}")


def _as_model_column(values: ArrayLike) -> NDArray[Any]:
    """Model ids as a fresh unicode or object vector."""
    x = np.array(values)
    if x.ndim != 1:
        raise ShapeMismatch(f"models must be 1-D, got shape {x.shape}")
    if x.size == 0:
        return np.zeros(0, dtype=object)
    if x.dtype.kind not in "UO":
        raise InvalidScoreTable(f"models must be strings, got dtype {x.dtype}")
    return x


def _as_float_column(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """A fresh float64 vector (finiteness is checked by the caller)."""
    try:
        x = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidScoreTable(f"{name} must be numbers: {exc}") from None
    if x.ndim != 1:
        raise ShapeMismatch(f"{name} must be 1-D, got shape {x.shape}")
    return x


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


def _group_means(groups: NDArray[np.intp], values: NDArray[np.float64], n_groups: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Mean of ``values`` per group id (NaN for an empty group) and the group sizes."""
    counts = np.bincount(groups, minlength=n_groups).astype(np.int64)
    sums = _group_sums(groups, values, n_groups)
    means = np.full(n_groups, np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means, counts


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


# --------------------------------------------------------------------------- deciles


def decile_of(values: ArrayLike) -> NDArray[np.int64]:
    """Decile 0..9 of each value by rank, ties kept together; −1 for NaN.

    ``decile_i = ⌊10·(r_i − 0.5)/n⌋`` where ``n`` is the number of non-NaN values and
    ``r_i`` the average rank of ``values[i]`` among them (1-based; tied values share the mean
    of their positions, pandas ``rank(method="average")``), i.e. ``⌊10·u⌋`` for the
    tie-kept uniform rank ``u = rank_uniform(x, ties="keep")`` of DESIGN §2.

    Ties therefore always land in one decile (deterministic, independent of row order), and
    the rule works for any ``n``: with ``n`` distinct values each decile holds ``n/10`` of
    them when 10 divides ``n``; with fewer than 10 distinct values some deciles stay empty
    (e.g. n = 5 gives deciles 1, 3, 5, 7, 9; one value alone is decile 5). Computed in
    integers, ``(10·(2r − 1)) // (2n)``, so no value sits on a float boundary.

    Arguments:
        values: 1-D numbers; NaN marks a missing value (±inf rank as extremes).

    Returns:
        int64 array of the same length: the deciles, −1 where ``values`` is NaN.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ShapeMismatch(f"decile_of needs a 1-D array, got shape {x.shape}")
    deciles = np.full(x.size, -1, dtype=np.int64)
    present = ~np.isnan(x)
    n = int(present.sum())
    if n == 0:
        return deciles
    # Average ranks are integers or half-integers, so 2r is an exact integer.
    twice_rank = np.rint(2 * rankdata(x[present], method="average")).astype(np.int64)
    deciles[present] = (N_DECILES * (twice_rank - 1)) // (2 * n)
    return deciles


@dataclass(frozen=True, eq=False)
class CwmmByStakeDecile(_PlainDict):
    """Median ``corr_w_mm`` per stake decile (see :func:`cwmm_by_stake_decile`).

    Attributes:
        decile: 0..9.
        median_corr_w_mm: median ``corr_w_mm`` per decile (NaN when empty).
        count: observations per decile.
        top_median: median of decile 9 (NaN when empty).
        bottom_median: median of decile 0 (NaN when empty).
        top_minus_bottom: ``top_median − bottom_median``.
        stakers_only: whether zero-stake rows were left out.
    """

    decile: NDArray[np.int64]
    median_corr_w_mm: NDArray[np.float64]
    count: NDArray[np.int64]
    top_median: float
    bottom_median: float
    top_minus_bottom: float
    stakers_only: bool


def cwmm_by_stake_decile(table: ScoreTable, stakers_only: bool = True) -> CwmmByStakeDecile:
    """Median correlation with the meta model per stake decile, pooled across rounds.

    1. keep the rows with a ``corr_w_mm`` (not NaN) and, when ``stakers_only``, stake > 0;
    2. ``d = decile_of(stake)`` over those rows, all rounds pooled;
    3. ``median_d = median{corr_w_mm_i : d_i = d}``; top vs bottom is ``median_9 − median_0``.

    With ``stakers_only=False`` the many zero stakes tie and share one decile (the rule of
    :func:`decile_of`), so lower deciles stay empty; that is the honest reading of ties.

    Arguments:
        table: the score table.
        stakers_only: leave out rows with stake 0 (the default, as in the seed article).

    Returns:
        :class:`CwmmByStakeDecile`.
    """
    keep = ~np.isnan(table.corr_w_mm)
    if stakers_only:
        keep &= table.stakes > 0
    deciles = decile_of(table.stakes[keep])
    medians = _group_medians(deciles, table.corr_w_mm[keep], N_DECILES)
    counts = np.bincount(deciles, minlength=N_DECILES).astype(np.int64)
    top, bottom = float(medians[-1]), float(medians[0])
    return CwmmByStakeDecile(
        decile=np.arange(N_DECILES, dtype=np.int64),
        median_corr_w_mm=medians,
        count=counts,
        top_median=top,
        bottom_median=bottom,
        top_minus_bottom=top - bottom,
        stakers_only=stakers_only,
    )


@dataclass(frozen=True, eq=False)
class MmcByCwmmDecile(_PlainDict):
    """Mean MMC per ``corr_w_mm`` decile (see :func:`mmc_by_cwmm_decile`).

    Attributes:
        decile: 0..9.
        mean_mmc: mean MMC per decile (NaN when empty).
        count: observations per decile.
        step: ``mean_mmc[k+1] − mean_mmc[k]`` for k = 0..8 (length 9).
        steepest_drop_into: the decile ``k+1`` entered by the most negative step, −1 when no
            step is negative (read "the drop is sharpest at the top" off it).
        metric: the MMC column averaged (``"contribution"`` = today's, ``"mmc"`` = 2020).
    """

    decile: NDArray[np.int64]
    mean_mmc: NDArray[np.float64]
    count: NDArray[np.int64]
    step: NDArray[np.float64]
    steepest_drop_into: int
    metric: str = "contribution"


def mmc_by_cwmm_decile(table: ScoreTable, metric: str | None = None) -> MmcByCwmmDecile:
    """Mean MMC per decile of correlation with the meta model, pooled across rounds.

    1. keep the rows where both ``corr_w_mm`` and the MMC column are present (stake is not
       used);
    2. ``d = decile_of(corr_w_mm)`` over those rows;
    3. ``mean_d = mean{mmc_i : d_i = d}``, ``step_k = mean_{k+1} − mean_k``.

    Arguments:
        table: the score table.
        metric: which MMC (see :meth:`ScoreTable.metric_column`; default today's MMC).

    Returns:
        :class:`MmcByCwmmDecile`.
    """
    metric, mmc = table.metric_column(metric)
    keep = ~np.isnan(table.corr_w_mm) & ~np.isnan(mmc)
    deciles = decile_of(table.corr_w_mm[keep])
    means, counts = _group_means(deciles, mmc[keep], N_DECILES)
    step = np.diff(means)
    negative = np.where(step < 0, step, np.inf)  # NaN < 0 is False: empty deciles drop out
    steepest = int(np.argmin(negative)) + 1 if np.isfinite(negative).any() else -1
    return MmcByCwmmDecile(
        decile=np.arange(N_DECILES, dtype=np.int64),
        mean_mmc=means,
        count=counts,
        step=step,
        steepest_drop_into=steepest,
        metric=metric,
    )


# --------------------------------------------------------------------------- trend


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


# --------------------------------------------------------------------------- event study


@dataclass(frozen=True, eq=False)
class StakeJumpEvents(_PlainDict):
    """The crowding-tax event study (see :func:`stake_jump_events`).

    Per event (arrays of length n_events, sorted by round then model):
        model, round: the model and the round ``r`` whose stake jumped.
        stake_before, stake_after: stakes in rounds ``r − 1`` and ``r``; multiple: their ratio.
        mmc_before: mean MMC over rounds ``r − window .. r − 1`` (those present).
        mmc_after: mean MMC over rounds ``r .. r + window − 1`` (those present).
        n_before, n_after: how many rounds each mean averages (0 → the mean is NaN).
        relative_change: ``(mmc_after − mmc_before) / |mmc_before|`` (NaN when a side is
            missing or ``mmc_before = 0``).
        corr_before, corr_after, corr_relative_change: the same for CORR (the control).

    Across events:
        median_relative_change: median of the finite ``relative_change`` (NaN when none).
        median_corr_relative_change: median of the finite ``corr_relative_change``.
        mean_mmc_before, mean_mmc_after: means of ``mmc_before`` / ``mmc_after`` over the
            events with both sides present ("0.010 → 0.006" in the seed article).
        mean_corr_before, mean_corr_after: the same for CORR.
        n_events: events found; n_compared: events with a finite ``relative_change``.
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
        ratio, window, settle_span: the parameters used; metric: the MMC column used.
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
    median_relative_change: float
    median_corr_relative_change: float
    mean_mmc_before: float
    mean_mmc_after: float
    mean_corr_before: float
    mean_corr_after: float
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
    3. ``relative_change = (mmc_after − mmc_before) / |mmc_before|``; the summary is the
       median over events where it is finite. The mean MMC before → after is the mean of
       ``mmc_before`` and of ``mmc_after`` over the events with both.
    4. The control: the same windows, means and relative change for CORR. Crowding lowers
       MMC through the meta model moving toward the model; it leaves the model's own CORR
       alone, so a flat CORR beside a falling MMC says "crowding, not model decay".
    5. Trajectory: for ``k = −window .. window``, the mean over events of ``mmc_{r+k}`` (and
       of ``corr_{r+k}``), events lacking round ``r + k`` left out (counts reported).
    6. Settling point: :func:`settling_point` of the MMC trajectory with ``settle_span``.
    7. Dose–response: events by stake multiple ``stake_r / stake_{r−1}`` in the buckets
       ``[ratio, e_1), [e_1, e_2), …, [e_last, ∞)`` with ``dose_edges = (e_1, …)`` (edges
       at or below ``ratio`` dropped); per bucket the count, the median relative MMC and
       CORR changes and the mean MMC before → after.

    Events near the table's edges use the rounds they have; windows of successive events of
    one model may overlap (each event is still reported on its own).

    Arguments:
        table: the score table.
        ratio: minimal stake multiple between adjacent rounds (finite, > 0; default 5).
        window: rounds on each side (integer ≥ 1; default 20).
        metric: which MMC (see :meth:`ScoreTable.metric_column`; default today's MMC).
        dose_edges: inner edges of the dose–response buckets (default 10×, 20×).
        settle_span: span of the settling point's rolling mean (default 3).

    Returns:
        :class:`StakeJumpEvents`.
    """
    if not (isinstance(ratio, float | int | np.floating | np.integer) and np.isfinite(ratio)):
        raise ScoringError(f"ratio must be a finite number, got {ratio!r}")
    if ratio <= 0:
        raise ScoringError(f"ratio must be > 0, got {ratio!r}")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ScoringError(f"window must be an integer >= 1, got {window!r}")
    if isinstance(settle_span, bool) or not isinstance(settle_span, int | np.integer) or settle_span < 1:
        raise ScoringError(f"settle_span must be an integer >= 1, got {settle_span!r}")
    window = int(window)
    ratio = float(ratio)
    metric, mmc_column = table.metric_column(metric)

    # Rows sorted by (model, round): a model's history is one contiguous, ascending run.
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
    n_events = at.size

    offsets = np.arange(-window, window + 1, dtype=np.int64)
    sum_before = [np.zeros(n_events), np.zeros(n_events)]
    sum_after = [np.zeros(n_events), np.zeros(n_events)]
    n_before = [np.zeros(n_events, dtype=np.int64), np.zeros(n_events, dtype=np.int64)]
    n_after = [np.zeros(n_events, dtype=np.int64), np.zeros(n_events, dtype=np.int64)]
    trajectory_sum = [np.zeros(offsets.size), np.zeros(offsets.size)]
    trajectory_count = [np.zeros(offsets.size, dtype=np.int64), np.zeros(offsets.size, dtype=np.int64)]
    for block in range(0, n_events, _EVENT_BLOCK):
        rows = at[block : block + _EVENT_BLOCK]
        wanted_round = round_s[rows, np.newaxis] + offsets[np.newaxis, :]
        code = np.minimum(np.searchsorted(table.round_ids, wanted_round), n_round_ids - 1)
        wanted_key = model_s[rows, np.newaxis].astype(np.int64) * n_round_ids + code
        position = np.minimum(np.searchsorted(sorted_key, wanted_key), sorted_key.size - 1)
        found = (table.round_ids[code] == wanted_round) & (sorted_key[position] == wanted_key)
        part = slice(block, block + rows.size)
        for c, column in enumerate(columns):
            values = np.where(found, column[position], np.nan)
            present = ~np.isnan(values)
            values = np.where(present, values, 0.0)
            sum_before[c][part] = values[:, :window].sum(axis=1)
            sum_after[c][part] = values[:, window : 2 * window].sum(axis=1)
            n_before[c][part] = present[:, :window].sum(axis=1)
            n_after[c][part] = present[:, window : 2 * window].sum(axis=1)
            trajectory_sum[c] += values.sum(axis=0)
            trajectory_count[c] += present.sum(axis=0)

    means_before, means_after, trajectories = [], [], []
    for c in range(2):
        before = np.full(n_events, np.nan)
        after = np.full(n_events, np.nan)
        np.divide(sum_before[c], n_before[c], out=before, where=n_before[c] > 0)
        np.divide(sum_after[c], n_after[c], out=after, where=n_after[c] > 0)
        trajectory = np.full(offsets.size, np.nan)
        np.divide(trajectory_sum[c], trajectory_count[c], out=trajectory, where=trajectory_count[c] > 0)
        means_before.append(before)
        means_after.append(after)
        trajectories.append(trajectory)
    mmc_before, corr_before = means_before
    mmc_after, corr_after = means_after
    relative_change = _relative_change(mmc_before, mmc_after)
    corr_relative_change = _relative_change(corr_before, corr_after)
    mean_mmc_before, mean_mmc_after = _paired_means(mmc_before, mmc_after)
    mean_corr_before, mean_corr_after = _paired_means(corr_before, corr_after)
    rolling, settled = settling_point(trajectories[0], window, int(settle_span))

    stake_before = stake_s[at - 1].copy()
    stake_after = stake_s[at].copy()
    multiple = stake_after / stake_before if n_events else np.zeros(0)
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

    compared = np.isfinite(relative_change)
    return StakeJumpEvents(
        model=table.model_ids[model_s[at]],
        round=round_s[at].copy(),
        stake_before=stake_before,
        stake_after=stake_after,
        multiple=multiple,
        mmc_before=mmc_before,
        mmc_after=mmc_after,
        n_before=n_before[0],
        n_after=n_after[0],
        relative_change=relative_change,
        corr_before=corr_before,
        corr_after=corr_after,
        corr_relative_change=corr_relative_change,
        median_relative_change=_nan_median(relative_change),
        median_corr_relative_change=_nan_median(corr_relative_change),
        mean_mmc_before=mean_mmc_before,
        mean_mmc_after=mean_mmc_after,
        mean_corr_before=mean_corr_before,
        mean_corr_after=mean_corr_after,
        n_events=int(n_events),
        n_compared=int(compared.sum()),
        trajectory_offset=offsets,
        trajectory_mean_mmc=trajectories[0],
        trajectory_mean_corr=trajectories[1],
        trajectory_count=trajectory_count[0],
        settling_rolling_mmc=rolling,
        settling_round=settled,
        dose_low=lows,
        dose_high=highs,
        dose_n_events=dose_n,
        dose_median_relative_change=dose_median,
        dose_median_corr_relative_change=dose_corr_median,
        dose_mean_mmc_before=dose_before,
        dose_mean_mmc_after=dose_after,
        ratio=ratio,
        window=window,
        settle_span=int(settle_span),
        metric=metric,
    )


# --------------------------------------------------------------------------- turnover, ends


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


# --------------------------------------------------------------------------- the report


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
