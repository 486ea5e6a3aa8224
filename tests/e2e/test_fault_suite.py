"""The fault suite: faults a production deployment meets, injected for real, through real worker
processes, a real broker and a real Redis (a stack of this module's own, so that pausing the
broker or flushing Redis disturbs no other test).

Every case streams the small tournament of :mod:`tests.e2e.tournament` with the fault in it
and then checks what docs/operations.md promises (:func:`tests.e2e.test_faults.check_trial`): every
valid input's scores present and bit-identical to the batch recomputation, every invalid
input on ``deadletter`` exactly once with its reason — so a valid input refused
``internal_error`` (or anything else) fails the case — and no update with two different
messages.

- (a) oversize records (20 MB and 8.4 MB) on every input topic: dead-lettered ``oversize`` as a
  truncated copy with the original size and SHA-256, and nothing else held up;
- (b) the broker paused with SIGSTOP mid-season (45 s here, 120 s in ``make test-slow``):
  past every client's request timeout, yet nothing is dead-lettered and nothing lost;
- (c) rounds records stamped in the year 2100: refused ``clock_skew``, the watermark unmoved
  ((a) and (c) are faults of one season: each case checks its own promise on it);
- (d) a whole season at once, into a running worker with a CPU hog beside it, and before the
  worker starts, with a round cache smaller than the rounds in flight: no basis task fails,
  no update is lost;
- (e) Redis flushed under a running worker: the worker notices, rebuilds from the topics and
  resumes; its outputs equal an undisturbed run's.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from streams.kafka.topics import INPUT_TOPICS
from streams.messages.schemas import validate_deadletter_headers
from streams.settings import Settings
from streams.state.client import redis_sync_client
from streams.tools.stack import EmbeddedStack
from tests.conftest import StackEnv, fresh_settings, run_sync
from tests.e2e.harness import Event, Received, collect, produce, start_worker, stop_workers
from tests.e2e.test_faults import OUTPUTS, UndisturbedSeason, applied, check_trial, comparable, outputs_complete
from tests.e2e.tournament import DAY, T0, Tournament, build

pytestmark = pytest.mark.e2e

YEAR_2100_MS = 4_102_444_800_000
PHASE_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[EmbeddedStack]:
    """A broker and Redis of this module's own: the cases pause and flush them."""
    with EmbeddedStack() as stack:
        yield stack


def fault_fields(stack: EmbeddedStack) -> dict[str, Any]:
    """The module's stack; short group timeouts, small batches and a 100 KB input limit (as the
    kill trials), a 256 KB dead-letter limit."""
    return {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "redis_url": stack.redis_url,
        "max_message_bytes": 100_000,
        "deadletter_max_bytes": 256 << 10,
        "ingest_batch_size": 16,
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 6.0,
    }


