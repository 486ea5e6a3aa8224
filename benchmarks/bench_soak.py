"""Soak benchmark through the real service: a rolling tournament for a fixed time, then a report.

One real worker process, the embedded broker (Tansu) and Redis, as in ``bench_stream.py``. For
``--minutes`` a paced producer plays a rolling tournament in real time (event time = the
schedule, so open < submissions < close < targets, and stake updates fall between rounds):

- a new round opens every ``--round-seconds``; its submissions (``--models`` models, about 10%
  of them submitting twice — the later one replaces the first — and a few skipping the round)
  arrive during the first ``--submit-seconds``; then the round closes;
- right after a close, the stake updates for the next round (every stake that changed);
- ``--days`` daily target updates per round, ``--target-gap`` seconds apart after the close,
  the last one ``final``.

At most one round takes submissions at a time and a round is done ``--days × --target-gap`` s
after its close, so the number of live rounds is bounded (printed). Inputs are realistic: ids,
predictions, stakes and targets come from the tournament simulator (:mod:`streams.tools.simulation`).
Meanwhile a consumer reads ``scores``/``crowding``/``deadletter`` and a sampler reads the
worker's progress in Redis every second and its RSS (``/proc/PID/status``) every
``--sample-seconds``. When the time is up the producer stops, the worker is given up to
``--drain-timeout`` s to apply every record sent, and the report prints:

1. submissions offered and applied per second, per ``--window-seconds`` window and overall;
2. resolution latency (targets produced → the last ``scores`` message of that update consumed;
   the scores of one update carry the targets' record timestamp) — p50, p90, p99, max;
3. the worker's RSS over time and its growth after warm-up (first ``--warmup`` of the run):
   (RSS at end − RSS at end of warm-up) / RSS at end of warm-up, target < 10%;
4. Redis ``used_memory`` every ``--sample-seconds`` beside the rounds whose rows Redis keeps,
   and whether it stays bounded: the worker runs with ``MMC_RETENTION_ROUNDS`` =
   ``--retention`` (and the score retention ``--score-retention``), so once a round is final and
   that many later rounds have closed its rows go, and with ``MMC_HISTORY_ROUNDS`` =
   ``--history``, so histories stop growing once that many rounds are scored; the report gives
   the growth per round opened
   over the last half of the run, and Redis bytes by key family (``MEMORY USAGE``) at the
   middle and at the end of the run: what retention leaves growing per round (its lifecycle
   hash, trend entry and first final update) apart from families that fill up to a cap (the
   latest alerts). The workload is steady: every model plays from the first round. The
   broker's RSS grows by design (the embedded broker keeps every record in memory);
5. dead letters, and the worker log's warnings and errors (the log file's path is printed).

Usage: ``python benchmarks/bench_soak.py [--minutes 10 | --rounds 60] [--models 300] [--ids 2000]
[--round-seconds 20] [--retention 10] ...`` (``make bench-soak``: ``--rounds 60 --round-seconds 10``) (``--help`` lists every knob); ``--minutes 1`` is a
smoke run, ``--rounds`` sets the length in rounds instead (``--rounds × --round-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import heapq
import math
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

# Run as a script (``python benchmarks/bench_soak.py``): this directory is on sys.path.
from bench_stream import bench_settings, start_worker, stop_worker, tail_consumer, wait_applied

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import create_topics
from streams.settings import Settings
from streams.state import ROWS_PRUNED, RedisState
from streams.state.client import redis_client
from streams.tools.simulation import Simulation, SimulationConfig
from streams.tools.stack import EmbeddedStack

RSS_GROWTH_TARGET = 0.10
#: Seconds between a round's close and the stake updates for the next round (spread over one more second).
STAKES_AFTER_CLOSE = 1.0
#: Submissions arrive this many seconds after the open and before the close, at the earliest/latest.
SUBMIT_MARGIN = 0.5
#: Sends in flight before the producer waits for acknowledgements.
MAX_IN_FLIGHT = 1000
LOG_LEVEL = re.compile(rb"\] \[(WARNING|ERROR|CRITICAL)\] (.*)")
RESOLVED_LINE = re.compile(rb"round \d+ day \d+(?: final)?: \d+ models scored \((.*)\)")
PHASE = re.compile(r"(\w+) (\d+) ms")


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Workload:
    """The tournament's calendar, in seconds from the start of the run."""

    models: int
    ids: int
    round_seconds: float
    submit_seconds: float
    days: int
    target_gap: float
    duration: float
    seed: int

    @property
    def rounds(self) -> int:
        """Rounds that open within the run."""
        return max(1, math.ceil(self.duration / self.round_seconds))

    def open_at(self, r: int) -> float:
        return (r - 1) * self.round_seconds

    def close_at(self, r: int) -> float:
        return self.open_at(r) + self.submit_seconds

    def target_at(self, r: int, day: int) -> float:
        return self.close_at(r) + day * self.target_gap

    def first_event_at(self, r: int) -> float:
        """Round r's earliest event: its open, or the stake updates that precede it."""
        return self.open_at(r) if r == 1 else self.close_at(r - 1) + STAKES_AFTER_CLOSE

    @property
    def live_rounds(self) -> int:
        """Most rounds open or resolving at once (a round lives from its open to its last target update)."""
        return max(1, math.ceil((self.submit_seconds + self.days * self.target_gap) / self.round_seconds))


