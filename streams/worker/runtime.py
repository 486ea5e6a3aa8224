"""The worker's runtime without Faust: its connections (Redis, the output producer, the barriers),
the processor, and how a batch of input records is applied exactly once.

Used by the worker process (:mod:`streams.worker.main`) and by ``mmc rebuild``
(:mod:`streams.worker.rebuild`), which applies the input topics with the same runtime and no
Faust app.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.errors import StateLost
from streams.kafka.clients import kafka_client_options
from streams.messages.outputs import Output
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.state import RedisState
from streams.state.client import redis_client
from streams.state.progress import Barrier, applied_marks, mark_applied
from streams.transient import with_retry
from streams.worker.metrics import WorkerMetrics
from streams.worker.processor import Processor
from streams.worker.submissions import SubmissionBatch

log = logging.getLogger(__name__)

#: Whether outputs produced in the current context are sent (False while rebuilding records
#: whose outputs subscribers already have).
PUBLISHING: contextvars.ContextVar[bool] = contextvars.ContextVar("mmc_publishing", default=True)

#: Input topics whose records are applied in concurrent batches (different models are independent).
BATCHED_TOPICS = frozenset({"submissions", "stakes"})
#: Models whose stake updates are applied at once. Each holds a Redis connection while it runs,
#: and redis-py's pool refuses more than 100 at a time (MaxConnectionsError, which would only be
#: retried): stay well under it, leaving room for the barriers and the submissions consumer.
CONCURRENT_MODELS = 32
#: Exit status of a worker that stopped because a component failed (EX_SOFTWARE).
EXIT_FAILED = 70


class Runtime:
    """The worker's connections (Redis, the output producer, the barrier), started on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._processor: Processor | None = None
        self._producer: AIOKafkaProducer | None = None
        self.state: RedisState | None = None
        self.barrier: Barrier | None = None
        self.metrics = WorkerMetrics()  # served at /metrics (streams.worker.metrics)
        self.on_sent: Callable[[int], None] | None = None  # told how many outputs each send carried
        self.failure: str | None = None  # set when a component failed for good: the worker is going down
        self.restarting: str | None = None  # set when the state was lost: the worker restarts in place
        self.components: dict[str, Callable[[], str | None]] = {}  # name → its problem, None when healthy

    @property
    def started(self) -> bool:
        return self._processor is not None

    async def processor(self) -> Processor:
        if self._processor is None:
            async with self._lock:
                if self._processor is None:
                    self.state = RedisState(redis_client(self.settings), self.settings.state_namespace)
                    await with_retry(self.state.claim_epoch, "reading the state's epoch")
                    self.barrier = Barrier(self.settings, self.state)
                    await self.barrier.start()
                    self._producer = AIOKafkaProducer(
                        **kafka_client_options(self.settings),
                        acks="all",
                        linger_ms=5,
                        max_batch_size=1 << 20,
                        max_request_size=8 << 20,
                        enable_idempotence=False,  # the embedded broker rejects InitProducerId
                    )
                    await self._producer.start()
                    self._processor = Processor(self.settings, self.state, self.barrier, self.send)
                    self.barrier.apply = self.handle_records
        return self._processor

    async def handle(self, record: InputRecord, received_at: float, decoded: Any = None) -> str:
        """Apply one record through the processor and count it."""
        outcome = await (await self.processor()).handle(record, received_at, decoded)
        self.metrics.input_handled(record.topic, outcome, received_at)
        return outcome

    async def handle_records(self, records: list[tuple[InputRecord, float]], prepared: SubmissionBatch | None = None) -> list[str]:
        """Apply records of one topic in log order (consumers and barrier catch-ups alike); each one's outcome.

        Submissions go through the processor's batch path (``prepared``: what the submissions
        consumer already started for them, :meth:`Processor.prepare_submissions`). The other
        topics are triaged first (:meth:`Processor.triage`): records whose bytes or timestamp
        earn a refusal are dead-lettered together, at once; the rest are applied — stakes with
        different keys (different models) concurrently, ``CONCURRENT_MODELS`` at a time; rounds
        and targets strictly one after another (their single partition's order is what makes the
        outputs deterministic).
        """
        if not records:
            return []
        processor = await self.processor()
        if records[0][0].topic == "submissions":
            outcomes = await with_retry(lambda: processor.handle_submissions(records, prepared), f"applying {describe(records)}")
            for (record, received_at), outcome in zip(records, outcomes, strict=True):
                self.metrics.input_handled(record.topic, outcome, received_at)
            return list(outcomes)
        triaged, events = await with_retry(lambda: processor.triage([r for r, _ in records]), f"refusing in {describe(records)}")
        results: list[str | None] = list(triaged)
        for (record, received_at), outcome in zip(records, triaged, strict=True):
            if outcome is not None:
                self.metrics.input_handled(record.topic, outcome, received_at)
        todo = [(i, record, received_at, event) for i, ((record, received_at), event) in enumerate(zip(records, events, strict=True)) if results[i] is None]
        if records[0][0].topic not in BATCHED_TOPICS:  # rounds, targets: one total order
            # Each record is marked applied as soon as it is: a crash must never re-apply one
            # after a later one has changed the state it reads (a target update's leaderboard
            # rows are computed from the histories the next update extends).
            state = self.state
            if state is None:
                raise RuntimeError("runtime not started")
            for i, record, received_at, event in todo:
                results[i] = (await apply_in_order(self, [(i, record, received_at, event)]))[0]
                marks = applied_marks([record], [results[i]])  # type: ignore[list-item]
                await with_retry(functools.partial(mark_applied, state, record.topic, marks), f"marking {describe([(record, received_at)])} applied")
            return [r if r is not None else "internal_error" for r in results]
        by_key: dict[tuple[int, bytes | None], list[tuple[int, InputRecord, float, Any]]] = {}
        for item in todo:
            by_key.setdefault((item[1].partition, item[1].key), []).append(item)
        groups = list(by_key.values())
        for first in range(0, len(groups), CONCURRENT_MODELS):
            done = await asyncio.gather(*(apply_in_order(self, group) for group in groups[first : first + CONCURRENT_MODELS]))
            for group, outcomes in zip(groups[first : first + CONCURRENT_MODELS], done, strict=True):
                for (i, *_), outcome in zip(group, outcomes, strict=True):
                    results[i] = outcome
        return [r if r is not None else "internal_error" for r in results]

    def fail(self, component: str, exc: BaseException) -> None:
        """A component stopped on an error that is not the input's nor the infrastructure's (a
        bug): log it and stop the worker — a clean shutdown (SIGTERM to itself), cut short after
        ``MMC_FAIL_GRACE_SECONDS`` — with exit status ``EXIT_FAILED``, so that the orchestrator starts
        a new one, which reads the record again. A worker never carries on with a topic nobody
        reads."""
        if self.failure is None:
            self.failure = f"{component} stopped: {type(exc).__name__}: {exc}"
            log.critical("%s; stopping the worker so that it is restarted", self.failure, exc_info=exc)
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = threading.Timer(self.settings.fail_grace_seconds, _exit_now, (EXIT_FAILED,))
            deadline.daemon = True
            deadline.start()

    def restart_in_place(self, reason: str) -> None:
        """Redis lost the state: stop at once and start again in the same process (the same
        command, re-executed), whose start-up recovery rebuilds the state from the input topics
        before it joins the groups again — publishing only what subscribers may not have had
        (:mod:`streams.worker.rebuild`). Stopping at once is a crash as far as the data goes (what was
        in flight is applied again after the rebuild, as after ``kill -9``); the groups hand the
        partitions back after ``MMC_BROKER_SESSION_TIMEOUT``, while the rebuild runs."""
        if self.restarting is None and self.failure is None:
            self.restarting = reason
            log.warning("%s: restarting to rebuild the state from the input topics, then resuming", reason)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

    async def check_state(self) -> None:
        """Restart in place when the state's epoch changed (:meth:`RedisState.check_epoch`)."""
        if self.state is None or self.restarting is not None:
            return
        try:
            await self.state.check_epoch()
        except StateLost as exc:
            self.restart_in_place(str(exc))
            raise

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"|"failing", "problems": [...]}``: failing when a component has
        stopped or keeps failing (what the liveness probe reads at ``/health``)."""
        problems = [self.failure] if self.failure else []
        problems += [f"{name}: {problem}" for name, check in sorted(self.components.items()) if (problem := check()) is not None]
        return {"status": "failing" if problems else "ok", "problems": problems}

    async def send(self, outputs: list[Output]) -> None:
        """Produce every output and wait until the broker acknowledged all of them."""
        if self._producer is None:
            raise RuntimeError("runtime not started")
        if self.on_sent is not None:
            self.on_sent(len(outputs))
        if not PUBLISHING.get():  # a rebuild recomputing outputs subscribers already have
            return
        # Outputs computed from a state that Redis lost meanwhile must not leave: the epoch is
        # checked after every read they come from and before the first send.
        await self.check_state()
        pending = [
            await self._producer.send(
                self.settings.topic(o.topic),
                value=o.value,
                key=o.key,
                timestamp_ms=o.timestamp_ms,
                headers=list(o.headers) or None,
            )
            for o in outputs
        ]
        await asyncio.gather(*pending)
        self.metrics.outputs_sent(outputs)

    async def stop(self) -> None:
        if self._processor is not None:
            self._processor.stop_background()
        if self._producer is not None:
            await self._producer.stop()
        if self.barrier is not None:
            await self.barrier.stop()
        if self.state is not None:
            await self.state.close()


def _exit_now(status: int) -> None:
    """End the process (a failed worker whose clean shutdown did not finish in time)."""
    logging.shutdown()
    os._exit(status)


async def apply_unless_applied(runtime: Runtime, records: list[tuple[InputRecord, float]], prepared: SubmissionBatch | None = None) -> None:
    """Apply records not yet applied (a barrier's catch-up may have got there first), then mark them.

    Holds the partition locks shared with the barriers' catch-ups, so a record is never applied
    twice by one worker.
    """
    await runtime.processor()
    if runtime.barrier is None or runtime.state is None:
        raise RuntimeError("runtime not started")
    state = runtime.state
    topic = records[0][0].topic
    partitions = sorted({r.partition for r, _ in records})
    async with contextlib.AsyncExitStack() as held:
        for p in partitions:
            await held.enter_async_context(runtime.barrier.partition_lock(topic, p))
        done = await with_retry(lambda: state.progress(topic), f"reading {topic} progress")
        pending = [(r, t) for r, t in records if r.offset >= done.get(r.partition, 0)]
        outcomes = await runtime.handle_records(pending, prepared)
        marks = applied_marks([r for r, _ in pending], outcomes)
        await with_retry(lambda: mark_applied(state, topic, marks), f"marking {describe(pending)} applied")


def describe(records: list[tuple[InputRecord, float]]) -> str:
    """``targets[0]@12`` or ``submissions[1]@40..295`` for log lines."""
    if not records:
        return "no records"
    first, last = records[0][0], records[-1][0]
    span = f"{first.offset}" if first.offset == last.offset else f"{first.offset}..{last.offset}"
    return f"{first.topic}[{first.partition}]@{span}" + (f" (+{len(records) - 1})" if first.partition != last.partition else "")


async def apply_in_order(runtime: Runtime, group: list[tuple[int, InputRecord, float, Any]]) -> list[str]:
    """Apply decoded records one after another, each retried until the infrastructure lets it through."""
    outcomes = []
    for _, record, received_at, event in group:
        outcomes.append(
            await with_retry(
                functools.partial(runtime.handle, record, received_at, event),
                f"applying {record.topic}[{record.partition}]@{record.offset}",
            )
        )
    return outcomes
