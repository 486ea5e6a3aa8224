"""The event study's population control: what the models without a stake jump earned over each event's windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from scoring.crowding.common import _group_counts, _group_sums, _ratio_or_nan
from scoring.crowding.table import ScoreTable


@dataclass(frozen=True, eq=False)
class PopulationWindows:
    """Per event, the control population's mean MMC over the event's two windows.

    The control population is every model of the table without a stake-jump event; its mean
    over a window pools all its rows with an MMC in the window's rounds (NaN when none).
    """

    before: NDArray[np.float64]
    after: NDArray[np.float64]


def population_windows(
    table: ScoreTable, mmc_column: NDArray[np.float64], event_models: NDArray[np.intp], event_rounds: NDArray[np.int64], window: int
) -> PopulationWindows:
    """The control population's mean MMC over rounds ``r − window .. r − 1`` and ``r .. r + window − 1`` of each event.

    Arguments:
        table: the score table.
        mmc_column: the MMC column the study uses (one value per row of ``table``).
        event_models: each event's model, as an index into ``table.model_ids``.
        event_rounds: each event's jump round ``r``.
        window: the event study's window.
    """
    n_round_ids = table.round_ids.size
    jumped = np.zeros(table.model_ids.size, dtype=bool)
    jumped[event_models] = True
    control = ~jumped[table.model_index] & ~np.isnan(mmc_column)
    # Sums and counts per round, cumulated over the sorted round ids: a window of round
    # numbers [lo, hi) covers the ids at positions searchsorted(lo) .. searchsorted(hi).
    rounds_of_control = table.round_index[control]
    sums = np.concatenate(([0.0], np.cumsum(_group_sums(rounds_of_control, mmc_column[control], n_round_ids))))
    counts = np.concatenate(([0], np.cumsum(_group_counts(rounds_of_control, n_round_ids))))

    def mean(first: NDArray[np.int64], stop: NDArray[np.int64]) -> NDArray[np.float64]:
        lo = np.searchsorted(table.round_ids, first, side="left")
        hi = np.searchsorted(table.round_ids, stop, side="left")
        return _ratio_or_nan(sums[hi] - sums[lo], counts[hi] - counts[lo])

    rounds = np.asarray(event_rounds, dtype=np.int64)
    return PopulationWindows(before=mean(rounds - window, rounds), after=mean(rounds, rounds + window))
