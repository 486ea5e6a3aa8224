"""Streaming benchmark through the real service: one worker process, the embedded broker and Redis.

Prints, measured in one run:

1. ingestion throughput — submissions of 6,720 ids applied per second by one worker
   (4 partitions), from the first to the last applied submission (worker start-up excluded),
   with the round's open and every stake applied to its state, and their offsets committed for
   its group, before the submissions are produced and it starts: the window covers
   submissions only (no stake is read in it, neither caught up by the submissions' barrier
   nor read again by the stakes agent); with the CPU time the worker process and the broker
   spent per submission meanwhile (``/proc/PID/stat``); beside it, on the same submissions, what bounds it: the worker's
   processing alone (the same code fed from memory in this process — decoding, ranking,
   barriers, Redis, live alerts — no Kafka consumer), a Faust agent that only counts them
   (``faust_count.py``, the worker's Faust configuration: what a Faust agent per record costs),
   and two bare consumers that only read them — aiokafka's and librdkafka's (``confluent_kafka``,
   the worker's submissions consumer, ``streams/worker/ingest.py``) — with their CPU per record (all
   threads); and, run first, the same worker with librdkafka's default ``fetch.queue.backoff.ms``
   (1 s: how long its consumer stops fetching a partition once its prefetch queue is full; the
   worker's is ``MMC_INGEST_FETCH_BACKOFF_MS``). All run on the same two cores;
2. the round's close produced → its basis (meta model, bootstrap meta models, per-model
   products) stored in Redis: the worker computes it in the background once the close is applied;
   then → the round's ``neighbours`` published (the same close-time task, after the basis; every
   model staked, so each is compared with the ``MMC_NEIGHBOURS_MAX_STAKERS`` largest stakers),
   then the round's close-stage alerts raised;
3. end-to-end resolution latency — a targets message produced → the last ``mmc.scores``
   message of that update consumed, for the round's first update (sent once the close-time
   work is done: in the tournament targets come a day or more after the close) and a second
   one, at each model count.

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
from collections.abc import Callable
from typing import IO

import numpy as np
import orjson
import redis
import redis.cluster
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as RdTopicPartition

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import create_topics
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.state import Keys
from streams.state.client import redis_sync_client
from streams.state.neighbours import NEIGHBOURS_FIELD
from streams.tools.stack import EmbeddedStack
from streams.worker.ingest import consumer_config
from streams.worker.runtime import Runtime

T0 = 1_767_225_600_000
#: librdkafka's own fetch.queue.backoff.ms, beside the worker's (``MMC_INGEST_FETCH_BACKOFF_MS``).
LIBRDKAFKA_DEFAULT_BACKOFF_MS = 1000
HERE = os.path.dirname(os.path.abspath(__file__))
Message = tuple[str, bytes, bytes, int]  # (short topic, key, value, timestamp ms)


async def produce(settings: Settings, messages: list[Message]) -> float:
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=10, max_request_size=8 << 20, max_batch_size=1 << 20)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [await producer.send(settings.topic(t), v, key=k, timestamp_ms=ts) for t, k, v, ts in messages]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


def poll_until(check: Callable[[], bool], timeout: float, worker: subprocess.Popen[bytes] | None, what: str) -> float:
    """Call ``check`` every 10 ms until it is true; returns when. Raises when ``timeout`` passes
    first (``what``: what was awaited) or when ``worker`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        if worker is not None and worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode} (set MMC_BENCH_WORKER_LOG to see why)")
        time.sleep(0.01)
    return time.monotonic()


def wait_applied(settings: Settings, topic: str, count: int, timeout: float, worker: subprocess.Popen[bytes] | None = None) -> tuple[float, float]:
    """Poll the worker's progress in Redis until ``count`` records of ``topic`` are applied.

    Returns (time of the first applied record seen, time all were applied).
    """
    client = redis_sync_client(settings)
    first: list[float] = []

    def all_applied() -> bool:
        done = applied_count(settings, topic, client)
        if done > 0 and not first:
            first.append(time.monotonic())
        return done >= count

    last = poll_until(all_applied, timeout, worker, f"{topic}: not all {count} applied")
    return (first or [last])[0], last


def wait_basis(settings: Settings, round_number: int, timeout: float, worker: subprocess.Popen[bytes]) -> float:
    """Poll Redis until the worker has stored the round's basis (it starts it at the close); returns when."""
    client = redis_sync_client(settings)
    key = Keys(settings.state_namespace).basis(round_number)
    return poll_until(lambda: bool(client.exists(key)), timeout, worker, f"round {round_number}: no basis")


def wait_round_field(settings: Settings, round_number: int, field: str, what: str, timeout: float, worker: subprocess.Popen[bytes]) -> float:
    """Poll Redis until the worker has set ``field`` of the round's hash (``what`` it marks:
    the neighbours published, the close-stage alerts raised); returns when."""
    client = redis_sync_client(settings)
    key = Keys(settings.state_namespace).round(round_number)
    return poll_until(lambda: bool(client.hexists(key, field)), timeout, worker, f"round {round_number}: no {what}")


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
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        topic_prefix=f"b{tag}.",
        app_id=f"bench-{tag}",
        state_namespace=f"b{tag}",
        partitions=partitions,
        web_enabled=False,
        max_message_bytes=8 << 20,
    )


def start_worker(settings: Settings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """One real worker process (``python -m streams worker``) configured by ``settings``, output to ``log``."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def apply_inputs(settings: Settings, log: IO[bytes], n_stakes: int) -> None:
    """Apply the round's open and the ``n_stakes`` stakes (the only records on the broker yet) to
    ``settings``' state before its worker starts, so that it reads no stake while it ingests
    the submissions.

    A worker of the same state in groups of its own (``{app_id}-inputs``) applies them and
    stops; the offsets it applied are then committed for the worker's Faust group, whose stakes
    agent starts past them, and its submissions' barrier finds them applied.
    """
    inputs = settings.model_copy(update={"app_id": f"{settings.app_id}-inputs"})
    worker = start_worker(inputs, log)
    try:
        wait_applied(inputs, "rounds", 1, timeout=600, worker=worker)
        wait_applied(inputs, "stakes", n_stakes, timeout=600, worker=worker)
    finally:
        stop_worker(worker)
    asyncio.run(commit_applied(settings, ("rounds", "stakes")))


async def commit_applied(settings: Settings, topics: tuple[str, ...]) -> None:
    """Commit, for the consumer group that reads each of ``topics``, the offsets the state has
    applied (its progress in Redis)."""
    client = redis_sync_client(settings)
    for topic in topics:
        applied = client.hgetall(Keys(settings.state_namespace).progress(topic))
        offsets = {TopicPartition(settings.topic(topic), int(p)): OffsetAndMetadata(int(o), "") for p, o in applied.items()}
        consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=settings.consumer_group(topic), enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(offsets))
            await consumer.commit(offsets)
        finally:
            await consumer.stop()


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def applied_count(settings: Settings, topic: str, client: redis.Redis | redis.cluster.RedisCluster | None = None) -> int:
    """Records of ``topic`` the worker has applied (its progress in Redis)."""
    client = client or redis_sync_client(settings)
    return sum(int(v) for v in client.hgetall(Keys(settings.state_namespace).progress(topic)).values())


async def processing_alone(settings: Settings, inputs: list[Message], subs: list[Message]) -> tuple[float, float]:
    """The worker's processing of ``subs`` with no Kafka consumer: records handed in from memory.

    Fresh topics and state (``settings``); ``inputs`` (the round's open, the stakes) are applied
    first, then the submissions in batches of ``MMC_INGEST_BATCH_SIZE`` through the same
    ``Runtime.handle_records`` the agents call (barriers, Redis and live alerts included).
    Returns (submissions per second, CPU ms per submission of this process, all threads).
    """
    runtime = Runtime(settings)
    offsets: dict[tuple[str, int], int] = {}

    def as_records(messages: list[Message]) -> list[tuple[InputRecord, float]]:
        out = []
        for i, (topic, key, value, ts) in enumerate(messages):
            partition = 0 if topic == "rounds" else i % settings.partitions
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            out.append((InputRecord(topic=topic, partition=partition, offset=offset, timestamp_ms=ts, key=key, value=value), time.monotonic()))
        return out

    try:
        size = settings.ingest_batch_size
        for topic in ("rounds", "stakes"):
            records = as_records([m for m in inputs if m[0] == topic])
            for first in range(0, len(records), size):
                await runtime.handle_records(records[first : first + size])
        records = as_records(subs)
        wall, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(records), size):
            await runtime.handle_records(records[first : first + size])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await runtime.stop()
    return len(records) / wall, cpu / len(records) * 1e3


def faust_alone(settings: Settings, count: int) -> tuple[float, float]:
    """A Faust agent that only counts the ``count`` records of ``settings``' submissions topic
    (a fresh consumer group): (records per second, CPU ms per record of its process)."""
    env = {**os.environ, **settings.to_env(), "MMC_APP_ID": f"{settings.app_id}-count", "MMC_BENCH_COUNT": str(count)}
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "faust_count.py"), "worker", "-l", "warn"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    # Faust's worker logs what the agent prints (to stderr, as a warning).
    lines = [line.split("COUNTED ", 1)[1].split() for line in (done.stdout + done.stderr).splitlines() if "COUNTED " in line]
    if not lines:
        raise RuntimeError(f"the counting agent exited with {done.returncode}: {done.stderr[-2000:]}")
    _, rate, cpu_ms = lines[-1]
    return float(rate), float(cpu_ms)


class ReadClock:
    """Counts records read until ``count``; rate and CPU per record from the first read on
    (the records of that first read are not counted: consumer start-up is excluded)."""

    def __init__(self, count: int) -> None:
        self.count, self.got, self.skipped = count, 0, 0
        self.start: tuple[float, float] | None = None

    @property
    def done(self) -> bool:
        return self.got >= self.count

    def read(self, n: int) -> None:
        if n and self.start is None:
            self.start, self.skipped = (time.perf_counter(), time.process_time()), n
        self.got += n

    def figures(self) -> tuple[float, float]:
        if self.start is None or self.got <= self.skipped:
            raise RuntimeError("too few records read to time")
        n = self.got - self.skipped
        return n / (time.perf_counter() - self.start[0]), (time.process_time() - self.start[1]) / n * 1e3


async def aiokafka_alone(settings: Settings, count: int) -> tuple[float, float]:
    """A bare aiokafka consumer (no group, every partition) reading ``count`` submissions, the
    worker's fetch sizes: (records per second, CPU ms per record of this process), timed from
    the first record."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        topic = settings.topic("submissions")
        consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
        await consumer.seek_to_beginning()
        clock = ReadClock(count)
        while not clock.done:
            batch = await consumer.getmany(timeout_ms=1000, max_records=settings.ingest_batch_size)
            clock.read(sum(len(m) for m in batch.values()))
        return clock.figures()
    finally:
        await consumer.stop()


def librdkafka_alone(settings: Settings, count: int) -> tuple[float, float]:
    """The same with librdkafka, as ``streams.worker.ingest`` configures it (fetches and CRC checks on
    librdkafka's own threads): (records per second, CPU ms per record of this process, all threads)."""
    consumer = Consumer({**consumer_config(settings), "group.id": f"{settings.app_id}-bare"})  # assigned, never commits
    try:
        topic = settings.topic("submissions")
        consumer.assign([RdTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)])
        clock = ReadClock(count)
        while not clock.done:
            messages = consumer.consume(settings.ingest_batch_size, 0.05)
            for m in messages:
                m.value()  # the bytes object the worker builds its record from
            clock.read(len(messages))
        return clock.figures()
    finally:
        consumer.close()


def ingestion(settings: Settings, worker: subprocess.Popen[bytes], broker: int, n_models: int) -> tuple[float, float, float]:
    """A started worker's ingestion of the round's ``n_models`` submissions, from its first applied
    one to the last: (submissions per second, CPU ms per submission of the worker and the broker)."""
    first, _ = wait_applied(settings, "submissions", 1, timeout=3600, worker=worker)
    at_first = applied_count(settings, "submissions")
    worker_cpu, broker_cpu = cpu_seconds(worker.pid), cpu_seconds(broker)
    _, last = wait_applied(settings, "submissions", n_models, timeout=3600, worker=worker)
    worker_cpu, broker_cpu = cpu_seconds(worker.pid) - worker_cpu, cpu_seconds(broker) - broker_cpu
    rate = (n_models - at_first) / (last - first) if last > first else float("nan")
    per_record = 1e3 / max(n_models - at_first, 1)
    return rate, worker_cpu * per_record, broker_cpu * per_record


def run(stack: EmbeddedStack, n_models: int, n_ids: int) -> dict[str, float]:
    settings = fresh_topics(stack)
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
    log = open(os.environ.get("MMC_BENCH_WORKER_LOG", os.devnull), "ab")  # noqa: SIM115
    tag = uuid.uuid4().hex[:6]
    default_backoff = settings.model_copy(
        update={"app_id": f"bench-{tag}", "state_namespace": f"b{tag}", "ingest_fetch_backoff_ms": LIBRDKAFKA_DEFAULT_BACKOFF_MS}
    )
    # The round's open and the stakes first, applied to each worker's state before any
    # submission is on the broker; the submissions are all on the broker when each worker starts.
    asyncio.run(produce(settings, inputs))
    apply_inputs(default_backoff, log, n_models)
    apply_inputs(settings, log, n_models)
    asyncio.run(produce(settings, subs))
    # First a worker with librdkafka's default fetch backoff, in a group and Redis namespace of
    # its own, on the submissions alone (the round's close and targets come after it stopped).
    worker = start_worker(default_backoff, log)
    try:
        default_rate, default_cpu, _ = ingestion(default_backoff, worker, stack.pids["kafka"], n_models)
    finally:
        stop_worker(worker)
    worker = start_worker(settings, log)
    try:
        ingest, worker_cpu, broker_cpu = ingestion(settings, worker, stack.pids["kafka"], n_models)
        closed = time.monotonic()
        asyncio.run(produce(settings, [("rounds", b"1", orjson.dumps({"type": "close", "round": 1}), T0 + 5 * 86_400_000)]))
        wait_applied(settings, "rounds", 2, timeout=60, worker=worker)
        basis_ready = wait_basis(settings, 1, timeout=600, worker=worker) - closed
        # The targets come after the close-time work, as in the tournament (a day or more later).
        neighbours_ready = wait_round_field(settings, 1, NEIGHBOURS_FIELD, "neighbours", 600, worker) - closed
        wait_round_field(settings, 1, "close_alerted", "close-stage alerts", 600, worker)
        targets = (np.clip(np.round(0.2 * crowd + rng.normal(size=n_ids) + 2), 0, 4) / 4).tolist()
        day1 = asyncio.run(resolution_latency(settings, 1, 1, targets, n_models))
        day2 = asyncio.run(resolution_latency(settings, 1, 2, targets, n_models))
    finally:
        stop_worker(worker)
    count_rate, count_cpu = faust_alone(settings, n_models)
    aiokafka_rate, aiokafka_cpu = asyncio.run(aiokafka_alone(settings, n_models))
    rd_rate, rd_cpu = librdkafka_alone(settings, n_models)
    alone_rate, alone_cpu = asyncio.run(processing_alone(fresh_topics(stack), inputs, subs))
    return {
        "ingest": ingest,
        "worker_cpu": worker_cpu,
        "broker_cpu": broker_cpu,
        "default_backoff": default_rate,
        "default_backoff_cpu": default_cpu,
        "alone": alone_rate,
        "alone_cpu": alone_cpu,
        "count": count_rate,
        "count_cpu": count_cpu,
        "aiokafka": aiokafka_rate,
        "aiokafka_cpu": aiokafka_cpu,
        "librdkafka": rd_rate,
        "librdkafka_cpu": rd_cpu,
        "basis": basis_ready,
        "neighbours": neighbours_ready,
        "day1": day1,
        "day2": day2,
    }


def fresh_topics(stack: EmbeddedStack) -> Settings:
    settings = bench_settings(stack)
    asyncio.run(create_topics(settings))
    return settings


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
            print(f"    CPU per submission meanwhile: worker process {r['worker_cpu']:.2f} ms, broker {r['broker_cpu']:.2f} ms")
            print(
                f"    the same worker, librdkafka's default fetch.queue.backoff.ms (1 s): {r['default_backoff']:6.0f}/s,"
                f" {r['default_backoff_cpu']:.2f} ms CPU each  ({r['default_backoff'] / r['ingest']:.2f}× the worker)"
            )
            print(
                f"    the same submissions, the worker's processing alone (from memory, no consumer): {r['alone']:6.0f}/s,"
                f" {r['alone_cpu']:.2f} ms CPU each  ({r['alone'] / r['ingest']:.2f}× the worker)"
            )
            print(
                f"    the same submissions, a Faust agent that only counts them (not the worker's path): {r['count']:6.0f}/s,"
                f" {r['count_cpu']:.2f} ms CPU each  ({r['count'] / r['ingest']:.2f}× the worker)"
            )
            print(
                f"    the same submissions, a bare aiokafka consumer: {r['aiokafka']:6.0f}/s,"
                f" {r['aiokafka_cpu']:.2f} ms CPU each  ({r['aiokafka'] / r['ingest']:.2f}× the worker)"
            )
            print(
                f"    the same submissions, a bare librdkafka consumer (the worker's consumer):           {r['librdkafka']:6.0f}/s,"
                f" {r['librdkafka_cpu']:.2f} ms CPU each  ({r['librdkafka'] / r['ingest']:.2f}× the worker)"
            )
            print(f"  close produced → the round's basis stored (the worker prepares it at close): {r['basis']:6.2f} s")
            print(f"  close produced → the round's neighbours published (after the basis, same task): {r['neighbours']:6.2f} s")
            print(f"  resolution latency, first update (after the close-time work): {r['day1']:6.2f} s   (target ≤ 3 s at 10,000)")
            print(f"  resolution latency, next update:                                {r['day2']:6.2f} s   (target ≤ 3 s at 10,000)")


if __name__ == "__main__":
    main()
