"""Topic creation through the real broker: partitions, compaction, idempotence and a broker that is not there."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.errors import ConfigurationError
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS, create_topics, topic_names
from streams.settings import Settings


def test_create_topics_partitions_and_compaction(
    make_settings: Callable[..., Settings],
) -> None:
    """Every topic gets the configured partitions (rounds and targets one); only the leaderboard is compacted.

    Tansu implements DescribeConfigs, so the compaction is read back from the broker.
    """
    settings = make_settings(partitions=3, create=False)
    outcome = asyncio.run(create_topics(settings))
    assert outcome == {name: "created" for name in topic_names(settings)}
    assert len(outcome) == len(INPUT_TOPICS) + len(OUTPUT_TOPICS) == 10

    async def describe() -> tuple[dict[str, int], dict[str, str | None]]:
        admin = AIOKafkaAdminClient(**kafka_client_options(settings))
        await admin.start()
        try:
            metadata = await admin.describe_topics(topic_names(settings))
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic(name)) for name in ("leaderboard", "scores")])
        finally:
            await admin.close()
        partitions = {meta["topic"]: len(meta["partitions"]) for meta in metadata}
        policies: dict[str, str | None] = {}
        for response in responses:
            for error_code, _msg, _type, name, entries in response.resources:
                assert error_code == 0
                values = {entry[0]: entry[1] for entry in entries}
                policies[name] = values.get("cleanup.policy")
        return partitions, policies

    partitions, policies = asyncio.run(describe())
    single = {settings.topic("rounds"), settings.topic("targets")}
    assert partitions == {name: (1 if name in single else 3) for name in topic_names(settings)}
    assert policies[settings.topic("leaderboard")] == "compact"
    assert policies[settings.topic("scores")] in (None, "delete")


def test_create_topics_is_idempotent_and_checks_partitions(settings: Settings) -> None:
    """A second run reports existing topics; a different partition count is refused."""
    again = asyncio.run(create_topics(settings))
    assert set(again.values()) == {"exists"}
    other = settings.model_copy(update={"partitions": settings.partitions + 1})
    with pytest.raises(ConfigurationError, match="partition count"):
        asyncio.run(create_topics(other))


def test_create_topics_without_a_broker_is_a_configuration_error() -> None:
    """An unreachable bootstrap server gives a ConfigurationError naming it."""
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", kafka_security_protocol="PLAINTEXT")
    with pytest.raises(ConfigurationError, match=str(port)):
        asyncio.run(create_topics(settings))
