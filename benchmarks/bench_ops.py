"""Operator figures through the real service, side by side in one run: the embedded broker and
Redis (started here), real worker, ``mmc rebuild`` and ``mmc web`` processes.

1. ingestion with 1 and with 2 workers sharing the submissions partitions (one consumer group):
   ``--models`` submissions of ``--ids`` ids (and the round's open and stakes) are produced
   first, then the workers started; submissions applied per second from the first to the last
   applied one (the workers' progress in Redis, as ``bench_stream.py``), and CPU per
   submission summed over the worker processes over that span (``/proc/PID/stat``). The span
   starts at the first applied submission, so the group's rebalance when the second worker
   joins falls inside it, as it does when an operator adds a worker;
2. ``mmc rebuild --wipe`` at each of ``--rebuild-models`` × ``--ids``: ``--rebuild-rounds``
   rounds (open, stakes, submissions, close, one final targets update) produced, applied by a
   worker, the worker stopped, then the command run as a user runs it (a subprocess, the
   environment from ``Settings.to_env()``) and timed; Redis ``INFO used_memory`` before the
   namespace existed, with the worker's state and after the rebuild give the bytes per stored
   prediction as Redis counts them (``used_memory`` of the rebuilt state − the empty server's,
   over models × ids × rounds whose rows Redis keeps), beside the prepared format's bytes
   (``PreparedSubmission.to_bytes``);
3. live page fan-out: ``mmc web`` on a stack with ``--fanout-rounds`` − 1 resolved rounds and
   one closed round (``--fanout-models`` × ``--ids``); for each of ``--clients``, that many concurrent
   ``/api/stream`` readers in this process (one aiohttp session), then a worker resolves the
   closed round (a targets update produced): events per second delivered to all clients
   together (first to last event received), the slowest client's lag (per output message: the
   last client's receive time − the first client's; the largest over the update, and the
   median), events per client, and the web process's RSS (``/proc/PID/status`` ``VmRSS``)
   before the clients connect and once the update is delivered. The clients run on the same
   cores as the server, the worker and the broker.

The 1-minute load average is printed beside every figure (``os.getloadavg``); wall-time
figures on a loaded machine are lower bounds of what it does alone.

Usage: ``python benchmarks/bench_ops.py [--models 2000] [--ids 6720] [--rebuild-models 2000 10000]
[--rebuild-rounds 2] [--clients 100 500 1000] [--fanout-models 2000] [--fanout-rounds 3] [--only ingest rebuild fanout]``
(``make bench-ops``: the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import numpy as np
import orjson
import redis
from aiokafka import AIOKafkaProducer
from bench_stream import (
    T0,
    Message,
    applied_count,
    bench_settings,
    cpu_seconds,
    poll_until,
    produce,
    start_worker,
    stop_worker,
    wait_basis,
)
from rich.console import Console
from rich.table import Table

from scoring.prepared import prepare_submission
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import create_topics
from streams.settings import Settings
from streams.state import Keys
from streams.tools.stack import EmbeddedStack, free_port

DAY = 86_400_000
#: Messages sent per batch when filling the topics (their futures awaited together).
PRODUCE_BATCH = 256
#: Decimals of the generated predictions and targets (shorter JSON, few ties at 6,720 ids).
DECIMALS = 5
#: File descriptors kept for the process beyond one per live client (Kafka, Redis, logs).
SPARE_FILES = 256
#: Seconds without any event received by any client after which an update counts as delivered.
QUIET_SECONDS = 3.0
#: Longest wait for anything the service does here (applying a season, delivering an update).
TIMEOUT_SECONDS = 3600.0

console = Console(width=200, highlight=False)


def load() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def log_file() -> IO[bytes]:
    """Where the workers and ``mmc web`` write (``MMC_BENCH_WORKER_LOG``, else nowhere)."""
    return open(os.environ.get("MMC_BENCH_WORKER_LOG", os.devnull), "ab")  # noqa: SIM115 - closed by the caller


def fresh_settings(stack: EmbeddedStack) -> Settings:
    """Settings with fresh topics, consumer group and Redis namespace, the topics created."""
    settings = bench_settings(stack)
    asyncio.run(create_topics(settings))
    return settings


def other_group(settings: Settings) -> Settings:
    """The same topics, another consumer group and Redis namespace."""
    tag = uuid.uuid4().hex[:6]
    return settings.model_copy(update={"app_id": f"bench-{tag}", "state_namespace": f"b{tag}"})


def model_names(n_models: int) -> list[str]:
    return [f"model_{i:05d}" for i in range(n_models)]


def round_messages(r: int, models: list[str], n_ids: int, rng: np.random.Generator, *, close: bool = True, final: bool = True) -> Iterator[Message]:
    """Round ``r`` on the input topics in event-time order: open, a stake per model, a
    submission per model, then (``close``) the close and (``final``) the final targets update."""
    opened = T0 + r * DAY
    ids = [f"id{i:05d}" for i in range(n_ids)]
    yield ("rounds", str(r).encode(), orjson.dumps({"type": "open", "round": r, "ids": ids}), opened)
    for j, m in enumerate(models):
        yield ("stakes", m.encode(), orjson.dumps({"model": m, "stake": round(float(rng.lognormal(3, 1)), 4)}), opened + 1 + j)
    crowd = rng.normal(size=n_ids)
    for i, m in enumerate(models):
        preds = np.round(rng.uniform(0, 1) * crowd + rng.normal(size=n_ids), DECIMALS).tolist()
        yield ("submissions", m.encode(), orjson.dumps({"round": r, "model": m, "predictions": preds}), opened + 100_000 + i)
    if close:
        yield ("rounds", str(r).encode(), orjson.dumps({"type": "close", "round": r}), opened + DAY // 2)
    if final:
        yield targets_message(r, 20, True, crowd, rng)


def targets_message(r: int, day: int, final: bool, crowd: np.ndarray[Any, Any], rng: np.random.Generator) -> Message:
    targets = (np.clip(np.round(0.2 * crowd + rng.normal(size=crowd.size) + 2), 0, 4) / 4).tolist()
    value = orjson.dumps({"round": r, "day": day, "final": final, "targets": targets})
    return ("targets", str(r).encode(), value, T0 + r * DAY + DAY // 2 + day * 60_000)


async def produce_all(settings: Settings, messages: Iterable[Message]) -> dict[str, int]:
    """Send ``messages`` (generated as they are sent) with one producer; returns counts per topic."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=10, max_request_size=8 << 20, max_batch_size=1 << 20)
    await producer.start()
    counts: dict[str, int] = {}
    try:
        pending = []
        for topic, key, value, ts in messages:
            pending.append(await producer.send(settings.topic(topic), value, key=key, timestamp_ms=ts))
            counts[topic] = counts.get(topic, 0) + 1
            if len(pending) >= PRODUCE_BATCH:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts


