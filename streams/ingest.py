"""The submissions consumer: a plain aiokafka group consumer running inside the Faust worker.

Submissions are the volume (one ~130 KB record per model and round), and Faust's per-message
machinery — its consumer thread, a task or two per message, the stream buffer — costs the
worker process ~0.66 ms of CPU per submission (``make bench-stream`` measures it beside the
ingestion figure). The worker's Python work runs one thread at a time, so that cost came
straight off ingestion. This consumer reads the submissions topic with aiokafka directly (the
library under Faust) and feeds batches to the same :class:`~streams.processing.Processor`;
the other input topics stay Faust agents (:mod:`streams.app`).

Consumer group ``{MMC_APP_ID}-submissions`` (:meth:`Settings.consumer_group`): Kafka balances
the submissions partitions among the workers by itself, independently of Faust's group for
the other topics — where a record is consumed does not matter, the barriers and the state in
Redis decide (:mod:`streams.progress`).

Pipeline. A fetch task keeps up to two batches buffered. The loop takes a batch and starts
what does not depend on the state — decoding and ranking on the rank thread, the barriers
(:meth:`Processor.prepare_submissions`) — then applies the previous batch and commits its
offsets. Batches are applied one after another in log order, and an offset is committed only
once its record is applied and its outputs acknowledged (at-least-once; a redelivered record
changes nothing, DESIGN §4).

Rebalance. When partitions are revoked, the batch being applied finishes and is committed
first; records fetched or prepared but not applied are dropped — the partitions' next owner
(or this worker again) reads them from the committed offsets. Cached state is forgotten, as
for Faust's group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streams.admin import kafka_client_options
from streams.processing import Processor, SubmissionBatch
from streams.records import InputRecord
from streams.settings import Settings

log = logging.getLogger(__name__)

Records = list[tuple[InputRecord, float]]
#: Applies a batch of submissions and marks them applied (``streams.app.apply_unless_applied``).
ApplyBatch = Callable[[Records, SubmissionBatch], Awaitable[None]]
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


class SubmissionConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reads the submissions topic in the worker's submissions group and applies it in batches."""

    def __init__(self, settings: Settings, processor: Callable[[], Awaitable[Processor]], apply: ApplyBatch) -> None:
        self.settings = settings
        self._processor = processor
        self._apply = apply
        self._buffer: Records = []
        self._more = asyncio.Event()  # the buffer has records
        self._grew = asyncio.Event()  # records were added since it was last cleared
        self._room = asyncio.Event()  # the buffer has room for another fetch
        self._room.set()
        self._applying = asyncio.Lock()  # held while a batch is applied and committed
        self._generation = 0  # moves on at every revocation: anything fetched before is dropped

    @property
    def batch_size(self) -> int:
        return self.settings.ingest_batch_size

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping).

        Nothing about an input stops it (refusals go to the dead-letter topic, and the
        infrastructure is retried where it is used). Should anything else fail, the consumer
        is restarted after a pause, as Faust restarts a crashed agent: it leaves the group,
        rejoins, and reads again from the committed offsets.
        """
        delay = RETRY_MIN_SECONDS
        while True:
            started = time.monotonic()
            try:
                await self._consume()
            except Exception:
                log.exception("the submissions consumer failed; restarting it in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = RETRY_MIN_SECONDS if time.monotonic() - started > 60 else min(delay * 2, RETRY_MAX_SECONDS)

    async def _consume(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            **kafka_client_options(s),
            group_id=s.consumer_group("submissions"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20,
            session_timeout_ms=int(s.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(s.broker_heartbeat_interval * 1000),
            rebalance_timeout_ms=int(s.broker_rebalance_timeout * 1000),
        )
        consumer.subscribe([s.topic("submissions")], listener=self)
        await consumer.start()
        tasks = [asyncio.ensure_future(self._fetch(consumer)), asyncio.ensure_future(self._apply_loop(consumer))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # neither returns: raises what stopped it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._reset()
            await consumer.stop()

    # --- ConsumerRebalanceListener --------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._applying:  # the batch in hand is applied and committed while still ours
            self._reset()
        if revoked:
            (await self._processor()).forget_cached_state()  # another worker may now write it

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("submissions partitions assigned: %s", sorted(tp.partition for tp in assigned))

    def _reset(self) -> None:
        """Drop everything fetched: what comes next is read from the committed offsets."""
        self._generation += 1
        self._buffer.clear()
        self._more.clear()
        self._room.set()

    # --- the pipeline -----------------------------------------------------------------------------
    async def _fetch(self, consumer: AIOKafkaConsumer) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            await self._room.wait()
            generation = self._generation
            try:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=self.batch_size)
            except KafkaError as exc:
                log.warning("fetching submissions failed, retrying in %.1f s: %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            delay = RETRY_MIN_SECONDS
            if generation != self._generation:
                continue  # fetched before a revocation: the committed offsets decide what comes next
            now = time.monotonic()
            for messages in fetched.values():
                self._buffer.extend(
                    (InputRecord(
                        topic="submissions", partition=m.partition, offset=m.offset,
                        timestamp_ms=m.timestamp, key=m.key, value=m.value,
                    ), now)
                    for m in messages
                )
            if self._buffer:
                self._more.set()
                self._grew.set()
            if len(self._buffer) >= 2 * self.batch_size:
                self._room.clear()

    async def _apply_loop(self, consumer: AIOKafkaConsumer) -> None:
        pending: tuple[Records, SubmissionBatch, int] | None = None
        try:
            while True:
                if not self._buffer and pending is None:
                    self._more.clear()
                    await self._more.wait()
                following = None
                await self._fill()
                if self._buffer:
                    records = self._buffer[: self.batch_size]
                    del self._buffer[: self.batch_size]
                    if len(self._buffer) < 2 * self.batch_size:
                        self._room.set()
                    following = (records, (await self._processor()).prepare_submissions(records), self._generation)
                current, pending = pending, following
                if current is not None:
                    await self._apply_and_commit(consumer, *current)
        finally:
            if pending is not None:
                pending[1].discard()

    async def _fill(self) -> None:
        """Wait up to ``ingest_batch_seconds`` for a full batch while records keep coming."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ingest_batch_seconds
        while 0 < len(self._buffer) < self.batch_size:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._grew.clear()
            try:
                await asyncio.wait_for(self._grew.wait(), left)
            except TimeoutError:
                return

    async def _apply_and_commit(self, consumer: AIOKafkaConsumer, records: Records, prepared: SubmissionBatch, generation: int) -> None:
        async with self._applying:
            if generation != self._generation:
                prepared.discard()
                return  # fetched before a revocation: read again from the committed offsets
            await self._apply(records, prepared)
            ends: dict[TopicPartition, int] = {}
            for record, _ in records:
                ends[TopicPartition(self.settings.topic("submissions"), record.partition)] = record.offset + 1
            try:
                await consumer.commit(ends)
            except KafkaError as exc:
                # The records are applied (their progress is in Redis); whoever reads these
                # partitions next skips them even though the commit did not land.
                log.info("submissions commit not made (%r): a rebalance moved the partitions", exc)
