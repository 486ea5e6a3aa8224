"""The submissions consumer (``streams.worker.ingest``) against the real broker and Redis.

It runs in the test process with a real :class:`~streams.worker.runtime.Runtime` (barriers, Redis state,
output producer), as the worker runs it, with the batch callback wrapped to observe it or to
make it fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.kafka.clients import kafka_client_options
from streams.settings import Settings
from streams.worker.ingest import CONSUME_SECONDS, PREFETCH_KBYTES, Records, SubmissionConsumer, consumer_config
from streams.worker.rebuild import committed_offsets
from streams.worker.runtime import Runtime, apply_unless_applied
from streams.worker.submissions import SubmissionBatch
from tests.conftest import run_sync
from tests.e2e.harness import Event, applied_offsets, collect

N_IDS = 30
T0 = 1_767_225_600_000
Apply = Callable[[Records, SubmissionBatch], Awaitable[None]]


def events(models: int, bad: int = 0) -> list[Event]:
    """Round 1 opened, then ``models`` submissions to it, then ``bad`` that are not JSON."""
    rng = np.random.default_rng(7)
    ids = [f"n{i:03d}" for i in range(N_IDS)]
    out = [Event("rounds", b"1", orjson.dumps({"type": "open", "round": 1, "ids": ids}), T0)]
    for i in range(models):
        body = {"round": 1, "model": f"m{i:02d}", "predictions": rng.normal(size=N_IDS).tolist()}
        out.append(Event("submissions", f"m{i:02d}".encode(), orjson.dumps(body), T0 + 10 + i))
    out += [Event("submissions", f"bad{i}".encode(), b"{not json", T0 + 1000 + i) for i in range(bad)]
    return out


def produce_submissions(settings: Settings, inputs: list[Event]) -> dict[int, int]:
    """Produce ``inputs``; returns each submissions partition's end (last offset + 1), from the
    send acknowledgements (the embedded broker's end offsets can lag behind)."""

    async def send() -> dict[int, int]:
        producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=5)
        await producer.start()
        try:
            sent = [(e.topic, await producer.send(settings.topic(e.topic), value=e.value, key=e.key, timestamp_ms=e.timestamp_ms)) for e in inputs]
            ends: dict[int, int] = {}
            for topic, future in sent:
                meta = await future
                if topic == "submissions":
                    ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
            return ends
        finally:
            await producer.stop()

    return run_sync(send())  # type: ignore[no-any-return]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def done_with(settings: Settings, redis: Any, ends: dict[int, int]) -> bool:
    """Every submission applied (progress in Redis) and committed in the submissions group."""
    progress = applied_offsets(redis, settings)
    committed = await committed_offsets(settings)
    return all(progress.get(("submissions", p), 0) >= end and committed.get(("submissions", p), 0) >= end for p, end in ends.items())


def consumer_for(runtime: Runtime, apply: Apply | None = None) -> SubmissionConsumer:
    async def default(records: Records, prepared: SubmissionBatch) -> None:
        await apply_unless_applied(runtime, records, prepared)

    return SubmissionConsumer(runtime.settings, runtime.processor, apply or default)


async def stored_models(settings: Settings) -> set[str]:
    runtime = Runtime(settings)
    try:
        await runtime.processor()
        assert runtime.state is not None
        return set(await runtime.state.get_submissions(1))
    finally:
        await runtime.stop()


async def faust_group_commit(settings: Settings, partition: int) -> int | None:
    """The Faust group's (``MMC_APP_ID``) committed offset of a submissions partition."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(settings.topic("submissions"), partition))  # type: ignore[no-any-return]
    finally:
        await consumer.stop()


def test_a_full_prefetch_queue_holds_fetching_up_for_less_than_one_consume_wait() -> None:
    """librdkafka stops fetching a partition whose prefetch queue is full for fetch.queue.backoff.ms
    (1 s unless set); the worker drains the queue faster than that, so the backoff must stay below
    the consumer's own wait for records or the worker idles with records waiting in the broker."""
    config = consumer_config(Settings(kafka_bootstrap="127.0.0.1:1", app_id="cfg"))
    assert config["queued.max.messages.kbytes"] == PREFETCH_KBYTES
    assert 0 < config["fetch.queue.backoff.ms"] < CONSUME_SECONDS * 1000
    assert config["group.id"] == "cfg-submissions"
    assert config["enable.auto.commit"] is False


