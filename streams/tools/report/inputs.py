"""What the report reads from the topics: each model's latest score per round, the forecasts on the ``crowding_tax`` alerts, the alert rates."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from scoring.crowding import ScoreTable
from streams.settings import Settings


@dataclass
class LatestScores:
    """Each model's latest score update per round, from a stream of ``mmc.scores`` values.

    An update replaces the kept one when it is ``final`` and the kept one is not, or when
    both agree on ``final`` and its ``day`` is at least as high (a redelivered or replayed
    update of the same day replaces its twin, so the last one read wins).
    """

    latest: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    read: int = 0

    def add(self, message: dict[str, Any]) -> None:
        """Take one score value into account.

        Raises:
            ValueError: the value is not a score message (no integer round and day, string
                model, boolean final).
        """
        try:
            round_number, model, day, final = (
                message["round"],
                message["model"],
                message["day"],
                message["final"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a score message (missing {exc}): {message!r:.200}") from None
        if not (isinstance(round_number, int) and isinstance(model, str) and isinstance(day, int)):
            raise ValueError(f"not a score message (round/model/day types): {message!r:.200}")
        self.read += 1
        key = (round_number, model)
        kept = self.latest.get(key)
        if kept is None or (bool(final), day) >= (bool(kept["final"]), kept["day"]):
            self.latest[key] = message

    def messages(self) -> list[dict[str, Any]]:
        """The kept updates, by round then model."""
        return [self.latest[key] for key in sorted(self.latest)]


def _number(value: Any) -> float:
    """A score field as float: ``None`` (an undefined metric) becomes NaN."""
    return math.nan if value is None else float(value)


def score_table_from_messages(messages: Iterable[dict[str, Any]] | LatestScores) -> ScoreTable:
    """A :class:`ScoreTable` of each model's latest update per round.

    Arguments:
        messages: ``mmc.scores`` values (dicts) in the order they were read, or a
            :class:`LatestScores` already holding them.

    Returns:
        the table: round, model, stake, ``corr_w_mm``, ``mmc`` (2020), ``contribution``
        (today's MMC, the table's default metric) and ``corr`` (NaN for null).
    """
    latest = messages if isinstance(messages, LatestScores) else _collect(messages)
    rows = latest.messages()

    def column(name: str) -> NDArray[np.float64]:
        return np.array([_number(m.get(name)) for m in rows], dtype=np.float64)

    return ScoreTable.from_arrays(
        rounds=np.array([m["round"] for m in rows], dtype=np.int64),
        models=np.array([m["model"] for m in rows], dtype=object),
        stakes=column("stake"),
        corr_w_mm=column("corr_w_mm"),
        mmc=column("mmc"),
        contribution=column("contribution"),
        corr=column("corr"),
    )


def _collect(messages: Iterable[dict[str, Any]]) -> LatestScores:
    latest = LatestScores()
    for message in messages:
        latest.add(message)
    return latest


async def read_score_messages(settings: Settings) -> LatestScores:
    """Every score update on ``settings.topic("scores")`` up to its end at call time, reduced
    to the latest per (round, model)."""
    from streams.tools.tail import tail

    latest = LatestScores()
    async for message in tail(settings, "scores", from_beginning=True, until_end=True):
        if message.is_json and isinstance(message.value, dict):
            latest.add(message.value)
    return latest


@dataclass(frozen=True)
class MechanicalPart:
    """The mechanical part of the MMC change at ≥5× stake jumps, from the worker's own forecasts.

    Each ``crowding_tax`` alert carrying ``own_forecast`` gives the model's today's MMC in the
    jump's round at the new stake and re-scored at the old one (every other input unchanged);
    their difference is what the stake alone did to the model's MMC that round.

    Attributes:
        events: jumps with a forecast (one per model and round).
        median_relative_change: median of ``tax / |MMC at the old stake|`` over the events
            whose MMC at the old stake is not 0 (None without any).
        mean_tax: mean of ``MMC at the new stake − MMC at the old stake`` (None without events).
    """

    events: int = 0
    median_relative_change: float | None = None
    mean_tax: float | None = None


def mechanical_part(alerts: Iterable[dict[str, Any]]) -> MechanicalPart:
    """:class:`MechanicalPart` of the ``crowding_tax`` alerts among ``alerts`` (the latest per
    model and round counts; alerts without a forecast are skipped)."""
    forecasts: dict[tuple[str, int], dict[str, Any]] = {}
    for a in alerts:
        forecast = a.get("own_forecast")
        if a.get("kind") != "crowding_tax" or not isinstance(forecast, dict):
            continue
        old, tax = forecast.get("contribution_at_old_stake"), forecast.get("tax")
        if isinstance(old, int | float) and isinstance(tax, int | float) and math.isfinite(old) and math.isfinite(tax):
            forecasts[(str(a.get("model")), int(a.get("round", -1)))] = {"old": float(old), "tax": float(tax)}
    if not forecasts:
        return MechanicalPart()
    # By (model, round), summed exactly: the alerts of different models arrive on different
    # partitions, in an order that varies from run to run; the figures do not.
    chosen = [forecasts[key] for key in sorted(forecasts)]
    taxes = [f["tax"] for f in chosen]
    relative = [f["tax"] / abs(f["old"]) for f in chosen if f["old"] != 0]
    return MechanicalPart(
        events=len(chosen),
        median_relative_change=float(np.median(relative)) if relative else None,
        mean_tax=math.fsum(taxes) / len(taxes),
    )


async def read_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every alert on ``settings.topic("alerts")`` up to its end at call time, each once (a
    message delivered twice has the same bytes)."""
    from streams.tools.tail import tail

    seen: set[bytes] = set()
    found: list[dict[str, Any]] = []
    async for message in tail(settings, "alerts", from_beginning=True, until_end=True):
        if message.is_json and isinstance(message.value, dict):
            raw = orjson.dumps(message.value, option=orjson.OPT_SORT_KEYS)
            if raw not in seen:
                seen.add(raw)
                found.append(message.value)
    return found


def alert_rates(alerts: Iterable[dict[str, Any]], model_rounds: int) -> dict[str, float]:
    """Alerts per 100 model-rounds by ``kind`` and ``stage`` (keys ``<kind>`` and
    ``<kind>.<stage>``); empty when there are no model-rounds."""
    if model_rounds <= 0:
        return {}
    counts: dict[str, int] = {}
    for a in alerts:
        kind = str(a.get("kind"))
        for key in (kind, f"{kind}.{a.get('stage')}"):
            counts[key] = counts.get(key, 0) + 1
    return {key: 100.0 * n / model_rounds for key, n in sorted(counts.items())}
