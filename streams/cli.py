"""The ``mmc`` command line: the embedded stack, topic creation and the worker.

Every command reads its configuration from the ``MMC_*`` environment through
:class:`streams.settings.Settings`. Machine-readable output goes to stdout, everything for
a person (progress, errors) to stderr, so ``mmc stack > env.sh`` works; ``mmc stack --env-file``
writes the same lines to a file once the stack is up, for a stack run in the background.

``mmc worker``, ``topics``, ``rebuild`` and ``web`` first wait for the services they use
(Kafka; Redis too except for ``topics``), one log line per attempt, for up to
``MMC_STARTUP_TIMEOUT_SECONDS``. Exit status: 0 done, 1 failed, 2 invalid settings or
arguments, 3 Kafka or Redis did not answer in time (one ``error:`` line names which, where and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.errors import DependencyUnavailable, MmcStreamError
from streams.settings import Settings, load_settings

app = typer.Typer(
    name="mmc",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, as click lays it out: flags without type tags, paragraphs rewrapped to the
    # terminal, nothing split mid-word at 80 columns, and no markup to escape. Help texts are
    # plain text: no RST double backquotes (tests/streams/test_cli.py checks every command).
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"mmc-stream {version('mmc-stream')}")
        raise typer.Exit()


@app.callback()
def _main(
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Streaming CORR/MMC scorer for a stake-weighted tournament (Kafka + Redis).

    Every command reads its configuration from MMC_* environment variables (.env.example
    lists them all); each command's --help names the ones it reads.
    """


def _stderr() -> Console:
    """A console on stderr (people) - stdout is kept for machine-readable lines."""
    return Console(stderr=True)


