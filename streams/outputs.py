"""Output messages: what the worker sends, built as plain data (no Kafka here).

Every value is deterministic — a function of the inputs only, with no wall-clock time — and
carries the input's event time as its record timestamp, so a replay produces the same bytes.
NaN (an undefined metric) is written as JSON ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import InvalidMessage
from streams.records import InputRecord


@dataclass(frozen=True)
class Output:
    """One record to produce: short topic name, key, value, record timestamp and headers."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


def encode(value: dict[str, Any]) -> bytes:
    """orjson with sorted keys (stable bytes); NaN and ±inf become null."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def json_output(topic: str, key: str, value: dict[str, Any], timestamp_ms: int) -> Output:
    return Output(topic, key.encode(), encode(value), timestamp_ms)


def dead_letter(record: InputRecord, error: InvalidMessage, prefix: str) -> Output:
    """The original bytes and key with the reason in headers (Kafka Connect's ``__connect.errors.*`` shape)."""
    return Output(
        topic="deadletter",
        key=record.key,
        value=record.value if record.value is not None else b"",
        timestamp_ms=record.timestamp_ms,
        headers=(
            ("mmc.error.reason", error.reason.encode()),
            ("mmc.error.message", error.message.encode("utf-8", "replace")),
            ("mmc.error.topic", f"{prefix}{record.topic}".encode()),
            ("mmc.error.partition", str(record.partition).encode()),
            ("mmc.error.offset", str(record.offset).encode()),
        ),
    )
