"""The score table: one row per (round, model) observation, its columns validated and coerced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scoring.crowding.common import METRIC_LABELS
from scoring.errors import InvalidScoreTable, NegativeStake, NonFiniteInput, ScoringError, ShapeMismatch


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
