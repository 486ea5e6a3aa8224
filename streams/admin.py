"""Connections and topic administration: the one place that turns settings into clients.

- :func:`kafka_client_options` - aiokafka keyword arguments (bootstrap, SASL, TLS) for every
  admin client, producer and consumer the service or its tools create;
- :func:`librdkafka_config` - the same for the one librdkafka client, the submissions consumer;
- :func:`create_topics` - creates the service's topics, idempotently, before workers start;
- :func:`redis_client` - a ``redis.asyncio.Redis`` with the password and CA applied;
- :func:`wait_for_dependencies` (:func:`wait_for_kafka`, :func:`wait_for_redis`) - the start-up
  wait: retries with exponential backoff until the broker answers a metadata request and Redis
  a ``PING``, or raises :class:`~streams.errors.DependencyUnavailable` after
  ``MMC_STARTUP_TIMEOUT_SECONDS``.

Never enable aiokafka's idempotent or transactional producer: Tansu, the embedded broker,
rejects ``InitProducerId`` (DESIGN §5), so the service is at-least-once with idempotent effects.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.errors import ConfigurationError, DependencyUnavailable
from streams.settings import Settings
from streams.transient import Backoff

log = logging.getLogger(__name__)

#: Input topics (DESIGN §3), by short name.
INPUT_TOPICS: tuple[str, ...] = ("rounds", "submissions", "stakes", "targets")
#: Output topics (DESIGN §3), by short name.
OUTPUT_TOPICS: tuple[str, ...] = ("scores", "leaderboard", "crowding", "alerts", "deadletter")
#: Topic-level configs by short name. The leaderboard holds one standing per model, so it is
#: compacted; ``scores`` stays a log (it is the per-round history analysts replay). The input
#: topics keep their records for good: the state is rebuilt from them (streams.rebuild).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "leaderboard": {"cleanup.policy": "compact"},
    **{name: {"retention.ms": "-1"} for name in INPUT_TOPICS},
}
#: Topics with a single partition, whatever ``MMC_PARTITIONS`` says. Round lifecycle events
#: and target updates are few (a handful per round per day) and must be processed in one
#: total order: that order is what makes leaderboards, crowding trends and alerts
#: deterministic across worker counts and replays. Submissions and stakes — the volume —
#: are spread over ``MMC_PARTITIONS`` partitions and workers.
SINGLE_PARTITION_TOPICS: frozenset[str] = frozenset({"rounds", "targets"})


def partitions_for(settings: Settings, name: str) -> int:
    """Partition count of the topic with short name ``name``."""
    return 1 if name in SINGLE_PARTITION_TOPICS else settings.partitions


#: Kafka error code for a topic that already exists (CreateTopics).
_TOPIC_ALREADY_EXISTS = 36

TopicOutcome = Literal["created", "exists"]


class KafkaClientOptions(dict[str, Any]):
    """aiokafka keyword arguments whose ``repr`` hides the SASL password.

    It is a plain ``dict`` otherwise: ``AIOKafkaProducer(**options)`` works.
    """

    _SECRET_KEYS = frozenset({"sasl_plain_password", "sasl.password"})

    def __repr__(self) -> str:
        shown = {k: ("**********" if k in self._SECRET_KEYS and v else v) for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    __str__ = __repr__


def kafka_client_options(settings: Settings) -> KafkaClientOptions:
    """aiokafka keyword arguments for the configured cluster: bootstrap servers, SASL and TLS.

    Works for ``AIOKafkaAdminClient``, ``AIOKafkaProducer`` and ``AIOKafkaConsumer``. The
    password is read from its ``SecretStr`` only here and is masked in the result's ``repr``.

    Raises:
        ConfigurationError: SASL without username/password, or TLS files with a protocol
            that does not use TLS.
    """
    protocol = settings.kafka_security_protocol
    options = KafkaClientOptions(
        bootstrap_servers=settings.kafka_bootstrap,
        security_protocol=protocol,
    )
    ssl_files = {
        "cafile": settings.kafka_ssl_cafile,
        "certfile": settings.kafka_ssl_certfile,
        "keyfile": settings.kafka_ssl_keyfile,
    }
    if protocol in ("SSL", "SASL_SSL"):
        try:
            options["ssl_context"] = create_ssl_context(**ssl_files)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot build the Kafka TLS context from MMC_KAFKA_SSL_* files: {exc}") from exc
    elif any(ssl_files.values()):
        raise ConfigurationError(f"MMC_KAFKA_SSL_* files are set but MMC_KAFKA_SECURITY_PROTOCOL={protocol}; use SSL or SASL_SSL, or unset the files")
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        if not settings.kafka_sasl_username or password is None:
            raise ConfigurationError(f"MMC_KAFKA_SECURITY_PROTOCOL={protocol} needs MMC_KAFKA_SASL_USERNAME and MMC_KAFKA_SASL_PASSWORD")
        # aiokafka takes the SCRAM credentials in the sasl_plain_* arguments too.
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


def librdkafka_config(settings: Settings) -> KafkaClientOptions:
    """librdkafka configuration (``confluent_kafka``) for the configured cluster: bootstrap, SASL, TLS.

    The same settings and the same checks as :func:`kafka_client_options`, in librdkafka's
    property names; TLS takes the CA, certificate and key files as paths. The password is
    masked in the result's ``repr``.

    Raises:
        ConfigurationError: as :func:`kafka_client_options`.
    """
    options = kafka_client_options(settings)  # the same checks, made in one place
    protocol = settings.kafka_security_protocol
    config = KafkaClientOptions({"bootstrap.servers": settings.kafka_bootstrap, "security.protocol": protocol.lower()})
    if protocol in ("SSL", "SASL_SSL"):
        for key, path in (
            ("ssl.ca.location", settings.kafka_ssl_cafile),
            ("ssl.certificate.location", settings.kafka_ssl_certfile),
            ("ssl.key.location", settings.kafka_ssl_keyfile),
        ):
            if path:
                config[key] = path
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = options["sasl_plain_username"]
        config["sasl.password"] = options["sasl_plain_password"]
    return config


def topic_names(settings: Settings) -> list[str]:
    """Full names of every topic the service uses, inputs first."""
    return [settings.topic(name) for name in (*INPUT_TOPICS, *OUTPUT_TOPICS)]


async def read_record(settings: Settings, topic: str, partition: int, offset: int) -> Any:
    """The record at ``offset`` of input topic ``topic`` (short name), read with a group-less
    consumer; ``LookupError`` when the log no longer holds it (its retention deleted it)."""
    tp = TopicPartition(settings.topic(topic), partition)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 << 20, fetch_max_bytes=16 << 20)
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not start <= offset < end:
            raise LookupError(f"{settings.topic(topic)}[{partition}]@{offset} is not in the log ({start}..{end - 1})")
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            for record in batch.get(tp, []):
                if record.offset == offset:
                    return record
                if record.offset > offset:
                    raise LookupError(f"{settings.topic(topic)}[{partition}]@{offset} is gone (compacted)")
        raise TimeoutError(f"reading {settings.topic(topic)}[{partition}]@{offset}: no answer within 60 s")  # transient: retried
    finally:
        await consumer.stop()


async def create_topics(settings: Settings) -> dict[str, TopicOutcome]:
    """Create the input and output topics; ones that already exist are left alone.

    Every topic gets ``settings.partitions`` partitions (``rounds`` and ``targets``: one, see
    :data:`SINGLE_PARTITION_TOPICS`) and ``settings.replication_factor`` replicas; the
    leaderboard is compacted. Run it before workers start: a topic the broker
    auto-creates gets the broker's default partition count and Faust then stops with
    ``PartitionsMismatch``.

    Returns:
        full topic name → ``"created"`` or ``"exists"``.

    Raises:
        ConfigurationError: the broker refused a topic (bad replication factor, not
            authorized …) or an existing topic has a different partition count.
    """
    short_names = (*INPUT_TOPICS, *OUTPUT_TOPICS)
    new_topics = [
        NewTopic(
            settings.topic(name),
            num_partitions=partitions_for(settings, name),
            replication_factor=settings.replication_factor,
            topic_configs=TOPIC_CONFIGS.get(name, {}),
        )
        for name in short_names
    ]
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    try:
        try:
            await admin.start()
            response = await admin.create_topics(new_topics)
            outcome: dict[str, TopicOutcome] = {}
            for topic, error_code, *rest in response.topic_errors:
                if error_code == 0:
                    outcome[topic] = "created"
                elif error_code == _TOPIC_ALREADY_EXISTS:
                    outcome[topic] = "exists"
                else:
                    message = rest[0] if rest else None
                    raise ConfigurationError(f"the broker refused topic {topic!r} (Kafka error {error_code}{': ' + message if message else ''})")
            existing = [t for t, state in outcome.items() if state == "exists"]
            if existing:
                expected = {settings.topic(n): partitions_for(settings, n) for n in short_names}
                await _check_partitions(admin, {t: expected[t] for t in existing})
        except KafkaError as exc:
            raise ConfigurationError(f"cannot create topics on {settings.kafka_bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    log.info(
        "topics ready: %s",
        ", ".join(f"{topic} ({state})" for topic, state in outcome.items()),
    )
    return outcome


async def _check_partitions(admin: AIOKafkaAdminClient, expected: dict[str, int]) -> None:
    """Raise :class:`ConfigurationError` if an existing topic's partition count differs."""
    wrong = {
        meta["topic"]: len(meta["partitions"]) for meta in await admin.describe_topics(list(expected)) if len(meta["partitions"]) != expected[meta["topic"]]
    }
    if wrong:
        listing = ", ".join(f"{topic} has {count}, expected {expected[topic]}" for topic, count in sorted(wrong.items()))
        raise ConfigurationError(f"existing topics have the wrong partition count ({listing}): set MMC_PARTITIONS to match or recreate the topics")


