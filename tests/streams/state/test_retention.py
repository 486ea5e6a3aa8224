"""Retention: what the state keeps of past rounds, against the real Redis (and broker) of the suite.

A season of overlapping rounds is applied through the worker's Runtime (records handed over as
the agents do, with the real barriers) in two orders — as a live worker sees it (every record
in event-time order, so closes, stake updates and target days interleave) and as a replay
applies it (the whole rounds topic, then stakes, submissions, targets) — with a retention of a
few rounds, and once more in event-time order with a retention longer than the season.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
import redis as redis_sync
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from scoring import RoundBasis
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import create_topics
from streams.messages.records import InputRecord
from streams.metrics import StateGauges
from streams.settings import Settings
from streams.state import Keys, RedisState, StakeEntry, SubmissionRow, key_family, shadowed_stakes
from streams.state.client import redis_client
from streams.worker.runtime import Runtime, apply_unless_applied
from tests.conftest import StackEnv, run_sync

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
DAY = 86_400_000
ROUNDS = 9  # closed and resolved; one more stays open
DAYS = 3  # target days per round: rounds r+1..r+3 open and close while round r resolves
QUICK = 5  # this round is final on its first day, before the next round closes
MODELS = [f"m{i}" for i in range(6)]
STAKE_ONLY = "s9"  # stakes, never submits
N_IDS = 40
# A small retention: rows of 2 closed rounds, scores of 3, histories of 4 rounds.
SMALL = {"retention_rounds": 2, "retention_score_rounds": 3, "history_rounds": 4, "leaderboard_window": 3, "alert_cwmm_baseline_rounds": 2}
KEEP_HISTORY = 4


@dataclass
class Season:
    """Input records of every topic (offsets per topic, partition 0) in event-time order."""

    records: list[InputRecord] = field(default_factory=list)
    close_ts: dict[int, int] = field(default_factory=dict)
    open_ts: dict[int, int] = field(default_factory=dict)
    _offsets: dict[str, itertools.count] = field(default_factory=dict)

    def add(self, topic: str, key: str, value: dict[str, Any], ts: int) -> None:
        offset = next(self._offsets.setdefault(topic, itertools.count()))
        self.records.append(InputRecord(topic, 0, offset, ts, key.encode(), orjson.dumps(value)))

    def in_time_order(self) -> list[InputRecord]:
        return sorted(self.records, key=lambda r: (r.timestamp_ms, r.topic, r.offset))

    def in_replay_order(self) -> list[InputRecord]:
        return [r for topic in ("rounds", "stakes", "submissions", "targets") for r in self.records if r.topic == topic]


def build_season(seed: int = 1) -> Season:
    """Rounds 1..ROUNDS open daily, close half a day later and resolve over DAYS days (the last
    final; round QUICK over one); stakes change between rounds (some naming the next round);
    models resubmit; the final updates of rounds 2 and QUICK are sent again right after, once
    as they were and once corrected; round 1's final is sent again long after."""
    rng = np.random.default_rng(seed)
    s = Season()
    events: list[tuple[int, str, str, dict[str, Any]]] = []
    for r in range(1, ROUNDS + 2):
        opened = T0 + r * DAY
        ids = [f"id{r:02d}{i:03d}" for i in range(N_IDS)]
        s.open_ts[r] = opened
        events.append((opened, "rounds", str(r), {"type": "open", "round": r, "ids": ids}))
        for j, m in enumerate(MODELS):
            events.append((opened + 1000 + j, "submissions", m, {"round": r, "model": m, "predictions": rng.normal(size=N_IDS).round(2).tolist()}))
            if (r + j) % 3 == 0:  # a later submission replaces the first
                events.append((opened + 5000 + j, "submissions", m, {"round": r, "model": m, "predictions": rng.normal(size=N_IDS).tolist()}))
        for j, m in enumerate([*MODELS, STAKE_ONLY]):
            for k in range(2):  # two updates per model and round: most end up shadowed
                value: dict[str, Any] = {"model": m, "stake": float(rng.integers(0, 50))}
                if (r + j + k) % 4 == 0:
                    value["round"] = r + 1  # effective from the next round's close
                events.append((opened + 10_000 + 100 * j + k, "stakes", m, value))
        if r > ROUNDS:
            continue  # the last round stays open
        closed = opened + DAY // 2
        s.close_ts[r] = closed
        events.append((closed, "rounds", str(r), {"type": "close", "round": r}))
        targets = rng.integers(0, 5, size=N_IDS) / 4
        days = 1 if r == QUICK else DAYS
        for day in range(1, days + 1):
            t = (targets if day == days else np.where(rng.random(N_IDS) < 0.1, np.nan, targets)).tolist()
            t = [None if isinstance(v, float) and np.isnan(v) else v for v in t]
            ts = closed + day * DAY + 60_000 + r
            events.append((ts, "targets", str(r), {"round": r, "day": day, "final": day == days, "targets": t}))
            if r in (2, QUICK) and day == days:
                events.append((ts + 1, "targets", str(r), {"round": r, "day": day, "final": True, "targets": t}))
                corrected = [0.5 if i == 0 else v for i, v in enumerate(t)]
                events.append((ts + 2, "targets", str(r), {"round": r, "day": day, "final": True, "targets": corrected}))
    last = max(ts for ts, *_ in events)
    events.append((last + DAY, "targets", "1", {"round": 1, "day": DAYS, "final": True, "targets": [0.25] * N_IDS}))
    for ts, topic, key, value in sorted(events, key=lambda e: e[0]):
        s.add(topic, key, value, ts)
    return s


