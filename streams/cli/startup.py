"""The start-up wait: before ``mmc worker``, ``topics``, ``rebuild`` and ``web`` run, Kafka and Redis must answer.

:func:`wait_for_dependencies` (:func:`wait_for_kafka`, :func:`wait_for_redis`) retries with
exponential backoff and jitter (stamina, as every retry loop: :mod:`streams.transient`) until
the broker answers a metadata request and Redis a ``PING``, or raises
:class:`~streams.errors.DependencyUnavailable` after ``MMC_STARTUP_TIMEOUT_SECONDS``; one log
line per failed attempt. :func:`wait_or_exit` is what the commands call: the wait's lines on
stderr, and exit status 3 (:data:`EXIT_UNAVAILABLE`) with one ``error:`` line when a dependency
did not answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from rich.markup import escape
from stamina.instrumentation import RetryDetails

from streams.cli.console import fail
from streams.errors import ConfigurationError, DependencyUnavailable, MmcStreamError
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings
from streams.state.client import redis_client
from streams.transient import RETRY_JITTER_SECONDS, reporting_retries, retries

log = logging.getLogger(__name__)

#: Exit status when Kafka or Redis did not answer within ``MMC_STARTUP_TIMEOUT_SECONDS``.
EXIT_UNAVAILABLE = 3

#: First pause between two start-up attempts (plus jitter); each failure doubles it, up to
#: ``settings.startup_retry_max_seconds`` (the backoff of :func:`streams.transient.retries`).
STARTUP_FIRST_RETRY_SECONDS = 0.5
#: Bounds of one start-up attempt (TCP connect plus one request): the time left before the
#: deadline, but at least the minimum (so a last attempt can still succeed) and at most the maximum.
_PROBE_MIN_SECONDS = 1.0
_PROBE_MAX_SECONDS = 5.0
#: Longest cause quoted in a log line or error.
_CAUSE_MAX_CHARS = 300
_DEFAULT_KAFKA_PORT = 9092
_DEFAULT_REDIS_PORT = 6379


def redis_address(settings: Settings) -> str:
    """Where ``MMC_REDIS_URL`` points, for people: ``host:port`` or a socket path, never user or password."""
    parts = urlsplit(settings.redis_url)
    if parts.scheme == "unix":
        return parts.path or "(no socket path)"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or _DEFAULT_REDIS_PORT
    except ValueError:
        return f"{host}:(invalid port)"
    return f"{host}:{port}"


def kafka_address(settings: Settings) -> str:
    """The bootstrap servers of ``MMC_KAFKA_BOOTSTRAP``, for people (``host:port,host:port``)."""
    return ",".join(item.strip() for item in settings.kafka_bootstrap.split(",") if item.strip())


def _bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """``(host, port)`` of each comma-separated ``host:port`` (``[v6]:port`` too; 9092 by default)."""
    servers = []
    for item in (part.strip() for part in bootstrap.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or host.endswith(":") or (item.startswith("[") and not host.endswith("]")):
            host, port = item, str(_DEFAULT_KAFKA_PORT)  # no port, or a bare IPv6 address
        try:
            servers.append((host.strip("[]"), int(port)))
        except ValueError:
            raise ConfigurationError(f"MMC_KAFKA_BOOTSTRAP: {item!r} is not host:port") from None
    if not servers:
        raise ConfigurationError("MMC_KAFKA_BOOTSTRAP is empty")
    return servers


def _one_line(text: str) -> str:
    """``text`` on one line (whitespace runs collapsed), shortened to a readable length."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= _CAUSE_MAX_CHARS else line[: _CAUSE_MAX_CHARS - 1] + "…"


def _describe_error(exc: BaseException) -> str:
    """A short, stable description of why a connection or request failed."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror[:1].lower() + exc.strerror[1:])
    text = str(exc)
    return _one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


async def _tcp_cause(host: str, port: int, timeout: float) -> str | None:
    """``None`` when a TCP connection to ``host:port`` opens within ``timeout``, else why not.

    Every address the name resolves to is tried (``localhost``: ``::1`` and ``127.0.0.1``).
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError) as exc:
        return _describe_error(exc)
    causes: list[str] = []
    for family, kind, proto, _name, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
        except OSError as exc:  # TimeoutError included
            causes.append(_describe_error(exc))
            continue
        finally:
            sock.close()
        return None
    return "; ".join(dict.fromkeys(causes)) or "no address"


