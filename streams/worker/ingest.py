"""The submissions consumer: a librdkafka group consumer (``confluent_kafka``) running inside the Faust worker.

Submissions are the volume (one ~130 KB record per model and round), and the worker's Python
work runs one thread at a time (the GIL), so whatever the consumer costs in Python comes
straight off ingestion. Faust's per-message machinery costs the worker ~0.66 ms of CPU per
submission, a plain aiokafka consumer (fetch parsing and CRC checks in the event loop's thread)
~0.32 ms; librdkafka fetches, checks and queues records in its own C threads, off the GIL, for
~0.08 ms of CPU per submission in all (``make bench-stream`` measures the three side by side).
This consumer feeds batches to the same :class:`~streams.worker.processor.Processor`; the other input
topics stay Faust agents (:mod:`streams.worker.agents`).

Consumer group ``{MMC_APP_ID}-submissions`` (:meth:`Settings.consumer_group`): Kafka balances
the submissions partitions among the workers by itself, independently of Faust's group for
the other topics — where a record is consumed does not matter, the barriers and the state in
Redis decide (:mod:`streams.state.progress`).

Threads. librdkafka's calls block, so they run on two threads of their own: ``consume`` (and
``close``) on one — librdkafka serves the group's rebalance callbacks on the thread that
consumes — and the commits on another (librdkafka is thread-safe). The event loop awaits the
consuming thread and hands commits to the other without waiting for them.

Pipeline. A fetch task keeps up to two batches buffered. The loop takes a batch and starts
what does not depend on the state — decoding and ranking on the rank threads, the barriers
(:meth:`Processor.prepare_submissions`) — then applies the previous batch and queues its
offsets' commit. Batches are applied one after another in log order, and an offset is committed
only once its record is applied and its outputs acknowledged (at-least-once; a redelivered
record changes nothing, DESIGN §4).

Rebalance. When partitions are revoked (or lost), the batch being applied finishes and is
committed first — the revocation callback waits for it and commits on the consuming thread —
and records fetched or prepared but not applied are dropped. After any rebalance every
partition this consumer owns is read again from its committed offset, so nothing dropped is
skipped. Cached state is forgotten, as for Faust's group. Commits of batches applied before
a revocation that are still queued are skipped; one already on its way when the rebalance
starts can land after the callback's and move the offset back to an earlier batch's end —
the next owner then applies those records again, which changes nothing (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition
from stamina.instrumentation import RetryDetails

from streams.kafka.clients import librdkafka_config
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.transient import reporting_retries, retries
from streams.worker.processor import Processor
from streams.worker.submissions import SubmissionBatch

log = logging.getLogger(__name__)

Records = list[tuple[InputRecord, float]]
#: Applies a batch of submissions and marks them applied (``streams.worker.runtime.apply_unless_applied``).
ApplyBatch = Callable[[Records, SubmissionBatch], Awaitable[None]]
#: Failed runs in a row after which the consumer reports itself unhealthy.
FAILURES_UNHEALTHY = 3
#: A run of the consumer that lasted longer than this, then failed, counts as the first failure
#: in a row again, and its restart pauses as after a first failure.
RUN_LASTED_SECONDS = 60.0
#: Longest one ``consume`` call waits for records (it also bounds how late a rebalance
#: callback, a stop or a resumed fetch is served).
CONSUME_SECONDS = 0.25
#: How long the fetch task waits for room before it pauses the partitions to keep serving the group.
STALLED_SECONDS = 1.0
#: librdkafka's prefetch queue (queued.max.messages.kbytes, its default): ~500 submissions of 130 KB.
PREFETCH_KBYTES = 64 << 10
#: Bytes fetched per partition and request (max.partition.fetch.bytes): several submissions per
#: partition and request, where librdkafka's default 1 MB holds ~8. Chosen, not measured
#: against the default.
FETCH_PARTITION_BYTES = 8 << 20


class SubmissionConsumer:
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
        self._applying = asyncio.Lock()  # held while a batch is applied
        self._applied: dict[int, int] = {}  # partition → next offset after its last applied record (committed or not)
        self._revoking = False  # a revocation callback is waiting: it commits what was applied
        self._paused = False  # the assigned partitions are paused (set on the consuming thread only)
        self._generation = 0  # moves on at every revocation: anything fetched before is dropped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failures = 0  # consecutive failed runs (reset after a run that lasted a minute)
        self._last_failure = ""

    @property
    def batch_size(self) -> int:
        return self.settings.ingest_batch_size

    @property
    def topic(self) -> str:
        return self.settings.topic("submissions")

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping).

        Nothing about an input stops it (refusals go to the dead-letter topic, and the
        infrastructure is retried where it is used). Should anything else fail, the consumer
        is restarted after a pause, as Faust restarts a crashed agent: it leaves the group,
        rejoins, and reads again from the committed offsets.

        The pauses are stamina's (:func:`streams.transient.retries`), one error logged per
        restart. A run that lasted more than RUN_LASTED_SECONDS starts the count of failures
        and the pauses over; stamina cannot reset a context's pauses, so that run's failure ends
        the retry context and is raised again as the first failure of a new one, whose pause
        is the first again.
        """

        def report(details: RetryDetails) -> None:
            log.error(
                "the submissions consumer failed (%d in a row); restarting it in %.1f s",
                self._failures,
                details.wait_for,
                exc_info=details.caused_by,
            )

        carried: Exception | None = None  # the failure that ended a run that lasted
        while True:
            with reporting_retries(report):
                async for attempt in retries(Exception):  # not CancelledError: the worker stopping stops it
                    with attempt:
                        if carried is not None:
                            failure, carried = carried, None
                            raise failure
                        started = time.monotonic()
                        try:
                            await self._run_once()
                        except Exception as exc:
                            lasted = time.monotonic() - started > RUN_LASTED_SECONDS
                            self._failures = 1 if lasted else self._failures + 1
                            self._last_failure = f"{type(exc).__name__}: {exc}"[:300]
                            if not lasted:
                                raise
                            carried = exc

    async def _run_once(self) -> None:
        """One run of the consumer, which ends only by raising (it never returns on its own)."""
        await self._consume()
        raise RuntimeError("the submissions consumer stopped without an error")

    def problem(self) -> str | None:
        """What the worker's ``/health`` reports: ``None`` while the consumer runs, a description
        once it has failed ``FAILURES_UNHEALTHY`` times in a row (it keeps restarting meanwhile;
        the liveness probe then restarts the worker)."""
        if self._failures >= FAILURES_UNHEALTHY:
            return f"failed {self._failures} times in a row, last: {self._last_failure}"
        return None

    async def _consume(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        consuming = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmc-consume")
        committing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmc-commit")
        consumer = await loop.run_in_executor(consuming, Consumer, consumer_config(self.settings))
        try:
            await loop.run_in_executor(
                consuming, lambda: consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)
            )
            tasks = [asyncio.ensure_future(self._fetch(consumer, consuming)), asyncio.ensure_future(self._apply_loop(consumer, committing))]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # neither returns: raises what stopped it
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._reset()
        finally:
            await loop.run_in_executor(None, committing.shutdown)  # no commit in flight while closing
            await loop.run_in_executor(consuming, consumer.close)  # leaves the group (revokes first)
            consuming.shutdown(wait=False)

    # --- rebalance callbacks (librdkafka calls them on the consuming thread, inside consume) ---
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the partitions, paused or not as the fetch task is (librdkafka keeps a partition's
        pause across assignments, so the state is set explicitly)."""
        consumer.assign(partitions)
        if partitions:
            (consumer.pause if self._paused else consumer.resume)(partitions)
        log.info("submissions partitions assigned: %s", sorted(tp.partition for tp in partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions revoked: wait for the event loop to finish the batch in hand, commit what
        was applied of them here (librdkafka holds other threads' commits while a rebalance
        callback runs), then let them go."""
        ends = self._hand_over(partitions)
        if ends:
            self._commit_ends(consumer, ends)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions lost (the session expired): another worker may own them already, so nothing is committed."""
        self._hand_over(partitions)

    def _hand_over(self, partitions: list[TopicPartition]) -> dict[int, int]:
        """On the consuming thread: run :meth:`on_partitions_revoked` on the event loop and wait for it;
        returns the ends (next offsets) of what was last applied of ``partitions`` (committing
        an end again is harmless)."""
        self._revoking = True  # the batch in hand leaves its commit to the callback
        try:
            if self._loop is None or self._loop.is_closed():
                return {}
            numbers = sorted(tp.partition for tp in partitions)
            done = asyncio.run_coroutine_threadsafe(self.on_partitions_revoked(numbers), self._loop)
            try:
                done.result(timeout=rebalance_timeout_ms(self.settings) / 1000)
            except Exception:
                log.exception("finishing the batch in hand before a revocation failed")
            return {p: self._applied.pop(p) for p in numbers if p in self._applied}
        finally:
            self._revoking = False

    async def on_partitions_revoked(self, partitions: list[int]) -> None:
        """The batch in hand is applied while the partitions are still ours; the rest is dropped."""
        async with self._applying:
            self._reset()
        if partitions:
            (await self._processor()).forget_cached_state()  # another worker may now write it

    def _reset(self) -> None:
        """Drop everything fetched: what comes next is read from the committed offsets."""
        self._generation += 1
        self._buffer.clear()
        self._more.clear()
        self._room.set()

    # --- the pipeline -----------------------------------------------------------------------------
    async def _fetch(self, consumer: Consumer, consuming: ThreadPoolExecutor) -> None:
        """Keep up to two batches buffered; while the buffer stays full, serve the group paused.

        librdkafka serves rebalance callbacks only inside ``consume``, so a fetch task that just
        waited for room would hold up the whole group for as long as applying is stalled (a
        barrier waiting on another topic, Redis retried). After ``STALLED_SECONDS`` without room
        the assigned partitions are paused — ``consume`` then returns no records but serves the
        callbacks — and resumed once there is room again (a pause drops librdkafka's prefetched
        records, fetched again from the next offset on resume: a cost paid only when stalled).
        """
        loop = asyncio.get_running_loop()
        while True:
            if not self._room.is_set():
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the wait ends, and the task would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STALLED_SECONDS):
                        await self._room.wait()
            if self._room.is_set() == self._paused:  # room while paused, or still none while fetching
                await loop.run_in_executor(consuming, self._pause_or_resume, consumer, not self._paused)
            generation = self._generation
            messages = await loop.run_in_executor(consuming, self._take, consumer)
            if generation != self._generation:
                # A rebalance was served inside that call: what it returned may predate it, and
                # anything fetched for the new assignment is dropped with it, so every partition
                # still ours is read again from its committed offset.
                await loop.run_in_executor(consuming, self._rewind, consumer)
                continue
            if not messages and not self._buffer:
                self._failures = 0  # caught up with nothing to apply: running
            now = time.monotonic()
            for m in messages:
                error = m.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 (librdkafka's name)
                        log.warning("fetching submissions: %s", error)
                    continue
                self._buffer.append((as_input_record(m), now))
            if self._buffer:
                self._more.set()
                self._grew.set()
            if len(self._buffer) >= 2 * self.batch_size:
                self._room.clear()

    def _take(self, consumer: Consumer) -> list[Message]:
        """Up to a batch of what librdkafka has fetched, waiting up to ``CONSUME_SECONDS`` for the
        first record only (``consume(n, t)`` alone would wait for all n)."""
        messages = consumer.consume(self.batch_size, 0)
        if not messages:
            messages = consumer.consume(1, CONSUME_SECONDS)
            if messages:
                messages += consumer.consume(self.batch_size - 1, 0)
        return messages

    def _pause_or_resume(self, consumer: Consumer, pause: bool) -> None:
        """Pause or resume every assigned partition (on the consuming thread, as the callbacks that read the flag)."""
        self._paused = pause
        assignment = consumer.assignment()
        if assignment:
            (consumer.pause if pause else consumer.resume)(assignment)

    def _rewind(self, consumer: Consumer) -> None:
        """Resume and seek every assigned partition back to its committed offset (on the consuming thread)."""
        self._paused = False
        assignment = consumer.assignment()
        if not assignment:
            return
        consumer.resume(assignment)
        for tp in consumer.committed(assignment, timeout=max(self.settings.broker_session_timeout, 1.0)):
            offset = tp.offset if tp.offset != OFFSET_INVALID else OFFSET_BEGINNING
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    async def _apply_loop(self, consumer: Consumer, committing: ThreadPoolExecutor) -> None:
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
                    await self._apply_and_commit(consumer, committing, *current)
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
                async with asyncio.timeout(left):  # (not wait_for: see _fetch)
                    await self._grew.wait()
            except TimeoutError:
                return

    async def _apply_and_commit(self, consumer: Consumer, committing: ThreadPoolExecutor, records: Records, prepared: SubmissionBatch, generation: int) -> None:
        """Apply a batch, then hand its offsets to the committing thread without waiting: commits
        leave in apply order, and one that the broker is slow to answer (up to 1.4 s on the
        embedded broker) does not hold up the next batch."""
        async with self._applying:
            if generation != self._generation:
                prepared.discard()
                return  # fetched before a revocation: read again from the committed offsets
            await self._apply(records, prepared)
            self._failures = 0
            ends: dict[int, int] = {}
            for record, _ in records:
                ends[record.partition] = record.offset + 1
            self._applied.update(ends)
            if self._revoking:
                return  # the revocation callback commits them, on the consuming thread
        done = asyncio.get_running_loop().run_in_executor(committing, self._commit, consumer, ends, generation)
        done.add_done_callback(_log_failure)

    def _commit(self, consumer: Consumer, ends: dict[int, int], generation: int) -> None:
        """Commit applied offsets (on the committing thread), unless a revocation came first:
        its callback committed what had been applied."""
        if generation == self._generation:
            self._commit_ends(consumer, ends)

    def _commit_ends(self, consumer: Consumer, ends: dict[int, int]) -> None:
        """A synchronous commit of partition → next offset; a refusal is logged, not raised."""
        try:
            answer = consumer.commit(offsets=[TopicPartition(self.topic, p, end) for p, end in sorted(ends.items())], asynchronous=False)
            failed = [tp for tp in answer or [] if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)
        except KafkaException as exc:
            # The records are applied (their progress is in Redis); whoever reads these
            # partitions next skips them even though the commit did not land.
            log.info("submissions commit not made (%s): a rebalance moved the partitions", exc)


def rebalance_timeout_ms(settings: Settings) -> int:
    """librdkafka's max.poll.interval.ms, which it also sends as the group's rebalance timeout
    (not below the session timeout: librdkafka refuses that)."""
    return int(max(settings.broker_rebalance_timeout, settings.broker_session_timeout) * 1000)


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The submissions consumer's librdkafka configuration: the cluster (:func:`librdkafka_config`),
    its group, manual commits and the fetch sizes (``benchmarks/bench_stream.py`` reads with it too)."""
    return {
        **librdkafka_config(settings),
        "group.id": settings.consumer_group("submissions"),
        "client.id": f"{settings.app_id}-submissions",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.broker_session_timeout * 1000),
        "heartbeat.interval.ms": int(settings.broker_heartbeat_interval * 1000),
        # How long a join waits for the members to come back; the fetch task calls consume at
        # least every STALLED_SECONDS + CONSUME_SECONDS, even while applying is stalled.
        "max.poll.interval.ms": rebalance_timeout_ms(settings),
        "queued.max.messages.kbytes": PREFETCH_KBYTES,
        # How long librdkafka stops fetching a partition once its prefetch queue is over
        # PREFETCH_KBYTES (its default: 1,000 ms). The worker drains that queue (~500 submissions)
        # in well under a second, so with the default it sits idle for the rest of the second:
        # per-batch timings show a ~0.45 s gap with nothing to apply after every ~500
        # submissions (make bench-stream runs the worker with both, docs/performance.md).
        "fetch.queue.backoff.ms": settings.ingest_fetch_backoff_ms,
        # A record larger than a fetch is still returned whole (KIP-74); our own size limit
        # (MMC_MAX_MESSAGE_BYTES) refuses oversize ones with a reason.
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": FETCH_PARTITION_BYTES,
        "receive.message.max.bytes": (64 << 20) + 65536,
        "logger": logging.getLogger(f"{__name__}.librdkafka"),
        "error_cb": _log_client_error,
    }


def as_input_record(message: Message) -> InputRecord:
    """A fetched submissions record as the processor takes it (timestamp in ms, as produced)."""
    return InputRecord(
        topic="submissions",
        partition=message.partition() or 0,  # a fetched message always has both
        offset=message.offset() or 0,
        timestamp_ms=message.timestamp()[1],
        key=message.key(),
        value=message.value(),
    )


def _log_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("committing submissions offsets failed", exc_info=done.exception())


def _log_client_error(error: KafkaError) -> None:
    """librdkafka's client-level errors (a broker unreachable, …): it retries them itself."""
    log.warning("submissions consumer: %s", error)