@dataclass(frozen=True)
class RoundEvents:
    """One round's input messages: (due seconds, topic, key, value, day of a target update) each."""

    round: int
    events: list[tuple[float, str, bytes, bytes, int]]
    models: int  # models with a submission: the scores expected per update


def round_events(sim: Simulation, wl: Workload, r: int) -> RoundEvents:
    """Every message of round ``r`` from the simulator's ids, predictions, stakes and targets."""
    i = r - 1
    rng = np.random.default_rng([wl.seed, r])
    events: list[tuple[float, str, bytes, bytes, int]] = []

    def add(due: float, topic: str, key: str, value: dict[str, Any], day: int = 0) -> None:
        events.append((due, topic, key.encode(), orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), day))

    opened = wl.open_at(r)
    add(opened, "rounds", str(r), {"type": "open", "round": r, "ids": sim.ids(r)})
    stakes = sim.stakes[i]
    changed = np.arange(wl.models) if i == 0 else np.flatnonzero(stakes != sim.stakes[i - 1])
    start = opened + 0.05 if i == 0 else wl.close_at(r - 1) + STAKES_AFTER_CLOSE
    for n, m in enumerate(changed):
        model = sim.models[m]
        add(start + n / max(len(changed), 1), "stakes", model, {"model": model, "stake": float(stakes[m])})
    predictions = sim.predictions(r)
    lo, hi = opened + SUBMIT_MARGIN, wl.close_at(r) - SUBMIT_MARGIN
    who = np.flatnonzero(sim.submitted[i])
    for m in who:
        model, at = sim.models[m], float(rng.uniform(lo, hi))
        if sim.resubmitted[i, m]:  # a first version (another model's predictions), replaced by the final one
            first = predictions[(m + 1) % wl.models]
            add(float(rng.uniform(lo, at)), "submissions", model, {"round": r, "model": model, "predictions": first})
        add(at, "submissions", model, {"round": r, "model": model, "predictions": predictions[m]})
    add(wl.close_at(r), "rounds", str(r), {"type": "close", "round": r})
    for day in range(1, wl.days + 1):
        value = {"round": r, "day": day, "final": day == wl.days, "targets": sim.targets(r, day)}
        add(wl.target_at(r, day), "targets", str(r), value, day)
    events.sort(key=lambda e: e[0])
    return RoundEvents(r, events, len(who))


# --------------------------------------------------------------------------- measurements


@dataclass
class Update:
    """One target update sent: when, what, how many scores it should produce and how many came."""

    round: int
    day: int
    sent_at: float  # seconds into the run
    sent_perf: float
    expected: int
    seen: int = 0
    latency: float | None = None


@dataclass
class RssRow:
    elapsed: float
    phase: str
    worker_mb: float
    applied: int
    redis_mb: float
    broker_mb: float
    rows_kept: int  # rounds whose rows Redis keeps


