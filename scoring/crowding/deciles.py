"""CWMM by stake decile and MMC by CWMM decile (DESIGN §2.2), deciles by rank with ties kept."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from scoring.crowding.common import N_DECILES, _group_means, _group_medians, _PlainDict
from scoring.crowding.table import ScoreTable
from scoring.errors import ShapeMismatch

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
