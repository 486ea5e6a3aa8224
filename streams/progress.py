"""Barriers between input topics: decide only once every earlier event has been applied.

Kafka orders records within a partition, not across topics, and a replay or a second worker
may apply the ``rounds`` topic far ahead of — or behind — ``submissions``. Decisions that
depend on another topic (is this submission after its round's close? which stake was in force
at close? which submissions does a target update score?) therefore wait, through
:meth:`Barrier.wait_for`, until that topic has been applied up to the end offsets it had when
this record was received: every record appended before this one has then been applied. Every
agent reports what it applied with :meth:`streams.state.RedisState.mark_processed`.

Two shortcuts keep this cheap on a live stream: a barrier completed after a record was received
serves it too (records received together share one check), and for the single-partition
``rounds`` topic, whose event times only grow, a watermark at or past the record's event time
already proves that every earlier round event has been applied.

The waits form no cycle: rounds waits for nothing; stakes and submissions wait for rounds;
targets wait for rounds, submissions and stakes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.admin import kafka_client_options, partitions_for
from streams.settings import Settings
from streams.state import RedisState

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02
WARN_AFTER_SECONDS = 30.0


class Barrier:
    """Waits until input topics have been applied up to their current end offsets."""

    def __init__(self, settings: Settings, state: RedisState) -> None:
        self.settings = settings
        self.state = state
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._synced_at: dict[str, float] = {}
        self._inflight: dict[str, tuple[float, asyncio.Task[None]]] = {}

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**kafka_client_options(self.settings), enable_auto_commit=False)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def wait_for(self, topic: str, received_at: float, event_ts: int | None = None) -> None:
        """Return once ``topic`` has been applied past every record appended before ``received_at``.

        Arguments:
            topic: short name of the topic to wait for.
            received_at: ``time.monotonic()`` when the caller's record was received.
            event_ts: the caller's event time; with the ``rounds`` watermark at or past it no
                wait is needed.
        """
        if event_ts is not None and topic == "rounds" and await self.state.watermark("rounds") >= event_ts:
            return
        if self._synced_at.get(topic, -1.0) >= received_at:
            return
        inflight = self._inflight.get(topic)
        if inflight is None or inflight[0] < received_at:
            started = time.monotonic()
            task = asyncio.ensure_future(self._sync(topic, started))
            self._inflight[topic] = (started, task)
            inflight = (started, task)
        await asyncio.shield(inflight[1])

    async def _sync(self, topic: str, started: float) -> None:
        if self._consumer is None:
            raise RuntimeError("Barrier.start() was not awaited")
        name = self.settings.topic(topic)
        partitions = [TopicPartition(name, p) for p in range(partitions_for(self.settings, topic))]
        async with self._lock:
            ends = await self._consumer.end_offsets(partitions)
            starts = await self._consumer.beginning_offsets(partitions)
        warned = False
        while True:
            done = await self.state.progress(topic)
            # A partition nobody has applied anything from counts as done up to its log start
            # (records before it are gone: retention), so only records still there are awaited.
            behind = {
                tp.partition: end
                for tp, end in ends.items()
                if done.get(tp.partition, starts[tp]) < end
            }
            if not behind:
                break
            waited = time.monotonic() - started
            if waited > WARN_AFTER_SECONDS and not warned:
                log.warning("still waiting for %s partitions %s to be applied (%.0f s)", name, sorted(behind), waited)
                warned = True
            await asyncio.sleep(POLL_SECONDS)
        self._synced_at[topic] = max(self._synced_at.get(topic, -1.0), started)
