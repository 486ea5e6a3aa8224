"""A barrier catch-up over a long partition, through a real broker and Redis.

The embedded broker answers a fetch with what it gathered within the fetch's wait: once a
partition holds tens of MB, the catch-up consumer's 2 ms wait brings next to no records (most
fetches none, now and then a few) while the high watermark shows thousands waiting. A catch-up
that only ever fetched that way would hold every partition lock of its topic for good. These
tests fill one partition past that point and check that a catch-up applies every record, once
and in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka.clients import kafka_client_options
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.state import RedisState
from streams.state.client import redis_client
from streams.state.progress import QUICK_FETCH_WAIT_MS, Barrier
from streams.tools.stack import EmbeddedStack
from tests.conftest import run_sync

RECORD_BYTES = 16_000  # one submission of ~2,000 predictions
RECORDS = 4_800  # ~77 MB in one partition


@pytest.fixture(scope="module")
def long_stack() -> Iterator[EmbeddedStack]:
    """A broker of this module's own: the partition it fills stays in the broker's memory."""
    with EmbeddedStack() as stack:
        yield stack


async def _fill(settings: Settings, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(**kafka_client_options(settings), max_request_size=2 << 20, linger_ms=5)
    await producer.start()
    try:
        for i in range(n):
            value = f"{i:08d}".encode() * (RECORD_BYTES // 8)
            await producer.send(settings.topic(topic), value=value, key=b"k", partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _quick_fetch_count(settings: Settings, topic: str) -> tuple[int, int | None]:
    """Records a fetch with the quick consumer's wait brings from offset 0, and the high watermark."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        enable_auto_commit=False,
        fetch_max_wait_ms=QUICK_FETCH_WAIT_MS,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(topic), 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = 0
        for _ in range(5):
            batch = await consumer.getmany(tp, timeout_ms=200)
            got += len(batch.get(tp, []))
        return got, consumer.highwater(tp)
    finally:
        await consumer.stop()


async def _catch_up(settings: Settings, topic: str) -> tuple[list[int], dict[int, int]]:
    """Run one barrier catch-up of ``topic`` with an apply that records the offsets it is given."""
    state = RedisState(redis_client(settings), settings.state_namespace)
    barrier = Barrier(settings, state)
    seen: list[int] = []

    async def apply(records: list[tuple[InputRecord, float]]) -> list[str]:
        seen.extend(r.offset for r, _ in records)
        return ["applied"] * len(records)

    barrier.apply = apply
    try:
        await asyncio.wait_for(barrier.wait_for(topic, time.monotonic()), timeout=180)
        return seen, await state.progress(topic)
    finally:
        await barrier.stop()
        await state.close()


def test_a_catch_up_applies_a_partition_whose_quick_fetches_bring_nothing(
    long_stack: EmbeddedStack, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(kafka_bootstrap=long_stack.kafka_bootstrap, redis_url=long_stack.redis_url)
    run_sync(_fill(settings, "rounds", RECORDS))
    got, highwater = run_sync(_quick_fetch_count(settings, "rounds"))
    # The case is real: here fetches with the quick wait bring next to nothing (now and then a
    # few records), with thousands waiting.
    assert highwater is not None and highwater >= RECORDS
    assert got <= RECORDS // 100, f"five {QUICK_FETCH_WAIT_MS} ms fetches brought {got} records: the case is not exercised"

    with caplog.at_level(logging.DEBUG, logger="streams.state.progress"):
        seen, progress = run_sync(_catch_up(settings, "rounds"))
    assert seen == list(range(RECORDS)), "every record once, in offset order"
    assert progress == {0: RECORDS}
    assert any("going on with a" in r.getMessage() for r in caplog.records), "the catch-up never turned patient"


def test_a_catch_up_of_a_short_partition_stays_quick(
    long_stack: EmbeddedStack, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """A partition the quick fetch serves is caught up without the patient consumer."""
    settings = make_settings(kafka_bootstrap=long_stack.kafka_bootstrap, redis_url=long_stack.redis_url)
    run_sync(_fill(settings, "rounds", 200))
    with caplog.at_level(logging.DEBUG, logger="streams.state.progress"):
        seen, progress = run_sync(_catch_up(settings, "rounds"))
    assert seen == list(range(200))
    assert progress == {0: 200}
    assert not any("going on with a" in r.getMessage() for r in caplog.records)