def wait_counts(settings: Settings, counts: dict[str, int], procs: list[subprocess.Popen[bytes]], timeout: float = TIMEOUT_SECONDS) -> float:
    """Poll the workers' progress in Redis until every topic's count is applied; returns when.
    Raises if a worker exits meanwhile."""
    client = redis.Redis.from_url(settings.redis_url)

    def done() -> bool:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited with {p.returncode} (set MMC_BENCH_WORKER_LOG to see why)")
        return all(applied_count(settings, t, client) >= n for t, n in counts.items())

    return poll_until(done, timeout, None, f"not all of {counts} applied")


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23×``; a dash when it has no meaning."""
    return f"{a / b:.2f}×" if b > 0 and np.isfinite(a) and np.isfinite(b) else "—"


def per_second(rate: float) -> str:
    """A rate, or a dash when everything was applied between two polls (nothing to time)."""
    return f"{rate:,.0f}/s" if np.isfinite(rate) else "— (one poll)"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


# --------------------------------------------------------------------------- 1. ingestion


@dataclass
class IngestFigures:
    workers: int
    rate: float  # submissions per second, first to last applied
    cpu_ms: float  # CPU ms per submission, summed over the worker processes
    span: float  # first to last applied submission, seconds
    skew: float  # first applied submission → every partition has one applied
    load: float


def ingest_with(settings: Settings, workers: int, n_models: int) -> IngestFigures:
    """``workers`` worker processes in one fresh group and namespace applying the ``n_models``
    submissions already on the topics (their progress in Redis polled every 10 ms)."""
    settings = other_group(settings)
    client = redis.Redis.from_url(settings.redis_url)
    key = Keys(settings.state_namespace).progress("submissions")
    first = every = last = 0.0
    at_first, cpu = 0, 0.0
    with log_file() as log:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs = [start_worker(settings, log) for _ in range(workers)]
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while True:
                progress = [int(v) for v in client.hgetall(key).values()]
                now, done = time.monotonic(), sum(progress)
                if done and not first:
                    first, at_first, cpu = now, done, sum(cpu_seconds(p.pid) for p in procs)
                if not every and sum(1 for n in progress if n) >= settings.partitions:
                    every = now
                if done >= n_models:
                    last, cpu = now, sum(cpu_seconds(p.pid) for p in procs) - cpu
                    break
                if now > deadline:
                    raise TimeoutError(f"{done} of {n_models} submissions applied after {TIMEOUT_SECONDS:.0f} s")
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"a worker exited with {p.returncode} (set MMC_BENCH_WORKER_LOG to see why)")
                time.sleep(0.01)
            figures_load = load()
        finally:
            for p in procs:
                stop_worker(p)
    timed = max(n_models - at_first, 1)
    rate = timed / (last - first) if last > first else float("nan")
    return IngestFigures(workers, rate, cpu / timed * 1e3, last - first, (every or last) - first, figures_load)


def ingestion(stack: EmbeddedStack, n_models: int, n_ids: int) -> list[IngestFigures]:
    settings = fresh_settings(stack)
    rng = np.random.default_rng(n_models)
    console.print(f"  producing round 1: {n_models:,} stakes and submissions × {n_ids:,} ids …")
    asyncio.run(produce_all(settings, round_messages(1, model_names(n_models), n_ids, rng, close=False, final=False)))
    return [ingest_with(settings, workers, n_models) for workers in (1, 2)]


def print_ingestion(figures: list[IngestFigures], n_models: int, n_ids: int) -> None:
    one, two = figures
    console.print(f"1. ingestion, {n_models:,} submissions × {n_ids:,} ids, 4 partitions, produced before the workers start; machine: {os.cpu_count()} cores")
    table = Table()
    table.add_column("figure")
    table.add_column("1 worker", justify="right")
    table.add_column("2 workers", justify="right")
    table.add_column("2 / 1", justify="right")
    table.add_row("submissions applied per second", per_second(one.rate), per_second(two.rate), ratio(two.rate, one.rate))
    table.add_row("CPU per submission, all workers", f"{one.cpu_ms:.2f} ms", f"{two.cpu_ms:.2f} ms", ratio(two.cpu_ms, one.cpu_ms))
    table.add_row("first to last applied submission", f"{one.span:.2f} s", f"{two.span:.2f} s", ratio(two.span, one.span))
    table.add_row("  of which until every partition was being applied", f"{one.skew:.2f} s", f"{two.skew:.2f} s", "")
    table.add_row("load average (1 min)", f"{one.load:.2f}", f"{two.load:.2f}", "")
    console.print(table)


# --------------------------------------------------------------------------- 2. rebuild


@dataclass
class RebuildFigures:
    models: int
    ids: int
    rounds: int
    kept: int  # rounds whose rows Redis keeps
    seconds: float  # `mmc rebuild --wipe`, start to exit
    empty: int  # used_memory before the namespace existed
    built: int  # with the worker's state
    rebuilt: int  # after the rebuild
    prepared: float  # bytes per prediction of the prepared format
    summary: str
    load: float

    @property
    def applying(self) -> float:
        """Seconds the rebuild reports for applying the records (its last figure), NaN if absent."""
        found = re.search(r"([\d.]+) s\s*$", self.summary)
        return float(found.group(1)) if found else float("nan")

    @property
    def predictions(self) -> int:
        return self.models * self.ids * self.kept


def rebuild_command() -> list[str]:
    """``mmc rebuild --wipe`` from this virtualenv (``python -m streams`` when no ``mmc`` is installed)."""
    mmc = Path(sys.executable).with_name("mmc")
    return [str(mmc) if mmc.exists() else sys.executable, *([] if mmc.exists() else ["-m", "streams"]), "rebuild", "--wipe"]


def rebuild(stack: EmbeddedStack, n_models: int, n_ids: int, rounds: int) -> RebuildFigures:
    settings = fresh_settings(stack)
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.state_namespace)
    rng = np.random.default_rng([n_models, rounds])
    models = model_names(n_models)
    empty = used_memory(client)
    console.print(f"  producing {rounds} rounds of {n_models:,} models × {n_ids:,} ids …")
    counts = asyncio.run(produce_all(settings, (m for r in range(1, rounds + 1) for m in round_messages(r, models, n_ids, rng))))
    with log_file() as log:
        worker = start_worker(settings, log)
        try:
            wait_counts(settings, counts, [worker])
        finally:
            stop_worker(worker)
    built = used_memory(client)
    command = rebuild_command()
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    seconds = time.perf_counter() - start
    figures_load = load()
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with {done.returncode}: {done.stderr[-2000:]}")
    kept = sum(1 for r in range(1, rounds + 1) if client.exists(keys.subs(r)))
    prepared = len(prepare_submission(np.arange(n_ids, dtype=np.float64)).to_bytes()) / n_ids
    summary = " ".join(done.stdout.split())
    return RebuildFigures(n_models, n_ids, rounds, kept, seconds, empty, built, used_memory(client), prepared, summary, figures_load)


def print_rebuild(figures: list[RebuildFigures]) -> None:
    console.print(f"2. `{shlex.join(['mmc', *rebuild_command()[-2:]])}` after a worker applied the rounds and was stopped")
    table = Table()
    table.add_column("figure")
    for f in figures:
        table.add_column(f"{f.models:,} models × {f.ids:,} ids × {f.rounds} rounds", justify="right")
    table.add_row("rebuild, command start to exit", *(f"{f.seconds:.1f} s" for f in figures))
    table.add_row("  of which applying the records (its own report)", *(f"{f.applying:.1f} s" for f in figures))
    table.add_row("  per submission rebuilt", *(f"{f.seconds / (f.models * f.rounds) * 1e3:.2f} ms" for f in figures))
    table.add_row("rounds whose rows Redis keeps", *(str(f.kept) for f in figures))
    table.add_row("Redis used_memory − empty server: worker's state", *(f"{(f.built - f.empty) / 2**20:,.1f} MiB" for f in figures))
    table.add_row("  the same after the rebuild", *(f"{(f.rebuilt - f.empty) / 2**20:,.1f} MiB" for f in figures))
    table.add_row("bytes per stored prediction (Redis, rebuilt state)", *(f"{(f.rebuilt - f.empty) / f.predictions:.3f}" for f in figures))
    table.add_row("  prepared format (PreparedSubmission.to_bytes)", *(f"{f.prepared:.3f}" for f in figures))
    table.add_row("load average (1 min)", *(f"{f.load:.2f}" for f in figures))
    console.print(table)
    for f in figures:
        console.print(f"  {f.models:,} models: {f.summary}")


# --------------------------------------------------------------------------- 3. fan-out


def rss_bytes(pid: int) -> int:
    """``VmRSS`` of ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_file_limit(wanted: int) -> str:
    """Raise this process's soft open-file limit to ``wanted`` (children inherit it); says what it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return f"open files: {soft:,} allowed (≥ {wanted:,} needed)"
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        return f"open files: could not raise the limit from {soft:,} to {wanted:,} ({exc}); clients beyond it will fail"
    if target < wanted:
        return f"open files: raised to the hard limit {target:,}, below the {wanted:,} needed; clients beyond it will fail"
    return f"open files: soft limit raised from {soft:,} to {target:,}"


@dataclass
class Reader:
    """One ``/api/stream`` client: when each piece arrived and how many events it completed."""

    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # events received up to and including that piece
    events: int = 0
    hello: bool = False
    ended: str | None = None


def count_events(frames: bytes) -> int:
    """Output-message events among complete SSE frames (not ``hello``, ``retry`` or keep-alives)."""
    return frames.count(b"event: ") - frames.count(b"event: hello") - frames.count(b"event: resync")


async def read_stream(session: aiohttp.ClientSession, url: str, reader: Reader) -> None:
    try:
        async with session.get(url + "/api/stream") as response:
            if response.status != 200:
                reader.ended = f"HTTP {response.status}"
                return
            rest = b""
            async for piece in response.content.iter_any():
                now = time.perf_counter()
                data = rest + piece
                end = data.rfind(b"\n\n")
                if end < 0:
                    rest = data
                    continue
                frames, rest = data[: end + 2], data[end + 2 :]
                if not reader.hello and b"event: hello" in frames:
                    reader.hello = True
                n = count_events(frames)
                if n:
                    reader.events += n
                    reader.times.append(now)
                    reader.counts.append(reader.events)
            reader.ended = "closed by the server"
    except (aiohttp.ClientError, OSError) as exc:
        reader.ended = f"{type(exc).__name__}: {exc}"


@dataclass
class FanoutFigures:
    clients: int
    connected: int
    events_per_client: tuple[int, int]  # fewest, most
    rate: float  # events per second, all clients together
    span: float  # first to last event received, any client
    delivered: float  # targets produced → the last event received by the last client
    lag_max: float  # slowest client's lag, worst message
    lag_median: float
    rss_before: int
    rss_after: int
    ended: int  # clients whose stream ended before the update was delivered
    load: float


def lags(readers: list[Reader], messages: int) -> np.ndarray[Any, Any]:
    """Per output message (the k-th event of every stream): last client's receive time − first's."""
    ks = np.arange(messages)
    first = np.full(messages, np.inf)
    last = np.full(messages, -np.inf)
    for r in readers:
        at = np.asarray(r.times)[np.searchsorted(np.asarray(r.counts), ks, side="right")]
        np.minimum(first, at, out=first)
        np.maximum(last, at, out=last)
    return last - first


async def fan_out(settings: Settings, url: str, web: subprocess.Popen[bytes], n_clients: int, update: Message, n_models: int) -> FanoutFigures:
    readers = [Reader() for _ in range(n_clients)]
    rss_before = rss_bytes(web.pid)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(read_stream(session, url, r)) for r in readers]
        try:
            deadline = time.monotonic() + 120
            while not all(r.hello or r.ended for r in readers):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sum(r.hello for r in readers)} of {n_clients} clients connected after 120 s")
                await asyncio.sleep(0.1)
            live = [r for r in readers if r.hello and not r.ended]
            if not live:
                raise RuntimeError(f"no client connected: {readers[0].ended}")
            sent = time.perf_counter()
            await produce(settings, [update])
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while True:
                await asyncio.sleep(0.5)
                newest = max((r.times[-1] for r in live if r.times), default=None)
                arrived = all(r.events >= n_models or r.ended for r in live)
                if arrived and newest is not None and time.perf_counter() - newest > QUIET_SECONDS:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the update was not delivered to every client within {TIMEOUT_SECONDS:.0f} s")
            rss_after = rss_bytes(web.pid)
            figures_load = load()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    complete = [r for r in live if not r.ended]
    events = [r.events for r in live]
    total = sum(events)
    span = max(r.times[-1] for r in live if r.times) - min(r.times[0] for r in live if r.times)
    delivered = max(r.times[-1] for r in live if r.times) - sent
    common = min((r.events for r in complete), default=0)
    per_message = lags(complete, common) if common else np.zeros(1)
    return FanoutFigures(
        n_clients,
        len(live),
        (min(events), max(events)),
        total / span if span > 0 else float("nan"),
        span,
        delivered,
        float(per_message.max()),
        float(np.median(per_message)),
        rss_before,
        rss_after,
        len(live) - len(complete),
        figures_load,
    )


def start_web(settings: Settings, port: int, max_clients: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "MMC_WEB_HOST": "127.0.0.1", "MMC_WEB_LIVE_MAX_CLIENTS": str(max_clients)}
    return subprocess.Popen([sys.executable, "-m", "streams", "web", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)


def web_following(url: str, web: subprocess.Popen[bytes]) -> bool:
    if web.poll() is not None:
        raise RuntimeError(f"mmc web exited with {web.returncode} (set MMC_BENCH_WORKER_LOG to see why)")

    async def health() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(url + "/api/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                return bool((await response.json()).get("kafka") == "following")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    return asyncio.run(health())


def fanout(stack: EmbeddedStack, n_models: int, n_ids: int, rounds: int, clients: list[int]) -> tuple[list[FanoutFigures], str]:
    limits = raise_file_limit(max(clients) + SPARE_FILES)
    settings = fresh_settings(stack)
    rng = np.random.default_rng([n_models, n_ids])
    models = model_names(n_models)
    console.print(f"  producing {rounds} rounds of {n_models:,} models × {n_ids:,} ids (the last closed, not resolved) …")

    def season() -> Iterator[Message]:
        for r in range(1, rounds + 1):
            yield from round_messages(r, models, n_ids, rng, final=r < rounds)

    counts = asyncio.run(produce_all(settings, season()))
    crowd = rng.normal(size=n_ids)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    figures = []
    with log_file() as log:
        worker = start_worker(settings, log)
        web: subprocess.Popen[bytes] | None = None
        try:
            wait_counts(settings, counts, [worker])
            wait_basis(settings, rounds, TIMEOUT_SECONDS, worker)
            web = start_web(settings, port, 2 * max(clients) + 16, log)
            poll_until(lambda: web_following(url, web), 60, None, "mmc web does not follow the output topics")
            for day, n in enumerate(clients, start=1):
                update = targets_message(rounds, day, False, crowd, rng)
                figures.append(asyncio.run(fan_out(settings, url, web, n, update, n_models)))
                time.sleep(2)  # the server notices the closed streams (it checks every second)
        finally:
            if web is not None:
                stop_worker(web)
            stop_worker(worker)
    return figures, limits


def print_fanout(figures: list[FanoutFigures], n_models: int, n_ids: int, limits: str) -> None:
    console.print(f"3. live page fan-out: `mmc web`, one targets update of {n_models:,} models × {n_ids:,} ids, the clients in one asyncio process")
    table = Table()
    table.add_column("figure")
    for f in figures:
        table.add_column(f"{f.clients:,} clients", justify="right")
    table.add_row("clients connected (hello received)", *(f"{f.connected:,}" for f in figures))
    table.add_row("events per client (fewest–most)", *(f"{f.events_per_client[0]:,}–{f.events_per_client[1]:,}" for f in figures))
    table.add_row("events/s delivered, all clients together", *(f"{f.rate:,.0f}/s" for f in figures))
    table.add_row("first to last event received", *(f"{f.span:.2f} s" for f in figures))
    table.add_row("targets produced → every client has the update", *(f"{f.delivered:.2f} s" for f in figures))
    table.add_row("slowest client's lag, worst message", *(f"{f.lag_max * 1e3:,.0f} ms" for f in figures))
    table.add_row("  the same, median message", *(f"{f.lag_median * 1e3:,.0f} ms" for f in figures))
    table.add_row("mmc web RSS before the clients → after the update", *(f"{f.rss_before / 1e6:.1f} → {f.rss_after / 1e6:.1f} MB" for f in figures))
    table.add_row("streams ended before the update was delivered", *(str(f.ended) for f in figures))
    table.add_row("load average (1 min)", *(f"{f.load:.2f}" for f in figures))
    console.print(table)
    console.print(f"  {limits}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=2000, help="submissions in the ingestion section")
    parser.add_argument("--ids", type=int, default=6720, help="ids per round, every section")
    parser.add_argument("--rebuild-models", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--rebuild-rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--fanout-models", type=int, default=2000, help="models on the fan-out stack (events per client per update)")
    parser.add_argument("--fanout-rounds", type=int, default=3, help="rounds on the fan-out stack, the last one resolved while clients read")
    parser.add_argument("--only", nargs="+", choices=["ingest", "rebuild", "fanout"], default=["ingest", "rebuild", "fanout"])
    args = parser.parse_args()
    console.print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    console.print(f"machine: {os.cpu_count()} cores; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; embedded Tansu + redis-server")
    with EmbeddedStack() as stack:
        if "ingest" in args.only:
            console.print("## 1. ingestion")
            print_ingestion(ingestion(stack, args.models, args.ids), args.models, args.ids)
        if "rebuild" in args.only:
            console.print("## 2. mmc rebuild --wipe")
            rebuilds = []
            for n in args.rebuild_models:
                rebuilds.append(rebuild(stack, n, args.ids, args.rebuild_rounds))
            print_rebuild(rebuilds)
        if "fanout" in args.only:
            console.print("## 3. live page fan-out")
            figures, limits = fanout(stack, args.fanout_models, args.ids, args.fanout_rounds, args.clients)
            print_fanout(figures, args.fanout_models, args.ids, limits)
    console.print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
