"""The embedded stack, topic creation and client options, through the real broker and Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis as redis_sync
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.admin import INPUT_TOPICS, OUTPUT_TOPICS, create_topics, kafka_client_options, topic_names
from streams.errors import ConfigurationError, StackError
from streams.settings import Settings
from streams.stack import EmbeddedStack
from streams.state.client import redis_client

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pa55word-never-printed"


def _gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], timeout: float = 5.0) -> bool:
    """Whether every pid is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return all(_gone(pid) for pid in pids)


def _read_lines(process: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """Read ``count`` lines of ``process``'s stdout, failing after ``timeout`` seconds.

    Reads the pipe's file descriptor directly (no buffered ``readline`` that could swallow a
    line the selector then waits for) and fails if anything follows the last line wanted.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while data.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"stdout gave {data!r} after {timeout} s, expected {count} lines")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"process exited early ({process.poll()}); stdout so far {data!r}")
            data += chunk
    lines = data.decode().split("\n")
    assert lines[count:] == [""], f"unexpected output after {count} lines: {data!r}"
    return lines[:count]


# --- the stack itself --------------------------------------------------------------------


def test_embedded_stack_starts_answers_and_stops_clean() -> None:
    """A fresh stack answers on both ports, reports its env, and leaves no process or dir."""
    with EmbeddedStack() as stack:
        pids = list(stack.pids.values())
        tmpdir = stack._tmpdir
        assert stack.running
        assert stack.env() == {
            "MMC_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "MMC_REDIS_URL": stack.redis_url,
        }
        assert stack.kafka_bootstrap.startswith("127.0.0.1:")
        assert stack.redis_url.startswith("redis://127.0.0.1:") and stack.redis_url.endswith("/0")
        assert set(stack.startup_seconds) == {"kafka", "redis"}
        assert redis_sync.Redis.from_url(stack.redis_url).ping()
        for pid in pids:  # each server leads its own process group
            assert os.getpgid(pid) == pid != os.getpgrp()
    assert _wait_gone(pids)
    assert tmpdir is not None and not tmpdir.exists()
    assert not stack.running
    stack.stop()  # idempotent


def test_stack_reports_a_broker_that_cannot_bind() -> None:
    """Tansu exits with status 0 when its port is taken; the stack still raises StackError."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = EmbeddedStack(kafka_port=port, startup_timeout=15)
        with pytest.raises(StackError, match="kafka"):
            stack.start()
    assert not stack.running
    assert stack._tmpdir is None


def test_stack_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the process that started the stack takes the broker and Redis with it."""
    script = (
        "import sys, time\nfrom streams.stack import EmbeddedStack\nstack = EmbeddedStack().start()\nprint(*stack.pids.values(), flush=True)\ntime.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        pids = [int(pid) for pid in _read_lines(parent, 1, timeout=30)[0].split()]
        assert len(pids) == 2 and not any(_gone(pid) for pid in pids)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_gone(pids), "PR_SET_PDEATHSIG did not stop the children"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()


# --- through the broker and Redis ----------------------------------------------------------


def test_keyed_message_round_trips_through_a_consumer_group(settings: Settings) -> None:
    """A keyed record produced with the service's options comes back to a group consumer."""
    topic = settings.topic("submissions")

    async def round_trip() -> None:
        options = kafka_client_options(settings)
        producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b'{"model":"m1"}', key=b"m1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            **options,
            group_id=f"{settings.app_id}-probe",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=30)
            assert (record.key, record.value) == (b"m1", b'{"model":"m1"}')
            assert (record.partition, record.offset) == (sent.partition, sent.offset)
            await consumer.commit()
            partition = TopicPartition(topic, record.partition)
            assert await consumer.committed(partition) == record.offset + 1
        finally:
            await consumer.stop()

    asyncio.run(round_trip())


def test_redis_ping_set_get(redis: redis_sync.Redis) -> None:
    """The session's Redis answers PING and keeps what it is given."""
    assert redis.ping()
    redis.set("mmc:test:key", b"value")
    assert redis.get("mmc:test:key") == b"value"


def test_redis_client_talks_to_the_configured_redis(settings: Settings) -> None:
    """``redis_client`` builds an asyncio client for ``settings.redis_url``."""

    async def ping() -> bool:
        client = redis_client(settings, decode_responses=True)
        try:
            await client.set("mmc:test:async", "v")
            return bool(await client.ping()) and await client.get("mmc:test:async") == "v"
        finally:
            await client.delete("mmc:test:async")
            await client.aclose()

    assert asyncio.run(ping())


# --- topics ----------------------------------------------------------------------------------


def test_create_topics_partitions_and_compaction(
    make_settings: Callable[..., Settings],
) -> None:
    """Every topic gets the configured partitions (rounds and targets one); only the leaderboard is compacted.

    Tansu implements DescribeConfigs, so the compaction is read back from the broker.
    """
    settings = make_settings(partitions=3, create=False)
    outcome = asyncio.run(create_topics(settings))
    assert outcome == {name: "created" for name in topic_names(settings)}
    assert len(outcome) == len(INPUT_TOPICS) + len(OUTPUT_TOPICS) == 9

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


