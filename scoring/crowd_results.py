"""Who crowds a model, the results: the neighbours of every model, the crowding tax's statuses and
the defaults and argument checks :mod:`scoring.neighbours` and :mod:`scoring.tax` share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.errors import ScoringError, ShapeMismatch

#: Nearest stakers listed per model.
DEFAULT_K = 10


#: Correlation from which another staker counts in a model's crowd.
DEFAULT_CROWD_THRESHOLD = 0.8


#: Why a model's counterfactual is what it is (``CrowdTax.status``).
STATUS_OK = "ok"


STATUS_NO_NEIGHBOURS = "no_neighbours"


STATUS_NO_STAKE_LEFT = "no_stake_left"


STATUS_NO_META_MODEL = "no_meta_model"


@dataclass(frozen=True)
class Neighbour:
    """One of a model's nearest stakers."""

    index: int
    model: str | None
    correlation: float
    stake: float
    stake_share: float


@dataclass(frozen=True, eq=False)
class CrowdNeighbours:
    """Every model's nearest stakers and crowd in one round; arrays over models in row order.

    Attributes:
        k, threshold: the arguments of :func:`crowd_neighbours`.
        stakes: the round's stakes ``[n_models]``; total_stake: their sum over the stakers
            (the meta model's denominator; 0 when nobody has stake).
        index: ``[n_models, min(k, n_stakers)]`` rows of the nearest stakers, nearest first;
            −1 past ``count``.
        correlation: same shape, Pearson correlation of the ``G`` rows; NaN past ``count``.
        stake, stake_share: same shape, each neighbour's stake and its share of
            ``total_stake``; NaN past ``count``.
        count: ``[n_models]`` neighbours found (fewer than k when fewer other stakers have a
            defined correlation with the model).
        crowd_share: ``[n_models]`` share of ``total_stake`` held by the *other* stakers
            correlated ≥ ``threshold`` with the model; NaN when nobody has stake or the model's
            correlation is undefined (constant predictions).
        crowd_size: ``[n_models]`` how many stakers that is.
        own_share: ``[n_models]`` the model's own share of ``total_stake`` (NaN when 0).
        compared_share: share of ``total_stake`` held by the stakers compared with (1 when
            every staker is; less when ``max_stakers`` kept the largest ones only; NaN when
            nobody has stake). Neighbours and crowds are found among those stakers only.
    """

    k: int
    threshold: float
    stakes: NDArray[np.float64]
    total_stake: float
    index: NDArray[np.int64]
    correlation: NDArray[np.float64]
    stake: NDArray[np.float64]
    stake_share: NDArray[np.float64]
    count: NDArray[np.int64]
    crowd_share: NDArray[np.float64]
    crowd_size: NDArray[np.int64]
    own_share: NDArray[np.float64]
    compared_share: float = 1.0

    @property
    def n_models(self) -> int:
        return int(self.index.shape[0])

    def of(self, model_index: int, models: list[str] | None = None) -> list[Neighbour]:
        """The nearest stakers of the model at ``model_index``, nearest first (with ids from ``models``)."""
        if not 0 <= model_index < self.n_models:
            raise ScoringError(f"model_index {model_index} outside the round's {self.n_models} models")
        if models is not None and len(models) != self.n_models:
            raise ShapeMismatch(f"models must name the {self.n_models} rows, got {len(models)}")
        out = []
        for c in range(int(self.count[model_index])):
            j = int(self.index[model_index, c])
            out.append(
                Neighbour(
                    index=j,
                    model=None if models is None else models[j],
                    correlation=float(self.correlation[model_index, c]),
                    stake=float(self.stake[model_index, c]),
                    stake_share=float(self.stake_share[model_index, c]),
                )
            )
        return out


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ScoringError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _correlation(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not -1.0 <= float(value) <= 1.0:
        raise ScoringError(f"threshold must be a correlation in [-1, 1], got {value!r}")
    return float(value)


def _model_rows(models: ArrayLike, n_models: int) -> NDArray[np.int64]:
    picked = np.asarray(models)
    if picked.ndim != 1 or (picked.size and picked.dtype.kind not in "iu"):
        raise ShapeMismatch(f"models must be a 1-D array of row indices, got {picked.dtype} of shape {picked.shape}")
    picked = picked.astype(np.int64)
    if picked.size and (picked.min() < 0 or picked.max() >= n_models):
        raise ScoringError(f"models must be rows of the round's {n_models} models")
    return picked
