"""The Faust app: input topics → thin agents → :class:`streams.processing.Processor`.

:func:`create_app` only builds the app and its agents; :func:`run_worker` runs it. The
submissions topic is read by a task with its own librdkafka consumer (:mod:`streams.ingest`,
measured cheaper than a Faust agent or a plain aiokafka consumer per record); the other topics by agents. Each agent
turns a Kafka message into an :class:`~streams.records.InputRecord`, hands it to the processor,
and records the offset as applied (for the barriers of :mod:`streams.progress`). Redis or Kafka
being unreachable makes the agent retry the same record with backoff; nothing about an input
can stop the agent (refusals go to the dead-letter topic).

Outputs are produced with a plain aiokafka producer (not Faust's), so their record timestamps
are exactly the input's event time in milliseconds, and every send is acknowledged before the
input is marked applied: delivery is at-least-once with idempotent state and identical bytes
on redelivery. Faust's consumer (and the submissions consumer, after each applied batch)
commits offsets; after a crash the uncommitted tail is
re-applied, which changes nothing (DESIGN §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from streams.admin import INPUT_TOPICS, create_topics, kafka_client_options, partitions_for, redis_client
from streams.ingest import SubmissionConsumer
from streams.metrics import WorkerMetrics, worker_metrics_page
from streams.outputs import Output
from streams.processing import Processor, SubmissionBatch, is_transient
from streams.progress import Barrier, mark_applied
from streams.rebuild import PUBLISHING, recover_if_behind
from streams.records import InputRecord
from streams.settings import Settings
from streams.state import RedisState

log = logging.getLogger(__name__)

#: Input topics whose records are applied in concurrent batches (different models are independent).
BATCHED_TOPICS = frozenset({"submissions", "stakes"})
#: Models whose stake updates are applied at once. Each holds a Redis connection while it runs,
#: and redis-py's pool refuses more than 100 at a time (MaxConnectionsError, which would only be
#: retried): stay well under it, leaving room for the barriers and the submissions consumer.
CONCURRENT_MODELS = 32
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


class Runtime:
    """The worker's connections (Redis, the output producer, the barrier), started on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = asyncio.Lock()
        self._processor: Processor | None = None
        self._producer: AIOKafkaProducer | None = None
        self.state: RedisState | None = None
        self.barrier: Barrier | None = None
        self.metrics = WorkerMetrics()  # served at /metrics (streams.metrics)
        self.on_sent: Callable[[int], None] | None = None  # told how many outputs each send carried

    @property
    def started(self) -> bool:
        return self._processor is not None

    async def processor(self) -> Processor:
        if self._processor is None:
            async with self._lock:
                if self._processor is None:
                    self.state = RedisState(redis_client(self.settings), self.settings.state_namespace)
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

    async def handle(self, record: InputRecord, received_at: float) -> str:
        """Apply one record through the processor and count it."""
        outcome = await (await self.processor()).handle(record, received_at)
        self.metrics.input_handled(record.topic, outcome, received_at)
        return outcome

    async def handle_records(self, records: list[tuple[InputRecord, float]], prepared: SubmissionBatch | None = None) -> None:
        """Apply records of one topic in log order (consumers and barrier catch-ups alike).

        Submissions go through the processor's batch path (``prepared``: what the submissions
        consumer already started for them, :meth:`Processor.prepare_submissions`); stakes record by record, records
        with different keys (different models) concurrently, ``CONCURRENT_MODELS`` at a time; rounds and targets strictly one
        after another (their single partition's order is what makes the outputs deterministic).
        """
        if not records:
            return
        processor = await self.processor()
        if records[0][0].topic == "submissions":
            outcomes = await with_retry(lambda: processor.handle_submissions(records, prepared))
            for (record, received_at), outcome in zip(records, outcomes, strict=True):
                self.metrics.input_handled(record.topic, outcome, received_at)
            return
        if records[0][0].topic not in BATCHED_TOPICS:  # rounds, targets: one total order
            await apply_in_order(self, records)
            return
        by_key: dict[tuple[int, bytes | None], list[tuple[InputRecord, float]]] = {}
        for record, received_at in records:
            by_key.setdefault((record.partition, record.key), []).append((record, received_at))
        groups = list(by_key.values())
        for first in range(0, len(groups), CONCURRENT_MODELS):
            await asyncio.gather(*(apply_in_order(self, group) for group in groups[first : first + CONCURRENT_MODELS]))

    async def send(self, outputs: list[Output]) -> None:
        """Produce every output and wait until the broker acknowledged all of them."""
        if self._producer is None:
            raise RuntimeError("runtime not started")
        if self.on_sent is not None:
            self.on_sent(len(outputs))
        if not PUBLISHING.get():  # a rebuild recomputing outputs subscribers already have
            return
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


