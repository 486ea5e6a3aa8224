"""What every handler of the worker is handed, and the small functions they share.

:class:`WorkerContext` bundles the settings, the Redis state, the barriers and the output
sender, with the two ways a handler publishes: a dead letter for a refused record and alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from scoring.errors import ScoringError
from streams.errors import InvalidMessage
from streams.messages.outputs import Output, dead_letter, json_output
from streams.messages.records import InputRecord, check_event_time, refuse
from streams.settings import Settings
from streams.state import RedisState
from streams.state.progress import Barrier

log = logging.getLogger(__name__)

#: Sends a list of output records (in order) to their topics.
Sender = Callable[[list[Output]], Awaitable[None]]


@dataclass(frozen=True)
class WorkerContext:
    """The settings, state, barriers and output sender one worker's handlers share."""

    settings: Settings
    state: RedisState
    barrier: Barrier
    send: Sender

    def check_clock(self, record: InputRecord) -> None:
        """Refuse ``clock_skew`` a record stamped too far ahead of this worker's clock."""
        check_event_time(record, int(time.time() * 1000), int(self.settings.max_clock_skew_seconds * 1000))

    def refusal(self, record: InputRecord, error: InvalidMessage, into: list[Output]) -> str:
        """Add the record's dead letter to ``into``; returns the refusal reason."""
        log.info("dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset, error)
        into.append(dead_letter(record, error, self.settings.topic_prefix, self.settings.deadletter_max_bytes))
        return error.reason

    async def refuse(self, record: InputRecord, error: InvalidMessage) -> None:
        """Send the record's dead letter."""
        letters: list[Output] = []
        self.refusal(record, error, letters)
        await self.send(letters)

    async def publish_alerts(self, found: list[dict[str, Any]], ts: int) -> None:
        """Send alerts (keyed by model, else round) and keep them in the state's latest alerts."""
        if not found:
            return
        outputs = [json_output("alerts", a["model"] or str(a["round"]), a, ts) for a in found]
        await self.send(outputs)
        await self.state.push_alerts([(o.timestamp_ms, o.value) for o in outputs])

    async def round_inputs_applied(self, received_at: float) -> None:
        """Wait until every submission and stake received before ``received_at`` is applied: what a
        round's rows and frozen stakes are read after. Both at once (neither holds the other's
        locks: see streams.state.progress on lock order)."""
        await asyncio.gather(self.barrier.wait_for("submissions", received_at), self.barrier.wait_for("stakes", received_at))

    @property
    def history_keep(self) -> int:
        """Rounds of a model's history every decision looks at (its latest scored ones)."""
        s = self.settings
        return max(s.history_rounds, s.leaderboard_window, s.alert_cwmm_baseline_rounds + 1)


def latest_rounds(history: dict[int, Any], keep: int) -> dict[int, Any]:
    """A model's history restricted to its ``keep`` latest rounds — the same view whether it
    comes from a worker's cache or straight from Redis (so decisions never depend on which)."""
    if len(history) <= keep:
        return history
    return {r: history[r] for r in sorted(history)[-keep:]}


def close_alert_reach(settings: Settings) -> int:
    """Rounds before a close whose CWMMs at close make a model's baseline: twice the baseline
    rounds, so that a model that skipped some still has its latest ones."""
    return 2 * settings.alert_cwmm_baseline_rounds


def internal_error(record: InputRecord, exc: Exception) -> InvalidMessage:
    """The ``internal_error`` refusal of a record the worker failed on (the traceback is logged)."""
    log.exception("failed on %s[%d]@%d", record.topic, record.partition, record.offset, exc_info=exc)
    return refuse("internal_error", f"{type(exc).__name__}: {exc}"[:500])


def as_refusal(exc: InvalidMessage | ScoringError) -> InvalidMessage:
    """A refusal for an input the scoring core rejected (its reason code when it is one of ours)."""
    if isinstance(exc, InvalidMessage):
        return exc
    return refuse(exc.reason if exc.reason in ("too_many_missing_targets", "non_finite") else "bad_field", str(exc))


def ignore_outcome(task: asyncio.Future[Any]) -> None:
    """Done callback of a background task whose error, if any, is reported elsewhere (retrieved
    here so that asyncio does not log "exception was never retrieved")."""
    if not task.cancelled():
        task.exception()


class RoundTasks:
    """A close-time job's background tasks, one per round: finished ones are forgotten when the
    next starts (their rounds have nothing left to wait for), the rest can be awaited or cancelled."""

    def __init__(self) -> None:
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, r: int, work: Callable[[], Awaitable[None]], *, unless_running: bool = False) -> None:
        """Run ``work()`` as round ``r``'s task (``unless_running``: not while one still runs)."""
        running = self._tasks.get(r)
        if unless_running and running is not None and not running.done():
            return
        for done in [k for k, task in self._tasks.items() if task.done()]:
            del self._tasks[done]
        task = asyncio.ensure_future(work())
        task.add_done_callback(ignore_outcome)
        self._tasks[r] = task

    def get(self, r: int) -> asyncio.Task[None] | None:
        return self._tasks.get(r)

    def pop(self, r: int) -> asyncio.Task[None] | None:
        return self._tasks.pop(r, None)

    def pending(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def cancel(self) -> None:
        """Cancel every task still running (the worker stopping)."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()


class PhaseClock:
    """Wall time of the phases of one resolution, for the log line and the latency metric."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self._last
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self.start

    def __str__(self) -> str:
        return ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.phases.items()) + f"; total {self.total * 1e3:.0f} ms"
