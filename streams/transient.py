"""Which failures belong to the infrastructure (retry the record) rather than to the input.

A record whose processing fails because Redis or Kafka did not answer is not at fault: the
worker retries it with backoff (:func:`with_retry`) and never dead-letters it.
Only a failure that is neither the input's (a typed refusal) nor the infrastructure's is a
bug, refused ``internal_error``.

What counts, whatever the client version:

- the network: Python's ``ConnectionError`` (refused, reset, broken pipe) and ``TimeoutError``
  (``asyncio.TimeoutError`` is the same class);
- aiokafka: every error the client marks ``retriable`` (request timed out, node not ready,
  leader changed, coordinator moving, connection lost …), plus the ones it does not mark but
  that only a broker's state explains — a batch that expired waiting for a stalled broker
  (``KafkaTimeoutError``), no broker reachable, a rebalance in progress, replicas not
  available;
- librdkafka (``confluent_kafka``): a ``KafkaException`` whose error says ``retriable()`` or
  is a transport, timeout or all-brokers-down error;
- the state lost under the worker (:class:`~streams.errors.StateLost`): the worker is
  restarting itself to rebuild it, and the record waits for that;
- redis-py: connection and timeout errors (loading, too many connections included), a
  cluster that is down or moving slots, a replica that became read-only in a failover, and
  Redis out of memory (``maxmemory`` reached: the operator frees memory, the record waits).

The exception's ``__cause__`` is looked at too (clients often wrap a socket error).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka.errors as kafka_errors
import confluent_kafka
import redis.exceptions as redis_errors

from streams.errors import StateLost

log = logging.getLogger(__name__)

#: Backoff of :func:`with_retry` and the reconnect loops: from this delay, doubling, up to the
#: next, each pause shortened by a random share of up to RETRY_JITTER.
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
RETRY_JITTER = 0.25


class Backoff:
    """The pauses of every retry and reconnect loop: from ``first``, doubling up to ``most``.

    Each pause is shortened by a random share of up to ``jitter`` (so many workers or clients
    retrying the same dependency spread out instead of knocking in step); :meth:`reset` after
    a success starts again from ``first``. Timing only: nothing a worker outputs depends on it.
    """

    def __init__(self, first: float = RETRY_MIN_SECONDS, most: float = RETRY_MAX_SECONDS, jitter: float = RETRY_JITTER) -> None:
        if not 0 < first <= most or not 0 <= jitter < 1:
            raise ValueError(f"bad backoff: first={first}, most={most}, jitter={jitter}")
        self.first, self.most, self.jitter = first, most, jitter
        self._delay = first

    def next(self) -> float:
        """The next pause in seconds (then the one after doubles, up to ``most``)."""
        pause = self._delay * (1 - self.jitter * random.random())
        self._delay = min(self._delay * 2, self.most)
        return pause

    def reset(self) -> None:
        self._delay = self.first


_NETWORK = (ConnectionError, TimeoutError)
#: The state lost under the worker: it restarts itself and rebuilds; until then the record waits.
_STATE = (StateLost,)
_KAFKA_ALSO = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaUnavailableError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.ReplicaNotAvailableError,
)
_REDIS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
)
_LIBRDKAFKA_CODES = frozenset(
    {
        confluent_kafka.KafkaError._TRANSPORT,  # noqa: SLF001 (librdkafka's own names)
        confluent_kafka.KafkaError._TIMED_OUT,  # noqa: SLF001
        confluent_kafka.KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
        confluent_kafka.KafkaError._MSG_TIMED_OUT,  # noqa: SLF001
        confluent_kafka.KafkaError.REQUEST_TIMED_OUT,
        confluent_kafka.KafkaError.NOT_COORDINATOR,
        confluent_kafka.KafkaError.COORDINATOR_NOT_AVAILABLE,
        confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the infrastructure's doing: retry the record rather than dead-letter it."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        if isinstance(candidate, _NETWORK + _STATE + _KAFKA_ALSO + _REDIS):
            return True
        if isinstance(candidate, kafka_errors.KafkaError) and getattr(candidate, "retriable", False):
            return True
        if isinstance(candidate, confluent_kafka.KafkaException) and _librdkafka_transient(candidate):
            return True
    return False


def _librdkafka_transient(exc: confluent_kafka.KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    if not isinstance(error, confluent_kafka.KafkaError):
        return False
    return bool(error.retriable()) or error.code() in _LIBRDKAFKA_CODES


def dependency_of(exc: BaseException) -> str:
    """``Redis``, ``Kafka`` or ``the network``: what a retry log line says it is waiting for."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, redis_errors.RedisError):
            return "Redis"
        if isinstance(candidate, (kafka_errors.KafkaError, confluent_kafka.KafkaException)):
            return "Kafka"
    return "the network"


async def with_retry(call: Callable[[], Awaitable[Any]], doing: str = "a request") -> Any:
    """Await ``call()`` until the infrastructure lets it through (backoff from RETRY_MIN_SECONDS to
    RETRY_MAX_SECONDS); one log line per attempt names the dependency and what was being done."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next()
            log.warning("%s unavailable while %s (%s: %s); retrying in %.1f s", dependency_of(exc), doing, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
