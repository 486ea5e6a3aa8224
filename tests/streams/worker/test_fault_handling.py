"""Unit tests of the pure parts of fault handling: dead letters that always fit, the clock-skew
refusal, which errors count as the infrastructure's and how they are retried (stamina's backoff,
the submissions consumer's restarts), watermark marks and the log throttle."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import aiokafka.errors as kafka_errors
import confluent_kafka
import pytest
import redis.exceptions as redis_errors
import stamina

from streams import transient
from streams.errors import InvalidMessage, StateLost
from streams.messages.outputs import DEAD_LETTER_KEY_BYTES, dead_letter
from streams.messages.records import InputRecord, check_event_time, refuse
from streams.messages.schemas import validate_deadletter_headers
from streams.settings import Settings
from streams.state.progress import applied_marks
from streams.transient import RETRY_JITTER_SECONDS, RETRY_MAX_SECONDS, RETRY_MIN_SECONDS, dependency_of, is_transient, with_retry
from streams.worker import ingest
from streams.worker.log_throttle import Throttle


def record(value: bytes | None, key: bytes | None = b"m1", ts: int = 1_000, offset: int = 7) -> InputRecord:
    return InputRecord(topic="submissions", partition=2, offset=offset, timestamp_ms=ts, key=key, value=value)


def test_a_small_dead_letter_carries_the_original_bytes_and_no_truncation_header() -> None:
    """Below the limit: value and key as they came, the five error headers."""
    letter = dead_letter(record(b"{not json"), refuse("not_json", "bad"), "mmc.", max_bytes=1024)
    headers = dict(letter.headers)
    assert letter.value == b"{not json" and letter.key == b"m1"
    assert headers["mmc.error.topic"] == b"mmc.submissions" and headers["mmc.error.offset"] == b"7"
    assert "mmc.error.truncated" not in headers


def test_an_oversize_value_is_cut_to_the_limit_with_its_size_and_sha256() -> None:
    """20 MB in, 1,024 bytes out; the headers identify the original."""
    value = bytes(range(256)) * (20_000_000 // 256)
    letter = dead_letter(record(value), refuse("oversize", "too big"), "mmc.", max_bytes=1024)
    headers = dict(letter.headers)
    assert letter.value == value[:1024]
    assert headers["mmc.error.truncated"] == b"value"
    assert headers["mmc.error.original.size"] == str(len(value)).encode()
    assert headers["mmc.error.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    validate_deadletter_headers(headers)


def test_a_hostile_key_is_cut_too() -> None:
    """A 1 MB key: cut to DEAD_LETTER_KEY_BYTES, its size and hash in headers."""
    key = b"k" * 1_000_000
    letter = dead_letter(record(b"{}", key=key), refuse("bad_key", "no"), "mmc.", max_bytes=1024)
    headers = dict(letter.headers)
    assert letter.key == key[:DEAD_LETTER_KEY_BYTES]
    assert headers["mmc.error.truncated"] == b"key"
    assert headers["mmc.error.original.key.sha256"] == hashlib.sha256(key).hexdigest().encode()
    validate_deadletter_headers(headers)


def test_the_error_message_header_is_bounded() -> None:
    letter = dead_letter(record(b"x"), InvalidMessage("internal_error", "y" * 100_000), "mmc.", max_bytes=1024)
    assert len(dict(letter.headers)["mmc.error.message"]) <= 2048


def test_clock_skew_refuses_only_records_beyond_the_bound() -> None:
    """At the bound: accepted; one millisecond later: ``clock_skew``."""
    now, skew = 1_767_225_600_000, 3_600_000
    check_event_time(record(b"{}", ts=now + skew), now, skew)
    with pytest.raises(InvalidMessage) as refused:
        check_event_time(record(b"{}", ts=now + skew + 1), now, skew)
    assert refused.value.reason == "clock_skew"


def test_refused_records_never_move_the_watermark() -> None:
    """Accepted and redelivered records carry their event time; refused ones -1."""
    records = [record(b"{}", ts=10, offset=1), record(b"{}", ts=4_102_444_800_000, offset=2), record(b"{}", ts=30, offset=3)]
    marks = applied_marks(records, ["applied", "clock_skew", "unchanged"])
    assert marks == [(2, 1, 10), (2, 2, -1), (2, 3, 30)]


@pytest.mark.parametrize(
    "exc",
    [
        kafka_errors.RequestTimedOutError(),
        kafka_errors.NodeNotReadyError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.KafkaConnectionError(),
        kafka_errors.NoBrokersAvailable(),
        confluent_kafka.KafkaException(confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT)),  # noqa: SLF001
        confluent_kafka.KafkaException(confluent_kafka.KafkaError(confluent_kafka.KafkaError._ALL_BROKERS_DOWN)),  # noqa: SLF001
        redis_errors.ConnectionError(),
        redis_errors.TimeoutError(),
        redis_errors.BusyLoadingError(),
        redis_errors.ReadOnlyError(),
        redis_errors.OutOfMemoryError(),
        redis_errors.TryAgainError(),
        ConnectionRefusedError(),
        TimeoutError(),
        StateLost("flushed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_infrastructure_errors_are_transient(exc: BaseException) -> None:
    """Every broker/Redis timeout, not-ready, leader change or connection error is retried."""
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [KeyError(1), ValueError("x"), kafka_errors.MessageSizeTooLargeError(), redis_errors.ResponseError("WRONGTYPE"), ZeroDivisionError()],
    ids=lambda e: type(e).__name__,
)
def test_bugs_and_refusals_are_not_transient(exc: BaseException) -> None:
    """What no retry can fix is not transient (a bug becomes ``internal_error``)."""
    assert not is_transient(exc)


def test_a_wrapped_socket_error_is_transient_and_the_dependency_is_named() -> None:
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise RuntimeError("send failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    assert dependency_of(redis_errors.TimeoutError()) == "Redis"
    assert dependency_of(kafka_errors.RequestTimedOutError()) == "Kafka"


def test_the_throttle_passes_one_line_per_kind_and_interval_and_counts_the_rest() -> None:
    """100 reconnect lines in a burst: one passes; after the interval the next says 99 more came."""
    now = [0.0]
    throttle = Throttle(interval=30.0, clock=lambda: now[0])

    def line(name: str = "aiokafka.conn", msg: str = "Unable to connect to %s") -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("node",), None)

    passed = [throttle.filter(line()) for _ in range(100)]
    assert passed.count(True) == 1
    assert throttle.filter(line(msg="another kind"))  # a different template is its own kind
    assert throttle.filter(line(name="streams.worker.main"))  # the service's own lines always pass
    now[0] = 31.0
    later = line()
    assert throttle.filter(later) and "99 more like this" in str(later.msg)


# --- retrying: stamina's backoff -----------------------------------------------------------------------

REAL_SLEEP = asyncio.sleep


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The pauses the retry loops take, recorded instead of slept (stamina sleeps with ``asyncio.sleep``)."""
    taken: list[float] = []

    async def sleep(delay: float, result: object = None) -> object:
        taken.append(delay)
        return await REAL_SLEEP(0, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    yield taken


def failing(times: int, error: Callable[[], Exception], then: object = "done") -> tuple[Callable[[], Awaitable[object]], list[int]]:
    """A call that raises ``error()`` ``times`` times, then returns ``then``; and the count of its calls."""
    calls = [0]

    async def call() -> object:
        calls[0] += 1
        if calls[0] <= times:
            raise error()
        return then

    return call, calls


def expected_bounds(n: int) -> list[tuple[float, float]]:
    """The n first pauses of the backoff: from RETRY_MIN_SECONDS doubling, plus up to the jitter, capped."""
    fulls = [RETRY_MIN_SECONDS * 2**i for i in range(n)]
    return [(min(full, RETRY_MAX_SECONDS), min(full + RETRY_JITTER_SECONDS, RETRY_MAX_SECONDS)) for full in fulls]


def test_a_transient_failure_is_retried_with_pauses_that_double_to_the_cap_with_jitter(pauses: list[float], caplog: pytest.LogCaptureFixture) -> None:
    """Twelve Redis timeouts, then success: 0.5-1, 1-1.5, 2-2.5, 4-4.5, 8-8.5, then 10 s; each
    pause logged once, naming the dependency, what was being done and the pause taken."""
    caplog.set_level(logging.WARNING, logger="streams.transient")
    call, calls = failing(12, lambda: redis_errors.TimeoutError("Timeout reading from socket"))
    assert asyncio.run(with_retry(call, "reading the progress")) == "done"
    assert calls[0] == 13 and len(pauses) == 12
    assert all(low <= pause <= high for pause, (low, high) in zip(pauses, expected_bounds(12), strict=True)), pauses
    assert pauses[5:] == [RETRY_MAX_SECONDS] * 7
    assert any(pause > low for pause, (low, _) in zip(pauses[:5], expected_bounds(5), strict=True)), "no jitter"
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [f"Redis unavailable while reading the progress (TimeoutError: Timeout reading from socket); retrying in {pause:.1f} s" for pause in pauses]
    assert all(record.levelno == logging.WARNING for record in caplog.records)


def test_the_pauses_are_jittered_from_one_retry_loop_to_the_next(pauses: list[float]) -> None:
    """Two loops retrying the same failure do not pause in step."""
    for _ in range(2):
        call, _calls = failing(3, ConnectionRefusedError)
        asyncio.run(with_retry(call))
    assert pauses[:3] != pauses[3:]


def test_an_error_that_is_not_transient_is_raised_at_once(pauses: list[float], caplog: pytest.LogCaptureFixture) -> None:
    """The predicate (is_transient) decides: a bug or a bad input is not retried, nor logged as a retry."""
    caplog.set_level(logging.WARNING, logger="streams.transient")
    call, calls = failing(5, lambda: ValueError("not a number"))
    with pytest.raises(ValueError, match="not a number"):
        asyncio.run(with_retry(call, "applying m1"))
    assert calls[0] == 1 and pauses == [] and caplog.records == []


def test_a_call_that_goes_through_at_once_opens_no_retry_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt runs outside stamina (a context costs ~60 µs, paid per record and per
    batch): a call that succeeds or fails for good never builds one."""

    def no_context(*args: object, **kwargs: object) -> None:
        raise AssertionError("a retry context was opened")

    monkeypatch.setattr(transient, "retries", no_context)
    call, calls = failing(0, ConnectionRefusedError)
    assert asyncio.run(with_retry(call)) == "done" and calls[0] == 1
    call, calls = failing(1, lambda: ValueError("not a number"))
    with pytest.raises(ValueError, match="not a number"):
        asyncio.run(with_retry(call))
    assert calls[0] == 1


def test_what_the_predicate_calls_transient_is_retried_even_wrapped() -> None:
    """A client error wrapping a socket error is retried (stamina's test mode: no pauses, three
    attempts at most), and the last failure is raised when the attempts run out."""

    def wrapped() -> Exception:
        error = RuntimeError("send failed")
        error.__cause__ = ConnectionResetError("reset")
        return error

    with stamina.set_testing(True, attempts=3):
        call, calls = failing(2, wrapped)
        assert asyncio.run(with_retry(call)) == "done" and calls[0] == 3
        call, calls = failing(10, wrapped)
        with pytest.raises(RuntimeError, match="send failed"):
            asyncio.run(with_retry(call))
        assert calls[0] == 3


def test_cancelling_a_retried_call_is_not_retried() -> None:
    """The worker stopping cancels the record's call: it stops there, it is not a failure to retry."""
    calls = [0]

    async def main() -> None:
        async def call() -> None:
            calls[0] += 1
            await asyncio.Event().wait()

        task = asyncio.ensure_future(with_retry(call))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert calls == [1]


def test_the_submissions_consumer_restarts_with_backoff_and_starts_over_after_a_run_that_lasted(
    pauses: list[float], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two quick failures (pauses 0.5-1, then 1-1.5 s; unhealthy counts 1, 2), one after a run
    that lasted (a new retry context: 0.5-1 s again, count 1), one more quick one (1-1.5 s, count 2);
    stopping the worker (cancellation) ends the loop."""
    monkeypatch.setattr(ingest, "RUN_LASTED_SECONDS", 0.2)
    caplog.set_level(logging.ERROR, logger="streams.worker.ingest")
    runs = [0]

    async def consume() -> None:
        runs[0] += 1
        if runs[0] == 3:
            await REAL_SLEEP(0.3)  # a run that lasted
        if runs[0] == 5:
            raise asyncio.CancelledError
        raise ConnectionResetError(f"run {runs[0]}")

    async def no_processor() -> ingest.Processor:
        raise AssertionError("not used")

    async def no_apply(records: ingest.Records, batch: ingest.SubmissionBatch) -> None:
        raise AssertionError("not used")

    consumer = ingest.SubmissionConsumer(Settings(), no_processor, no_apply)
    monkeypatch.setattr(consumer, "_consume", consume)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(consumer.run())
    assert runs[0] == 5
    first, second = expected_bounds(2)
    assert [first[0] <= pauses[0] <= first[1], second[0] <= pauses[1] <= second[1]] == [True, True], pauses
    assert [first[0] <= pauses[2] <= first[1], second[0] <= pauses[3] <= second[1]] == [True, True], pauses
    assert len(pauses) == 4
    lines = [record.getMessage() for record in caplog.records]
    counts = [int(line.split("(")[1].split(" ")[0]) for line in lines]
    assert counts == [1, 2, 1, 2], lines
    assert all(line.endswith(f"restarting it in {pause:.1f} s") for line, pause in zip(lines, pauses, strict=True)), lines
    assert [str(record.exc_info[1]) for record in caplog.records if record.exc_info] == ["run 1", "run 2", "run 3", "run 4"]
    assert consumer.problem() is None  # two in a row: not yet unhealthy
