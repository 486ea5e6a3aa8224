"""``mmc stack``: the embedded broker and Redis in the foreground, their addresses as export lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from streams.cli.console import fail, settings_or_exit, stderr
from streams.errors import MmcStreamError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.tools.stack import EmbeddedStack


def stack(
    kafka_port: int = typer.Option(0, help="Broker port; 0 picks a free one."),
    redis_port: int = typer.Option(0, help="Redis port; 0 picks a free one."),
    redis_cluster: bool = typer.Option(
        False,
        "--redis-cluster",
        help=(
            "A Redis Cluster of three primaries on free loopback ports instead of one Redis "
            "(--redis-port is ignored); the export lines then include MMC_REDIS_CLUSTER=true."
        ),
    ),
    with_topics: bool = typer.Option(True, "--topics/--no-topics", help="Create the service's topics once the broker is up."),
    env_file: Path | None = typer.Option(
        None,
        "--env-file",
        dir_okay=False,
        help="Also write the export lines to this file once the stack is up (replaced atomically; removed when the stack stops), for '. FILE' in other shells.",
    ),
) -> None:
    """Run the embedded broker (Tansu) and Redis in the foreground until Ctrl-C or SIGTERM.

    Prints 'export MMC_KAFKA_BOOTSTRAP=…' and 'export MMC_REDIS_URL=…' on stdout (and
    'export MMC_REDIS_CLUSTER=true' with --redis-cluster). With
    --env-file FILE it also writes them to FILE once both answer, and removes FILE when it
    stops. In the background:

    \b
      mmc stack --env-file .mmc.env &
      . ./.mmc.env        # once the file is there; in any shell

    Reads MMC_TOPIC_PREFIX, MMC_PARTITIONS and MMC_REPLICATION_FACTOR (for the topics it
    creates). The broker is plaintext and Redis has no password, whatever MMC_KAFKA_* and
    MMC_REDIS_* say.
    """
    from streams.tools.stack import EmbeddedStack

    console = stderr()
    if env_file is not None:
        # A file left by an earlier stack names ports nobody serves: whoever waits for the
        # file must not find it before this stack is up.
        try:
            env_file.unlink(missing_ok=True)
        except OSError as exc:
            raise fail(f"cannot replace {env_file}: {exc}", code=2) from exc
    written: str | None = None
    # Handlers first: a signal during startup still ends in a clean stop.
    stop, received = _stop_on_signals()
    settings = settings_or_exit()
    began = time.perf_counter()
    try:
        with EmbeddedStack(kafka_port=kafka_port or None, redis_port=redis_port or None, redis_cluster=redis_cluster) as running:
            if with_topics:
                _create_topics(settings, running, console)
            if not stop.is_set():  # a signal while starting: stop without announcing
                written = _announce(running, env_file, console, began)
            while not stop.wait(0.5):
                running.check()
            console.print(
                f"{signal.Signals(received[-1]).name}: stopping the embedded stack …",
                highlight=False,
            )
    except MmcStreamError as exc:
        raise fail(str(exc)) from exc
    finally:
        if written is not None:
            _remove_if_unchanged(env_file, written)
    console.print("stopped", highlight=False)


def _stop_on_signals() -> tuple[threading.Event, list[int]]:
    """An event set by SIGINT, SIGTERM or SIGHUP, and the signals received (handlers installed now)."""
    stop = threading.Event()
    received: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), request_stop)
    return stop, received


def _create_topics(settings: Settings, running: EmbeddedStack, console: Console) -> None:
    """Create the service's topics on the embedded broker and say how many, with their partitions."""
    from streams.kafka.topics import create_topics

    # The embedded broker is plaintext and Redis has no password, whatever the
    # environment says about a production cluster.
    stack_settings = settings.model_copy(
        update={
            "kafka_bootstrap": running.kafka_bootstrap,
            "redis_url": running.redis_url,
            "redis_cluster": running.redis_cluster,
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


def _announce(running: EmbeddedStack, env_file: Path | None, console: Console, began: float) -> str | None:
    """Print the export lines on stdout (and write them to ``env_file``) and say the stack is ready;
    returns what was written to ``env_file`` (None without one)."""
    written: str | None = None
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in running.env().items())
    if env_file is not None:
        try:
            _write_atomically(env_file, exports)
        except OSError as exc:
            raise fail(f"cannot write {env_file}: {exc}") from exc
        written = exports
    sys.stdout.write(exports)
    sys.stdout.flush()
    console.print(
        f"stack ready in {time.perf_counter() - began:.2f} s "
        f"(broker pid {running.pids['kafka']}, {_redis_pids(running)})"
        + (f"; wrote {env_file}: '. {_sourceable(env_file)}' in other shells" if written and env_file is not None else "")
        + f"; Ctrl-C or 'kill {os.getpid()}' to stop",
        highlight=False,
        soft_wrap=True,
    )
    return written


def _redis_pids(running: EmbeddedStack) -> str:
    """``redis pid N``, or ``redis cluster pids N, M, O`` for a cluster's nodes."""
    pids = [pid for name, pid in running.pids.items() if name.startswith("redis")]
    if running.redis_cluster:
        return f"redis cluster pids {', '.join(map(str, pids))}"
    return f"redis pid {pids[0]}"


def _partition_counts(settings: Settings) -> str:
    """Each topic's partition count, as created: ``rounds, targets: 1 partition; submissions, …: 4 partitions each``."""
    from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS, partitions_for

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
