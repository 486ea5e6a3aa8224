"""Read a topic as a downstream consumer would: decoded messages, one at a time.

The whole client is a few lines of aiokafka — the point of the service is that anyone can
subscribe to ``mmc.scores`` or ``mmc.alerts``::

    async for message in tail(settings, "alerts", from_beginning=True):
        print(message.key, message.value["kind"], message.value["message"])

Without a ``group`` the consumer is standalone: it assigns itself every partition and commits
nothing (each run starts from the beginning or the end). With a ``group`` it joins that
consumer group, commits the messages it has yielded (after each poll and when it stops, so a
``limit`` leaves the rest for the next run) and resumes where the group stopped —
``from_beginning`` then only applies when the group has no committed offset yet. Joining a
group takes a few seconds (a rebalance); on the embedded Tansu a group's next join waits for
the previous member's session to time out (``MMC_BROKER_SESSION_TIMEOUT``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.text import Text

from streams.errors import ConfigurationError
from streams.kafka.clients import kafka_client_options
from streams.kafka.watermarks import HighWatermarks
from streams.settings import Settings

#: How long one poll waits for records before checking whether the end is reached.
POLL_TIMEOUT_MS = 500


@dataclass(frozen=True)
class TailedMessage:
    """One record, decoded.

    Attributes:
        topic: full topic name; partition, offset: where it sits.
        timestamp_ms: the record timestamp (event time for the service's topics).
        key: the key as text (``None`` when keyless).
        value: the parsed JSON value, or the text itself when the value is not JSON (the
            dead-letter topic keeps the original bytes of refused inputs).
        is_json: whether ``value`` was parsed from JSON.
        headers: ``(name, text)`` pairs in record order (dead-letter reasons live here).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: Any
    is_json: bool
    headers: tuple[tuple[str, str], ...]


def decode_record(record: ConsumerRecord[bytes, bytes]) -> TailedMessage:
    """A :class:`TailedMessage` from an aiokafka record (keys and headers as UTF-8 text)."""
    raw = record.value if record.value is not None else b""
    try:
        value: Any = orjson.loads(raw)
        is_json = True
    except orjson.JSONDecodeError:
        value, is_json = raw.decode("utf-8", "replace"), False
    return TailedMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=None if record.key is None else record.key.decode("utf-8", "replace"),
        value=value,
        is_json=is_json,
        headers=tuple((name, data.decode("utf-8", "replace")) for name, data in record.headers or ()),
    )


async def tail(
    settings: Settings,
    topic_short_name: str,
    from_beginning: bool = False,
    limit: int | None = None,
    group: str | None = None,
    *,
    until_end: bool = False,
) -> AsyncIterator[TailedMessage]:
    """Yield the messages of ``settings.topic(topic_short_name)`` as they arrive.

    Arguments:
        settings: broker and topic prefix.
        topic_short_name: e.g. ``scores``, ``alerts``, ``rounds``.
        from_beginning: start at the oldest record (default: only new records).
        limit: stop after this many messages (default: never).
        group: consumer group to join and commit in (default: standalone, no commits).
        until_end: stop once caught up with the end offsets the topic had when the tail
            started (standalone only) — "read everything so far".

    Raises:
        ConfigurationError: the topic does not exist (wrong ``MMC_TOPIC_PREFIX``, or run
            ``mmc topics``), or the broker is not reachable.
        ValueError: ``until_end`` with a ``group``, or a negative ``limit``.
    """
    if until_end and group is not None:
        raise ValueError("until_end works for a standalone tail only (no group)")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0:
        return
    name = settings.topic(topic_short_name)
    partitions = await _existing_partitions(settings, name)
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=group,
        enable_auto_commit=False,  # a group commits what was yielded, see below
        auto_offset_reset="earliest" if from_beginning else "latest",
        session_timeout_ms=int(settings.broker_session_timeout * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval * 1000),
    )
    yielded: dict[TopicPartition, int] = {}  # next offset to commit, per partition
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            raise ConfigurationError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc!r}") from exc
        starts, ends = await _start_and_end(consumer, name, partitions, group, from_beginning, until_end)
        seen = 0
        while True:
            if group is not None and yielded:
                await consumer.commit(yielded)
                yielded = {}
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            starts.observe(consumer)
            ends.observe(consumer)
            for tp, records in batches.items():
                for record in records:
                    if starts.before(tp, record.offset):
                        continue  # older than the end when the tail started
                    if ends.reached(tp, record.offset):
                        break  # newer than the end we set out to reach
                    yield decode_record(record)
                    yielded[tp] = record.offset + 1
                    seen += 1
                    if limit is not None and seen >= limit:
                        return
            if until_end and await _caught_up(consumer, ends):
                return
    finally:
        try:
            if group is not None and yielded:
                # Commit exactly what was shown: a poll may have fetched more than `limit`.
                await consumer.commit(yielded)
        finally:
            await consumer.stop()


async def _existing_partitions(settings: Settings, name: str) -> list[int]:
    """The partitions of topic ``name``; :class:`ConfigurationError` when it does not exist or the broker is not reachable."""
    try:
        partitions = await _partitions(settings, name)
    except KafkaError as exc:
        raise ConfigurationError(f"cannot reach the broker at {settings.kafka_bootstrap}: {exc!r}") from exc
    if not partitions:
        raise ConfigurationError(f"topic {name!r} does not exist on {settings.kafka_bootstrap}: check MMC_TOPIC_PREFIX or create the topics with `mmc topics`")
    return partitions