def redis_client(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """A ``redis.asyncio.Redis`` for ``settings.redis_url`` with password and CA applied.

    ``options`` go to ``redis.asyncio.Redis.from_url`` (``decode_responses=True`` …). A
    password inside the URL wins over ``MMC_REDIS_PASSWORD``. The caller closes the client
    (``await client.aclose()``).

    Raises:
        ConfigurationError: ``MMC_REDIS_SSL_CA_CERTS`` is set for a non-TLS ``redis://`` URL.
    """
    scheme = urlsplit(settings.redis_url).scheme
    if settings.redis_password is not None:
        options.setdefault("password", settings.redis_password.get_secret_value())
    if settings.redis_ssl_ca_certs:
        if scheme != "rediss":
            raise ConfigurationError("MMC_REDIS_SSL_CA_CERTS is set but MMC_REDIS_URL is not rediss://")
        options.setdefault("ssl_ca_certs", settings.redis_ssl_ca_certs)
    return redis.asyncio.Redis.from_url(settings.redis_url, **options)


# ------------------------------------------------------------------------------- start-up wait

#: First pause between two start-up attempts; each failure doubles it, up to
#: ``settings.startup_retry_max_seconds``.
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


async def _wait_until_answers(settings: Settings, service: str, address: str, setting: str, cause_of: Callable[[float], Awaitable[str | None]]) -> None:
    """Call ``cause_of(timeout)`` until it returns ``None``, backing off between attempts.

    Logs one warning per failed attempt (service, address, cause, pause); raises
    :class:`DependencyUnavailable` once ``settings.startup_timeout_seconds`` have passed.
    """
    began = time.monotonic()
    deadline = began + settings.startup_timeout_seconds
    backoff = Backoff(min(STARTUP_FIRST_RETRY_SECONDS, settings.startup_retry_max_seconds), settings.startup_retry_max_seconds)
    attempts = 0
    while True:
        attempts += 1
        left = deadline - time.monotonic()
        cause = await cause_of(min(_PROBE_MAX_SECONDS, max(_PROBE_MIN_SECONDS, left)))
        if cause is None:
            if attempts > 1:
                log.warning("%s at %s answered after %.1f s (%d attempts)", service, address, time.monotonic() - began, attempts)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise DependencyUnavailable(service, address, cause, time.monotonic() - began, attempts, setting)
        wait = min(backoff.next(), left)
        log.warning("waiting for %s at %s: %s (retrying in %.1f s)", service, address, cause, wait)
        await asyncio.sleep(wait)


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
