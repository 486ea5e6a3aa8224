"""Kafka client options from the settings: bootstrap, SASL and TLS, the password never shown."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.errors import ConfigurationError
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings

SECRET = "s3cr3t-Pa55word-never-printed"


def _sasl_settings(**overrides: object) -> Settings:
    """Settings for a SASL_SSL cluster with the test password."""
    fields: dict[str, object] = {
        "kafka_bootstrap": "broker-1:9093,broker-2:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "scorer",
        "kafka_sasl_password": SECRET,
        "kafka_ssl_cafile": None,
        "kafka_ssl_certfile": None,
        "kafka_ssl_keyfile": None,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


def test_kafka_client_options_plaintext() -> None:
    """PLAINTEXT gives bootstrap and protocol only."""
    settings = Settings(kafka_bootstrap="k:9092", kafka_security_protocol="PLAINTEXT")
    assert kafka_client_options(settings) == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_kafka_client_options_sasl_ssl_hides_the_password(caplog: pytest.LogCaptureFixture) -> None:
    """SASL_SSL gives mechanism, credentials and a verifying TLS context; the password hides."""
    import ssl

    import certifi

    caplog.set_level(logging.DEBUG)
    settings = _sasl_settings(kafka_ssl_cafile=certifi.where())
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "scorer"
    assert options["sasl_plain_password"] == SECRET
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    for text in (repr(options), str(options), f"{options}", repr(settings), str(settings)):
        assert SECRET not in text
    assert "**********" in repr(options)
    logging.getLogger("test").info("options: %s, settings: %r", options, settings)
    assert SECRET not in caplog.text

    async def construct() -> None:  # aiokafka accepts every keyword as given
        for client in (
            AIOKafkaProducer(**options),
            AIOKafkaConsumer(**options),
            AIOKafkaAdminClient(**options),
        ):
            assert client is not None

    asyncio.run(construct())


def test_kafka_client_options_loads_a_client_certificate(tmp_path: Path) -> None:
    """SSL with cafile, certfile and keyfile loads the client certificate into the context."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=mmc-test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    settings = _sasl_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SSL"
    assert "sasl_plain_password" not in options
    assert options["ssl_context"].get_ca_certs()[0]["subject"] == ((("commonName", "mmc-test"),),)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"kafka_sasl_password": None}, "MMC_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": None}, "MMC_KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_cafile": "/ca.pem"}, "SSL"),
        ({"kafka_ssl_cafile": "/does/not/exist.pem"}, "TLS context"),
    ],
    ids=["no-password", "no-username", "tls-files-without-tls", "missing-ca-file"],
)
def test_kafka_client_options_refuses_inconsistent_security(overrides: dict[str, object], match: str) -> None:
    """Missing SASL credentials or TLS files without TLS are configuration errors."""
    with pytest.raises(ConfigurationError, match=match) as caught:
        kafka_client_options(_sasl_settings(**overrides))
    assert SECRET not in str(caught.value)
