"""Recovering Redis state from the input topics: ``mmc rebuild`` and the worker's start-up check.

Redis holds everything the service derives, and all of it is a function of the input topics
(DESIGN §4), so lost or stale state is rebuilt by applying the inputs again, in the same code
path as the live worker: the barriers' catch-ups (:mod:`streams.state.progress`) read each input
topic from the offset the state has applied (0 when empty) to its end and apply it — rounds,
then stakes, then submissions, then targets, whose updates are applied in log order.

What gets published while rebuilding. The worker's consumer groups have committed the offsets
whose outputs were sent (offsets are committed after a record is applied and its outputs
acknowledged), so by default (``unfinished``) outputs are published only for records at or
after the groups' committed offset (`Settings.consumer_group`) — those the worker may not have finished — and the outputs
of records before it, which subscribers already have, are recomputed into Redis only.
``all`` re-publishes everything (identical bytes; subscribers see duplicates), ``none``
nothing.

The worker runs :func:`recover_if_behind` before it joins the group: when the state is
behind the groups' committed offsets (Redis lost, or restored from an old snapshot) it
rebuilds first, so it never scores from half a state.

Retention: rebuilding needs every input record whose effect is still in the state — in
practice the input topics must keep data for as long as the state is meant to hold it
(the leaderboard's window of ``MMC_LEADERBOARD_WINDOW`` rounds plus the rounds still open or
resolving). ``streams.kafka.topics.create_topics`` creates the input topics with unlimited
retention (``retention.ms=-1``) for this reason; see docs/operations.md, "Retention and recovery".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import INPUT_TOPICS, partitions_for
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.worker.runtime import PUBLISHING, Runtime

log = logging.getLogger(__name__)

Publish = Literal["unfinished", "all", "none"]
#: The recovery lease: renewed every third of it while a worker rebuilds; lapses when it dies.
RECOVERY_LEASE_SECONDS = 15.0
#: Catch-up order: each topic's decisions only depend on the topics before it.
REBUILD_ORDER: tuple[str, ...] = ("rounds", "stakes", "submissions", "targets")


@dataclass
class RebuildReport:
    """What a rebuild did."""

    applied: dict[str, int] = field(default_factory=dict)  # records applied, by topic
    published: int = 0  # outputs sent
    withheld: int = 0  # outputs recomputed but not sent (subscribers already have them)
    seconds: float = 0.0

    def summary(self) -> str:
        topics = ", ".join(f"{t} {n:,}" for t, n in self.applied.items())
        return (
            f"applied {sum(self.applied.values()):,} records ({topics}); published {self.published:,} outputs, withheld {self.withheld:,}; {self.seconds:.1f} s"
        )


async def committed_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The worker groups' committed offset of every input partition (absent: none committed)."""
    out: dict[tuple[str, int], int] = {}
    for group in sorted({settings.consumer_group(topic) for topic in INPUT_TOPICS}):
        consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            for topic in INPUT_TOPICS:
                if settings.consumer_group(topic) != group:
                    continue
                for p in range(partitions_for(settings, topic)):
                    offset = await consumer.committed(TopicPartition(settings.topic(topic), p))
                    if offset is not None and offset >= 0:
                        out[(topic, p)] = offset
        finally:
            await consumer.stop()
    return out


async def behind(settings: Settings) -> dict[tuple[str, int], tuple[int, int]]:
    """Partitions whose applied progress in Redis is below the groups' committed offset:
    ``(topic, partition) → (progress, committed)``. Empty when the state is intact."""
    from streams.state import RedisState
    from streams.state.client import redis_client

    committed = await committed_offsets(settings)
    state = RedisState(redis_client(settings), settings.state_namespace)
    try:
        progress = {topic: await state.progress(topic) for topic in INPUT_TOPICS}
    finally:
        await state.close()
    return {(topic, p): (progress[topic].get(p, 0), offset) for (topic, p), offset in sorted(committed.items()) if progress[topic].get(p, 0) < offset}


