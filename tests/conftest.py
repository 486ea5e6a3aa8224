"""Session fixtures: one real broker and one real Redis for the whole run, fresh names per test.

Where the broker and Redis come from (``stack_env``), first match wins:

1. ``MMC_KAFKA_BOOTSTRAP`` and ``MMC_REDIS_URL`` are both set: use those servers;
2. ``MMC_TEST_BACKEND=containers``: testcontainers Kafka + Redis (skipped without Docker);
3. otherwise: one :class:`streams.tools.stack.EmbeddedStack` (Tansu + redis-server) for the session.

Tests never share names: ``make_settings`` / ``settings`` give each test its own topic prefix
(``t<uuid8>.``) and app id (= consumer group), with the topics already created. The ``redis``
fixture flushes the database on teardown (as redis-py's own suite does): point
``MMC_REDIS_URL`` at a database you can lose.

A few expensive runs are made once per session and checked by several tests (each test reads
them; the lost-Redis test drops its run's state and checks it comes back the same):
``one_worker_tournament`` here, ``undisturbed_small_season`` in
``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NamedTuple

import pytest
import redis as redis_sync

from streams.kafka.topics import create_topics
from streams.settings import Settings


class StackEnv(NamedTuple):
    """Where the session's broker and Redis answer."""

    kafka_bootstrap: str
    redis_url: str


def _backend() -> str:
    """``external``, ``containers`` or ``embedded``, by the rules in this module's docstring."""
    if os.environ.get("MMC_KAFKA_BOOTSTRAP") and os.environ.get("MMC_REDIS_URL"):
        return "external"
    if os.environ.get("MMC_TEST_BACKEND") == "containers":
        return "containers"
    return "embedded"


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion from sync code, also from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _container_stack() -> Iterator[StackEnv]:
    """Kafka and Redis in Docker through testcontainers; skip when no engine answers."""
    try:
        import docker
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer
    except ImportError as exc:
        pytest.skip(f"MMC_TEST_BACKEND=containers needs testcontainers[kafka,redis]: {exc}")
    try:
        docker.from_env().ping()
    except Exception as exc:  # any failure to reach the engine means: no Docker here
        pytest.skip(f"MMC_TEST_BACKEND=containers but no Docker engine answers: {exc}")
    with KafkaContainer() as kafka, RedisContainer() as redis_container:
        host = redis_container.get_container_host_ip()
        port = redis_container.get_exposed_port(6379)
        yield StackEnv(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")


@pytest.fixture(scope="session")
def stack_backend() -> str:
    """Which broker and Redis the session uses: ``external``, ``containers`` or ``embedded``.

    ``embedded`` means Tansu: no idempotent/transactional producers (DESIGN §5).
    """
    return _backend()


@pytest.fixture(scope="session")
def stack_env(stack_backend: str) -> Iterator[StackEnv]:
    """``(kafka_bootstrap, redis_url)`` of the broker and Redis every test talks to."""
    if stack_backend == "external":
        yield StackEnv(os.environ["MMC_KAFKA_BOOTSTRAP"], os.environ["MMC_REDIS_URL"])
    elif stack_backend == "containers":
        yield from _container_stack()
    else:
        from streams.tools.stack import EmbeddedStack

        with EmbeddedStack() as stack:
            yield StackEnv(stack.kafka_bootstrap, stack.redis_url)


@pytest.fixture
def make_settings(stack_env: StackEnv) -> Callable[..., Settings]:
    """Factory: ``make_settings(**overrides)`` → Settings with fresh topics and group.

    Each call gets a unique ``topic_prefix`` (``t<uuid8>.``) and ``app_id``, points at
    ``stack_env`` and has the service's topics created with ``settings.partitions``.
    Pass ``create=False`` to skip topic creation. Other ``MMC_*`` variables of the
    environment (SASL for an external broker …) still apply.
    """

    def factory(*, create: bool = True, **overrides: Any) -> Settings:
        return fresh_settings(stack_env, create=create, **overrides)

    return factory


def fresh_settings(stack_env: StackEnv, *, create: bool = True, **overrides: Any) -> Settings:
    """What ``make_settings`` gives, for fixtures of a wider scope than a test."""
    tag = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "kafka_bootstrap": stack_env.kafka_bootstrap,
        "redis_url": stack_env.redis_url,
        "topic_prefix": f"t{tag}.",
        "app_id": f"mmc-test-{tag}",
        "state_namespace": f"t{tag}",
    }
    fields.update(overrides)
    settings = Settings(**fields)
    if create:
        run_sync(create_topics(settings))
    return settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings of this test: unique topic prefix and app id, topics created."""
    return make_settings()


@pytest.fixture
def redis(stack_env: StackEnv) -> Iterator[redis_sync.Redis]:
    """A sync client of the session's Redis; the database is flushed on teardown."""
    client = redis_sync.Redis.from_url(stack_env.redis_url)
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of a node of a three-primary Redis Cluster on loopback, started once per session
    (:class:`streams.tools.stack.LoopbackRedisCluster`); pair it with ``redis_cluster=True``."""
    from streams.tools.stack import LoopbackRedisCluster

    with LoopbackRedisCluster() as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def one_worker_tournament(stack_env: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The default tournament of :mod:`tests.e2e.tournament` through one real worker, once per
    session (:class:`tests.e2e.tournament.TournamentRun`): several tests check its outputs."""
    from tests.e2e.tournament import build, one_worker_run

    return one_worker_run(lambda **extra: fresh_settings(stack_env, **extra), build(), tmp_path_factory.mktemp("one-worker"))
