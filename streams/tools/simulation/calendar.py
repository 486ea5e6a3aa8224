"""The season's calendar: when each event happens, and every event of the season in time order.

Simulated time runs from :attr:`~streams.tools.simulation.config.SimulationConfig.first_day_ms`
(the calendar rules are in the package docstring, :mod:`streams.tools.simulation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streams.tools.simulation.config import STREAM_CALENDAR, SimulationConfig, stream_rng

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Times of day of each kind of event (ms after midnight of the simulated day).
_OPEN_AT = 0
_CLOSE_AT = 12 * HOUR_MS
_TARGETS_AT = 6 * HOUR_MS
_STAKES_AT = 18 * HOUR_MS
# Spacing of the stake updates of one evening and of the target updates of one morning.
_STAKE_SPACING_MS = 100
_TARGET_SPACING_MS = 1_000

#: Short names of the input topics the simulator writes (DESIGN §3).
TOPICS: tuple[str, ...] = ("rounds", "submissions", "stakes", "targets")
# Tie-break between topics at one timestamp (never needed with the calendar above, but it
# keeps the order total): lifecycle first, then stakes, submissions, targets.
_TOPIC_ORDER = {"rounds": 0, "stakes": 1, "submissions": 2, "targets": 3}


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One input message: short topic name, key, record timestamp and JSON value (DESIGN §3)."""

    topic: str
    key: str
    timestamp_ms: int
    value: dict[str, Any]


class Calendar:
    """The times of a season's events (epoch ms), by round index."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config

    def day_ms(self, day: float) -> int:
        return self.config.first_day_ms + int(round(day * DAY_MS))

    def open_ms(self, i: int) -> int:
        return self.day_ms(i + 1) + _OPEN_AT

    def close_ms(self, i: int) -> int:
        return self.day_ms(i + 1) + _CLOSE_AT

    def stake_ms(self, i: int) -> int:
        """First stake update for round index ``i`` (the evening before it opens)."""
        return self.day_ms(i) + _STAKES_AT

    def target_ms(self, i: int, day: int) -> int:
        """Target day ``day`` of round index ``i``: 06:00 of day ``o + 1 + day``, one second per
        round after the earliest resolving that day (rounds in ascending order)."""
        calendar_day = i + 2 + day
        earliest = max(0, calendar_day - 2 - self.config.resolution_days)  # first round resolving then
        return self.day_ms(calendar_day) + _TARGETS_AT + (i - earliest) * _TARGET_SPACING_MS


def target_days(config: SimulationConfig) -> list[int]:
    """The days of a round on which its targets are sent: every ``target_every_days``-th day
    and the final one."""
    days, every = config.resolution_days, config.target_every_days
    return [d for d in range(1, days + 1) if d % every == 0 or d == days]


def build_schedule(
    config: SimulationConfig, stakes: NDArray[np.float64], submitted: NDArray[np.bool_], resubmitted: NDArray[np.bool_]
) -> list[tuple[int, int, str, int, int]]:
    """Every event as ``(timestamp, topic order, kind, round index, model or day)``, sorted."""
    cfg = config
    calendar = Calendar(config)
    entries: list[tuple[int, int, str, int, int]] = []
    rounds_order, stakes_order = _TOPIC_ORDER["rounds"], _TOPIC_ORDER["stakes"]
    subs_order, targets_order = _TOPIC_ORDER["submissions"], _TOPIC_ORDER["targets"]
    window = _CLOSE_AT - _OPEN_AT - 2  # submissions strictly between open and close
    for i in range(cfg.n_rounds):
        open_ms = calendar.open_ms(i)
        entries.append((open_ms, rounds_order, "open", i, 0))
        entries.append((calendar.close_ms(i), rounds_order, "close", i, 0))
        # Stakes: everyone's at the first round, afterwards only the ones that changed.
        changed = np.flatnonzero(np.ones(cfg.n_models, dtype=bool)) if i == 0 else np.flatnonzero(stakes[i] != stakes[i - 1])
        for pos, m in enumerate(changed):
            entries.append((calendar.stake_ms(i) + pos * _STAKE_SPACING_MS, stakes_order, "stake", i, int(m)))
        # Submissions: distinct instants in the window, models in random order; a
        # resubmitter's first version always comes before its final one.
        rng = stream_rng(config, STREAM_CALENDAR, i)
        who = np.flatnonzero(submitted[i])
        twice = np.flatnonzero(resubmitted[i])
        total = who.size + twice.size
        instants = np.sort(rng.choice(window, size=total, replace=False)) + open_ms + 1
        kinds = ["submit"] * who.size + ["resubmit_first"] * twice.size
        owners = np.concatenate([who, twice])
        order = rng.permutation(total)
        slot_of = np.empty(total, dtype=np.int64)
        slot_of[order] = np.arange(total)
        position = {int(m): idx for idx, m in enumerate(who)}
        for offset, m in enumerate(twice):
            final_idx, first_idx = position[int(m)], who.size + offset
            if slot_of[first_idx] > slot_of[final_idx]:
                slot_of[first_idx], slot_of[final_idx] = slot_of[final_idx], slot_of[first_idx]
        for idx in range(total):
            entries.append((int(instants[slot_of[idx]]), subs_order, kinds[idx], i, int(owners[idx])))
        for day in target_days(cfg):
            entries.append((calendar.target_ms(i, day), targets_order, "target", i, day))
    entries.sort(key=lambda e: (e[0], e[1]))
    return entries
