"""The Faust agents: records in, the runtime applies them, offsets marked applied.

Each agent turns a Kafka message into an :class:`~streams.messages.records.InputRecord`, hands a
batch to :func:`~streams.worker.runtime.apply_unless_applied`, and records the offsets as applied
(for the barriers of :mod:`streams.state.progress`). Redis or Kafka being unreachable makes the
agent retry the same records with backoff; nothing about an input can stop the agent (refusals
go to the dead-letter topic).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import faust

from streams import failpoints
from streams.messages.records import InputRecord
from streams.worker.runtime import Runtime, apply_unless_applied


def agent_problem(app: faust.App, name: str) -> Callable[[], str | None]:
    """A check that the agent of input topic ``name`` is running once the worker has started it."""

    def problem() -> str | None:
        agent = app.agents.get(f"mmc-{name}")
        actors = list(getattr(agent, "_actors", []) or [])
        if agent is None or not actors:
            return None  # not started yet (the worker is still joining the group)
        if all(getattr(actor, "actor_task", None) is not None and actor.actor_task.done() for actor in actors):
            return "not running"
        return None

    return problem


def make_agent(name: str, runtime: Runtime) -> Any:
    """The agent for input topic ``name``: records in, processor, offsets marked applied.

    Every agent takes records in batches (up to ``ingest_batch_size``, waiting at most
    ``ingest_batch_seconds``): records refused for their bytes or timestamp alone are
    dead-lettered together (:meth:`Runtime.handle_records`), so junk is refused at thousands
    per second instead of one acknowledged send each. ``rounds`` and ``targets`` (one
    partition each) then apply the rest one record at a time, in log order; ``stakes``
    concurrently, except that records with the same key (the same model) stay in log order.
    Offsets are marked applied once the whole batch is done, so a barrier never passes a
    record still in flight. (``submissions`` have their own consumer: :mod:`streams.worker.ingest`.)

    An exception that escapes (a bug: input refusals and the infrastructure's failures are
    handled below) takes the worker down instead of leaving the topic unread behind a
    healthy-looking process: the orchestrator restarts it, and the record comes again.
    """

    async def agent(stream: faust.StreamT[bytes]) -> None:
        settings = runtime.settings
        try:
            batches = stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_seconds)  # type: ignore[attr-defined]
            async for events in batches:
                await apply_unless_applied(runtime, [as_record(name, event) for event in events])
                failpoints.reached("agent.marked")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            runtime.fail(f"the {name} agent", exc)
            raise

    agent.__name__ = f"mmc_{name}"
    return agent


def as_record(name: str, event: Any) -> tuple[InputRecord, float]:
    """The Kafka message of a Faust event as an InputRecord, with the time it was handed over.

    The hand-over time (monotonic, as the barriers use) means a barrier that started after it
    covers every record fetched together with this one.
    """
    message = event.message
    record = InputRecord(
        topic=name,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(round(message.timestamp * 1000)),
        key=message.key,
        value=message.value,
    )
    return record, message.time_in if message.time_in is not None else time.monotonic()