async def rebuild(settings: Settings, publish: Publish = "unfinished", wipe: bool = False) -> RebuildReport:
    """Apply the input topics to the state, from where it stands (empty: the beginning) to their ends.

    Arguments:
        publish: which outputs to send (module docstring).
        wipe: delete every key of ``MMC_STATE_NAMESPACE`` first (a rebuild from scratch).
    """
    started = time.perf_counter()
    committed = await committed_offsets(settings) if publish == "unfinished" else {}
    report = RebuildReport(applied={t: 0 for t in REBUILD_ORDER})
    runtime = Runtime(settings)
    try:
        await runtime.processor()
        if runtime.barrier is None or runtime.state is None:
            raise RuntimeError("runtime not started")
        if wipe:
            removed = await runtime.state.wipe()
            log.warning("rebuild: deleted %d keys of namespace %r", removed, settings.state_namespace)
            await runtime.state.new_epoch()  # workers still running on the old state notice and restart
        runtime.barrier.apply = _applier(runtime.handle_records, committed, publish, report)
        runtime.on_sent = lambda n: _count(report, n)
        for topic in REBUILD_ORDER:
            await runtime.barrier.wait_for(topic, time.monotonic())
    finally:
        await runtime.stop()
    report.seconds = time.perf_counter() - started
    return report


async def recover_if_behind(settings: Settings) -> RebuildReport | None:
    """Rebuild (publishing only unfinished records) when the state is behind the group's commits.

    When the state's epoch key is gone while other keys are there (Redis flushed or restarted
    empty while a worker kept writing into it), whatever is there is not trusted: the namespace
    is wiped and rebuilt from the beginning of the topics. One worker rebuilds at a time (a lock
    in Redis); the others wait for it, then find nothing behind.
    """
    from streams.state import RedisState
    from streams.state.client import redis_client

    state = RedisState(redis_client(settings), settings.state_namespace)
    try:
        while not await state.recovery_lock(RECOVERY_LEASE_SECONDS):
            log.info("another worker is rebuilding the state; waiting")
            await asyncio.sleep(1.0)
        renewing = asyncio.ensure_future(_renew(state))
        try:
            gaps = await behind(settings)
            epoch = await state.has_epoch()
            wipe = not epoch and not await state.is_empty()
            if not gaps and not wipe:
                if not epoch:
                    log.info("the state is empty and the groups are not ahead of it: the topics are read from where the groups stand")
                return None
            described = ", ".join(f"{t}[{p}] {have}<{want}" for (t, p), (have, want) in list(gaps.items())[:8])
            log.warning(
                "state is behind the committed offsets (%s)%s: rebuilding from the input topics",
                described,
                "; its epoch is gone, so it is wiped first" if wipe else "",
            )
            report = await rebuild(settings, publish="unfinished", wipe=wipe)
            log.warning("rebuilt: %s", report.summary())
            return report
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await state.release_recovery_lock()
    finally:
        await state.close()


async def _renew(state: Any) -> None:
    """Keep the recovery lease while rebuilding (a killed holder's lease lapses within RECOVERY_LEASE_SECONDS)."""
    while True:
        await asyncio.sleep(RECOVERY_LEASE_SECONDS / 3)
        with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
            await state.renew_recovery_lock(RECOVERY_LEASE_SECONDS)


def _count(report: RebuildReport, n: int) -> None:
    if PUBLISHING.get():
        report.published += n
    else:
        report.withheld += n


def _applier(
    handle: Callable[[list[tuple[InputRecord, float]]], Awaitable[list[str]]],
    committed: dict[tuple[str, int], int],
    publish: Publish,
    report: RebuildReport,
) -> Callable[[list[tuple[InputRecord, float]]], Awaitable[list[str]]]:
    """The barrier's apply while rebuilding: records split at the committed offset, each part
    applied with publishing on or off."""

    async def apply(records: list[tuple[InputRecord, float]]) -> list[str]:
        if not records:
            return []
        topic = records[0][0].topic
        report.applied[topic] = report.applied.get(topic, 0) + len(records)
        if publish != "unfinished":
            parts = [(records, publish == "all")]
        else:
            done = [(r, t) for r, t in records if r.offset < committed.get((topic, r.partition), 0)]
            rest = [(r, t) for r, t in records if r.offset >= committed.get((topic, r.partition), 0)]
            parts = [(done, False), (rest, True)]
        outcomes: dict[tuple[int, int], str] = {}
        for part, publishing in parts:
            if part:
                token = PUBLISHING.set(publishing)
                try:
                    results = await handle(part)
                finally:
                    PUBLISHING.reset(token)
                outcomes.update(((r.partition, r.offset), o) for (r, _), o in zip(part, results, strict=True))
        return [outcomes[(r.partition, r.offset)] for r, _ in records]

    return apply