def _settings_or_exit() -> Settings:
    """Read the environment, or explain what is wrong and exit with status 2."""
    try:
        return load_settings()
    except ValidationError as exc:
        _stderr().print(f"[red]invalid MMC_* settings:[/red]\n{exc}")
        raise typer.Exit(2) from exc


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise."""
    _stderr().print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


#: Exit status when Kafka or Redis did not answer within ``MMC_STARTUP_TIMEOUT_SECONDS``.
EXIT_UNAVAILABLE = 3


@contextlib.contextmanager
def _startup_logging() -> Iterator[None]:
    """Show the start-up wait's lines (``streams.admin``) on stderr, and only those.

    aiokafka logs an error of its own for every failed connection; while the wait reports
    each attempt in one line, those are held back.
    """
    ours, aiokafka = logging.getLogger("streams.admin"), logging.getLogger("aiokafka")
    saved = (ours.level, ours.propagate, aiokafka.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    aiokafka.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        aiokafka.setLevel(saved[2])


def _wait_for_dependencies(settings: Settings, *, kafka: bool = True, redis: bool = True) -> None:
    """Wait until Kafka and/or Redis answer, or exit with one ``error:`` line (status 3)."""
    from streams.admin import wait_for_dependencies

    try:
        with _startup_logging():
            asyncio.run(wait_for_dependencies(settings, kafka=kafka, redis=redis))
    except DependencyUnavailable as exc:
        raise _fail(escape(str(exc)), code=EXIT_UNAVAILABLE) from exc
    except MmcStreamError as exc:
        raise _fail(escape(str(exc))) from exc


@app.command()
def stack(
    kafka_port: int = typer.Option(0, help="Broker port; 0 picks a free one."),
    redis_port: int = typer.Option(0, help="Redis port; 0 picks a free one."),
    with_topics: bool = typer.Option(True, "--topics/--no-topics", help="Create the service's topics once the broker is up."),
    env_file: Path | None = typer.Option(
        None,
        "--env-file",
        dir_okay=False,
        help="Also write the export lines to this file once the stack is up (replaced atomically; removed when the stack stops), for '. FILE' in other shells.",
    ),
) -> None:
    """Run the embedded broker (Tansu) and Redis in the foreground until Ctrl-C or SIGTERM.

    Prints 'export MMC_KAFKA_BOOTSTRAP=…' and 'export MMC_REDIS_URL=…' on stdout. With
    --env-file FILE it also writes them to FILE once both answer, and removes FILE when it
    stops. In the background:

    \b
      mmc stack --env-file .mmc.env &
      . ./.mmc.env        # once the file is there; in any shell

    Reads MMC_TOPIC_PREFIX, MMC_PARTITIONS and MMC_REPLICATION_FACTOR (for the topics it
    creates). The broker is plaintext and Redis has no password, whatever MMC_KAFKA_* and
    MMC_REDIS_* say.
    """
    from streams.admin import create_topics
    from streams.stack import EmbeddedStack

    console = _stderr()
    if env_file is not None:
        # A file left by an earlier stack names ports nobody serves: whoever waits for the
        # file must not find it before this stack is up.
        try:
            env_file.unlink(missing_ok=True)
        except OSError as exc:
            raise _fail(f"cannot replace {env_file}: {exc}", code=2) from exc
    written: str | None = None
    stop = threading.Event()
    received: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    # Handlers first: a signal during startup still ends in a clean stop.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), request_stop)

    settings = _settings_or_exit()
    began = time.perf_counter()
    try:
        with EmbeddedStack(kafka_port=kafka_port or None, redis_port=redis_port or None) as running:
            if with_topics:
                # The embedded broker is plaintext and Redis has no password, whatever the
                # environment says about a production cluster.
                stack_settings = settings.model_copy(
                    update={
                        "kafka_bootstrap": running.kafka_bootstrap,
                        "redis_url": running.redis_url,
                        "kafka_security_protocol": "PLAINTEXT",
                        "kafka_ssl_cafile": None,
                        "kafka_ssl_certfile": None,
                        "kafka_ssl_keyfile": None,
                        "redis_password": None,
                        "redis_ssl_ca_certs": None,
                    }
                )
                created = asyncio.run(create_topics(stack_settings))
                console.print(
                    f"topics: {len(created)} with prefix {settings.topic_prefix!r}; {_partition_counts(settings)}",
                    highlight=False,
                    soft_wrap=True,
                )
            if not stop.is_set():  # a signal while starting: stop without announcing
                exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in running.env().items())
                if env_file is not None:
                    try:
                        _write_atomically(env_file, exports)
                    except OSError as exc:
                        raise _fail(f"cannot write {env_file}: {exc}") from exc
                    written = exports
                sys.stdout.write(exports)
                sys.stdout.flush()
                console.print(
                    f"stack ready in {time.perf_counter() - began:.2f} s "
                    f"(broker pid {running.pids['kafka']}, redis pid {running.pids['redis']})"
                    + (f"; wrote {env_file}: '. {_sourceable(env_file)}' in other shells" if written and env_file is not None else "")
                    + f"; Ctrl-C or 'kill {os.getpid()}' to stop",
                    highlight=False,
                    soft_wrap=True,
                )
            while not stop.wait(0.5):
                running.check()
            console.print(
                f"{signal.Signals(received[-1]).name}: stopping the embedded stack …",
                highlight=False,
            )
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    finally:
        if written is not None:
            _remove_if_unchanged(env_file, written)
    console.print("stopped", highlight=False)


def _partition_counts(settings: Settings) -> str:
    """Each topic's partition count, as created: ``rounds, targets: 1 partition; submissions, …: 4 partitions each``."""
    from streams.admin import INPUT_TOPICS, OUTPUT_TOPICS, partitions_for

    by_count: dict[int, list[str]] = {}
    for name in (*INPUT_TOPICS, *OUTPUT_TOPICS):
        by_count.setdefault(partitions_for(settings, name), []).append(name)
    return "; ".join(
        f"{', '.join(names)}: {count} partition{'' if count == 1 else 's'}" + (" each" if len(names) > 1 else "") for count, names in sorted(by_count.items())
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader finds either no file or all of it."""
    path = path.absolute()
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    try:
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise


def _sourceable(path: Path) -> str:
    """``path`` as ``.`` (POSIX ``source``) takes it: a bare name would be looked up in PATH."""
    text = str(path)
    return text if "/" in text else f"./{text}"


def _remove_if_unchanged(path: Path | None, text: str) -> None:
    """Remove the env file this stack wrote, unless something else has replaced it since."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            path.unlink()


@app.command()
def topics() -> None:
    """Create the service's topics on the configured broker (existing ones are kept).

    Waits for the broker first (up to MMC_STARTUP_TIMEOUT_SECONDS; exit status 3 if it does
    not answer).

    Reads MMC_KAFKA_BOOTSTRAP and the other MMC_KAFKA_* settings (security), MMC_TOPIC_PREFIX,
    MMC_PARTITIONS, MMC_REPLICATION_FACTOR, MMC_STARTUP_TIMEOUT_SECONDS and
    MMC_STARTUP_RETRY_MAX_SECONDS.
    """
    from streams.admin import INPUT_TOPICS, OUTPUT_TOPICS, create_topics, partitions_for

    settings = _settings_or_exit()
    _wait_for_dependencies(settings, redis=False)
    try:
        outcome = asyncio.run(create_topics(settings))
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title=f"topics on {settings.kafka_bootstrap}")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    table.add_column("state")
    for name in (*INPUT_TOPICS, *OUTPUT_TOPICS):
        topic = settings.topic(name)
        table.add_row(topic, str(partitions_for(settings, name)), outcome[topic])
    Console().print(table)


