"""Event files (JSON Lines) and their replay onto the input topics.

An event file holds one :class:`~streams.tools.simulation.SimEvent` per line::

    {"topic":"submissions","key":"model_007","timestamp_ms":1767312000123,"value":{...}}

``topic`` is the short name (``rounds``, ``submissions``, ``stakes``, ``targets``); the
environment's prefix is added when sending, so one file replays into any deployment.

:func:`send_events` produces every event with its key (always: Tansu accepts keyless records
on compacted topics where Kafka would not, DESIGN §5) and with the event's own timestamp, so
the service sees simulated event time, not the wall clock. The producer is plain
at-least-once — no idempotence or transactions, which the embedded broker rejects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.errors import EventFileError, ReplayError
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import INPUT_TOPICS
from streams.settings import Settings
from streams.tools.simulation import SimEvent

#: Producer batching: wait up to this long to fill a batch (throughput over latency).
LINGER_MS = 20
#: Bytes per partition batch; a 2,000-id submission is ~16 KB, so a batch holds dozens.
MAX_BATCH_BYTES = 512 * 1024
#: Sends in flight before waiting for their acknowledgements (bounds memory and reports progress).
MAX_IN_FLIGHT = 2_000

#: ``progress(topic, sent)`` is called as acknowledgements arrive: short topic name, count.
Progress = Callable[[str, int], None]


def event_to_dict(event: SimEvent) -> dict[str, Any]:
    """The JSON object of one event line."""
    return {
        "topic": event.topic,
        "key": event.key,
        "timestamp_ms": event.timestamp_ms,
        "value": event.value,
    }


def write_events(events: Iterable[SimEvent], path: str | Path) -> int:
    """Write ``events`` to ``path`` as JSON Lines (one event per line); return how many.

    The file is written to ``path`` directly, streaming: memory stays flat whatever the size.
    """
    count = 0
    with open(path, "wb", buffering=1 << 20) as out:
        for event in events:
            out.write(orjson.dumps(event_to_dict(event), option=orjson.OPT_SERIALIZE_NUMPY))
            out.write(b"\n")
            count += 1
    return count


def read_events(path: str | Path) -> Iterator[SimEvent]:
    """The events of a JSON Lines file, lazily, in file order (blank lines are skipped).

    Raises:
        EventFileError: a line is not JSON or lacks a field (message names the line).
    """
    with open(path, "rb") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            yield _parse_line(line, number, path)


def count_events(path: str | Path) -> dict[str, int]:
    """Events per topic in a file, for progress totals (parses each line's head only)."""
    counts: dict[str, int] = {}
    prefix = b'{"topic":"'
    with open(path, "rb") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            if line.startswith(prefix):  # as write_events lays a line out
                topic = line[len(prefix) : line.index(b'"', len(prefix))].decode()
            else:
                topic = _parse_line(line, number, path).topic
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def _parse_line(line: bytes, number: int, path: str | Path) -> SimEvent:
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EventFileError(f"{path}:{number}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise EventFileError(f"{path}:{number}: an event line must be a JSON object")
    topic, key, ts, value = (raw.get(name) for name in ("topic", "key", "timestamp_ms", "value"))
    if not isinstance(topic, str) or not topic:
        raise EventFileError(f"{path}:{number}: 'topic' must be a topic's short name")
    if not isinstance(key, str):
        raise EventFileError(f"{path}:{number}: 'key' must be a string (every record is keyed)")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise EventFileError(f"{path}:{number}: 'timestamp_ms' must be a non-negative integer")
    if not isinstance(value, dict):
        raise EventFileError(f"{path}:{number}: 'value' must be a JSON object")
    return SimEvent(topic=topic, key=key, timestamp_ms=ts, value=value)


async def send_events(
    settings: Settings,
    events: Iterable[SimEvent],
    progress: Progress | None = None,
    topics: Iterable[str] = INPUT_TOPICS,
) -> dict[str, int]:
    """Produce ``events`` to ``settings.topic(event.topic)``, keyed, with their own timestamps.

    Events are sent in iteration order (so in timestamp order per partition for a simulated
    stream); batches linger :data:`LINGER_MS` ms and at most :data:`MAX_IN_FLIGHT` sends wait
    for acknowledgements at a time. Returns the number of events sent per short topic name
    once every one is acknowledged (``acks="all"``).

    Arguments:
        settings: broker and topic prefix.
        events: the events (e.g. :func:`read_events` or :meth:`Simulation.events`).
        progress: called with ``(topic, n)`` as ``n`` more events of ``topic`` are acknowledged.
        topics: the short names allowed (default: the input topics); others raise.

    Raises:
        ReplayError: an event names a topic outside ``topics``, or the broker is not
            reachable or refuses the records.
    """
    allowed = set(topics)
    sent: dict[str, int] = {}
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        enable_idempotence=False,
    )
    pending: list[tuple[str, asyncio.Future[Any]]] = []

    async def settle() -> None:
        done: dict[str, int] = {}
        for topic, future in pending:
            await future
            done[topic] = done.get(topic, 0) + 1
        pending.clear()
        for topic, n in done.items():
            sent[topic] = sent.get(topic, 0) + n
            if progress is not None:
                progress(topic, n)

    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise ReplayError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc!r}") from exc
    try:
        for event in events:
            if event.topic not in allowed:
                raise ReplayError(f"event for topic {event.topic!r}: only {sorted(allowed)} may be sent")
            future = await producer.send(
                settings.topic(event.topic),
                value=orjson.dumps(event.value, option=orjson.OPT_SERIALIZE_NUMPY),
                key=event.key.encode(),
                timestamp_ms=event.timestamp_ms,
            )
            pending.append((event.topic, future))
            if len(pending) >= MAX_IN_FLIGHT:
                await settle()
        await producer.flush()
        await settle()
    except KafkaError as exc:
        raise ReplayError(f"the broker at {settings.kafka_bootstrap} refused records: {exc!r}") from exc
    finally:
        await producer.stop()
    return sent