@dataclass
class Soak:
    """Shared state of the producer, consumer and sampler tasks."""

    settings: Settings
    wl: Workload
    sim: Simulation
    worker: subprocess.Popen[bytes]
    broker_pid: int | None
    sample_seconds: float
    warmup: float
    status_seconds: float = 60.0
    t0: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    submission_times: list[float] = field(default_factory=list)
    updates: dict[int, Update] = field(default_factory=dict)  # by record timestamp
    crowding_models: dict[int, int] = field(default_factory=dict)
    deadletters: collections.Counter[str] = field(default_factory=collections.Counter)
    progress: list[tuple[float, int]] = field(default_factory=list)  # (elapsed, submissions applied)
    rss: list[RssRow] = field(default_factory=list)
    redis_start: float = 0.0
    redis_end: float = 0.0
    rounds_opened: int = 0
    #: Redis bytes by key family (MEMORY USAGE) at the middle and at the end of the run: (elapsed, rounds opened, families)
    families: list[tuple[float, int, dict[str, tuple[int, int]]]] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    # --- producer ---------------------------------------------------------------------------
    async def produce(self) -> None:
        """Send the tournament on schedule; the first open doubles as the worker-readiness probe."""
        s, wl = self.settings, self.wl
        producer = AIOKafkaProducer(**kafka_client_options(s), linger_ms=5, max_request_size=8 << 20, max_batch_size=1 << 20)
        await producer.start()
        try:
            ts_base = int(time.time() * 1000)
            last_ts = ts_base - 1
            heap: list[tuple[float, int, str, bytes, bytes, int, int]] = []
            seq = 0
            expected: dict[int, int] = {}
            next_round = 1
            build = asyncio.ensure_future(asyncio.to_thread(round_events, self.sim, wl, 1))
            pending: collections.deque[asyncio.Future[Any]] = collections.deque()
            while True:
                while next_round <= wl.rounds and (not heap or wl.first_event_at(next_round) <= heap[0][0]):
                    built = await build
                    expected[built.round] = built.models
                    for due, topic, key, value, day in built.events:
                        heapq.heappush(heap, (due, seq, topic, key, value, built.round, day))
                        seq += 1
                    next_round += 1
                    if next_round <= wl.rounds:
                        build = asyncio.ensure_future(asyncio.to_thread(round_events, self.sim, wl, next_round))
                if not heap or heap[0][0] >= wl.duration:
                    break
                due, _, topic, key, value, r, day = heapq.heappop(heap)
                if self.ready.is_set():
                    delay = self.t0 + due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                ts = max(ts_base + round(due * 1000), last_ts + 1)
                last_ts = ts
                if topic == "targets":
                    self.updates[ts] = Update(r, day, self.elapsed(), time.perf_counter(), expected[r])
                pending.append(await producer.send(s.topic(topic), value, key=key, timestamp_ms=ts))
                self.sent[topic] += 1
                if topic == "submissions":
                    self.submission_times.append(self.elapsed())
                elif topic == "rounds" and b'"open"' in value:
                    self.rounds_opened += 1
                if not self.ready.is_set():  # the first event, round 1's open: wait for the worker
                    await pending.popleft()
                    await asyncio.to_thread(wait_applied, s, "rounds", 1, 180.0, self.worker)
                    self.t0 = time.perf_counter()
                    self.ready.set()
                while pending and pending[0].done():
                    pending.popleft().result()
                if len(pending) > MAX_IN_FLIGHT:
                    await pending.popleft()
            await asyncio.gather(*pending)
            build.cancel()
            await asyncio.sleep(max(0.0, self.t0 + wl.duration - time.perf_counter()))  # the run lasts its full length
        finally:
            await producer.stop()

    # --- consumer ---------------------------------------------------------------------------
    async def consume(self) -> None:
        """Count each update's scores (by record timestamp) until every sent update is complete."""
        consumer = await tail_consumer(self.settings, "scores", "crowding", "deadletter")
        scores, crowding = self.settings.topic("scores"), self.settings.topic("crowding")
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for tp, messages in batch.items():
                    for m in messages:
                        if tp.topic == scores:
                            self._score_seen(m.timestamp, now)
                        elif tp.topic == crowding:
                            self._crowding_seen(m.timestamp, orjson.loads(m.value)["n_models"], now)
                        else:
                            reason = dict(m.headers or ()).get("mmc.error.reason", b"?")
                            self.deadletters[reason.decode()] += 1
        finally:
            await consumer.stop()

    def _score_seen(self, ts: int, now: float) -> None:
        update = self.updates.get(ts)
        if update is None:
            return
        update.seen += 1
        if update.latency is None and update.seen >= update.expected:
            update.latency = now - update.sent_perf

    def _crowding_seen(self, ts: int, n_models: int, now: float) -> None:
        """The crowding message says how many models the update scored: that many scores are due."""
        update = self.updates.get(ts)
        if update is None:
            return
        self.crowding_models[ts] = n_models
        update.expected = n_models
        if update.latency is None and update.seen >= update.expected:
            update.latency = now - update.sent_perf

    # --- sampler ----------------------------------------------------------------------------
    async def sample(self) -> None:
        """Every second: submissions applied; every ``sample_seconds``: worker RSS, Redis, broker."""
        await self.ready.wait()
        state = RedisState(redis_client(self.settings), self.settings.state_namespace)
        try:
            self.redis_start = await self._redis_mb(state)
            marks = {round(self.warmup), round(self.wl.duration)}
            family_marks = {round(self.wl.duration / 2), round(self.wl.duration)}
            tick = 0
            while True:
                applied = sum((await state.progress("submissions")).values())
                self.progress.append((float(tick), applied))
                if tick in family_marks:
                    self.families.append((float(tick), self.rounds_opened, await state.memory_by_family()))
                if tick % round(self.sample_seconds) == 0 or tick in marks:
                    phase = "warm-up" if tick <= self.warmup else ("run" if tick <= self.wl.duration else "drain")
                    self.rss.append(
                        RssRow(
                            float(tick),
                            phase,
                            rss_mb(self.worker.pid) or math.nan,
                            applied,
                            await self._redis_mb(state),
                            rss_mb(self.broker_pid) or math.nan,
                            await self._rows_kept(state),
                        )
                    )
                if tick > 0 and tick % round(self.status_seconds) == 0:
                    self._status(tick, applied)
                if self.worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {self.worker.returncode}")
                if self.finished:
                    return
                tick += 1
                await asyncio.sleep(max(0.0, self.t0 + tick - time.perf_counter()))
        finally:
            self.redis_end = await self._redis_mb(state)
            await state.close()

    def _status(self, tick: int, applied: int) -> None:
        resolved = sum(1 for u in self.updates.values() if u.latency is not None)
        rss = self.rss[-1].worker_mb if self.rss else math.nan
        print(
            f"  [{tick:5d} s] submissions sent {len(self.submission_times):,}, applied {applied:,}; "
            f"target updates sent {len(self.updates)}, resolved {resolved}; worker RSS {rss:.0f} MB",
            flush=True,
        )

    @staticmethod
    async def _redis_mb(state: RedisState) -> float:
        return float((await state.r.info("memory"))["used_memory"]) / 2**20

    @staticmethod
    async def _rows_kept(state: RedisState) -> int:
        """Rounds opened whose rows retention has not deleted."""
        rounds = await state.known_rounds()
        pipe = state.r.pipeline(transaction=False)
        for r in rounds:
            pipe.hexists(state.keys.round(r), ROWS_PRUNED)
        return sum(1 for pruned in (await pipe.execute() if rounds else []) if not pruned)

    async def drain(self, timeout: float) -> float | None:
        """Wait until every record sent is applied and every update sent has all its scores.

        Returns the seconds it took, None on timeout.
        """
        start = time.perf_counter()
        deadline = start + timeout
        try:
            for topic in ("rounds", "stakes", "submissions", "targets"):
                left = deadline - time.perf_counter()
                await asyncio.to_thread(wait_applied, self.settings, topic, self.sent[topic], max(left, 0.0), self.worker)
        except TimeoutError as exc:
            print(f"  drain: {exc} after {timeout:.0f} s")
            return None
        while any(u.latency is None for u in self.updates.values()):
            if time.perf_counter() > deadline:
                return None
            await asyncio.sleep(0.05)
        return time.perf_counter() - start


