"""The embedded stack (Tansu and redis-server) and ``mmc stack``, through the real broker and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis as redis_sync
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.errors import StackError
from streams.kafka.clients import kafka_client_options
from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS, create_topics
from streams.settings import Settings
from streams.tools.stack import EmbeddedStack

REPO = Path(__file__).resolve().parents[3]


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
        "import sys, time\nfrom streams.tools.stack import EmbeddedStack\n"
        "stack = EmbeddedStack().start()\nprint(*stack.pids.values(), flush=True)\ntime.sleep(60)\n"
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


# --- the CLI -----------------------------------------------------------------------------------


def _start_mmc_stack(tmp_path: Path, *args: str, **extra_env: str) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """``mmc stack ARGS`` as a user starts it (no MMC_* variables but a fresh topic prefix and
    ``extra_env``), its temporary files under ``tmp_path``; returns the process, the prefix and
    its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    prefix = f"cli{uuid.uuid4().hex[:6]}."
    env.update(TMPDIR=str(tmp_path), MMC_TOPIC_PREFIX=prefix, **extra_env)
    process = subprocess.Popen([sys.executable, "-m", "streams", "stack", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, prefix, env


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_mmc_stack_prints_exports_and_stops_clean(sig: signal.Signals, tmp_path: Path) -> None:
    """``mmc stack`` prints exactly two export lines, serves, and exits 0 leaving nothing."""
    process, prefix, _ = _start_mmc_stack(tmp_path)
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
    env_file = tmp_path / ".mmc.env"
    env_file.write_text("export MMC_KAFKA_BOOTSTRAP=127.0.0.1:1\n")  # left by an earlier stack
    process, prefix, env = _start_mmc_stack(tmp_path, "--env-file", str(env_file), MMC_PARTITIONS="3")
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
        f"topics: 10 with prefix '{prefix}'; rounds, targets: 1 partition each; "
        "submissions, stakes, scores, leaderboard, crowding, alerts, neighbours, deadletter: 3 partitions each"
    ) in stderr, stderr
    assert not env_file.exists(), "the env file outlived its stack"