async def apply_in_order(settings: Settings, records: list[InputRecord], replay: bool = False) -> dict[tuple[str, int], str]:
    """Apply the records one at a time through a fresh Runtime; each record's outcome.

    Live (default): each record is appended to its topic just before it is applied, as a live
    worker receives it. Replay: every record is in the log first, as when a worker replays the
    topics; the barriers then catch up on what a record depends on (applying it from the log).
    Either way a pruned round's universe is read back from the log."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=0)
    await producer.start()
    runtime = Runtime(settings)
    outcomes: dict[tuple[str, int], str] = {}
    await runtime.processor()
    handle = runtime.handle_records

    async def recorded(batch: list[tuple[InputRecord, float]], prepared: Any = None) -> list[str]:
        result = await handle(batch, prepared)
        outcomes.update({(r.topic, r.offset): o for (r, _), o in zip(batch, result, strict=True)})
        return result

    runtime.handle_records = recorded  # type: ignore[method-assign]
    runtime.barrier.apply = recorded  # type: ignore[union-attr]

    async def append(record: InputRecord) -> None:
        topic = settings.topic(record.topic)
        sent = await (await producer.send(topic, value=record.value, key=record.key, partition=record.partition, timestamp_ms=record.timestamp_ms))
        assert sent.offset == record.offset

    try:
        if replay:
            for record in sorted(records, key=lambda r: (r.topic, r.offset)):
                await append(record)
        for record in records:
            if not replay:
                await append(record)
            await apply_unless_applied(runtime, [(record, time.monotonic())])
        await (await runtime.processor()).settle()
        return outcomes
    finally:
        await runtime.stop()
        await producer.stop()


def snapshot(client: redis_sync.Redis, namespace: str) -> dict[bytes, Any]:
    """Every key of the namespace (prefix dropped) with its content, type-aware; without the
    state's random epoch token, the provisional live alerts (they depend on timing) and the
    cache tokens ``subs_version`` and the basis ``fingerprint``."""
    prefix = f"{namespace}:".encode()
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=Keys(namespace).everything(), count=1000):
        name = key[len(prefix) :]
        if name in (b"{progress}:epoch", b"{progress}:recovery"):
            continue
        kind = client.type(key)
        if kind == b"hash":  # without the cache tokens (they count write batches, whose size depends on fetching)
            out[name] = {f: v for f, v in client.hgetall(key).items() if f not in (b"subs_version", b"fingerprint")}
        elif kind == b"zset" and name == b"alerts":  # without the provisional live alerts (they depend on timing)
            out[name] = [(v, t) for v, t in client.zrange(key, 0, -1, withscores=True) if orjson.loads(v).get("stage") != "live"]
        elif kind == b"zset":
            out[name] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[name] = client.smembers(key)
        elif kind == b"list":
            out[name] = [v for v in client.lrange(key, 0, -1) if orjson.loads(v).get("stage") != "live"]
        else:
            out[name] = client.get(key)
    return out


@dataclass
class Run:
    settings: Settings
    outcomes: dict[tuple[str, int], str]
    state: dict[bytes, Any]


@pytest.fixture(scope="module")
def season() -> Season:
    return build_season()


@pytest.fixture(scope="module")
def client(stack_env: StackEnv) -> Iterator[redis_sync.Redis]:
    c = redis_sync.Redis.from_url(stack_env.redis_url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def runs(stack_env: StackEnv, client: redis_sync.Redis, season: Season) -> Iterator[dict[str, Run]]:
    """The season applied three times, each in its own namespace and topics (as ``make_settings``
    makes them): live order and replay order with the small retention, live order with a
    retention and a history longer than the season. Shared by the module's tests (it takes a while); the tests
    that write go to the replay's namespace, last."""
    out: dict[str, Run] = {}
    plans = {
        "live": (SMALL, season.in_time_order()),
        "replay": (SMALL, season.in_replay_order()),  # every record in the log first
        # without the last record (round 1's final sent again, refused where round 1 is pruned)
        "unpruned": ({**SMALL, "retention_rounds": 1000, "retention_score_rounds": 1000, "history_rounds": 1000}, season.in_time_order()[:-1]),
    }
    try:
        for name, (overrides, records) in plans.items():
            tag = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka_bootstrap=stack_env.kafka_bootstrap,
                redis_url=stack_env.redis_url,
                topic_prefix=f"t{tag}.",
                app_id=f"mmc-test-{tag}",
                state_namespace=f"t{tag}",
                **overrides,
            )
            run_sync(create_topics(settings))
            outcomes = run_sync(apply_in_order(settings, records, replay=name == "replay"))
            out[name] = Run(settings, outcomes, snapshot(client, settings.state_namespace))
        yield out
    finally:
        for run in out.values():
            keys = list(client.scan_iter(match=Keys(run.settings.state_namespace).everything()))
            if keys:
                client.delete(*keys)


