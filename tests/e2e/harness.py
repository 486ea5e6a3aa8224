"""Running real workers and talking to the real broker from e2e tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import INPUT_TOPICS
from streams.settings import Settings
from streams.state import Keys


@dataclass(frozen=True)
class Event:
    """An input record to produce: short topic, key, value bytes, event time."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True)
class Received:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int
    partition: int
    offset: int

    def json(self) -> Any:
        return orjson.loads(self.value)


def applied_offsets(client: Any, settings: Settings) -> dict[tuple[str, int], int]:
    """The worker's progress from Redis: (input topic, partition) → next offset to apply."""
    keys = Keys(settings.state_namespace)
    return {(t, int(p)): int(v) for t in INPUT_TOPICS for p, v in client.hgetall(keys.progress(t)).items()}


def start_worker(settings: Settings, log_path: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
    """One real worker process (``python -m streams worker``) for ``settings``; its output to ``log_path``."""
    environ = {**os.environ, **settings.to_env(), "MMC_WEB_ENABLED": "false", **env}
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed by stop_worker
    proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=environ, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM (clean shutdown), then SIGKILL whatever is still running after ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log = getattr(p, "log", None)
        if hasattr(log, "close"):
            log.close()


@contextmanager
def workers(settings: Settings, count: int = 1, log_dir: Path | None = None, **env: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` real worker processes for ``settings``; stopped on exit."""
    procs = [start_worker(settings, log_dir / f"worker{i}.log" if log_dir else None, **env) for i in range(count)]
    try:
        yield procs
    finally:
        stop_workers(procs)


async def produce(settings: Settings, events: Iterable[Event]) -> None:
    """Send ``events`` in order (records up to 32 MiB: the fault suite sends 20 MB ones)."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=5, max_request_size=32 << 20)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic(e.topic), value=e.value, key=e.key, timestamp_ms=e.timestamp_ms) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**kafka_client_options(settings))
    await consumer.start()
    try:
        parts = []
        for t in topics:
            name = settings.topic(t)
            parts += [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or await _partitions(consumer, name))]
        return await consumer.end_offsets(parts)
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - metadata of a topic we did not subscribe to
    return consumer.partitions_for_topic(topic) or set()


async def collect(
    settings: Settings,
    topics: list[str],
    done: Callable[[list[Received]], bool],
    timeout: float,
    start: dict[TopicPartition, int] | None = None,
) -> list[Received]:
    """Read ``topics`` (from ``start`` offsets or the beginning) until ``done(received)`` or timeout."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    received: list[Received] = []
    try:
        parts = []
        for t in topics:
            name = settings.topic(t)
            parts += [TopicPartition(name, p) for p in sorted(await _partitions(consumer, name))]
        consumer.assign(parts)
        for tp in parts:
            if start and tp in start:
                consumer.seek(tp, start[tp])
            else:
                await consumer.seek_to_beginning(tp)
        short = {settings.topic(t): t for t in topics}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(received):
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    received.append(Received(short[tp.topic], m.key, m.value, dict(m.headers), m.timestamp, m.partition, m.offset))
        return received
    finally:
        await consumer.stop()