def rss_mb(pid: int | None) -> float | None:
    """VmRSS of a process in MiB, from /proc (None if it is gone)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# --------------------------------------------------------------------------- the run


async def run_soak(soak: Soak, drain_timeout: float) -> float | None:
    """Producer, consumer and sampler until the run is over and drained; the drain's seconds (None: timed out)."""
    consumer = asyncio.ensure_future(soak.consume())
    sampler = asyncio.ensure_future(soak.sample())
    producer = asyncio.ensure_future(soak.produce())
    try:
        # Whichever fails first (the worker dying is seen by the sampler) ends the run.
        done, _ = await asyncio.wait({producer, sampler}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        drained = await soak.drain(drain_timeout)
        soak.finished = True
        await sampler
        return drained
    finally:
        for task in (producer, sampler, consumer):
            task.cancel()
        await asyncio.gather(producer, sampler, consumer, return_exceptions=True)


def percentiles(values: list[float]) -> str:
    if not values:
        return "no resolved update"
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"p50 {p50:6.2f} s   p90 {p90:6.2f} s   p99 {p99:6.2f} s   max {max(values):6.2f} s   (n = {len(values)})"


def applied_at(progress: list[tuple[float, int]], t: float) -> int:
    """Submissions applied by ``t`` seconds into the run (the last sample at or before it)."""
    best = 0
    for elapsed, applied in progress:
        if elapsed > t + 1e-9:
            break
        best = applied
    return best


def report_rates(s: Soak, window: float) -> None:
    wl = s.wl
    print(f"\n## input rate, {window:.0f} s windows (submissions/s: offered = sent on schedule, applied = the worker's progress)")
    print("   window      offered   applied   backlog at end   target updates sent / resolved   latency p50 / max")
    edges = [float(x) for x in np.arange(0.0, wl.duration, window)] + [wl.duration]
    for a, b in zip(edges, edges[1:], strict=False):
        offered = sum(1 for t in s.submission_times if a <= t < b) / (b - a)
        applied = (applied_at(s.progress, b) - applied_at(s.progress, a)) / (b - a)
        backlog = sum(1 for t in s.submission_times if t < b) - applied_at(s.progress, b)
        sent = [u for u in s.updates.values() if a <= u.sent_at < b]
        lat = [u.latency for u in sent if u.latency is not None]
        lat_text = f"{np.median(lat):6.2f} / {max(lat):6.2f} s" if lat else "—"
        counts = f"{len(sent):18d} / {len(lat):<3d}"
        print(f"  {a:5.0f}–{b:<5.0f} {offered:8.1f} {applied:9.1f} {backlog:12d} {counts}          {lat_text}")
    total = len(s.submission_times)
    by_end = applied_at(s.progress, wl.duration)
    print(
        f"  overall: offered {total / wl.duration:.1f}/s ({total:,} sent), applied by the end of the run "
        f"{by_end / wl.duration:.1f}/s ({by_end:,}); backlog at the end {total - by_end:,}"
    )


def report_latency(s: Soak) -> None:
    updates = sorted(s.updates.values(), key=lambda u: u.sent_at)
    done = [u for u in updates if u.latency is not None]
    print("\n## resolution latency (targets produced → last scores message of the update consumed)")
    print(f"  all updates:          {percentiles([u.latency for u in done if u.latency is not None])}")
    first = [u.latency for u in done if u.day == 1 and u.latency is not None]
    later = [u.latency for u in done if u.day > 1 and u.latency is not None]
    print(f"  day 1 (builds basis): {percentiles(first)}")
    print(f"  later days:           {percentiles(later)}")
    if len(done) >= 6:
        third = len(done) // 3
        early = float(np.median([u.latency for u in done[:third] if u.latency is not None]))
        late = float(np.median([u.latency for u in done[-third:] if u.latency is not None]))
        print(f"  trend: median of the first third {early:.2f} s, of the last third {late:.2f} s")
    missing = [u for u in updates if u.latency is None]
    if missing:
        print(
            f"  NOT resolved: {len(missing)} of {len(updates)} updates (e.g. round {missing[0].round} day {missing[0].day}: "
            f"{missing[0].seen} of {missing[0].expected} scores)"
        )
    mismatched = [u for ts, u in s.updates.items() if ts in s.crowding_models and s.crowding_models[ts] != expected_models(s, u)]
    if mismatched:
        print(f"  note: {len(mismatched)} updates scored a different number of models than submitted (crowding n_models)")


def expected_models(s: Soak, u: Update) -> int:
    return int(s.sim.submitted[u.round - 1].sum())


def report_memory(s: Soak) -> None:
    wl = s.wl
    print(f"\n## memory (worker RSS from /proc/{s.worker.pid}/status every {s.sample_seconds:.0f} s)")
    print("  elapsed  phase     worker RSS MB   submissions applied   Redis used MB   rounds' rows kept   broker RSS MB")
    for row in s.rss:
        mb = f"{row.redis_mb:15.1f} {row.rows_kept:19d} {row.broker_mb:15.1f}"
        print(f"  {row.elapsed:6.0f}s  {row.phase:8s} {row.worker_mb:12.1f} {row.applied:19,d} {mb}")
    run = [row for row in s.rss if row.elapsed <= wl.duration]
    warm = next((row for row in run if row.elapsed >= s.warmup), None)
    end = run[-1] if run else None
    if warm is None or end is None or end is warm:
        print("  RSS growth after warm-up: not enough samples")
    else:
        growth = (end.worker_mb - warm.worker_mb) / warm.worker_mb
        verdict = "met" if growth < RSS_GROWTH_TARGET else "NOT met"
        after = [row for row in run if row.elapsed >= warm.elapsed]
        slope = np.polyfit([r.elapsed / 60 for r in after], [r.worker_mb for r in after], 1)[0] if len(after) >= 2 else math.nan
        peak = max(r.worker_mb for r in after)
        print(
            f"  worker RSS growth after warm-up: {growth:+.1%}  ({warm.worker_mb:.1f} MB at {warm.elapsed:.0f} s → "
            f"{end.worker_mb:.1f} MB at {end.elapsed:.0f} s; slope {slope:+.1f} MB/min, peak {peak:.1f} MB)"
            f"   (target < {RSS_GROWTH_TARGET:.0%}: {verdict})"
        )
        half = next(row for row in run if row.elapsed >= wl.duration / 2)
        if half is not end:
            print(
                f"  for context, over the second half of the run: {half.worker_mb:.1f} MB at {half.elapsed:.0f} s → "
                f"{end.worker_mb:.1f} MB ({(end.worker_mb - half.worker_mb) / half.worker_mb:+.1%})"
            )
        first_done = wl.target_at(1, wl.days)
        if warm.elapsed < first_done:
            print(
                f"  note: the warm-up ends before round 1's last target update ({first_done:.0f} s), so the growth includes "
                "the first resolutions' one-off allocations; run longer for a meaningful figure"
            )
    grown = s.redis_end - s.redis_start
    per_round = grown / max(s.rounds_opened, 1)
    peak_redis = max((row.redis_mb for row in s.rss), default=math.nan)
    print(
        f"  Redis used_memory: {s.redis_start:.1f} MB at start → {s.redis_end:.1f} MB at end, peak {peak_redis:.1f} MB "
        f"({grown:+.1f} MB, {per_round:.2f} MB per round opened over the whole run)"
    )
    second = [row for row in run if row.elapsed >= wl.duration / 2]
    if len(second) >= 2 and wl.round_seconds > 0:
        rounds_between = (second[-1].elapsed - second[0].elapsed) / wl.round_seconds
        slope = (second[-1].redis_mb - second[0].redis_mb) / max(rounds_between, 1e-9)
        kept = [row.rows_kept for row in second]
        print(
            f"  over the second half: Redis {second[0].redis_mb:.1f} → {second[-1].redis_mb:.1f} MB, {slope * 1024:+.0f} KB per round "
            f"opened; rounds' rows kept {min(kept)}–{max(kept)} (retention {s.settings.retention_rounds} closed rounds + "
            f"the rounds open or not final)"
        )
    report_families(s)
    brokers = [row.broker_mb for row in s.rss if not math.isnan(row.broker_mb)]
    if brokers:
        print(f"  broker (Tansu, memory storage) RSS: {brokers[0]:.1f} MB → {brokers[-1]:.1f} MB (keeps every record in memory)")


def report_families(s: Soak) -> None:
    """Redis bytes by key family at the middle and the end of the run, and the growth per round opened."""
    if len(s.families) < 2:
        return
    (t0, r0, first), (t1, r1, last) = s.families[0], s.families[-1]
    rounds = max(r1 - r0, 1)
    print(f"  Redis by key family (MEMORY USAGE, SAMPLES 0) at {t0:.0f} s ({r0} rounds opened) and {t1:.0f} s ({r1} rounds opened):")
    print("    family                          keys     KB at middle   KB at end   growth per round opened")
    rows = sorted(set(first) | set(last), key=lambda f: -(last.get(f, (0, 0))[1] - first.get(f, (0, 0))[1]))
    for fam in rows:
        (k0, b0), (k1, b1) = first.get(fam, (0, 0)), last.get(fam, (0, 0))
        print(f"    {fam:30s} {k0:5d}→{k1:<5d} {b0 / 1024:12.1f} {b1 / 1024:11.1f} {(b1 - b0) / 1024 / rounds:+15.1f} KB")
    total0, total1 = sum(b for _, b in first.values()), sum(b for _, b in last.values())
    print(f"    {'all keys':30s} {'':11s} {total0 / 1024:12.1f} {total1 / 1024:11.1f} {(total1 - total0) / 1024 / rounds:+15.1f} KB")


def report_log(path: Path) -> None:
    data = path.read_bytes()
    levels: collections.Counter[str] = collections.Counter()
    examples: dict[bytes, int] = {}
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for line in data.splitlines():
        if (m := LOG_LEVEL.search(line)) is not None:
            levels[m.group(1).decode()] += 1
            text = re.sub(rb"\d+", b"N", m.group(2))[:160]
            examples[text] = examples.get(text, 0) + 1
        if (m := RESOLVED_LINE.search(line)) is not None:
            for name, ms in PHASE.findall(m.group(1).decode()):
                phases[name].append(float(ms))
    tracebacks = data.count(b"Traceback")
    print(f"\n## worker log: {path}")
    print(f"  warnings {levels['WARNING']}, errors {levels['ERROR'] + levels['CRITICAL']}, tracebacks {tracebacks}")
    for text, n in sorted(examples.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {n:5d} × {text.decode(errors='replace')}")
    if phases:
        print("  resolution phases from the worker's log, mean / max ms: " + ", ".join(f"{k} {np.mean(v):.0f} / {max(v):.0f}" for k, v in phases.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10; 1 for a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="length of the run in rounds instead (× --round-seconds)")
    parser.add_argument(
        "--retention", type=int, default=10, help="the worker's MMC_RETENTION_ROUNDS: later closes after which a final round's rows go (default 10)"
    )
    parser.add_argument("--score-retention", type=int, default=20, help="the worker's MMC_RETENTION_SCORE_ROUNDS (default 20)")
    parser.add_argument(
        "--history",
        type=int,
        default=25,
        help="the worker's MMC_HISTORY_ROUNDS: rounds of each model's history kept (default 25, so that histories stop growing within a 60-round run)",
    )
    parser.add_argument("--models", type=int, default=300, help="models submitting to each round (default 300)")
    parser.add_argument("--ids", type=int, default=2000, help="ids per round (default 2,000)")
    parser.add_argument("--round-seconds", type=float, default=20.0, help="a new round opens every this many s (default 20)")
    parser.add_argument(
        "--submit-seconds", type=float, default=None, help="submissions window after each open; the round closes at its end (default 60%% of --round-seconds)"
    )
    parser.add_argument("--days", type=int, default=3, help="daily target updates per round, the last one final (default 3)")
    parser.add_argument("--target-gap", type=float, default=5.0, help="s from the close to day 1 and between days (default 5)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of submissions and stakes (default 4)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="worker RSS sampling period (default 10)")
    parser.add_argument("--warmup", type=float, default=0.2, help="warm-up share of the run for the RSS growth (default 0.2)")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="rate table window (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="backlog wait after the run, s (default 300)")
    parser.add_argument("--log", type=Path, default=None, help="worker log file (default out/bench-soak/worker-TAG.log)")
    args = parser.parse_args()
    round_seconds = args.round_seconds
    submit = args.submit_seconds if args.submit_seconds is not None else 0.6 * round_seconds
    if not 2 * SUBMIT_MARGIN < submit <= round_seconds - 2 * STAKES_AFTER_CLOSE:
        parser.error(f"--submit-seconds must be in ({2 * SUBMIT_MARGIN:g}, --round-seconds − {2 * STAKES_AFTER_CLOSE:g}]")
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        args.minutes = args.rounds * round_seconds / 60
    if args.retention < 1 or args.score_retention < 1 or args.history < 1:
        parser.error("--retention, --score-retention and --history must be at least 1")
    if args.minutes <= 0 or args.models < 2 or args.ids < 10 or args.days < 1 or args.target_gap <= 0 or args.sample_seconds < 1:
        parser.error("need --minutes > 0, --models ≥ 2, --ids ≥ 10, --days ≥ 1, --target-gap > 0, --sample-seconds ≥ 1")
    wl = Workload(args.models, args.ids, round_seconds, submit, args.days, args.target_gap, args.minutes * 60, args.seed)
    began = time.perf_counter()
    print(
        f"machine: {os.cpu_count()} cores; one worker, {args.partitions} partitions, embedded Tansu + redis-server; "
        f"retention: rows of {args.retention} closed rounds, scores of {max(args.retention, args.score_retention)}, "
        f"histories of {args.history} rounds"
    )
    print(
        f"workload: {wl.duration:.0f} s; a round every {round_seconds:g} s ({wl.rounds} rounds), {args.models:,} models × "
        f"{args.ids:,} ids, submissions for {submit:g} s then close, stakes for the next round after each close, "
        f"{args.days} target updates {args.target_gap:g} s apart; at most {wl.live_rounds} rounds live at once"
    )
    planned = time.perf_counter()
    # A steady workload: every model plays from the first round (no arrivals during the season),
    # so the state a round needs is the same size all along and any growth is the service's.
    config = SimulationConfig(
        n_models=args.models,
        n_ids=args.ids,
        n_rounds=wl.rounds,
        resolution_days=args.days,
        seed=args.seed,
        arrival_fraction=0.0,
    )
    sim = Simulation(config)
    per_round = int(sim.submitted.sum() + sim.resubmitted.sum()) / wl.rounds
    print(
        f"  simulator planned in {time.perf_counter() - planned:.1f} s: {per_round:.0f} submissions per round → offered "
        f"{per_round / submit:.1f}/s while a round is open, {per_round / round_seconds:.1f}/s on average"
    )
    with EmbeddedStack() as stack:
        settings = bench_settings(stack, args.partitions).model_copy(
            update={"retention_rounds": args.retention, "retention_score_rounds": args.score_retention, "history_rounds": args.history}
        )
        asyncio.run(create_topics(settings))
        log_path = args.log or Path("out/bench-soak") / f"worker-{settings.state_namespace}-{uuid.uuid4().hex[:4]}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"  worker log: {log_path}", flush=True)
        with open(log_path, "wb") as log:
            worker = start_worker(settings, log)
            warmup = args.warmup * wl.duration
            state = Soak(settings, wl, sim, worker, stack.pids.get("kafka"), args.sample_seconds, warmup, args.window_seconds)
            try:
                drained = asyncio.run(run_soak(state, args.drain_timeout))
            finally:
                stopping = time.perf_counter()
                stop_worker(worker)
                code = worker.wait()
                stopped = time.perf_counter() - stopping
    report_rates(state, args.window_seconds)
    if drained is None:
        print(f"  the backlog was NOT drained within {args.drain_timeout:.0f} s after the run")
    else:
        total = sum(state.sent.values())
        print(
            f"  every record sent ({total:,}: {', '.join(f'{k} {v:,}' for k, v in sorted(state.sent.items()))}) "
            f"applied and every update's scores consumed {drained:.1f} s after the run"
        )
    report_latency(state)
    report_memory(state)
    print(
        f"\n## dead letters: {sum(state.deadletters.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in state.deadletters.most_common())})" if state.deadletters else "")
    )
    report_log(log_path)
    print(f"\nworker stopped with exit code {code} in {stopped:.1f} s; broker and Redis stopped; total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
