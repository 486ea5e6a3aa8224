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

Retrying. Every retry and reconnect loop of the service — :func:`with_retry` around a record's
Redis and Kafka calls, the submissions consumer's restarts, the live feed's reconnects, the
start-up wait for Kafka and Redis — takes its pauses from one maintained library, `stamina
<https://stamina.hynek.me>`_ (on top of tenacity), through :func:`retries`: exponential
backoff (base 2) from RETRY_MIN_SECONDS up to RETRY_MAX_SECONDS, unlimited attempts and time
(the record waits for its dependency; the start-up wait has its own deadline), and a random
jitter of up to RETRY_JITTER_SECONDS added to each pause, so that workers and clients retrying
the same dependency spread out instead of knocking in step. stamina caps the jittered pause at
RETRY_MAX_SECONDS, so pauses at the cap are equal; the offsets the earlier, jittered pauses put
between clients remain. stamina is chosen over tenacity used directly for its small, typed API
with safe defaults: jitter always on, a predicate deciding what is retried, an iterator of
attempts for loops that are not one function call, and a test mode (``stamina.set_testing``).
Each loop logs its retries in its own words through :func:`reporting_retries` (stamina's
on-retry hook), with the pause stamina is about to take. Timing only: nothing a worker outputs
depends on it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

import aiokafka.errors as kafka_errors
import confluent_kafka
import redis.exceptions as redis_errors
import stamina
from stamina.instrumentation import RetryDetails

from streams.errors import StateLost

log = logging.getLogger(__name__)

#: The backoff of :func:`with_retry` and the reconnect loops (stamina's ``wait_initial``,
#: ``wait_max``, ``wait_jitter``): the n-th pause is min(RETRY_MAX_SECONDS, RETRY_MIN_SECONDS *
#: 2**(n-1) + a random share of RETRY_JITTER_SECONDS), i.e. 0.5-1, 1-1.5, 2-2.5, 4-4.5, 8-8.5, then 10 s.
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
RETRY_JITTER_SECONDS = 0.5

#: What a loop does with each retry stamina schedules (log it in its own words, count it).
RetryReport = Callable[[RetryDetails], None]
_REPORT: ContextVar[RetryReport | None] = ContextVar("streams_retry_report", default=None)


def _hand_to_the_loop(details: RetryDetails) -> None:
    """stamina's one on-retry hook here: the retry goes to the loop that scheduled it (:func:`reporting_retries`)."""
    report = _REPORT.get()
    if report is not None:
        report(details)
    else:
        log.warning("retrying %s after %r in %.1f s", details.name, details.caused_by, details.wait_for)


# In place of stamina's default hooks (a generic stdlib log line per retry, and a counter in
# prometheus_client's global registry, which this service does not expose): each retry is
# logged once, by the loop that knows what it was doing.
stamina.instrumentation.set_on_retry_hooks([_hand_to_the_loop])


@contextlib.contextmanager
def reporting_retries(report: RetryReport) -> Iterator[None]:
    """Within this block (this task), each retry scheduled is handed to ``report`` before its pause.

    ``RetryDetails.wait_for`` is the pause stamina is about to take, jitter included, so a log
    line can say how long it waits.
    """
    token = _REPORT.set(report)
    try:
        yield
    finally:
        _REPORT.reset(token)


def retries(
    on: type[Exception] | Callable[[Exception], bool | float],
    *,
    first: float = RETRY_MIN_SECONDS,
    most: float = RETRY_MAX_SECONDS,
    jitter: float = RETRY_JITTER_SECONDS,
) -> AsyncIterable[stamina.Attempt]:
    """A stamina retry context with this service's backoff, without limit of attempts or time.

    ``on`` is the exception class retried, or a predicate deciding, for each exception raised in
    an attempt, whether to retry it (``True``), raise it (``False``) or pause a given number of
    seconds instead of the backoff's (a float, e.g. the time left before a deadline). A
    predicate also sees what is not an ``Exception`` (``asyncio.CancelledError``, stamina hands
    it whatever the attempt raised) and must return ``False`` for it. Use::

        with reporting_retries(report):
            async for attempt in retries(is_transient):
                with attempt:
                    ...

    stamina cannot reset a context's pauses: a loop that must start over from the first pause
    (after a long run that went well) starts a new context.
    """
    return stamina.retry_context(on=on, attempts=None, timeout=None, wait_initial=first, wait_max=most, wait_jitter=jitter, wait_exp_base=2)


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
    """Await ``call()`` until the infrastructure lets it through; raise at once what is not transient.

    The pauses are :func:`retries`' (from RETRY_MIN_SECONDS to RETRY_MAX_SECONDS, jittered); one
    log line per retry names the dependency, what was being done, and the pause.

    The first attempt runs outside stamina: building a retry context costs ~60 µs (tenacity's
    objects, inspected callbacks), paid on every call though nearly every call goes through
    at once. Only a transient failure of that attempt opens the context, whose first attempt
    re-raises it, so the pauses, the log lines and stamina's test mode are those of a context
    opened from the start.
    """
    try:
        return await call()
    except Exception as exc:
        if not is_transient(exc):
            raise
        first_failure: Exception | None = exc

    def report(details: RetryDetails) -> None:
        exc = details.caused_by
        log.warning("%s unavailable while %s (%s: %s); retrying in %.1f s", dependency_of(exc), doing, type(exc).__name__, exc, details.wait_for)

    with reporting_retries(report):
        async for attempt in retries(is_transient):
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await call()
    raise AssertionError("a retry context without limits ends only by returning or raising")
