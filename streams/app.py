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
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from streams import failpoints
from streams.admin import INPUT_TOPICS, create_topics, kafka_client_options, partitions_for, redis_client
from streams.errors import StateLost
from streams.ingest import SubmissionConsumer
from streams.log_throttle import throttle_root_handlers
from streams.logs import quiet_libraries
from streams.metrics import WorkerMetrics, worker_metrics_page
from streams.outputs import Output
from streams.processing import Processor, SubmissionBatch
from streams.progress import Barrier, applied_marks, mark_applied
from streams.rebuild import PUBLISHING, recover_if_behind
from streams.records import InputRecord
from streams.settings import Settings
from streams.state import RedisState
from streams.transient import is_transient, with_retry

log = logging.getLogger(__name__)

#: Input topics whose records are applied in concurrent batches (different models are independent).
BATCHED_TOPICS = frozenset({"submissions", "stakes"})
#: Models whose stake updates are applied at once. Each holds a Redis connection while it runs,
#: and redis-py's pool refuses more than 100 at a time (MaxConnectionsError, which would only be
#: retried): stay well under it, leaving room for the barriers and the submissions consumer.
CONCURRENT_MODELS = 32
#: Exit status of a worker that stopped because a component failed (EX_SOFTWARE).
EXIT_FAILED = 70
#: Longest the clean shutdown of a failed worker may take before it exits anyway.
FAIL_GRACE_SECONDS = 20.0
#: How often a worker checks that Redis still holds its state (the epoch key).
EPOCH_CHECK_SECONDS = 1.0


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
            for i, record, received_at, event in todo:
                results[i] = (await apply_in_order(self, [(i, record, received_at, event)]))[0]
                marks = applied_marks([record], [results[i]])  # type: ignore[list-item]
                await with_retry(lambda m=marks, t=record.topic: mark_applied(self.state, t, m), f"marking {describe([(record, received_at)])} applied")  # type: ignore[arg-type]
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
        ``FAIL_GRACE_SECONDS`` — with exit status ``EXIT_FAILED``, so that the orchestrator starts
        a new one, which reads the record again. A worker never carries on with a topic nobody
        reads."""
        if self.failure is None:
            self.failure = f"{component} stopped: {type(exc).__name__}: {exc}"
            log.critical("%s; stopping the worker so that it is restarted", self.failure, exc_info=exc)
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = threading.Timer(FAIL_GRACE_SECONDS, _exit_now, (EXIT_FAILED,))
            deadline.daemon = True
            deadline.start()

    def restart_in_place(self, reason: str) -> None:
        """Redis lost the state: stop at once and start again in the same process (the same
        command, re-executed), whose start-up recovery rebuilds the state from the input topics
        before it joins the groups again — publishing only what subscribers may not have had
        (:mod:`streams.rebuild`). Stopping at once is a crash as far as the data goes (what was
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
        web_port=settings.worker_web_port,
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
    app.page("/metrics")(worker_metrics_page(runtime))  # on Faust's web server (MMC_WEB_ENABLED, MMC_WORKER_WEB_PORT)
    app.page("/health")(worker_health_page(runtime))
    for name in INPUT_TOPICS:
        if name != "submissions":
            app.agent(input_topic(app, settings, name), name=f"mmc-{name}")(make_agent(name, runtime))
    submissions = SubmissionConsumer(settings, runtime.processor, lambda records, prepared: apply_unless_applied(runtime, records, prepared))
    runtime.components["submissions consumer"] = submissions.problem
    for name in INPUT_TOPICS:
        if name != "submissions":
            runtime.components[f"{name} agent"] = agent_problem(app, name)

    @app.task
    async def _submissions() -> None:
        await submissions.run()

    @app.task
    async def _ready() -> None:
        # Faust sets up the log handlers as the worker starts; throttle the client libraries there.
        # App tasks start once the worker has joined its group (Faust's own "Ready" line is
        # among the start-up lines quiet_libraries holds back).
        throttle_root_handlers()
        web = f"http://{settings.web_host}:{settings.worker_web_port}" if settings.web_enabled else "off"
        log.info("worker ready: group %s, topics %s*, web server %s", settings.app_id, settings.topic_prefix, web)

    @app.timer(EPOCH_CHECK_SECONDS)
    async def _watch_state() -> None:
        # Notices a lost state even when no output is due (a quiet stream, only submissions).
        if not runtime.started:
            return
        try:
            await runtime.check_state()
        except StateLost:
            pass  # restarting in place
        except Exception as exc:
            if not is_transient(exc):
                raise
            # Redis unreachable: whatever needs it retries; checked again at the next tick

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: Any = None, **kwargs: Any) -> None:  # noqa: ARG001
        # Another worker may now write what this one cached (histories, prepared rounds).
        if runtime.started:
            (await runtime.processor()).forget_cached_state()

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **kwargs: Any) -> None:  # noqa: ARG001
        await runtime.stop()

    return app, runtime


def _exit_now(status: int) -> None:
    """End the process (a failed worker whose clean shutdown did not finish in time)."""
    logging.shutdown()
    os._exit(status)


def worker_health_page(runtime: Runtime) -> Any:
    """``GET /health`` on the worker's web server: 200 with ``{"status": "ok"}``, 503 when
    :meth:`Runtime.health` finds a problem (the Kubernetes liveness probe reads it)."""
    from aiohttp.web import json_response

    async def health(_view: object, _request: object) -> Any:
        body = runtime.health()
        return json_response(body, status=200 if body["status"] == "ok" else 503)

    return health


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
    record still in flight. (``submissions`` have their own consumer: :mod:`streams.ingest`.)

    An exception that escapes (a bug: input refusals and the infrastructure's failures are
    handled below) takes the worker down instead of leaving the topic unread behind a
    healthy-looking process: the orchestrator restarts it, and the record comes again.
    """

    async def agent(stream: faust.StreamT[bytes]) -> None:
        settings = runtime.settings
        try:
            async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_seconds):
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
                lambda r=record, t=received_at, e=event: runtime.handle(r, t, e),
                f"applying {record.topic}[{record.partition}]@{record.offset}",
            )
        )
    return outcomes


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create the topics, then run one Faust worker in the foreground until SIGINT/SIGTERM.

    At ``info`` the log has the worker's own lines (one per scored update) and the client
    libraries' warnings and errors; ``debug`` shows everything.
    """
    quiet_libraries(loglevel)
    asyncio.run(create_topics(settings))
    asyncio.run(recover_if_behind(settings))
    app, runtime = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if runtime.failure is not None:
            raise SystemExit(EXIT_FAILED) from exit_
        raise
