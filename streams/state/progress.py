"""Barriers between input topics: decide only once every earlier event has been applied.

Kafka orders records within a partition, not across topics, and a replay or a second worker
may apply the ``rounds`` topic far ahead of — or behind — ``submissions``. Decisions that
depend on another topic (is this submission after its round's close? which stake was in force
at close? which submissions does a target update score?) therefore first make sure, through
:meth:`Barrier.wait_for`, that the other topic has been applied up to the end offsets it had
when this record was received: every record appended before this one has then been applied.

The barrier does not wait for another agent to get there: Faust feeds every agent from one
fetcher, so an agent that waits can hold up the very records it waits for. Instead the barrier
*catches up*: it reads the missing records of that topic straight from Kafka (its own
consumer, no group) and applies them, in offset order, under the same per-partition lock the
agents take. Every applied record moves the partition's progress in Redis
(:meth:`streams.state.RedisState.mark_processed`), and agents skip records below it, so each
record is applied once per worker — and idempotently if two workers race on one.

Two shortcuts keep this cheap on a live stream: a check that started after a record was
received serves it too (records fetched together share one check), and for the
single-partition ``rounds`` topic, whose event times only grow, a watermark at or past the
record's event time already proves that every earlier round event has been applied. The
watermark is the highest event time of the records *taken into the state*: a refused record
never moves it, and a record stamped further ahead of the worker's clock than
``MMC_MAX_CLOCK_SKEW_SECONDS`` is refused ``clock_skew`` before anything else, so a producer
with a wrong clock cannot move it for good. (A rounds producer that stamps events out of
order within that bound breaks the assumption; the lifecycle rules in docs/semantics.md say so.)

Catch-ups nest without cycles: rounds needs nothing; stakes need rounds; submissions need
rounds and stakes (the stake in force is stored with each row); targets need rounds,
submissions and stakes. A record's own partition lock is held while it waits, so locks are
taken in the order targets → submissions → stakes → rounds, never the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import failpoints
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import partitions_for
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.state.store import RedisState

log = logging.getLogger(__name__)

#: Applies records of one partition in log order (decide, write state, publish), as the agents do;
#: returns each record's outcome (``applied``, ``unchanged`` or a refusal reason code).
Apply = Callable[[list[tuple[InputRecord, float]]], Awaitable[list[str]]]
#: Outcomes of a record that was taken into the state (the rest are refusal reason codes).
ACCEPTED = frozenset({"applied", "unchanged"})
POLL_MS = 5
#: The quick catch-up consumer's fetch wait, and the patient one's (aiokafka's default).
QUICK_FETCH_WAIT_MS = 2
PATIENT_FETCH_WAIT_MS = 500
PATIENT_POLL_MS = 1000
#: Empty answers in a row, with records waiting, after which a catch-up turns patient.
STARVED_POLLS = 20
#: Records a catch-up applies (and marks) together.
CATCH_UP_BATCH = 64


def applied_marks(records: list[InputRecord], outcomes: list[str]) -> list[tuple[int, int, int]]:
    """(partition, offset, event time) of records as applied: a refused record's event time is
    left out (-1), so it never moves the topic's watermark — one refused record stamped in the
    future must not stand for the records after it."""
    return [(r.partition, r.offset, r.timestamp_ms if o in ACCEPTED else -1) for r, o in zip(records, outcomes, strict=True)]


async def mark_applied(state: RedisState, topic: str, done: list[tuple[int, int, int]]) -> None:
    """Mark (partition, offset, event time) records applied — agents and catch-ups alike."""
    await state.mark_processed(topic, done)
    if topic == "submissions" and done:
        failpoints.reached("submissions.marked")


class Barrier:
    """Makes sure input topics have been applied up to their current end offsets."""

    def __init__(self, settings: Settings, state: RedisState) -> None:
        self.settings = settings
        self.state = state
        self.apply: Apply | None = None
        self._consumers: dict[tuple[str, bool], AIOKafkaConsumer] = {}
        self._offsets: AIOKafkaConsumer | None = None
        self._offsets_lock = asyncio.Lock()
        self._partition_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._synced_at: dict[str, float] = {}
        self._inflight: dict[str, tuple[float, asyncio.Task[None]]] = {}

    async def start(self) -> None:
        """Nothing to do up front: consumers are created per topic on first use."""

    async def stop(self) -> None:
        for consumer in self._consumers.values():
            await consumer.stop()
        self._consumers.clear()
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None

    async def _offsets_of(self, partitions: list[TopicPartition]) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(beginning, end) offsets, from a consumer that never fetches: its requests never
        queue behind a long-polling fetch on the same connection."""
        async with self._offsets_lock:
            if self._offsets is None:
                self._offsets = AIOKafkaConsumer(**kafka_client_options(self.settings), enable_auto_commit=False)
                await self._offsets.start()
            ends = await self._offsets.end_offsets(partitions)
            starts = await self._offsets.beginning_offsets(partitions)
        return starts, ends

    async def lag(self, topic: str) -> int:
        """Records of ``topic`` in the log and not applied yet, over all its partitions: each
        partition's end offset minus its progress in Redis (its first offset when it has none)."""
        partitions = [TopicPartition(self.settings.topic(topic), p) for p in range(partitions_for(self.settings, topic))]
        starts, ends = await self._offsets_of(partitions)
        progress = await self.state.progress(topic)
        return sum(max(0, ends[tp] - max(progress.get(tp.partition, starts[tp]), starts[tp])) for tp in partitions)

    def partition_lock(self, topic: str, partition: int) -> asyncio.Lock:
        """The lock agents and catch-ups hold while applying records of one partition."""
        return self._partition_locks.setdefault((topic, partition), asyncio.Lock())

    async def _consumer(self, topic: str, patient: bool = False) -> AIOKafkaConsumer:
        """The topic's catch-up consumer: the quick one (``fetch_max_wait_ms`` 2: an up-to-date
        partition's empty answer, which brings its high watermark, costs no wait) or the patient
        one (the client's default wait, :data:`PATIENT_FETCH_WAIT_MS`)."""
        consumer = self._consumers.get((topic, patient))
        if consumer is None:
            consumer = AIOKafkaConsumer(
                **kafka_client_options(self.settings),
                enable_auto_commit=False,
                max_partition_fetch_bytes=16 << 20,
                fetch_max_bytes=64 << 20,
                fetch_max_wait_ms=PATIENT_FETCH_WAIT_MS if patient else QUICK_FETCH_WAIT_MS,
            )
            await consumer.start()
            self._consumers[(topic, patient)] = consumer
        return consumer

    async def wait_for(self, topic: str, received_at: float, event_ts: int | None = None) -> None:
        """Return once ``topic`` has been applied past every record appended before ``received_at``.

        Arguments:
            topic: short name of the topic that must be applied.
            received_at: ``time.monotonic()`` when the caller's record was received.
            event_ts: the caller's event time; with the ``rounds`` watermark at or past it no
                check is needed.
        """
        if event_ts is not None and topic == "rounds" and await self.state.watermark("rounds") >= event_ts:
            return
        if self._synced_at.get(topic, -1.0) >= received_at:
            return
        inflight = self._inflight.get(topic)
        if inflight is None or inflight[0] < received_at or inflight[1].done():
            started = time.monotonic()
            task = asyncio.ensure_future(self._sync(topic, started))
            self._inflight[topic] = (started, task)
            inflight = (started, task)
        await asyncio.shield(inflight[1])

    async def _sync(self, topic: str, started: float) -> None:
        name = self.settings.topic(topic)
        partitions = [TopicPartition(name, p) for p in range(partitions_for(self.settings, topic))]
        starts, ends = await self._offsets_of(partitions)
        async with contextlib.AsyncExitStack() as held:
            # Every partition of the topic at once, locks taken in partition order (as agents do).
            for tp in partitions:
                await held.enter_async_context(self.partition_lock(topic, tp.partition))
            progress = await self.state.progress(topic)
            # Records before the log start are gone (retention): nothing to apply there.
            begin = {tp: max(progress.get(tp.partition, 0), starts[tp]) for tp in partitions}
            await self._catch_up(topic, begin, ends)
        self._synced_at[topic] = max(self._synced_at.get(topic, -1.0), started)

    async def _catch_up(self, topic: str, begin: dict[TopicPartition, int], listed_ends: dict[TopicPartition, int]) -> None:
        """Apply each partition's records from ``begin`` to its end, in order (partition locks held).

        The end is the larger of the listed end offset and the high watermark of a fetch: the
        embedded broker (Tansu) lists the last batch's base offset + 1 as the end, so only a
        fetch tells where the log really ends. All partitions are fetched together.

        Fetches start on the quick consumer. A broker may answer a fetch with whatever it
        gathered within the fetch's wait (Tansu does: once a partition holds tens of MB, a 2 ms
        wait brings no records at all, every time, while the high watermark shows records
        waiting). After :data:`STARVED_POLLS` such empty answers for a partition (in all, within
        the catch-up) it goes on with the patient consumer from where it stands.
        """
        apply = self.apply
        if apply is None:
            raise RuntimeError("Barrier.apply is not set")
        position, end = dict(begin), dict(listed_ends)
        open_parts: set[TopicPartition] = set(begin)
        logged: set[TopicPartition] = set()
        patient = False
        while open_parts:
            consumer = await self._consumer(topic, patient)
            consumer.assign(sorted(open_parts))
            for tp in open_parts:
                consumer.seek(tp, position[tp])
            try:
                starved = await self._apply_ranges(consumer, apply, topic, position, end, open_parts, logged, patient)
            finally:
                consumer.assign([])  # stop fetching until the next catch-up
            if starved:
                log.debug("%s: fetches with a %d ms wait bring no records; going on with a %d ms wait", topic, QUICK_FETCH_WAIT_MS, PATIENT_FETCH_WAIT_MS)
                patient = True

    async def _apply_ranges(
        self,
        consumer: AIOKafkaConsumer,
        apply: Apply,
        topic: str,
        position: dict[TopicPartition, int],
        end: dict[TopicPartition, int],
        open_parts: set[TopicPartition],
        logged: set[TopicPartition],
        patient: bool,
    ) -> bool:
        """Fetch and apply until every partition reached its end (``open_parts`` empty: False),
        or, on the quick consumer, until a partition starves (True). Updates the arguments."""
        starving = dict.fromkeys(open_parts, 0)
        while open_parts:
            # Short polls on the quick consumer: getmany only returns early for records, and an
            # empty partition's answer (which brings the high watermark) must not cost a whole
            # timeout. The patient consumer's answers take up to its fetch wait anyway.
            batch = await consumer.getmany(*sorted(open_parts), timeout_ms=PATIENT_POLL_MS if patient else POLL_MS)
            for tp in sorted(open_parts):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    end[tp] = max(end[tp], highwater)
                # Everything fetched is applied, also past the end this catch-up aims for: the
                # consumer's position has moved past it, so a record dropped here would never be
                # fetched again (the embedded broker's high watermark can point inside the last
                # batch it returns). Applying further than needed is what the agents would do.
                messages = list(batch.get(tp, []))
                if messages:
                    end[tp] = max(end[tp], messages[-1].offset + 1)
                if messages and tp not in logged:
                    log.info("catching up %s[%d] from offset %d to %d", tp.topic, tp.partition, position[tp], end[tp] - 1)
                    logged.add(tp)
                for first in range(0, len(messages), CATCH_UP_BATCH):
                    chunk = messages[first : first + CATCH_UP_BATCH]
                    now = time.monotonic()
                    records = [InputRecord.fetched(topic, m) for m in chunk]
                    outcomes = await apply([(record, now) for record in records])
                    await mark_applied(self.state, topic, applied_marks(records, outcomes))
                    position[tp] = chunk[-1].offset + 1
                if position[tp] >= end[tp] and highwater is not None:
                    open_parts.discard(tp)
                    continue
                # An answer came (the high watermark moved on or is known) with no records
                # although records wait: the broker gathered none within the fetch's wait. Counted
                # over the whole catch-up, not in a row: a broker that now and then brings a few
                # records at that wait would otherwise keep the count from ever getting there.
                if not messages and highwater is not None:
                    starving[tp] += 1
                if not patient and starving[tp] >= STARVED_POLLS:
                    return True
        return False
