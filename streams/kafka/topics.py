"""The service's topics: names, partitions and configs, their creation, and reading one record back.

- :func:`create_topics` - creates the service's topics, idempotently, before workers start;
- :func:`read_record` - the record at an offset of an input topic (a round's open record, read
  back once retention pruned its universe).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streams.errors import ConfigurationError
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Input topics (DESIGN §3), by short name.
INPUT_TOPICS: tuple[str, ...] = ("rounds", "submissions", "stakes", "targets")
#: Output topics (DESIGN §3), by short name.
OUTPUT_TOPICS: tuple[str, ...] = ("scores", "leaderboard", "crowding", "alerts", "neighbours", "deadletter")
#: Topic-level configs by short name. The leaderboard holds one standing per model and
#: ``neighbours`` a model's nearest stakers in its latest closed round, so both are compacted;
#: ``scores`` stays a log (it is the per-round history analysts replay). The input
#: topics keep their records for good: the state is rebuilt from them (streams.worker.rebuild).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "leaderboard": {"cleanup.policy": "compact"},
    "neighbours": {"cleanup.policy": "compact"},
    **{name: {"retention.ms": "-1"} for name in INPUT_TOPICS},
}
#: Topics with a single partition, whatever ``MMC_PARTITIONS`` says. Round lifecycle events
#: and target updates are few (a handful per round per day) and must be processed in one
#: total order: that order is what makes leaderboards, crowding trends and alerts
#: deterministic across worker counts and replays. Submissions and stakes — the volume —
#: are spread over ``MMC_PARTITIONS`` partitions and workers.
SINGLE_PARTITION_TOPICS: frozenset[str] = frozenset({"rounds", "targets"})


def partitions_for(settings: Settings, name: str) -> int:
    """Partition count of the topic with short name ``name``."""
    return 1 if name in SINGLE_PARTITION_TOPICS else settings.partitions


#: Kafka error code for a topic that already exists (CreateTopics).
_TOPIC_ALREADY_EXISTS = 36

TopicOutcome = Literal["created", "exists"]


def topic_names(settings: Settings) -> list[str]:
    """Full names of every topic the service uses, inputs first."""
    return [settings.topic(name) for name in (*INPUT_TOPICS, *OUTPUT_TOPICS)]


async def read_record(settings: Settings, topic: str, partition: int, offset: int) -> Any:
    """The record at ``offset`` of input topic ``topic`` (short name), read with a group-less
    consumer; ``LookupError`` when the log no longer holds it (its retention deleted it)."""
    tp = TopicPartition(settings.topic(topic), partition)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 << 20, fetch_max_bytes=16 << 20)
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not start <= offset < end:
            raise LookupError(f"{settings.topic(topic)}[{partition}]@{offset} is not in the log ({start}..{end - 1})")
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            for record in batch.get(tp, []):
                if record.offset == offset:
                    return record
                if record.offset > offset:
                    raise LookupError(f"{settings.topic(topic)}[{partition}]@{offset} is gone (compacted)")
        raise TimeoutError(f"reading {settings.topic(topic)}[{partition}]@{offset}: no answer within 60 s")  # transient: retried
    finally:
        await consumer.stop()


async def create_topics(settings: Settings) -> dict[str, TopicOutcome]:
    """Create the input and output topics; ones that already exist are left alone.

    Every topic gets ``settings.partitions`` partitions (``rounds`` and ``targets``: one, see
    :data:`SINGLE_PARTITION_TOPICS`) and ``settings.replication_factor`` replicas; the
    leaderboard is compacted. Run it before workers start: a topic the broker
    auto-creates gets the broker's default partition count and Faust then stops with
    ``PartitionsMismatch``.

    Returns:
        full topic name → ``"created"`` or ``"exists"``.

    Raises:
        ConfigurationError: the broker refused a topic (bad replication factor, not
            authorized …) or an existing topic has a different partition count.
    """
    short_names = (*INPUT_TOPICS, *OUTPUT_TOPICS)
    new_topics = [
        NewTopic(
            settings.topic(name),
            num_partitions=partitions_for(settings, name),
            replication_factor=settings.replication_factor,
            topic_configs=TOPIC_CONFIGS.get(name, {}),
        )
        for name in short_names
    ]
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    try:
        try:
            await admin.start()
            response = await admin.create_topics(new_topics)
            outcome: dict[str, TopicOutcome] = {}
            for topic, error_code, *rest in response.topic_errors:
                if error_code == 0:
                    outcome[topic] = "created"
                elif error_code == _TOPIC_ALREADY_EXISTS:
                    outcome[topic] = "exists"
                else:
                    message = rest[0] if rest else None
                    raise ConfigurationError(f"the broker refused topic {topic!r} (Kafka error {error_code}{': ' + message if message else ''})")
            existing = [t for t, state in outcome.items() if state == "exists"]
            if existing:
                expected = {settings.topic(n): partitions_for(settings, n) for n in short_names}
                await _check_partitions(admin, {t: expected[t] for t in existing})
        except KafkaError as exc:
            raise ConfigurationError(f"cannot create topics on {settings.kafka_bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    log.info(
        "topics ready: %s",
        ", ".join(f"{topic} ({state})" for topic, state in outcome.items()),
    )
    return outcome


async def _check_partitions(admin: AIOKafkaAdminClient, expected: dict[str, int]) -> None:
    """Raise :class:`ConfigurationError` if an existing topic's partition count differs."""
    wrong = {
        meta["topic"]: len(meta["partitions"]) for meta in await admin.describe_topics(list(expected)) if len(meta["partitions"]) != expected[meta["topic"]]
    }
    if wrong:
        listing = ", ".join(f"{topic} has {count}, expected {expected[topic]}" for topic, count in sorted(wrong.items()))
        raise ConfigurationError(f"existing topics have the wrong partition count ({listing}): set MMC_PARTITIONS to match or recreate the topics")
