"""Output messages: what the worker sends, built as plain data (no Kafka here).

Every value is deterministic — a function of the inputs only, with no wall-clock time — and
carries the input's event time as its record timestamp, so a replay produces the same bytes.
NaN (an undefined metric) is written as JSON ``null``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import InvalidMessage
from streams.messages.records import InputRecord


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


#: Longest key a dead letter carries as is; a longer (hostile) key is cut the same way as a value.
DEAD_LETTER_KEY_BYTES = 4096
#: Longest ``mmc.error.message`` header.
DEAD_LETTER_MESSAGE_BYTES = 2048


def dead_letter(record: InputRecord, error: InvalidMessage, prefix: str, max_bytes: int) -> Output:
    """The original bytes and key with the reason in headers (Kafka Connect's ``__connect.errors.*`` shape).

    A dead letter always fits: a value longer than ``max_bytes`` (a key longer than
    ``DEAD_LETTER_KEY_BYTES``) is carried as its first bytes, and the headers
    ``mmc.error.truncated`` (``value``, ``key`` or ``key,value``),
    ``mmc.error.original.size`` / ``mmc.error.original.sha256`` (of the value) and
    ``mmc.error.original.key.size`` / ``mmc.error.original.key.sha256`` (of a cut key) say what
    the original was, so it can be found and checked against the input topic.
    """
    value = record.value if record.value is not None else b""
    key = record.key
    headers = [
        ("mmc.error.reason", error.reason.encode()),
        # Cut at a character boundary: the header stays valid UTF-8.
        ("mmc.error.message", error.message.encode("utf-8", "replace")[:DEAD_LETTER_MESSAGE_BYTES].decode("utf-8", "ignore").encode()),
        ("mmc.error.topic", f"{prefix}{record.topic}".encode()),
        ("mmc.error.partition", str(record.partition).encode()),
        ("mmc.error.offset", str(record.offset).encode()),
    ]
    cut = []
    if key is not None and len(key) > DEAD_LETTER_KEY_BYTES:
        cut.append("key")
        headers += [
            ("mmc.error.original.key.size", str(len(key)).encode()),
            ("mmc.error.original.key.sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:DEAD_LETTER_KEY_BYTES]
    if len(value) > max_bytes:
        cut.append("value")
        headers += [
            ("mmc.error.original.size", str(len(value)).encode()),
            ("mmc.error.original.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[:max_bytes]
    if cut:
        headers.append(("mmc.error.truncated", ",".join(cut).encode()))
    return Output(topic="deadletter", key=key, value=value, timestamp_ms=record.timestamp_ms, headers=tuple(headers))