async def _start_and_end(
    consumer: AIOKafkaConsumer, name: str, partitions: list[int], group: str | None, from_beginning: bool, until_end: bool
) -> tuple[HighWatermarks, HighWatermarks]:
    """Assign (standalone) or subscribe (group) the consumer; returns where each partition's
    tail starts and where it ends, as the high watermarks of the first fetch responses
    (:mod:`streams.kafka.watermarks`; none for a group or from the beginning)."""
    starts, ends = HighWatermarks(), HighWatermarks()
    if group is None:
        assigned = [TopicPartition(name, p) for p in partitions]
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
            starts = HighWatermarks(assigned)
        if until_end:
            ends = HighWatermarks(assigned)
    else:
        consumer.subscribe([name])
    return starts, ends


async def _caught_up(consumer: AIOKafkaConsumer, ends: HighWatermarks) -> bool:
    """Pause each partition whose position reached its end; True once all have."""
    for tp, end in ends.known():
        if await consumer.position(tp) >= end:
            ends.drop(tp)
            consumer.pause(tp)
    return ends.empty


async def _partitions(settings: Settings, name: str) -> list[int]:
    """Partition ids of topic ``name`` (empty when it does not exist), from cluster metadata.

    Asks for every topic's metadata: a metadata request naming the topic would let a broker
    with auto-creation (Tansu, Kafka's default) create it with the wrong partition count.
    """
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    try:
        await admin.start()
        for meta in await admin.describe_topics(None):
            if meta["topic"] == name and meta["error_code"] == 0:
                return sorted(p["partition"] for p in meta["partitions"])
        return []
    finally:
        await admin.close()


# --------------------------------------------------------------------------- one-line display

#: The fields the compact view shows for each topic, in this order (``--json`` shows all of
#: them). A field equal to the message's key (the model of a score, the round of a round
#: event) is left out: the key is on the line already.
MAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "rounds": ("type", "round", "ids"),
    "submissions": ("round", "model", "predictions", "ids"),
    "stakes": ("model", "stake", "round"),
    "targets": ("round", "day", "final", "targets", "ids"),
    "scores": ("round", "day", "final", "model", "stake", "corr", "mmc", "contribution", "corr_w_mm", "payout"),
    "leaderboard": (
        "rank",
        "model",
        "rounds",
        "mmc_mean",
        "contribution_mean",
        "corr_mean",
        "corr_w_mm_mean",
        "payout_mean",
        "payout_sharpe",
        "payout_max_drawdown",
        "stake_payout",
        "stake",
    ),
    "crowding": (
        "round",
        "day",
        "final",
        "n_models",
        "stake_weighted_cwmm",
        "median_cwmm",
        "gap",
        "hhi",
        "effective_models",
        "top10_share",
        "mean_mmc",
        "mean_contribution",
    ),
    "alerts": ("kind", "severity", "model", "round", "day", "stage", "value", "threshold", "message"),
    "neighbours": ("round", "model", "stake", "own_share", "crowd_share", "crowd_size", "neighbours"),
}
#: Significant digits of a float in the compact view (an integer part keeps all its digits).
SIGNIFICANT_DIGITS = 4
#: Characters of a value that is not JSON (a dead letter's original bytes) shown in the compact view.
SHOWN_TEXT_CHARS = 40


def compact_number(x: float) -> str:
    """``x`` to :data:`SIGNIFICANT_DIGITS` significant digits, without exponent or trailing
    zeros: 0.0123456 → ``0.01235``, -1.5 → ``-1.5``, 123456.7 → ``123457``."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    decimals = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(x)))
    if decimals <= 0:
        return f"{x:.0f}"
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def compact_value(value: Any) -> str:
    """A JSON value as the compact view shows it: floats rounded, lists as their length,
    objects as their keys' count, text quoted when it has spaces."""
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    if isinstance(value, float):
        return compact_number(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return f"{{{len(value)} fields}}"
    text = str(value)
    return orjson.dumps(text).decode() if not text or any(c.isspace() for c in text) else text


def short_topic_name(topic: str) -> str | None:
    """The short name (``scores``) of a full topic name (``mmc.scores``), if it is one of the service's."""
    names = [name for name in MAIN_FIELDS if topic.endswith(name)]
    return max(names, key=len) if names else None


def describe(message: TailedMessage) -> Text:
    """One compact line for a person: event time, topic, key, then the topic's main fields
    (:data:`MAIN_FIELDS`; every top-level field for another topic) with floats rounded to
    :data:`SIGNIFICANT_DIGITS` significant digits, then the headers (a dead letter's reason)."""
    when = dt.datetime.fromtimestamp(message.timestamp_ms / 1000, tz=dt.UTC)
    line = Text()
    line.append(when.strftime("%Y-%m-%d %H:%M:%S"), style="dim")
    line.append(f" {message.topic} ", style="dim")
    line.append(message.key if message.key is not None else "∅", style="bold cyan")
    if message.is_json and isinstance(message.value, dict):
        short = short_topic_name(message.topic)
        names = MAIN_FIELDS.get(short, tuple(message.value)) if short else tuple(message.value)
        for name in names:
            if name not in message.value:
                continue
            value = message.value[name]
            if message.key is not None and not isinstance(value, (dict, list)) and str(value) == message.key:
                continue
            line.append(f" {name}=", style="dim")
            line.append(compact_value(value))
    elif message.is_json:
        line.append(f" {compact_value(message.value)}")
    else:
        text = message.value if len(message.value) <= SHOWN_TEXT_CHARS else message.value[:SHOWN_TEXT_CHARS] + "…"
        line.append(f" {text!r}", style="yellow")
    for name, text in message.headers:
        line.append(f" {name}={text}", style="magenta")
    return line
