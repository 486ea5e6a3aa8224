"""The worker process: input topics → thin agents → :class:`streams.worker.processor.Processor`.

:func:`create_app` wires the Faust app (:mod:`streams.worker.app`) to one runtime: the agents
(:mod:`streams.worker.agents`), the submissions task, the epoch check and the pages;
:func:`run_worker` runs it. The submissions topic is read by a task with its own librdkafka
consumer (:mod:`streams.worker.ingest`, measured cheaper than a Faust agent or a plain aiokafka
consumer per record); the other topics by agents.

Outputs are produced with a plain aiokafka producer (not Faust's), so their record timestamps
are exactly the input's event time in milliseconds, and every send is acknowledged before the
input is marked applied: delivery is at-least-once with idempotent state and identical bytes
on redelivery. Faust's consumer (and the submissions consumer, after each applied batch)
commits offsets; after a crash the uncommitted tail is re-applied, which changes nothing
(DESIGN §4).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from streams.errors import StateLost
from streams.kafka.topics import INPUT_TOPICS, create_topics
from streams.logs import quiet_libraries
from streams.settings import Settings
from streams.transient import is_transient
from streams.worker.agents import agent_problem, make_agent
from streams.worker.app import faust_app, input_topic
from streams.worker.ingest import SubmissionConsumer
from streams.worker.log_throttle import throttle_root_handlers
from streams.worker.metrics import worker_metrics_page
from streams.worker.rebuild import recover_if_behind
from streams.worker.runtime import EXIT_FAILED, Runtime, apply_unless_applied

log = logging.getLogger(__name__)

#: How often a worker checks that Redis still holds its state (the epoch key).
EPOCH_CHECK_SECONDS = 1.0


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """The Faust app: an agent per input topic but ``submissions``, which a task reads with its
    own consumer (:mod:`streams.worker.ingest`); and the runtime they all use."""
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


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Create the topics, then run one Faust worker in the foreground until SIGINT/SIGTERM.

    At ``info`` the log has the worker's own lines (one per scored update) and the client
    libraries' warnings and errors; ``debug`` shows everything.

    This is the worker's composition root. Topic creation and start-up recovery
    (:func:`~streams.worker.rebuild.recover_if_behind`) run to completion first, each on its
    own short event loop with clients it opens and closes (an asyncio client belongs to the
    loop that created it, and Faust's loop does not exist yet); then :func:`create_app` builds
    the one :class:`~streams.worker.runtime.Runtime` whose Redis state, barrier and producer
    every agent and the submissions consumer share.
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