def on_state(settings: Settings, work: Any) -> Any:
    """Run ``await work(state)`` on a fresh RedisState of ``settings``."""

    async def go() -> Any:
        state = RedisState(redis_client(settings), settings.state_namespace)
        try:
            return await work(state)
        finally:
            await state.close()

    return run_sync(go())


def a_basis(n_models: int = 2, draws: int = 3) -> RoundBasis:
    z = np.zeros
    return RoundBasis(z(n_models), z(N_IDS), z(N_IDS), z((draws, N_IDS)), z(n_models), z((n_models, draws)), z(n_models), z(n_models))


def rounds_with(state: dict[bytes, Any], suffix: str) -> set[int]:
    return {int(k.split(b"}")[0][2:]) for k in state if k.startswith(b"{r") and k.endswith(suffix.encode())}


def test_a_season_longer_than_the_retention_keeps_the_bulk_of_the_latest_rounds_only(runs: dict[str, Run]) -> None:
    """Rows, live sums, basis, targets and universe of the 2 latest closed rounds (and of the open
    one) stay; scores, crowding and CWMMs at close of the 3 latest; a pruned round keeps its
    lifecycle hash (its universe is read back from its open record when a late record needs it)."""
    live, unpruned = runs["live"].state, runs["unpruned"].state
    closed = list(range(1, ROUNDS + 1))
    assert rounds_with(unpruned, ":subs") == set(range(1, ROUNDS + 2))  # nothing pruned without retention
    assert rounds_with(live, ":subs") == {*closed[-2:], ROUNDS + 1}
    assert rounds_with(live, ":live:0") == {*closed[-2:], ROUNDS + 1}
    assert rounds_with(live, ":basis") == rounds_with(live, ":targets") == set(closed[-2:])
    assert rounds_with(live, ":scores") == rounds_with(live, ":crowding") == set(closed[-3:])
    assert rounds_with(live, ":ids") == {*closed[-2:], ROUNDS + 1}
    assert rounds_with(live, ":round") == set(range(1, ROUNDS + 2))
    assert rounds_with(live, ":closecwmm") == set(closed[-3:])
    for r in closed[:-2]:
        assert live[f"{{r{r}}}:round".encode()][b"rows_pruned"] == b"1"
    for r in closed[:-3]:
        assert live[f"{{r{r}}}:round".encode()][b"scores_pruned"] == b"1"
    assert set(live[b"trend"]) == {str(r).encode() for r in closed}  # the trend keeps every round


def test_a_replay_prunes_at_the_same_updates_as_the_live_run(runs: dict[str, Run], season: Season) -> None:
    """The replay (rounds topic first) leaves the very state of the live run, and every record
    gets the same outcome: updates after a round's final one (a repeat, a correction) are scored
    while its rows are kept and refused no_submissions once pruned, in both."""
    live, replay = runs["live"], runs["replay"]
    assert replay.state == live.state
    assert replay.outcomes == live.outcomes
    targets = [r for r in season.records if r.topic == "targets"]
    late_repeat = targets[-1]  # round 1's final, long after round 1 was pruned
    assert live.outcomes[("targets", late_repeat.offset)] == "no_submissions"
    for rnd in (2, QUICK):
        repeats = [r for r in targets if orjson.loads(r.value)["round"] == rnd and orjson.loads(r.value)["final"]]
        assert len(repeats) == 3
        assert [live.outcomes[("targets", r.offset)] for r in repeats] == ["applied"] * 3
    assert all(o in ("applied", "unchanged") for (topic, _), o in live.outcomes.items() if topic != "targets")


