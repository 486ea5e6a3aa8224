"""A round's ids, submissions and target path: the same numbers every time they are asked for."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr
from scipy.stats import rankdata

from streams.tools.simulation.config import STREAM_FACTORS, STREAM_IDS, STREAM_PREDICTIONS, STREAM_TARGETS, SimulationConfig, stream_rng

if TYPE_CHECKING:
    from streams.tools.simulation.population import Models

EMPTY = np.zeros((0, 0))


@dataclass(frozen=True, eq=False)
class RoundData:
    """One round's ids, submissions and target path (regenerated on demand, deterministic)."""

    ids: list[str]
    predictions: NDArray[np.float64]  # final submission per model, [n_models, n_ids]
    first_predictions: NDArray[np.float64]  # the replaced first submission (resubmitters)
    targets: NDArray[np.float64]  # [resolution_days, n_ids], NaN = not resolved yet


@dataclass(frozen=True, eq=False)
class Rounds:
    """What every round of a season is drawn from: the signal direction, the id pool, the models' traits."""

    config: SimulationConfig
    beta: NDArray[np.float64]
    pool: list[str]
    models: Models

    def ids(self, i: int) -> list[str]:
        """The universe of round index ``i``, in the order of its open message."""
        rng = stream_rng(self.config, STREAM_IDS, i)
        chosen = rng.choice(len(self.pool), size=self.config.n_ids, replace=False)
        return [self.pool[c] for c in chosen]

    def data(self, i: int, first: bool = False) -> RoundData:
        """Ids, predictions and targets of round index ``i`` (same numbers on every call).

        Predictions depend only on the models' fixed traits and the round's random draws. The
        replaced first submissions are computed only when ``first`` (the event stream)."""
        cfg = self.config
        n_ids, models = cfg.n_ids, self.models
        ids = self.ids(i)
        factors = stream_rng(cfg, STREAM_FACTORS, i).standard_normal((cfg.n_factors, n_ids))
        signal = self.beta @ factors

        k = models.crowd_share
        q = models.signal_share
        rng = stream_rng(cfg, STREAM_PREDICTIONS, i)
        structured = np.sqrt(q * k)[:, None] * (models.crowd_direction @ factors) + np.sqrt(q * (1 - k))[:, None] * (models.original_direction @ factors)
        noise_scale = np.sqrt(1 - q)[:, None]
        latent = structured + noise_scale * rng.standard_normal((cfg.n_models, n_ids))
        predictions = np.round(ndtr(latent), cfg.prediction_decimals)
        # The replaced first submissions' noise, drawn last from this stream (only when needed).
        first_predictions = np.round(ndtr(structured + noise_scale * rng.standard_normal((cfg.n_models, n_ids))), cfg.prediction_decimals) if first else EMPTY

        rng = stream_rng(cfg, STREAM_TARGETS, i)
        rho = cfg.target_signal_corr
        final_latent = rho * signal + math.sqrt(1 - rho**2) * rng.standard_normal(n_ids)
        days = cfg.resolution_days
        # A backward random walk: day d's deviation sums the steps of days d..D−1, so it shrinks
        # day by day to 0 at the final day; day 1's std is `daily_noise`.
        steps = rng.standard_normal((days, n_ids)) * (cfg.daily_noise / math.sqrt(max(days - 1, 1)))
        steps[-1] = 0.0
        deviation = np.cumsum(steps[::-1], axis=0)[::-1]
        targets = np.empty((days, n_ids))
        for d in range(days):
            missing = np.zeros(n_ids, dtype=bool)
            if cfg.early_null_fraction > 0 and d < cfg.early_null_days and d < days - 1:
                share = cfg.early_null_fraction * (cfg.early_null_days - d) / cfg.early_null_days
                missing[rng.permutation(n_ids)[: int(round(share * n_ids))]] = True
            targets[d] = bucket(final_latent + deviation[d], missing, cfg.target_buckets)
        return RoundData(ids, predictions, first_predictions, targets)


def id_pool(config: SimulationConfig) -> list[str]:
    """The ids every round's universe is drawn from (``id_pool_factor`` × ``n_ids`` of them)."""
    size = max(config.n_ids, math.ceil(config.n_ids * config.id_pool_factor))
    width = max(4, len(str(size)))
    return [f"id{n:0{width}d}" for n in range(1, size + 1)]


def bucket(latent: NDArray[np.float64], missing: NDArray[np.bool_], shares: tuple[float, ...]) -> NDArray[np.float64]:
    """Targets in {0, .25, .5, .75, 1} by rank of ``latent`` among the present ids; NaN if missing.

    The bucket of the id at uniform rank ``u`` is the number of cumulative ``shares`` below
    ``u`` (20/20/20/20/20 by default, Numerai-like quantile buckets).
    """
    out = np.full(latent.size, np.nan)
    present = ~missing
    n = int(present.sum())
    if n == 0:
        return out
    u = (rankdata(latent[present], method="ordinal") - 0.5) / n
    edges = np.cumsum(shares)[:-1]
    out[present] = np.searchsorted(edges, u, side="right") / 4.0
    return out