def faust_broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",") if server.strip())


def faust_credentials(settings: Settings) -> Any:
    """Faust's credentials object for the configured SASL/TLS, or None for PLAINTEXT."""
    options = kafka_client_options(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=options.get("ssl_context"),
    )


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured as the worker's (group = ``MMC_APP_ID``), without agents yet."""
    # Faust keeps nothing of ours on disk (state is in Redis); keep its data dir out of the cwd.
    datadir = os.path.join(tempfile.gettempdir(), "mmc-stream-faust", settings.app_id)
    os.makedirs(datadir, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=faust_broker_url(settings),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=datadir,
        # Topics are created by streams.admin.create_topics (partitions, compaction); Faust must
        # not declare them, nor its leader topic.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_max_poll_records=50,
        stream_buffer_maxsize=256,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        producer_max_request_size=8 << 20,
        consumer_max_fetch_size=16 << 20,
    )
    return app


def input_topic(app: faust.App, settings: Settings, name: str) -> Any:
    """Input topic ``name`` (short name) as the agents read it: raw key and value bytes."""
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions_for(settings, name),
    )


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """The Faust app: an agent per input topic but ``submissions``, which a task reads with its
    own consumer (:mod:`streams.ingest`); and the runtime they all use."""
    app = faust_app(settings)
    runtime = Runtime(settings)
    app.page("/metrics")(worker_metrics_page(runtime))  # on Faust's web server (MMC_WEB_ENABLED)
    for name in INPUT_TOPICS:
        if name != "submissions":
            app.agent(input_topic(app, settings, name), name=f"mmc-{name}")(make_agent(name, runtime))
    submissions = SubmissionConsumer(settings, runtime.processor, lambda records, prepared: apply_unless_applied(runtime, records, prepared))

    @app.task
    async def _submissions() -> None:
        await submissions.run()

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: Any = None, **kwargs: Any) -> None:  # noqa: ARG001
        # Another worker may now write what this one cached (histories, prepared rounds).
        if runtime.started:
            (await runtime.processor()).forget_cached_state()

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **kwargs: Any) -> None:  # noqa: ARG001
        await runtime.stop()

    return app, runtime


def make_agent(name: str, runtime: Runtime) -> Any:
    """The agent for input topic ``name``: records in, processor, offsets marked applied.

    ``rounds`` and ``targets`` (one partition each) are applied one record at a time, in log
    order. ``stakes`` are taken in small batches whose records are applied concurrently, except
    that records with the same key (the same model) stay in log order; offsets are marked
    applied once the whole batch is done, so a barrier never passes a record still in flight.
    (``submissions`` have their own consumer: :mod:`streams.ingest`.)
    """

    async def sequential(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await apply_unless_applied(runtime, [as_record(name, event)])

    async def batched(stream: faust.StreamT[bytes]) -> None:
        settings = runtime.settings
        async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_seconds):
            await apply_unless_applied(runtime, [as_record(name, event) for event in events])

    agent = batched if name in BATCHED_TOPICS else sequential
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
        done = await with_retry(lambda: state.progress(topic))
        pending = [(r, t) for r, t in records if r.offset >= done.get(r.partition, 0)]
        await runtime.handle_records(pending, prepared)
        await with_retry(lambda: mark_applied(state, topic, [(r.partition, r.offset, r.timestamp_ms) for r, _ in pending]))


async def with_retry(call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` until the infrastructure lets it through."""
    delay = RETRY_MIN_SECONDS
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("retrying in %.1f s: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)


async def apply_in_order(runtime: Runtime, group: list[tuple[InputRecord, float]]) -> None:
    """Apply records one after another, each retried until the infrastructure lets it through."""
    for record, received_at in group:
        await with_retry(lambda r=record, t=received_at: runtime.handle(r, t))


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create the topics, then run one Faust worker in the foreground until SIGINT/SIGTERM."""
    asyncio.run(create_topics(settings))
    asyncio.run(recover_if_behind(settings))
    app, _runtime = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
