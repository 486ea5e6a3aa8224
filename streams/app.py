"""The Faust app: input topics → thin agents → :class:`streams.worker.processor.Processor`.

:func:`create_app` only builds the app and its agents; :func:`run_worker` runs it. The
submissions topic is read by a task with its own librdkafka consumer (:mod:`streams.ingest`,
measured cheaper than a Faust agent or a plain aiokafka consumer per record); the other topics by agents. Each agent
turns a Kafka message into an :class:`~streams.messages.records.InputRecord`, hands it to the processor,
and records the offset as applied (for the barriers of :mod:`streams.state.progress`). Redis or Kafka
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
import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import faust

from streams import failpoints
from streams.errors import StateLost
from streams.ingest import SubmissionConsumer
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import INPUT_TOPICS, create_topics, partitions_for
from streams.log_throttle import throttle_root_handlers
from streams.logs import quiet_libraries
from streams.messages.records import InputRecord
from streams.metrics import worker_metrics_page
from streams.rebuild import recover_if_behind
from streams.runtime import EXIT_FAILED, Runtime, apply_unless_applied
from streams.settings import Settings
from streams.transient import is_transient

log = logging.getLogger(__name__)

#: How often a worker checks that Redis still holds its state (the epoch key).
EPOCH_CHECK_SECONDS = 1.0


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
        # Topics are created by streams.kafka.topics.create_topics (partitions, compaction); Faust must
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
