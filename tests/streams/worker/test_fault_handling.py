"""Unit tests of the pure parts of fault handling: dead letters that always fit, the clock-skew
refusal, which errors count as the infrastructure's, watermark marks and the log throttle."""

from __future__ import annotations

import hashlib
import logging

import aiokafka.errors as kafka_errors
import confluent_kafka
import pytest
import redis.exceptions as redis_errors

from streams.errors import InvalidMessage, StateLost
from streams.messages.outputs import DEAD_LETTER_KEY_BYTES, dead_letter
from streams.messages.records import InputRecord, check_event_time, refuse
from streams.messages.schemas import validate_deadletter_headers
from streams.state.progress import applied_marks
from streams.transient import dependency_of, is_transient
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