@pytest.fixture
def fault_settings(fault_stack: EmbeddedStack, make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Fresh topics, group and namespace with :func:`fault_fields` (and ``overrides``)."""

    def factory(**overrides: Any) -> Settings:
        return make_settings(**{**fault_fields(fault_stack), **overrides})

    return factory


def want_applied(t: Tournament) -> dict[str, int]:
    counts = Counter(e.topic for e in t.events)
    return {topic: counts.get(topic, 0) for topic in INPUT_TOPICS}


def wait_applied(settings: Settings, client: redis_sync.Redis, want: dict[str, int], procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    """Until every input is applied; fails when a worker exits or nothing is done in time."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}; see {log}"
        try:
            if applied(client, settings) == want:
                return
        except redis_sync.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not applied within {PHASE_TIMEOUT} s: {applied(client, settings)} of {want}; see {log}")


def run_season(settings: Settings, t: Tournament, log: Path, *, before_start: bool = True, during: Callable[[], None] | None = None) -> list[Received]:
    """Stream ``t`` through one worker (sent before it starts, or into it once it runs), run
    ``during`` while it works, wait until every input is applied, then read the outputs."""
    client = redis_sync_client(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if before_start:
            run_sync(produce(settings, t.events))
        procs.append(start_worker(settings, log))
        if not before_start:
            first, rest = t.events[:1], t.events[1:]
            run_sync(produce(settings, first))
            wait_until(lambda: applied(client, settings)["rounds"] >= 1, 60, f"the worker never applied the first record; see {log}")
            run_sync(produce(settings, rest))  # the rest of the season at once
        if during is not None:
            during()
        wait_applied(settings, client, want_applied(t), procs, log)
        received = run_sync(collect(settings, OUTPUTS, outputs_complete(t), timeout=120))
        check_trial(settings, client, t, received)
        return received
    finally:
        stop_workers(procs)
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def log_problems(log: Path) -> list[str]:
    """Lines of the worker log that mean a failure the promises exclude."""
    text = log.read_text(errors="replace")
    bad = ("preparing the basis at close failed", "internal_error", "Traceback", "the submissions consumer failed", "stopped:")
    return [line for line in text.splitlines() if any(b in line for b in bad)]


# --- (a) oversize records --------------------------------------------------------------------
def add_oversize(t: Tournament) -> dict[tuple[str, int], bytes]:
    """A 20 MB and an 8.4 MB record on every input topic, mid-season; returns them by (topic, size)."""
    keys = {"rounds": "2", "targets": "2", "submissions": "m03", "stakes": "m03"}
    originals: dict[tuple[str, int], bytes] = {}
    ts = T0 + 2 * DAY + 30_000
    for i, topic in enumerate(sorted(keys)):
        for j, size in enumerate((20_000_000, 8_388_499)):
            value = b'{"pad":"' + (hashlib.sha256(f"{topic}{size}".encode()).hexdigest().encode() * (size // 64 + 1))[: size - 10] + b'"}'
            originals[(topic, len(value))] = value
            t.add_bad("oversize", topic, keys[topic], value, ts + 10 * i + j)
    t.events.sort(key=lambda e: e.timestamp_ms)
    return originals


@dataclass(frozen=True)
class FaultySeason:
    """A season streamed through one worker with faults (a) and (c) in it: the oversize records
    by (topic, size), and the two rounds records stamped in 2100."""

    settings: Settings
    tournament: Tournament
    received: list[Received]
    log: Path
    oversize: dict[tuple[str, int], bytes]
    skewed: list[Event]


@pytest.fixture(scope="module")
def oversize_and_skewed_season(fault_stack: EmbeddedStack, stack_env: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> FaultySeason:
    """Faults (a) and (c) in one season (run_season checks every valid input's scores and every
    refusal's reason, those of both faults included); each case checks its own promise."""
    t = build(n_models=16, n_ids=200, n_rounds=3, days=2, seed=5)
    originals = add_oversize(t)
    skewed = add_skewed(t)
    settings = fresh_settings(stack_env, **fault_fields(fault_stack))
    log = tmp_path_factory.mktemp("oversize-and-skew") / "worker.log"
    received = run_season(settings, t, log)
    return FaultySeason(settings, t, received, log, originals, skewed)


def test_oversize_records_on_every_topic_are_dead_lettered_truncated_and_nothing_is_held_up(oversize_and_skewed_season: FaultySeason) -> None:
    """20 MB and 8.4 MB records on each input topic: one truncated dead letter each, every score right."""
    season = oversize_and_skewed_season
    settings, originals = season.settings, season.oversize
    letters = [m for m in season.received if m.topic == "deadletter" and m.headers["mmc.error.reason"] == b"oversize"]
    big = list({(m.headers["mmc.error.topic"], m.headers["mmc.error.offset"]): m for m in letters if "mmc.error.truncated" in m.headers}.values())
    assert len(big) == len(originals), [dict(m.headers) for m in letters]
    for m in big:
        size = int(m.headers["mmc.error.original.size"])
        topic = m.headers["mmc.error.topic"].decode().removeprefix(settings.topic_prefix)
        original = originals[(topic, size)]
        assert m.headers["mmc.error.truncated"] == b"value"
        assert m.headers["mmc.error.original.sha256"].decode() == hashlib.sha256(original).hexdigest()
        assert m.value == original[: settings.deadletter_max_bytes]
        validate_deadletter_headers(m.headers)  # the published schema describes them
    assert log_problems(season.log) == []


# --- (b) the broker paused ------------------------------------------------------------------------
def pause_broker(stack: EmbeddedStack, settings: Settings, seconds: float) -> Callable[[], None]:
    """Once the worker has scored the first update: SIGSTOP the broker for ``seconds``, then SIGCONT."""
    client = redis_sync_client(settings)

    def during() -> None:
        try:
            wait_until(lambda: applied(client, settings)["targets"] >= 1, 120, "no targets update applied before the pause")
            pid = stack.pids["kafka"]
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(seconds)
            finally:
                os.kill(pid, signal.SIGCONT)
        finally:
            client.close()

    return during


def broker_pause_case(stack: EmbeddedStack, make: Callable[..., Settings], log: Path, seconds: float) -> None:
    t = build(n_models=16, n_ids=200, n_rounds=4, days=2, seed=11)
    settings = make()
    run_season(settings, t, log, before_start=False, during=pause_broker(stack, settings, seconds))
    assert "unavailable while" in log.read_text(), "the pause never made the worker retry: it missed the season"
    assert log_problems(log) == []


def test_broker_paused_mid_season_loses_nothing_and_dead_letters_nothing_valid(
    fault_stack: EmbeddedStack, fault_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """SIGSTOP the broker for 45 s (past the clients' 40 s request timeout) while rounds resolve."""
    broker_pause_case(fault_stack, fault_settings, tmp_path / "worker.log", 45.0)


@pytest.mark.slow
def test_broker_paused_two_minutes_mid_season(fault_stack: EmbeddedStack, fault_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """The same with a 120 s pause."""
    broker_pause_case(fault_stack, fault_settings, tmp_path / "worker.log", 120.0)


# --- (c) a record stamped in 2100 ----------------------------------------------------------------
def add_skewed(t: Tournament) -> list[Event]:
    """A refused and a well-formed rounds record stamped in 2100, right after round 1 opens; returns them."""
    first_open = next(i for i, e in enumerate(t.events) if e.topic == "rounds")
    t.add_bad("clock_skew", "rounds", "2", {"type": "reopen", "round": 2}, YEAR_2100_MS)
    t.add_bad("clock_skew", "rounds", "77", {"type": "open", "round": 77, "ids": ["a", "b", "c"]}, YEAR_2100_MS + 1)
    skewed = t.events[-2:]
    del t.events[-2:]
    t.events[first_open + 1 : first_open + 1] = skewed
    return skewed


def test_records_stamped_in_2100_are_refused_clock_skew_and_do_not_poison_the_watermark(oversize_and_skewed_season: FaultySeason) -> None:
    """A refused and a well-formed rounds record stamped in 2100, early in the log: both refused
    ``clock_skew``; every later round event and target update is decided as without them."""
    season = oversize_and_skewed_season
    settings, t = season.settings, season.tournament
    letters = {m.headers["mmc.error.offset"]: m for m in season.received if m.topic == "deadletter" and m.headers["mmc.error.reason"] == b"clock_skew"}
    assert sorted(m.value for m in letters.values()) == sorted(e.value for e in season.skewed if e.value is not None)
    client = redis_sync_client(settings)
    try:
        from streams.state import Keys

        watermark = int(client.hget(Keys(settings.state_namespace).watermark(), "rounds"))
        assert watermark < YEAR_2100_MS and watermark == max(e.timestamp_ms for e in t.events if e.topic == "rounds" and e.timestamp_ms < YEAR_2100_MS)
    finally:
        client.close()
    assert log_problems(season.log) == []


# --- (d) a whole season at once ------------------------------------------------------------------
def cpu_hog() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


# The backlog waiting before the worker starts runs with the slow tests (`make test-slow`).
@pytest.mark.parametrize("when", ["into_a_running_worker", pytest.param("before_the_worker_starts", marks=pytest.mark.slow)])
def test_a_whole_season_at_once_loses_no_update_and_fails_no_basis_task(fault_settings: Callable[..., Settings], tmp_path: Path, when: str) -> None:
    """Eight overlapping rounds sent at once, a round cache of two rounds, a CPU hog on one core:
    every update scored right, no basis task failed, nothing refused ``internal_error``."""
    t = build(n_models=24, n_ids=300, n_rounds=8, days=2, seed=21)
    settings = fault_settings(round_cache_rounds=2, ingest_batch_size=64)
    log = tmp_path / "worker.log"
    hog = cpu_hog()
    try:
        run_season(settings, t, log, before_start=(when == "before_the_worker_starts"))
    finally:
        hog.kill()
        hog.wait()
    text = log.read_text(errors="replace")
    assert "basis prepared at close" in text, "no basis was prepared at close: the case did not exercise it"
    assert log_problems(log) == []


# --- (e) Redis flushed under a running worker ----------------------------------------------------
def test_redis_flushed_under_a_running_worker_is_rebuilt_and_outputs_equal_an_undisturbed_run(
    fault_settings: Callable[..., Settings], undisturbed_small_season: UndisturbedSeason, tmp_path: Path
) -> None:
    """FLUSHALL once the first rounds are scored: the worker rebuilds from the topics and carries
    on; the outputs (live alerts aside, which are provisional by design) are the same set of
    bytes as a run without the flush — no alert fired again, no leaderboard or crowding
    message different. The undisturbed run is the lost-Redis test's (on the session's stack:
    the same inputs give the same bytes whatever the broker and Redis)."""
    t = undisturbed_small_season.tournament
    reference = undisturbed_small_season.received

    settings = fault_settings()
    client = redis_sync_client(settings)

    def flush() -> None:
        wait_until(lambda: applied(client, settings)["targets"] >= 3, 120, "fewer than 3 target updates applied before the flush")
        client.flushall()

    log = tmp_path / "worker.log"
    try:
        disturbed = run_season(settings, t, log, before_start=False, during=flush)
    finally:
        client.close()
    text = log.read_text(errors="replace")
    # Noticed: it restarts; the state is then rebuilt from the topics — by the start-up
    # recovery when the groups had committed offsets or the worker wrote again after the flush,
    # else by reading the topics from their beginning (nothing committed yet).
    assert "restarting to rebuild the state from the input topics" in text, "the worker never noticed the flush"
    assert comparable(disturbed) == comparable(reference)
    assert log_problems(log) == []