@app.command()
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
    settings = _settings_or_exit()
    if importlib.util.find_spec("streams.app") is None:
        raise _fail("the worker is not available: there is no streams.app module")
    _wait_for_dependencies(settings)  # before importing the worker, which takes seconds
    try:
        from streams.app import run_worker
    except ImportError as exc:
        raise _fail(f"the worker is not available: cannot import streams.app.run_worker ({exc})") from exc
    try:
        run_worker(settings)
    except MmcStreamError as exc:  # topic creation or recovery, before Faust takes over
        raise _fail(escape(str(exc))) from exc


class PublishMode(StrEnum):
    unfinished = "unfinished"
    all = "all"
    none = "none"


@app.command()
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
    settings = _settings_or_exit()
    _wait_for_dependencies(settings)
    from streams.rebuild import rebuild as run_rebuild

    try:
        report = asyncio.run(run_rebuild(settings, publish=publish.value, wipe=wipe))
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    Console().print(f"rebuilt namespace {settings.state_namespace!r}: {report.summary()}")


@app.command()
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
    settings = _settings_or_exit()
    _wait_for_dependencies(settings)  # before importing the web server, which takes seconds
    from streams.web import run_web

    console = _stderr()
    try:
        run_web(settings, host, port, ready=lambda url: console.print(f"serving {url} - Ctrl-C to stop", highlight=False))
    except OSError as exc:
        raise _fail(f"cannot serve on {host or settings.web_host}:{settings.web_port if port is None else port}: {exc}") from exc
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc


# ------------------------------------------------------------------ simulate, replay, tail, report


class TopicName(StrEnum):
    """Short names of every topic `mmc tail` can read."""

    scores = "scores"
    alerts = "alerts"
    leaderboard = "leaderboard"
    crowding = "crowding"
    deadletter = "deadletter"
    rounds = "rounds"
    submissions = "submissions"
    stakes = "stakes"
    targets = "targets"


def _topic_name(value: str) -> str:
    """``mmc tail``'s TOPIC argument: one of :class:`TopicName`."""
    if value not in TopicName.__members__:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(TopicName)}")
    return value