async def _kafka_cause(settings: Settings, options: dict[str, Any], timeout: float) -> str | None:
    """``None`` when the cluster answers a metadata request, else why it did not.

    A TCP connect to each bootstrap server comes first: it gives a plain cause (connection
    refused, host unknown …) and keeps aiokafka from logging its own errors for a server that
    is not there. Then aiokafka's admin client bootstraps (TLS and SASL included) and asks the
    cluster to describe itself, which reaches a broker at its advertised address.
    """
    servers = _bootstrap_servers(settings.kafka_bootstrap)
    causes = [await _tcp_cause(host, port, timeout) for host, port in servers]
    if all(cause is not None for cause in causes):
        if len(set(causes)) == 1:
            return causes[0]
        return "; ".join(f"{host}:{port} {cause}" for (host, port), cause in zip(servers, causes, strict=True))
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=max(1, int(timeout * 1000)))
    try:
        await asyncio.wait_for(_start_and_describe(admin), timeout)
    except TimeoutError:
        return f"no answer to a metadata request within {timeout:.1f} s"
    except (KafkaError, OSError) as exc:
        return _describe_error(exc)
    finally:
        try:
            await admin.close()
        except (KafkaError, OSError) as exc:
            log.debug("closing the start-up admin client: %r", exc)
    return None


async def _start_and_describe(admin: AIOKafkaAdminClient) -> None:
    await admin.start()
    await admin.describe_cluster()


async def _redis_cause(settings: Settings, timeout: float) -> str | None:
    """``None`` when Redis answers ``PING`` (AUTH and TLS included), else why it did not."""
    parts = urlsplit(settings.redis_url)
    if parts.scheme in ("redis", "rediss"):
        try:
            port = parts.port or _DEFAULT_REDIS_PORT
        except ValueError:
            raise ConfigurationError(f"MMC_REDIS_URL has an invalid port (Redis at {redis_address(settings)})") from None
        cause = await _tcp_cause(parts.hostname or "localhost", port, timeout)
        if cause is not None:
            return cause
    # No retries inside the client: the start-up loop retries and says so.
    client = redis_client(settings, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except TimeoutError:
        return f"no answer to PING within {timeout:.1f} s"
    except (redis.RedisError, OSError) as exc:
        return _hide_secrets(_describe_error(exc), settings)
    finally:
        try:
            await client.aclose()
        except (redis.RedisError, OSError) as exc:
            log.debug("closing the start-up Redis client: %r", exc)
    return None


def _hide_secrets(text: str, settings: Settings) -> str:
    """``text`` with the Redis password (of the URL or ``MMC_REDIS_PASSWORD``) masked."""
    secrets = [settings.redis_password.get_secret_value()] if settings.redis_password else []
    password = urlsplit(settings.redis_url).password
    if password:
        secrets += [password, unquote(password)]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "**********")
    return text


class _NoAnswer(Exception):
    """One failed start-up attempt: why (the message), and the longest pause the backoff may take after it."""

    def __init__(self, cause: str, longest_pause: float) -> None:
        super().__init__(cause)
        self.cause = cause
        self.longest_pause = longest_pause


