"""Streaming benchmark through the real service: one worker process, the embedded broker and Redis.

Prints, measured in one run:

1. ingestion throughput — submissions of 6,720 ids applied per second by one worker
   (4 partitions), from the first to the last applied submission (worker start-up excluded);
2. end-to-end resolution latency — a targets message produced → the last ``mmc.scores``
   message of that update consumed, for the round's first update (it also computes the
   round's basis: meta model, bootstrap draws) and a second update (basis reused), at each
   model count.

Usage: ``python benchmarks/bench_stream.py [--models 2000 10000] [--ids 6720]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import IO

import numpy as np
import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import create_topics, kafka_client_options
from streams.settings import Settings
from streams.stack import EmbeddedStack
from streams.state import Keys

T0 = 1_767_225_600_000


async def produce(settings: Settings, messages: list[tuple[str, bytes, bytes, int]]) -> float:
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=10, max_request_size=8 << 20, max_batch_size=1 << 20)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [await producer.send(settings.topic(t), v, key=k, timestamp_ms=ts) for t, k, v, ts in messages]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


def wait_applied(settings: Settings, topic: str, count: int, timeout: float, worker: subprocess.Popen[bytes] | None = None) -> tuple[float, float]:
    """Poll the worker's progress in Redis until ``count`` records of ``topic`` are applied.

    Returns (time of the first applied record seen, time all were applied).
    """
    client = redis.Redis.from_url(settings.redis_url)
    key = Keys(settings.state_namespace).progress(topic)
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(int(v) for v in client.hgetall(key).values())
        now = time.monotonic()
        if done > 0 and first is None:
            first = now
        if done >= count:
            return first or now, now
        if worker is not None and worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode} (set MMC_BENCH_WORKER_LOG to see why)")
        time.sleep(0.01)
    raise TimeoutError(f"{topic}: only {done} of {count} applied")


async def tail_consumer(settings: Settings, *topics: str) -> AIOKafkaConsumer:
    """A started consumer (no group) assigned to every partition of ``topics`` (short names), at their ends."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001
        names = [settings.topic(t) for t in topics]
        parts = [TopicPartition(name, p) for name in names for p in sorted(consumer.partitions_for_topic(name) or [])]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def resolution_latency(settings: Settings, round_number: int, day: int, targets: list[float], n_models: int) -> float:
    consumer = await tail_consumer(settings, "scores")
    try:
        value = orjson.dumps({"round": round_number, "day": day, "final": False, "targets": targets})
        sent = time.perf_counter()
        await produce(settings, [("targets", str(round_number).encode(), value, T0 + 10 * 86_400_000 + day)])
        seen = 0
        while seen < n_models:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                seen += sum(1 for m in messages if orjson.loads(m.value)["day"] == day)
        return time.perf_counter() - sent
    finally:
        await consumer.stop()


def bench_settings(stack: EmbeddedStack, partitions: int = 4) -> Settings:
    """Settings on ``stack`` with fresh topics, consumer group and Redis namespace (a random tag), web off."""
    tag = uuid.uuid4().hex[:6]
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, topic_prefix=f"b{tag}.",
        app_id=f"bench-{tag}", state_namespace=f"b{tag}", partitions=partitions, web_enabled=False,
        max_message_bytes=8 << 20,
    )


def start_worker(settings: Settings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """One real worker process (``python -m streams worker``) configured by ``settings``, output to ``log``."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def run(stack: EmbeddedStack, n_models: int, n_ids: int) -> dict[str, float]:
    settings = bench_settings(stack)
    asyncio.run(create_topics(settings))
    rng = np.random.default_rng(n_models)
    ids = [f"id{i:05d}" for i in range(n_ids)]
    crowd = rng.normal(size=n_ids)
    inputs = [("rounds", b"1", orjson.dumps({"type": "open", "round": 1, "ids": ids}), T0)]
    for i in range(n_models):
        m = f"model_{i:05d}"
        inputs.append(("stakes", m.encode(), orjson.dumps({"model": m, "stake": float(rng.lognormal(3, 1))}), T0 + 1 + i))
    print(f"  producing {n_models:,} submissions × {n_ids:,} ids …", flush=True)
    subs = []
    for i in range(n_models):
        m = f"model_{i:05d}"
        preds = (rng.uniform(0, 1) * crowd + rng.normal(size=n_ids)).tolist()
        subs.append(("submissions", m.encode(), orjson.dumps({"round": 1, "model": m, "predictions": preds}), T0 + 100_000 + i))
    asyncio.run(produce(settings, inputs + subs))
    log = open(os.environ.get("MMC_BENCH_WORKER_LOG", os.devnull), "ab")  # noqa: SIM115
    worker = start_worker(settings, log)
    try:
        first, last = wait_applied(settings, "submissions", n_models, timeout=3600, worker=worker)
        ingest = (n_models - 1) / (last - first) if last > first else float("nan")
        asyncio.run(produce(settings, [("rounds", b"1", orjson.dumps({"type": "close", "round": 1}), T0 + 5 * 86_400_000)]))
        wait_applied(settings, "rounds", 2, timeout=60, worker=worker)
        targets = (np.clip(np.round(0.2 * crowd + rng.normal(size=n_ids) + 2), 0, 4) / 4).tolist()
        day1 = asyncio.run(resolution_latency(settings, 1, 1, targets, n_models))
        day2 = asyncio.run(resolution_latency(settings, 1, 2, targets, n_models))
    finally:
        stop_worker(worker)
    return {"ingest": ingest, "day1": day1, "day2": day2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--ids", type=int, default=6720)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; one worker, 4 partitions, embedded Tansu + redis-server")
    with EmbeddedStack() as stack:
        results = {}
        for n in args.models:
            print(f"## {n:,} models × {args.ids:,} ids")
            results[n] = run(stack, n, args.ids)
            r = results[n]
            print(f"  ingestion: {r['ingest']:8.0f} submissions/s per worker   (target ≥ 1,000/s)")
            print(f"  resolution latency, first update (computes the basis): {r['day1']:6.2f} s")
            print(f"  resolution latency, next update (basis reused):        {r['day2']:6.2f} s   (target ≤ 3 s at 10,000)")


if __name__ == "__main__":
    main()