def _send_with_progress(settings: Settings, events: Iterable[Any], totals: dict[str, int]) -> dict[str, int]:
    """Create the topics, then send ``events`` with one progress bar per topic (on stderr)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from streams.admin import create_topics
    from streams.replay import send_events

    asyncio.run(create_topics(settings))
    with Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_stderr(),
    ) as progress:
        tasks = {topic: progress.add_task(settings.topic(topic), total=total) for topic, total in totals.items()}

        def advance(topic: str, n: int) -> None:
            if topic not in tasks:
                tasks[topic] = progress.add_task(settings.topic(topic), total=None)
            progress.advance(tasks[topic], n)

        return asyncio.run(send_events(settings, events, progress=advance))


@app.command()
def simulate(
    out: Path | None = typer.Option(None, "--out", help="Write the events to this JSON Lines file."),
    send: bool = typer.Option(False, "--send", help="Send the events to the configured broker's input topics."),
    small: bool = typer.Option(
        False,
        "--small",
        help="Start from the small test preset (120 models × 600 ids × 30 rounds).",
    ),
    models: int | None = typer.Option(None, "--models", help="Models (default 300)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Rounds (default 40)."),
    ids: int | None = typer.Option(None, "--ids", help="Ids per round (default 2,000)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default 2026): same seed, same events."),
    start_round: int | None = typer.Option(None, "--start-round", help="Number of the first round (default 1)."),
    jumps: int | None = typer.Option(
        None, "--jumps", help="At most this many large reinvestments (a stake raised ≥5× after a good run) in the season (default 12)."
    ),
    crowd_weight: float | None = typer.Option(
        None, "--crowd-weight", help="Mean crowd share of the founders' models; later arrivals lean on the crowd less (default 0.8)."
    ),
    early_nulls: float | None = typer.Option(None, "--early-nulls", help="Share of ids without a target on day 1 (default 0)."),
) -> None:
    """Simulate a tournament season and write it to a file (--out) or the topics (--send).

    Same options and seed give the same events, byte for byte. Prints a summary on stderr.

    With --send, reads MMC_KAFKA_* (connection), MMC_TOPIC_PREFIX, MMC_PARTITIONS and
    MMC_REPLICATION_FACTOR (it creates missing topics); --out alone reads no MMC_* setting.
    """
    from streams.simulation import Simulation, SimulationConfig

    if out is None and not send:
        raise _fail("say where the events go: --out FILE.jsonl and/or --send", code=2)
    knobs: dict[str, Any] = {
        "n_models": models,
        "n_rounds": rounds,
        "n_ids": ids,
        "seed": seed,
        "start_round": start_round,
        "n_jumps": jumps,
        "crowd_weight": crowd_weight,
        "early_null_fraction": early_nulls,
    }
    given = {name: value for name, value in knobs.items() if value is not None}
    try:
        config = SimulationConfig.small(**given) if small else SimulationConfig(**given)
    except ValueError as exc:
        raise _fail(str(exc), code=2) from exc
    settings = _settings_or_exit() if send else None
    console = _stderr()
    began = time.perf_counter()
    simulation = Simulation(config)
    totals = simulation.event_counts()
    planned = time.perf_counter() - began
    console.print(
        f"season planned in {planned:.1f} s: {config.n_models} models × {config.n_ids} ids × "
        f"{config.n_rounds} rounds (seed {config.seed}), {len(simulation.jumps)} stake jumps, "
        f"{sum(totals.values()):,} events",
        highlight=False,
    )
    try:
        if out is not None:
            from rich.progress import Progress

            from streams.replay import write_events

            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"writing {out}", total=sum(totals.values()))

                def counted() -> Iterator[Any]:
                    for n, event in enumerate(simulation.events(), start=1):
                        yield event
                        if n % 500 == 0:
                            progress.update(task, completed=n)

                written = write_events(counted(), out)
            elapsed = time.perf_counter() - began
            size = out.stat().st_size
            console.print(
                f"wrote {written:,} events to {out} ({size / 1e6:,.1f} MB) in {elapsed:.1f} s",
                highlight=False,
            )
        if settings is not None:
            sent_began = time.perf_counter()
            sent = _send_with_progress(settings, simulation.events(), totals)
            console.print(
                f"sent {sum(sent.values()):,} events to {settings.kafka_bootstrap} in {time.perf_counter() - sent_began:.1f} s",
                highlight=False,
            )
    except (MmcStreamError, OSError) as exc:
        raise _fail(str(exc)) from exc


@app.command()
def replay(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="FILE", help="A JSON Lines event file (mmc simulate --out)."),
) -> None:
    """Send an event file to the configured broker's input topics, with progress per topic.

    Reads MMC_KAFKA_* (connection), MMC_TOPIC_PREFIX, MMC_PARTITIONS and
    MMC_REPLICATION_FACTOR (it creates missing topics).
    """
    from streams.replay import count_events, read_events

    settings = _settings_or_exit()
    began = time.perf_counter()
    try:
        sent = _send_with_progress(settings, read_events(file), count_events(file))
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    _stderr().print(
        f"sent {sum(sent.values()):,} events ({', '.join(f'{topic} {n:,}' for topic, n in sorted(sent.items()))}) in {time.perf_counter() - began:.1f} s",
        highlight=False,
    )


@app.command()
def tail(
    topic: str = typer.Argument(
        ...,
        metavar="TOPIC",
        callback=_topic_name,
        help=f"One of {', '.join(TopicName)} (the prefix comes from MMC_TOPIC_PREFIX).",
    ),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest message, not the newest."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after this many messages."),
    group: str | None = typer.Option(None, "--group", help="Join this consumer group and commit (resumes later)."),
    until_end: bool = typer.Option(False, "--until-end", help="Stop once caught up with the topic's current end."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Each message whole, as one JSON object per line (for jq): its value as sent, with topic, partition, offset, timestamp, key and headers.",
    ),
) -> None:
    """Print a topic's messages, one compact line each, until Ctrl-C (or --limit / --until-end).

    A line is the event time, the topic, the key and the topic's main fields, floats to 4
    significant digits (lists as their length); --json prints every message whole.

    Reads MMC_KAFKA_* (connection) and MMC_TOPIC_PREFIX; with --group also
    MMC_BROKER_SESSION_TIMEOUT and MMC_BROKER_HEARTBEAT_INTERVAL.
    """
    import orjson

    from streams.tail import describe
    from streams.tail import tail as tail_topic

    settings = _settings_or_exit()
    if until_end and group is not None:
        raise _fail("--until-end reads without a group; drop --group", code=2)
    # In a terminal one line per message, cut at its width; into a pipe or file, whole lines.
    console = Console()
    fit: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis", "crop": True} if sys.stdout.isatty() else {"soft_wrap": True}

    async def run() -> int:
        shown = 0
        async for message in tail_topic(
            settings,
            topic,
            from_beginning=from_beginning,
            limit=limit,
            group=group,
            until_end=until_end,
        ):
            if as_json:
                line = {
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "timestamp_ms": message.timestamp_ms,
                    "key": message.key,
                    "value": message.value,
                    "headers": dict(message.headers),
                }
                sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
                sys.stdout.flush()
            else:
                console.print(describe(message), **fit)
            shown += 1
        return shown

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def report(
    out: Path = typer.Option(Path("report"), "--out", help="Directory for report.html and the PNG charts."),
) -> None:
    """Read the scores topic, write the crowding report (HTML + 4 charts), print the headline.

    Reads MMC_KAFKA_* (connection) and MMC_TOPIC_PREFIX (the scores and alerts topics).
    """
    from streams.report import alert_rates_line, build_report, headline_table

    settings = _settings_or_exit()
    began = time.perf_counter()
    try:
        built = asyncio.run(build_report(settings, out))
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    if built.report.n_observations == 0:
        _stderr().print(
            f"[yellow]no scores on {settings.topic('scores')} yet[/yellow] - is a worker running? (empty charts written to {out})",
            highlight=False,
        )
    Console().print(headline_table(built))
    Console().print(alert_rates_line(built), highlight=False)
    _stderr().print(
        f"read {built.messages_read:,} score updates in {time.perf_counter() - began:.1f} s; wrote {built.files.html} and {len(built.files.charts)} charts",
        highlight=False,
    )


@app.command()
def demo(
    models: int = typer.Option(120, help="Models in the simulated season."),
    ids: int = typer.Option(5000, help="Ids per round."),
    rounds: int = typer.Option(30, help="Rounds."),
    days: int = typer.Option(20, help="Daily target updates per round (the last one final)."),
    seed: int = typer.Option(2026, help="Simulator seed (the same seed gives the same season)."),
    workers: int = typer.Option(1, help="Worker processes sharing the partitions."),
    out: Path = typer.Option(Path("out/demo"), "--out", help="Directory for the report, charts and worker logs."),
) -> None:
    """The main job on the embedded stack: a simulated season streamed live, then the crowding report.

    Starts its own broker and Redis, so it reads no connection setting; the other MMC_*
    settings of the environment (MMC_TOPIC_PREFIX, MMC_PARTITIONS, the scoring and alert
    thresholds) apply to it and to its workers.
    """
    from streams.demo import DemoConfig, run_demo

    config = DemoConfig(
        n_models=models,
        n_ids=ids,
        n_rounds=rounds,
        resolution_days=days,
        seed=seed,
        workers=workers,
        out_dir=out,
    )
    try:
        run_demo(config)
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def whatif(
    model: str = typer.Argument(..., metavar="MODEL", help="Model id."),
    stake_multiplier: float | None = typer.Option(None, "--stake-multiplier", "-k", min=0, help="Multiply the model's stake by K."),
    stake: float | None = typer.Option(
        None,
        "--stake",
        min=0,
        help="Set the model's stake to X (works for a model with no stake; after a jump from S, --stake S gives the jump's mechanical part).",
    ),
    rounds: int = typer.Option(5, min=1, help="How many of the model's latest scored rounds."),
) -> None:
    """A model's recent MMC, contribution and CWMM had its stake been K× or X (from the service's state).

    Both sides use the deployment's bootstrap settings, so the actual side is the MMC the
    service published.

    Reads MMC_REDIS_* (connection), MMC_STATE_NAMESPACE, and MMC_MMC_DRAWS, MMC_MMC_FRACTION,
    MMC_SEED_SALT and MMC_MAX_MISSING_RATIO (give them the workers' values).
    """
    from streams.whatif import mean_change, mechanical, stake_whatif, whatif_table

    if (stake_multiplier is None) == (stake is None):
        raise _fail("give exactly one of --stake-multiplier K and --stake X")
    settings = _settings_or_exit()
    try:
        rows = asyncio.run(stake_whatif(settings, model, stake_multiplier, rounds, stake=stake))
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    change = f"stake × {stake_multiplier:g}" if stake is None else f"stake = {stake:,.2f}"
    Console().print(whatif_table(model, rows, change))
    if rows:
        d_mmc, d_contribution = mean_change(rows)
        _stderr().print(
            f"mean change: MMC (today's: contribution) {d_contribution:+.4f}, MMC 2020 (bootstrap) {d_mmc:+.4f} over {len(rows)} rounds",
            highlight=False,
        )
        if stake is not None and all(r.counterfactual.stake > stake for r in rows):
            part = mechanical(rows)
            _stderr().print(
                f"mechanical part of the larger stake (actual − at {stake:,.2f}): MMC (today's) {part.contribution:+.4f}, MMC 2020 {part.mmc:+.4f}",
                highlight=False,
            )
        if stake is None and all(r.counterfactual.stake == 0 for r in rows):
            _stderr().print(
                "the model had no stake in these rounds: a multiple of zero is still zero; ask with --stake X instead",
                highlight=False,
            )


def main() -> None:
    """Entry point of the ``mmc`` console script."""
    app()


if __name__ == "__main__":
    main()
