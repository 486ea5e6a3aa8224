"""The ``mmc`` command line: the embedded stack, topic creation and the worker.

Every command reads its configuration from the ``MMC_*`` environment through
:class:`streams.settings.Settings`. Machine-readable output goes to stdout, everything for
a person (progress, errors) to stderr, so ``mmc stack > env.sh`` or ``eval`` work.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
import threading
import time
from types import FrameType

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from streams.errors import MmcStreamError
from streams.settings import Settings, load_settings

app = typer.Typer(
    name="mmc",
    help="Streaming CORR/MMC scorer for a stake-weighted tournament (Kafka + Redis).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


@app.command()
def stack(
    kafka_port: int = typer.Option(0, help="Broker port; 0 picks a free one."),
    redis_port: int = typer.Option(0, help="Redis port; 0 picks a free one."),
    with_topics: bool = typer.Option(
        True, "--topics/--no-topics", help="Create the service's topics once the broker is up."
    ),
) -> None:
    """Run the embedded broker (Tansu) and Redis in the foreground until Ctrl-C.

    Prints ``export MMC_KAFKA_BOOTSTRAP=…`` and ``export MMC_REDIS_URL=…`` on stdout.
    """
    from streams.admin import create_topics
    from streams.stack import EmbeddedStack

    console = _stderr()
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
                    f"topics: {len(created)} with prefix {settings.topic_prefix!r}, "
                    f"{settings.partitions} partitions each",
                    highlight=False,
                )
            if not stop.is_set():  # a signal while starting: stop without announcing
                for name, value in running.env().items():
                    sys.stdout.write(f"export {name}={shlex.quote(value)}\n")
                sys.stdout.flush()
                console.print(
                    f"stack ready in {time.perf_counter() - began:.2f} s "
                    f"(broker pid {running.pids['kafka']}, redis pid {running.pids['redis']}); "
                    "Ctrl-C to stop",
                    highlight=False,
                )
            while not stop.wait(0.5):
                running.check()
            console.print(
                f"{signal.Signals(received[-1]).name}: stopping the embedded stack …",
                highlight=False,
            )
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    console.print("stopped", highlight=False)


@app.command()
def topics() -> None:
    """Create the service's topics on the configured broker (existing ones are kept)."""
    from streams.admin import create_topics

    settings = _settings_or_exit()
    try:
        outcome = asyncio.run(create_topics(settings))
    except MmcStreamError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title=f"topics on {settings.kafka_bootstrap}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("state")
    for name, state in outcome.items():
        table.add_row(name, str(settings.partitions), state)
    Console().print(table)


@app.command()
def worker() -> None:
    """Run a scoring worker (Faust) against the configured broker and Redis."""
    settings = _settings_or_exit()
    try:
        from streams.app import run_worker
    except ImportError as exc:
        raise _fail(
            f"the worker is not available: cannot import streams.app.run_worker ({exc})"
        ) from exc
    run_worker(settings)


def main() -> None:
    """Entry point of the ``mmc`` console script."""
    app()


if __name__ == "__main__":
    main()
