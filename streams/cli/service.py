"""The deployment's processes: ``mmc topics``, ``worker``, ``rebuild`` and ``web``, each after waiting for Kafka and Redis."""

from __future__ import annotations

import asyncio
from enum import StrEnum

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.cli.console import fail, settings_or_exit, stderr
from streams.cli.startup import wait_or_exit
from streams.errors import MmcStreamError


def topics() -> None:
    """Create the service's topics on the configured broker (existing ones are kept).

    Waits for the broker first (up to MMC_STARTUP_TIMEOUT_SECONDS; exit status 3 if it does
    not answer).

    Reads MMC_KAFKA_BOOTSTRAP and the other MMC_KAFKA_* settings (security), MMC_TOPIC_PREFIX,
    MMC_PARTITIONS, MMC_REPLICATION_FACTOR, MMC_STARTUP_TIMEOUT_SECONDS and
    MMC_STARTUP_RETRY_MAX_SECONDS.
    """
    from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS, create_topics, partitions_for

    settings = settings_or_exit()
    wait_or_exit(settings, redis=False)
    try:
        outcome = asyncio.run(create_topics(settings))
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"topics on {settings.kafka_bootstrap}")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    table.add_column("state")
    for name in (*INPUT_TOPICS, *OUTPUT_TOPICS):
        topic = settings.topic(name)
        table.add_row(topic, str(partitions_for(settings, name)), outcome[topic])
    Console().print(table)


def worker() -> None:
    """Run a scoring worker (Faust) against the configured broker and Redis.

    Waits for both first (up to MMC_STARTUP_TIMEOUT_SECONDS; exit status 3 if one does not
    answer), then logs one line per scored update. Its own web server (/health, /metrics)
    listens on MMC_WORKER_WEB_PORT (default 6066) unless MMC_WEB_ENABLED=false. Start several
    to share the partitions (on one machine, give each its own MMC_WORKER_WEB_PORT).

    Reads every MMC_* setting (.env.example lists them), above all MMC_KAFKA_BOOTSTRAP,
    MMC_REDIS_URL, MMC_TOPIC_PREFIX, MMC_APP_ID (its consumer group), MMC_STATE_NAMESPACE,
    MMC_WEB_ENABLED, MMC_WEB_HOST and MMC_WORKER_WEB_PORT.
    """
    settings = settings_or_exit()
    wait_or_exit(settings)  # before importing the worker, which takes seconds
    try:
        from streams.worker.main import run_worker
    except ImportError as exc:
        raise fail(f"the worker is not available: cannot import streams.worker.main.run_worker ({exc})") from exc
    try:
        run_worker(settings)
    except MmcStreamError as exc:  # topic creation or recovery, before Faust takes over
        raise fail(escape(str(exc))) from exc


class PublishMode(StrEnum):
    unfinished = "unfinished"
    all = "all"
    none = "none"


def rebuild(
    wipe: bool = typer.Option(False, "--wipe", help="Delete every key of MMC_STATE_NAMESPACE first (rebuild from scratch)."),
    publish: PublishMode = typer.Option(
        PublishMode.unfinished,
        "--publish",
        help="Outputs to send: 'unfinished' (records at/after the worker groups' committed offsets), 'all' or 'none'.",
    ),
) -> None:
    """Rebuild the Redis state from the input topics (stop the workers first).

    Applies every input record the state has not applied (all of them after --wipe or a lost
    Redis), in the worker's own code path; the worker does the same by itself at start-up
    when it finds the state behind its groups' committed offsets.

    Reads MMC_KAFKA_* and MMC_REDIS_* (connections), MMC_TOPIC_PREFIX, MMC_APP_ID (whose
    committed offsets --publish unfinished uses), MMC_STATE_NAMESPACE, the scoring and alert
    settings as the workers do, and MMC_STARTUP_TIMEOUT_SECONDS.
    """
    settings = settings_or_exit()
    wait_or_exit(settings)
    from streams.worker.rebuild import rebuild as run_rebuild

    try:
        report = asyncio.run(run_rebuild(settings, publish=publish.value, wipe=wipe))
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
    Console().print(f"rebuilt namespace {settings.state_namespace!r}: {report.summary()}")


def web(
    host: str | None = typer.Option(None, "--host", help="Bind address (default MMC_WEB_HOST)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (default MMC_WEB_PORT; 0 picks a free one)."),
) -> None:
    """Serve the live leaderboard page, the JSON API (/api/...) and /metrics until Ctrl-C.

    A separate process from the workers: it reads Redis and follows the output topics with its
    own consumer (no group), so it scales on its own (see streams.web). It listens on
    MMC_WEB_PORT (default 8080); workers serve their health and metrics on another port,
    MMC_WORKER_WEB_PORT (default 6066), so both run side by side.

    Reads MMC_WEB_HOST, MMC_WEB_PORT, MMC_WEB_LIVE_* (live clients), MMC_KAFKA_* and
    MMC_REDIS_* (connections), MMC_TOPIC_PREFIX, MMC_STATE_NAMESPACE and
    MMC_STARTUP_TIMEOUT_SECONDS.
    """
    settings = settings_or_exit()
    wait_or_exit(settings)  # before importing the web server, which takes seconds
    from streams.web import run_web

    console = stderr()
    try:
        run_web(settings, host, port, ready=lambda url: console.print(f"serving {url} - Ctrl-C to stop", highlight=False))
    except OSError as exc:
        raise fail(f"cannot serve on {host or settings.web_host}:{settings.web_port if port is None else port}: {exc}") from exc
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