def test_the_consumer_applies_commits_in_its_own_group_and_restarts_after_a_failure(make_settings: Callable[..., Settings], redis: Any) -> None:
    """Every submission is stored or dead-lettered and committed in ``{app_id}-submissions``;
    a batch whose application fails with an unexpected error is not lost: the consumer
    restarts and reads it again from the committed offsets."""
    settings = make_settings(ingest_batch_size=4)
    ends = produce_submissions(settings, events(models=20, bad=2))
    assert sum(ends.values()) == 22
    runtime = Runtime(settings)
    calls: list[list[tuple[int, int]]] = []

    async def fail_the_second_batch(records: Records, prepared: SubmissionBatch) -> None:
        calls.append([(r.partition, r.offset) for r, _ in records])
        if len(calls) == 2:
            prepared.discard()
            raise RuntimeError("injected failure")
        await apply_unless_applied(runtime, records, prepared)

    consumer = consumer_for(runtime, fail_the_second_batch)

    async def scenario() -> None:
        task = asyncio.ensure_future(consumer.run())
        try:
            await wait_until(lambda: done_with(settings, redis, ends), 90, "the submissions to be applied and committed")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.stop()

    run_sync(scenario())
    failed = calls[1]
    assert all(any(key in batch for batch in calls[2:]) for key in failed), "the failed batch was read again"
    assert {key for batch in calls for key in batch} == {(p, o) for p, end in ends.items() for o in range(end)}
    assert run_sync(stored_models(settings)) == {f"m{i:02d}" for i in range(20)}
    letters = run_sync(collect(settings, ["deadletter"], lambda got: len(got) >= 2, timeout=20))
    assert sorted(m.key for m in letters) == [b"bad0", b"bad1"]
    assert {m.headers["mmc.error.reason"] for m in letters} == {b"not_json"}
    committed = run_sync(committed_offsets(settings))
    assert {p: committed[("submissions", p)] for p in ends} == ends
    assert all(run_sync(faust_group_commit(settings, p)) is None for p in ends), "Faust's group does not read submissions"


def test_two_consumers_share_the_partitions_and_apply_everything(make_settings: Callable[..., Settings], redis: Any) -> None:
    """A second consumer joining mid-stream takes partitions over (a rebalance while batches are
    in flight): both apply, nothing is left unapplied or uncommitted."""
    settings = make_settings(ingest_batch_size=2, broker_session_timeout=6.0, broker_rebalance_timeout=6.0)
    ends = produce_submissions(settings, events(models=40))
    assert sum(ends.values()) == 40
    runtimes = [Runtime(settings), Runtime(settings)]
    applied: list[list[tuple[int, int]]] = [[], []]
    revoked: list[int] = []
    rebalancing = asyncio.Event()

    def slow(i: int) -> Apply:
        async def apply(records: Records, prepared: SubmissionBatch) -> None:
            if i == 0 and applied[0]:
                # After its first batch, the first consumer holds its next batch until the
                # second one's join starts a rebalance: the rebalance always finds work in flight.
                await asyncio.wait_for(rebalancing.wait(), 60)
            await apply_unless_applied(runtimes[i], records, prepared)
            applied[i] += [(r.partition, r.offset) for r, _ in records]

        return apply

    consumers = [consumer_for(runtimes[i], slow(i)) for i in range(2)]
    first_revoke = consumers[0].on_partitions_revoked

    async def record_revoke(tps: list[int]) -> None:
        revoked.append(len(tps))
        if tps:
            rebalancing.set()
        await first_revoke(tps)

    consumers[0].on_partitions_revoked = record_revoke  # type: ignore[method-assign]

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(consumers[0].run())]
        try:
            await wait_until(lambda: asyncio.sleep(0, bool(applied[0])), 60, "the first consumer's first batch")
            tasks.append(asyncio.ensure_future(consumers[1].run()))
            await wait_until(lambda: done_with(settings, redis, ends), 120, "the submissions to be applied and committed")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for runtime in runtimes:
                await runtime.stop()

    run_sync(scenario())
    assert any(n > 0 for n in revoked), "the first consumer gave partitions up"
    assert applied[1], "the second consumer applied some submissions"
    everything = {(p, o) for p, end in ends.items() for o in range(end)}
    assert set(applied[0]) | set(applied[1]) == everything
    assert run_sync(stored_models(settings)) == {f"m{i:02d}" for i in range(40)}