async def _wait_until_answers(settings: Settings, service: str, address: str, setting: str, cause_of: Callable[[float], Awaitable[str | None]]) -> None:
    """Call ``cause_of(timeout)`` until it returns ``None``, backing off between attempts.

    The pauses are stamina's (:func:`streams.transient.retries`): from
    min(STARTUP_FIRST_RETRY_SECONDS, ``settings.startup_retry_max_seconds``), doubling up to
    ``settings.startup_retry_max_seconds``, plus jitter. The deadline is this loop's: when the
    pause after an attempt could reach past it, the pause is the time left instead (the
    retry predicate returns those seconds), so the last attempt runs at the deadline; an attempt
    that fails at or after the deadline raises :class:`DependencyUnavailable`. Logs one warning
    per failed attempt (service, address, cause, pause).
    """
    began = time.monotonic()
    deadline = began + settings.startup_timeout_seconds
    most = settings.startup_retry_max_seconds
    attempts = 0

    def pause_or_give_up(exc: Exception) -> bool | float:
        if not isinstance(exc, _NoAnswer):
            return False  # a configuration error: retrying would not help
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        return left if left < exc.longest_pause else True

    def report(details: RetryDetails) -> None:
        log.warning("waiting for %s at %s: %s (retrying in %.1f s)", service, address, details.caused_by, details.wait_for)

    try:
        with reporting_retries(report):
            async for attempt in retries(pause_or_give_up, first=min(STARTUP_FIRST_RETRY_SECONDS, most), most=most):
                with attempt:
                    attempts = attempt.num
                    left = deadline - time.monotonic()
                    cause = await cause_of(min(_PROBE_MAX_SECONDS, max(_PROBE_MIN_SECONDS, left)))
                    if cause is not None:
                        # attempt.next_wait is the coming pause without its jitter.
                        raise _NoAnswer(cause, min(most, attempt.next_wait + RETRY_JITTER_SECONDS))
    except _NoAnswer as exc:
        raise DependencyUnavailable(service, address, exc.cause, time.monotonic() - began, attempts, setting) from None
    if attempts > 1:
        log.warning("%s at %s answered after %.1f s (%d attempts)", service, address, time.monotonic() - began, attempts)


async def wait_for_kafka(settings: Settings) -> None:
    """Return once the Kafka cluster answers a metadata request; retry until the start-up timeout.

    Raises:
        DependencyUnavailable: no answer within ``settings.startup_timeout_seconds``.
        ConfigurationError: the Kafka settings are inconsistent (retrying would not help).
    """
    options = kafka_client_options(settings)
    _bootstrap_servers(settings.kafka_bootstrap)  # a malformed address is a configuration error

    async def cause_of(timeout: float) -> str | None:
        return await _kafka_cause(settings, options, timeout)

    await _wait_until_answers(settings, "Kafka", kafka_address(settings), "MMC_KAFKA_BOOTSTRAP", cause_of)


async def wait_for_redis(settings: Settings) -> None:
    """Return once Redis answers ``PING``; retry until the start-up timeout.

    Raises:
        DependencyUnavailable: no answer within ``settings.startup_timeout_seconds``.
        ConfigurationError: the Redis settings are inconsistent (retrying would not help).
    """
    await redis_client(settings).aclose()  # the settings checks (building a client opens no connection)

    async def cause_of(timeout: float) -> str | None:
        return await _redis_cause(settings, timeout)

    await _wait_until_answers(settings, "Redis", redis_address(settings), "MMC_REDIS_URL", cause_of)


async def wait_for_dependencies(settings: Settings, *, kafka: bool = True, redis: bool = True) -> None:
    """Wait for Kafka and Redis at the same time (see :func:`wait_for_kafka`, :func:`wait_for_redis`).

    The first failure cancels the other wait and is raised.
    """
    waits = ([wait_for_kafka(settings)] if kafka else []) + ([wait_for_redis(settings)] if redis else [])
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    if not tasks:
        return
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:  # in order: Kafka's failure first when both gave up together
        error = task.exception() if task in done else None
        if error is not None:
            raise error


@contextlib.contextmanager
def startup_logging() -> Iterator[None]:
    """Show the start-up wait's lines (this module's logger) on stderr, and only those.

    aiokafka logs an error of its own for every failed connection; while the wait reports
    each attempt in one line, those are held back.
    """
    ours, aiokafka = logging.getLogger(__name__), logging.getLogger("aiokafka")
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


def wait_or_exit(settings: Settings, *, kafka: bool = True, redis: bool = True) -> None:
    """Wait until Kafka and/or Redis answer, or exit with one ``error:`` line (status 3)."""
    try:
        with startup_logging():
            asyncio.run(wait_for_dependencies(settings, kafka=kafka, redis=redis))
    except DependencyUnavailable as exc:
        raise fail(escape(str(exc)), code=EXIT_UNAVAILABLE) from exc
    except MmcStreamError as exc:
        raise fail(escape(str(exc))) from exc