def test_retained_rounds_answer_as_without_pruning(runs: dict[str, Run], season: Season) -> None:
    """Stake in force at every kept round's close (and at any later time), each model's history
    (its latest rounds), the leaderboard and the kept rounds' scores equal the unpruned run's;
    compaction did remove stake updates."""
    live, unpruned = runs["live"], runs["unpruned"]
    kept = sorted(rounds_with(live.state, ":subs"))
    models = [*MODELS, STAKE_ONLY]

    async def stakes(state: RedisState) -> dict[tuple[int | None, int], list[float]]:
        out = {}
        for r in kept:
            at = [season.open_ts[r] + 5_000, season.open_ts[r] + 20_000, season.close_ts.get(r, season.open_ts[r] + DAY)]
            for i, at_ms in enumerate(at):
                out[(r, i)] = (await state.stakes_at(models, at_ms, r)).tolist()
        out[(None, 0)] = (await state.stakes_at(models, T0 + 100 * DAY, None)).tolist()
        return out

    assert on_state(live.settings, stakes) == on_state(unpruned.settings, stakes)
    stake_keys = [f"{{m:{m}}}:stakes".encode() for m in models]
    for key in stake_keys:
        assert set(live.state[key]) <= set(unpruned.state[key])
    assert sum(len(live.state[k]) for k in stake_keys) < sum(len(unpruned.state[k]) for k in stake_keys)
    for m in MODELS:
        key = f"{{m:{m}}}:history".encode()
        assert len(unpruned.state[key]) == ROUNDS
        latest = sorted(unpruned.state[key], key=int)[-KEEP_HISTORY:]
        assert live.state[key] == {r: unpruned.state[key][r] for r in latest}
    for key in (b"leaderboard", b"leaderboard:rows", b"trend", b"models"):
        assert live.state[key] == unpruned.state[key]
    for suffixes, tier in (((":scores", ":crowding"), ":scores"), ((":subs", ":live:0", ":basis", ":targets"), ":subs")):
        for r in rounds_with(live.state, tier):
            for suffix in suffixes:
                key = f"{{r{r}}}{suffix}".encode()
                assert live.state.get(key) == unpruned.state.get(key), key


def test_round_memory_series_cover_the_kept_rounds_only(runs: dict[str, Run]) -> None:
    """mmc_redis_round_memory_bytes has a series for each round whose rows are kept, none for the
    pruned ones; used and max memory come from Redis INFO."""
    s = runs["live"].settings
    registry = CollectorRegistry()
    gauges = StateGauges(registry)
    on_state(s, lambda state: gauges.refresh(state, s.partitions))
    series = {
        sample.labels["round"]: sample.value for metric in registry.collect() if metric.name == "mmc_redis_round_memory_bytes" for sample in metric.samples
    }
    assert set(series) == {str(r) for r in rounds_with(runs["live"].state, ":subs")}
    assert all(v > N_IDS for v in series.values())
    assert registry.get_sample_value("mmc_rounds_known") == ROUNDS + 1
    assert registry.get_sample_value("mmc_rounds_open") == 1
    assert (registry.get_sample_value("mmc_redis_used_memory_bytes") or 0) > 0


def test_pruning_again_changes_nothing(runs: dict[str, Run], client: redis_sync.Redis) -> None:
    """prune_rounds twice more, with the same policy: the state is the one the season left."""
    s = runs["replay"].settings

    async def prune_twice(state: RedisState) -> list[Any]:
        return [await state.prune_rounds(s.retention_rounds, s.retention_score_rounds, KEEP_HISTORY, s.partitions) for _ in range(2)]

    reports = on_state(s, prune_twice)
    assert all(not r.rows_pruned and not r.scores_pruned and r.stakes_removed == 0 for r in reports)
    assert snapshot(client, s.state_namespace) == runs["replay"].state