# --- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_mmc_stack_prints_exports_and_stops_clean(sig: signal.Signals, tmp_path: Path) -> None:
    """``mmc stack`` prints exactly two export lines, serves, and exits 0 leaving nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    prefix = f"cli{uuid.uuid4().hex[:6]}."
    env.update(TMPDIR=str(tmp_path), MMC_TOPIC_PREFIX=prefix)
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "stack"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _read_lines(process, 2, timeout=30)
        assert lines[0].startswith("export MMC_KAFKA_BOOTSTRAP=127.0.0.1:")
        assert lines[1].startswith("export MMC_REDIS_URL=redis://127.0.0.1:")
        exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        children = psutil.Process(process.pid).children(recursive=True)
        names = sorted(child.name() for child in children)
        assert len(children) == 2 and any("tansu" in n for n in names), names
        assert any("redis-server" in n for n in names), names
        assert redis_sync.Redis.from_url(exported["MMC_REDIS_URL"]).ping()
        check = Settings(
            kafka_bootstrap=exported["MMC_KAFKA_BOOTSTRAP"],
            topic_prefix=prefix,
            kafka_security_protocol="PLAINTEXT",
        )
        assert set(asyncio.run(create_topics(check)).values()) == {"exists"}

        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout == "", "only the two export lines belong on stdout"
    assert "stopped" in stderr
    assert _wait_gone([child.pid for child in children])
    assert not list(tmp_path.glob("mmc-stack-*"))


def test_mmc_stack_env_file_serves_a_background_stack(tmp_path: Path) -> None:
    """``mmc stack --env-file F &`` then ``. F``: another shell reaches the stack through F.

    The file replaces whatever was there (a stale file from an earlier stack), holds the same
    two lines as stdout, is there once the stack is up, and goes when the stack stops.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    prefix = f"cli{uuid.uuid4().hex[:6]}."
    env.update(TMPDIR=str(tmp_path), MMC_TOPIC_PREFIX=prefix, MMC_PARTITIONS="3")
    env_file = tmp_path / ".mmc.env"
    env_file.write_text("export MMC_KAFKA_BOOTSTRAP=127.0.0.1:1\n")  # left by an earlier stack
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "stack", "--env-file", str(env_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _read_lines(process, 2, timeout=30)  # the file is written before stdout
        assert env_file.read_text() == "".join(f"{line}\n" for line in lines)
        assert not list(tmp_path.glob(".mmc.env.*")), "the temporary file is left over"
        # What a newcomer's next shell does: source the file, run a command that needs it.
        shell = subprocess.run(
            ["bash", "-c", '. "$1" && exec "$2" -m streams topics', "bash", str(env_file), sys.executable],
            cwd=REPO,
            env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shell.returncode == 0, shell.stdout + shell.stderr
        exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert f"topics on {exported['MMC_KAFKA_BOOTSTRAP']}" in shell.stdout
        rows = dict((m.group(1), (int(m.group(2)), m.group(3))) for m in re.finditer(rf"{re.escape(prefix)}(\w+)\W+(\d+)\W+(\w+)", shell.stdout))
        assert rows == {  # each topic's true partition count (rounds and targets have one)
            name: (1 if name in ("rounds", "targets") else 3, "exists") for name in (*INPUT_TOPICS, *OUTPUT_TOPICS)
        }, shell.stdout

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert "SIGTERM: stopping" in stderr and stderr.rstrip().endswith("stopped"), stderr
    assert f"wrote {env_file}" in stderr
    assert (
        f"topics: 9 with prefix '{prefix}'; rounds, targets: 1 partition each; "
        "submissions, stakes, scores, leaderboard, crowding, alerts, deadletter: 3 partitions each"
    ) in stderr, stderr
    assert not env_file.exists(), "the env file outlived its stack"


def test_mmc_worker_without_the_app_says_so() -> None:
    """``mmc worker`` explains a missing ``streams.app`` instead of a traceback."""
    try:
        import streams.app  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("streams.app exists; this test covers its absence")
    result = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "streams.app" in result.stderr and "Traceback" not in result.stderr


# --- client options ----------------------------------------------------------------------------


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


def test_redis_client_applies_password_and_refuses_ca_without_tls() -> None:
    """The Redis password comes from its secret; a CA file needs a rediss:// URL."""
    settings = Settings(redis_url="redis://127.0.0.1:6390/0", redis_password=SECRET)  # type: ignore[arg-type]
    client = redis_client(settings)
    assert client.connection_pool.connection_kwargs["password"] == SECRET
    assert SECRET not in repr(client)
    tls = Settings(redis_url="rediss://cache:6380/0", redis_ssl_ca_certs="/ca.pem")
    assert redis_client(tls).connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    with pytest.raises(ConfigurationError, match="rediss://"):
        redis_client(Settings(redis_url="redis://cache:6379/0", redis_ssl_ca_certs="/ca.pem"))
