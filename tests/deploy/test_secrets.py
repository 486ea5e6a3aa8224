"""Secrets never reach a log line: Settings, client options and clients print them masked."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.kafka.clients import kafka_client_options, librdkafka_config
from streams.settings import Settings
from streams.state.client import redis_client

SECRET = "s3cret-Pa55"


@pytest.fixture
def settings() -> Settings:
    """SASL over TLS with a password, and a Redis password (no server is contacted)."""
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="mmc",
        kafka_sasl_password=SECRET,
        redis_password=SECRET,
        redis_url="redis://redis.invalid:6379/0",
    )


def test_settings_repr_str_and_dump_mask_passwords(settings: Settings) -> None:
    """repr, str and JSON dumps of Settings show the passwords as stars."""
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.model_dump()),
    ):
        assert SECRET not in text
    assert "**********" in repr(settings)


def test_kafka_client_options_mask_the_password(settings: Settings) -> None:
    """The options carry the password for aiokafka, but repr/str/format hide it."""
    options = kafka_client_options(settings)
    assert options["sasl_plain_password"] == SECRET
    for text in (repr(options), str(options), f"{options}", format(options)):
        assert SECRET not in text


def test_librdkafka_config_names_the_cluster_and_masks_the_password(settings: Settings) -> None:
    """The submissions consumer's librdkafka config carries the same SASL/TLS in librdkafka's
    property names, hides the password when printed, and librdkafka accepts it."""
    from confluent_kafka import Consumer

    config = librdkafka_config(settings)
    assert config["security.protocol"] == "sasl_ssl"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == ("SCRAM-SHA-512", "mmc", SECRET)
    for text in (repr(config), str(config), f"{config}"):
        assert SECRET not in text
    Consumer({**config, "group.id": "mmc-config-check"}).close()  # raises KafkaException on a property it refuses


def test_librdkafka_config_refuses_what_the_aiokafka_options_refuse() -> None:
    """SASL without credentials is a ConfigurationError for both clients (one set of checks)."""
    from streams.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        librdkafka_config(Settings(kafka_security_protocol="SASL_PLAINTEXT"))


def test_logging_the_options_does_not_leak(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A log record that formats the settings or options holds no password."""
    log = logging.getLogger("mmc.test")
    with caplog.at_level(logging.DEBUG, logger="mmc.test"):
        log.info("settings %s options %s", settings, kafka_client_options(settings))
        log.info("options %r", kafka_client_options(settings))
    assert caplog.records and SECRET not in caplog.text


def test_redis_client_repr_hides_the_password(settings: Settings) -> None:
    """The Redis client and its connection pool print the password as <REDACTED>."""
    client = redis_client(settings)
    try:
        assert client.connection_pool.connection_kwargs["password"] == SECRET
        assert SECRET not in repr(client) and SECRET not in repr(client.connection_pool)
    finally:
        asyncio.run(client.aclose())


def test_faust_credentials_hide_the_password(settings: Settings) -> None:
    """The SASL credentials handed to Faust print the user name only."""
    from streams.worker.app import faust_credentials

    credentials = faust_credentials(settings)
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)