def test_writes_for_a_pruned_round_leave_no_bulk_behind(runs: dict[str, Run], client: redis_sync.Redis) -> None:
    """Rows, live sums, basis, targets and scores written for a pruned round are dropped, atomically
    in its slot; a cached copy of its rows never matches again (version -1)."""
    s = runs["replay"].settings
    keys = Keys(s.state_namespace)

    async def write(state: RedisState) -> int:
        row = SubmissionRow(T0, 1, 0, 1.0, b"\x00" * 8)
        await state.put_submissions({(1, "m0"): row}, {(1, 0): np.ones(N_IDS + 1)})
        await state.put_basis(1, "f", a_basis())
        await state.put_targets(1, 9, True, np.zeros(N_IDS))
        await state.put_round_scores(1, {"m0": b"{}"}, b"{}")
        return await state.submissions_version(1)

    assert on_state(s, write) == -1
    for key in (keys.subs(1), keys.live(1, 0), keys.basis(1), keys.targets(1), keys.scores(1), keys.crowding(1)):
        assert not client.exists(key), key
    assert snapshot(client, s.state_namespace) == runs["replay"].state
    # the same writes for a kept round do land (the test above would pass on a state that drops everything)
    kept = max(rounds_with(runs["replay"].state, ":subs"))
    on_state(s, lambda state: state.put_round_scores(kept, {"zz": b"{}"}, b"{}"))
    assert client.hget(keys.scores(kept), "zz") == b"{}"
    client.hdel(keys.scores(kept), "zz")


def test_a_stake_stamped_before_the_cut_is_compacted_when_stored(runs: dict[str, Run], client: redis_sync.Redis, season: Season) -> None:
    """A late stake update stamped before the stake cut is stored and counted, then compacted at
    once: shadowed by the newest update before the cut that applies to every round."""
    s = runs["replay"].settings
    keys = Keys(s.state_namespace)
    cut = int(client.hget(keys.retention(), "stake_cut"))
    assert cut == season.open_ts[min(rounds_with(runs["replay"].state, ":subs"))]  # the oldest round whose rows are kept
    before = client.zrange(keys.stakes("m0"), 0, -1)
    version = int(client.get(keys.stakes_version()))
    on_state(s, lambda state: state.add_stake("m0", StakeEntry(T0 - DAY, 999_999, None, 77.0)))
    assert int(client.get(keys.stakes_version())) == version + 1
    assert client.zrange(keys.stakes("m0"), 0, -1) == before
    # one stamped after the cut stays
    on_state(s, lambda state: state.add_stake("m0", StakeEntry(cut + 1, 999_998, None, 78.0)))
    assert len(client.zrange(keys.stakes("m0"), 0, -1)) == len(before) + 1


@pytest.mark.parametrize("seed", range(20))
def test_compaction_keeps_every_answer_from_the_cut_on(seed: int) -> None:
    """Removing shadowed stake updates changes no stake in force, for any round, at or after the cut."""
    rng = random.Random(seed)
    members = []
    for offset in range(rng.randint(1, 25)):
        rnd = rng.choice([None, None, *range(1, 8)])
        members.append(f"{rng.randint(0, 50):015d}:{offset:020d}:{'' if rnd is None else rnd}:{float(rng.randint(0, 9))!r}".encode())
    newest_first = sorted(members, reverse=True)
    kept = [m for m in newest_first if m not in set(shadowed_stakes(newest_first))]
    for r in [None, *range(0, 10)]:
        assert RedisState._stake_in_force(kept, r) == RedisState._stake_in_force(newest_first, r)
    if sum(m.split(b":")[2] == b"" for m in newest_first) >= 2:  # an older update without a round is shadowed
        assert len(kept) < len(newest_first)


def test_prune_rounds_refuses_a_policy_that_keeps_nothing() -> None:
    """Every retention setting must keep at least one round."""
    state = RedisState.__new__(RedisState)
    with pytest.raises(ValueError):
        asyncio.run(state.prune_rounds(0, 1, 1, 1))


def test_memory_by_family_groups_every_key_of_the_namespace(settings: Settings, redis: redis_sync.Redis) -> None:
    """Per-round, per-model and per-partition keys fold into one family each; the byte counts
    are Redis's own MEMORY USAGE; keys of another namespace are not counted."""
    keys = Keys(settings.state_namespace)
    ns = settings.state_namespace
    assert key_family(ns, keys.live(12, 3)) == "{rN}:live:P"
    assert key_family(ns, keys.history("alpha")) == "{m:NAME}:history"
    assert key_family(ns, keys.watermark()) == "{progress}:watermark"
    for r in (1, 2, 3):
        redis.set(keys.scores(r), b"x" * (100 * r))
    redis.set(keys.stakes("a"), b"y")
    redis.set(keys.stakes("b"), b"y")
    redis.set(Keys(settings.state_namespace + "-other").scores(1), b"z")
    families = on_state(settings, lambda state: state.memory_by_family())
    assert set(families) == {"{rN}:scores", "{m:NAME}:stakes"}
    assert families["{rN}:scores"][0] == 3 and families["{m:NAME}:stakes"][0] == 2
    expected = sum(int(redis.memory_usage(keys.scores(r), samples=0)) for r in (1, 2, 3))
    assert families["{rN}:scores"][1] == expected
