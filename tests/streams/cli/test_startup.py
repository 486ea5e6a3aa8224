"""Start-up against a Kafka or Redis that is down, late or misconfigured, and the dependency lock.

``mmc worker``, ``topics``, ``rebuild`` and ``web`` wait for the services they use, one line per
attempt, and give up after ``MMC_STARTUP_TIMEOUT_SECONDS`` with exit status 3 and one ``error:``
line (service, address, cause; no traceback, no password). The command-line tests run the real
``python -m streams`` against a closed loopback port, and against a broker or a ``redis-server``
started while the command already waits.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redis_sync
from aiokafka.admin import AIOKafkaAdminClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streams.cli.startup import EXIT_UNAVAILABLE, redis_address, wait_for_dependencies, wait_for_kafka, wait_for_redis
from streams.errors import ConfigurationError, DependencyUnavailable
from streams.kafka.topics import topic_names
from streams.settings import Settings
from streams.tools.stack import EmbeddedStack, free_port, redis_server_binary
from streams.transient import RETRY_JITTER_SECONDS
from tests.conftest import run_sync

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "requirements.lock"
SECRET = "s3cr3t-Pa55word-never-printed"
OTHER_SECRET = "an0ther-Pa55word-never-printed"
#: Start-up timeout of the give-up tests: long enough for three attempts (0, 0.5, 1.5 s).
SHORT_TIMEOUT = 2.0
#: What a command may take beyond its start-up timeout to exit: the interpreter and the command
#: line's imports (2-3 s on an idle 2-CPU machine, up to 5.5 s under load), with room to spare;
#: still far below the 60 s default, so a command that ignored the setting fails.
EXIT_SLACK = 12.0
WAITING = re.compile(r"waiting for (Kafka|Redis) at (\S+): (.+) \(retrying in (\d+\.\d) s\)$")


# --- helpers -------------------------------------------------------------------------------------


def mmc_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an ``mmc`` child: this process's, without its MMC_*, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MMC_")}
    env.update(settings.to_env())
    env.update({"MMC_WEB_PORT": "0", "NO_COLOR": "1", "COLUMNS": "400"})
    env.update(extra)
    return env


def run_mmc(command: list[str], env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m streams COMMAND`` to its end; the result and its wall-clock seconds."""
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "streams", *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - began


def closed_port() -> int:
    """A loopback port nothing listens on (the OS just handed it out and took it back)."""
    return free_port()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def waiting_lines(text: str, service: str) -> list[re.Match[str]]:
    return [m for line in text.splitlines() if (m := WAITING.search(line)) and m.group(1) == service]


def start_mmc(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m streams COMMAND`` in the background, stdout and stderr to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "streams", *command], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_text(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until ``pattern`` appears in ``log``; fail if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text):
            return
        assert proc.poll() is None, f"exited with {proc.returncode} before {pattern!r}:\n{text[-3000:]}"
        time.sleep(0.05)
    pytest.fail(f"no {pattern!r} within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def redis_server(port: int, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``redis-server`` on ``127.0.0.1:port`` (no persistence), answering PING when entered."""
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            client = redis_sync.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
            try:
                client.ping()
                break
            except redis_sync.AuthenticationError:
                break  # it answers; the caller's password is another matter
            except redis_sync.RedisError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
            finally:
                client.close()
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- giving up: one line, the right status, in time ------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "topics", "rebuild", "web"])
def test_unreachable_kafka_exits_3_with_one_line(command: str, make_settings: Callable[..., Settings]) -> None:
    """Kafka at a closed port: a line per attempt, then status 3 and one error line, no traceback.

    Redis is up, so only Kafka is waited for and named.
    """
    port = closed_port()
    settings = make_settings(create=False, kafka_bootstrap=f"127.0.0.1:{port}", startup_timeout_seconds=SHORT_TIMEOUT)
    result, seconds = run_mmc([command], mmc_env(settings), timeout=60)
    output = result.stdout + result.stderr
    print(f"mmc {command}: exit {result.returncode} after {seconds:.2f} s (timeout {SHORT_TIMEOUT} s)")
    assert result.returncode == EXIT_UNAVAILABLE, output
    assert "Traceback" not in output
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert f"Kafka at 127.0.0.1:{port} did not answer within" in errors[0]
    assert "connection refused" in errors[0] and "MMC_KAFKA_BOOTSTRAP" in errors[0]
    attempts = waiting_lines(result.stderr, "Kafka")
    assert len(attempts) >= 2, result.stderr
    assert all(m.group(2) == f"127.0.0.1:{port}" and m.group(3) == "connection refused" for m in attempts)
    assert waiting_lines(result.stderr, "Redis") == []
    assert len(result.stderr.splitlines()) == len(attempts) + 1, result.stderr  # nothing else: aiokafka's errors held back
    assert SHORT_TIMEOUT <= seconds <= SHORT_TIMEOUT + EXIT_SLACK


@pytest.mark.parametrize("command", ["worker", "rebuild", "web"])
def test_unreachable_redis_exits_3_with_one_line_and_no_password(command: str, make_settings: Callable[..., Settings]) -> None:
    """Redis at a closed port, with passwords in the URL and MMC_REDIS_PASSWORD: the address is
    named without them, Kafka (up) is not waited for."""
    port = closed_port()
    settings = make_settings(
        create=False,
        redis_url=f"redis://uzer-not-shown:{SECRET}@127.0.0.1:{port}/0",
        redis_password=OTHER_SECRET,
        startup_timeout_seconds=SHORT_TIMEOUT,
    )
    result, seconds = run_mmc([command], mmc_env(settings), timeout=60)
    output = result.stdout + result.stderr
    print(f"mmc {command}: exit {result.returncode} after {seconds:.2f} s (timeout {SHORT_TIMEOUT} s)")
    assert result.returncode == EXIT_UNAVAILABLE, output
    assert "Traceback" not in output
    assert SECRET not in output and OTHER_SECRET not in output and "uzer-not-shown" not in output
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert f"Redis at 127.0.0.1:{port} did not answer within" in errors[0]
    assert "connection refused" in errors[0] and "MMC_REDIS_URL" in errors[0]
    attempts = waiting_lines(result.stderr, "Redis")
    assert len(attempts) >= 2 and all(m.group(2) == f"127.0.0.1:{port}" for m in attempts), result.stderr
    assert waiting_lines(result.stderr, "Kafka") == []
    assert SHORT_TIMEOUT <= seconds <= SHORT_TIMEOUT + EXIT_SLACK


def test_topics_does_not_wait_for_redis(make_settings: Callable[..., Settings]) -> None:
    """``mmc topics`` uses only Kafka: an unreachable Redis neither delays nor fails it."""
    settings = make_settings(create=False, redis_url=f"redis://127.0.0.1:{closed_port()}/0", startup_timeout_seconds=30)
    result, seconds = run_mmc(["topics"], mmc_env(settings), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Redis" not in result.stderr
    assert seconds < 15


# --- a dependency that comes up late is waited for, then used ---------------------------------------


def test_topics_waits_for_a_broker_that_starts_late(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """``mmc topics`` against a port with no broker yet; the broker starts there while it waits;
    the command then creates every topic on it and exits 0."""
    port = free_port()
    settings = make_settings(create=False, kafka_bootstrap=f"127.0.0.1:{port}", startup_timeout_seconds=60)
    log = tmp_path / "topics.log"
    proc = start_mmc(["topics"], mmc_env(settings), log)
    try:
        wait_for_text(log, rf"waiting for Kafka at 127\.0\.0\.1:{port}: connection refused \(retrying in", proc, timeout=30)
        with EmbeddedStack(kafka_port=port) as stack:
            started = time.monotonic()
            assert proc.wait(timeout=40) == 0, log.read_text()
            print(f"mmc topics finished {time.monotonic() - started:.2f} s after the broker started")
            text = log.read_text()
            assert re.search(rf"Kafka at 127\.0\.0\.1:{port} answered after \d+\.\d s \(\d+ attempts\)", text), text
            assert "Traceback" not in text and "error:" not in text

            async def listed() -> set[str]:
                admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
                await admin.start()
                try:
                    return set(await admin.list_topics())
                finally:
                    await admin.close()

            assert set(topic_names(settings)) <= run_sync(listed())
    finally:
        stop(proc)


def test_rebuild_waits_for_a_redis_that_starts_late(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """``mmc rebuild`` against a Redis port with no server yet: it waits, then rebuilds into the
    Redis that came up (its progress keys are there afterwards)."""
    port = free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", startup_timeout_seconds=60)
    log = tmp_path / "rebuild.log"
    proc = start_mmc(["rebuild", "--publish", "none"], mmc_env(settings), log)
    try:
        wait_for_text(log, rf"waiting for Redis at 127\.0\.0\.1:{port}: connection refused \(retrying in", proc, timeout=30)
        with redis_server(port):
            assert proc.wait(timeout=60) == 0, log.read_text()
            text = log.read_text()
            assert re.search(rf"Redis at 127\.0\.0\.1:{port} answered after", text), text
            assert f"rebuilt namespace {settings.state_namespace!r}" in text, text
            assert "Traceback" not in text
            client = redis_sync.Redis(host="127.0.0.1", port=port)
            try:
                assert client.keys(f"{settings.state_namespace}*"), "the rebuild wrote nothing to the late Redis"
            finally:
                client.close()
    finally:
        stop(proc)


def test_worker_waits_for_a_redis_that_starts_late_then_serves(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A worker started before its Redis waits for it, then joins and answers on its web port."""
    redis_port, web_port = free_port(), free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{redis_port}/0", startup_timeout_seconds=60, startup_retry_max_seconds=2)
    log = tmp_path / "worker.log"
    proc = start_mmc(["worker"], mmc_env(settings, MMC_WEB_ENABLED="true", MMC_WORKER_WEB_PORT=str(web_port)), log)
    try:
        wait_for_text(log, rf"waiting for Redis at 127\.0\.0\.1:{redis_port}: connection refused", proc, timeout=30)
        time.sleep(1.0)  # a second round of waiting
        assert proc.poll() is None
        with redis_server(redis_port):
            deadline = time.monotonic() + 90
            status = None
            while status is None and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=2) as response:
                        status = response.status
                except (urllib.error.URLError, OSError):
                    time.sleep(0.2)
            assert status == 200, log.read_text(errors="replace")[-3000:]
            assert "Traceback" not in log.read_text(errors="replace")
    finally:
        stop(proc)


# --- the wait itself ----------------------------------------------------------------------------------


def test_wait_returns_at_once_when_both_answer(make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    """With the broker and Redis up, the wait is one quick attempt each and logs nothing."""
    settings = make_settings(create=False)
    caplog.set_level(logging.INFO, logger="streams.cli.startup")
    began = time.monotonic()
    run_sync(wait_for_dependencies(settings))
    assert time.monotonic() - began < 3
    assert caplog.records == []


def test_backoff_doubles_up_to_the_cap_with_jitter(caplog: pytest.LogCaptureFixture) -> None:
    """Pauses 0.5, 1, 2 … s (each plus up to RETRY_JITTER_SECONDS of jitter), never above
    ``MMC_STARTUP_RETRY_MAX_SECONDS`` nor past the deadline: the last pause ends there."""
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{closed_port()}", startup_timeout_seconds=4.5, startup_retry_max_seconds=2.0)
    caplog.set_level(logging.INFO, logger="streams.cli.startup")
    began = time.monotonic()
    with pytest.raises(DependencyUnavailable) as raised:
        asyncio.run(wait_for_kafka(settings))
    seconds = time.monotonic() - began
    pauses = [float(m.group(4)) for record in caplog.records if (m := WAITING.search(record.getMessage()))]
    bounds = [(full - 0.05, min(full + RETRY_JITTER_SECONDS, 2.0) + 0.05) for full in (0.5, 1.0, 2.0)]
    assert all(low <= pause <= high for pause, (low, high) in zip(pauses[:3], bounds, strict=True)), pauses
    assert all(pause <= 2.0 for pause in pauses)
    assert sum(pauses) == pytest.approx(4.5, abs=0.2)  # the last pause ends at the deadline
    assert raised.value.service == "Kafka" and raised.value.cause == "connection refused"
    assert raised.value.attempts == len(pauses) + 1
    assert 4.5 <= seconds < 6


def test_only_a_missing_answer_is_retried() -> None:
    """The retry predicate retries "no answer" alone: anything else an attempt raises (here a
    configuration error found while probing) is raised at the first attempt, without a pause."""
    from streams.cli.startup import _wait_until_answers

    calls = [0]

    async def cause_of(timeout: float) -> str | None:
        calls[0] += 1
        raise ConfigurationError("MMC_REDIS_URL has an invalid port")

    began = time.monotonic()
    with pytest.raises(ConfigurationError):
        asyncio.run(_wait_until_answers(Settings(startup_timeout_seconds=30), "Redis", "here", "MMC_REDIS_URL", cause_of))
    assert calls == [1] and time.monotonic() - began < 1


def test_zero_timeout_tries_once() -> None:
    """``MMC_STARTUP_TIMEOUT_SECONDS=0``: one attempt, no pause."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0", startup_timeout_seconds=0)
    began = time.monotonic()
    with pytest.raises(DependencyUnavailable) as raised:
        asyncio.run(wait_for_redis(settings))
    assert raised.value.attempts == 1 and time.monotonic() - began < 1.5
    assert "1 attempt)" in str(raised.value)


def test_unknown_host_is_named_as_such() -> None:
    """A bootstrap name that does not resolve says so, not 'connection refused'."""
    settings = Settings(kafka_bootstrap="no-such-broker.invalid:9092", startup_timeout_seconds=0)
    with pytest.raises(DependencyUnavailable) as raised:
        asyncio.run(wait_for_kafka(settings))
    assert raised.value.cause.startswith("cannot resolve the host name"), raised.value.cause
    assert raised.value.address == "no-such-broker.invalid:9092"


def test_a_listener_that_is_not_redis_is_not_taken_for_one() -> None:
    """A TCP port that accepts but does not speak Redis fails the PING, with its own cause."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", startup_timeout_seconds=0)
        with pytest.raises(DependencyUnavailable) as raised:
            asyncio.run(wait_for_redis(settings))
    assert raised.value.cause != "connection refused"
    assert "no answer to PING" in raised.value.cause or "Timeout" in raised.value.cause, raised.value.cause


def test_wrong_redis_password_is_named_not_printed() -> None:
    """A Redis that refuses the password: the cause says authentication, the password is not in it."""
    port = free_port()
    with redis_server(port, "--requirepass", "the-right-one"):
        settings = Settings(redis_url=f"redis://:{SECRET}@127.0.0.1:{port}/0", startup_timeout_seconds=0)
        with pytest.raises(DependencyUnavailable) as raised:
            asyncio.run(wait_for_redis(settings))
        assert "auth" in raised.value.cause.lower() or "password" in raised.value.cause.lower(), raised.value.cause
        assert SECRET not in str(raised.value)
        right = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_password="the-right-one", startup_timeout_seconds=0)
        asyncio.run(wait_for_redis(right))


def test_inconsistent_settings_fail_at_once_without_waiting() -> None:
    """A configuration error is not waited out: it is raised on the first attempt."""
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username=None, startup_timeout_seconds=30)
    began = time.monotonic()
    with pytest.raises(ConfigurationError):
        asyncio.run(wait_for_dependencies(settings))
    with pytest.raises(ConfigurationError):
        asyncio.run(wait_for_kafka(Settings(kafka_bootstrap="broker:not-a-port", startup_timeout_seconds=30)))
    assert time.monotonic() - began < 2


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379"),
        (f"redis://scorer:{SECRET}@redis.internal:6380/2", "redis.internal:6380"),
        (f"rediss://:{SECRET}@[::1]/0", "[::1]:6379"),
        (f"unix://:{SECRET}@/run/redis/redis.sock?db=1", "/run/redis/redis.sock"),
    ],
)
def test_redis_address_never_shows_credentials(url: str, shown: str) -> None:
    assert redis_address(Settings(redis_url=url)) == shown


# --- the dependency lock ----------------------------------------------------------------------------


def locked_versions() -> dict[str, tuple[str, str]]:
    """``requirements.lock``: canonical name → (version, environment marker or "")."""
    pins: dict[str, tuple[str, str]] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        requirement, _, marker = line.partition(";")
        name, sep, version = requirement.strip().partition("==")
        assert sep, f"not pinned: {line!r}"
        pins[canonicalize_name(name)] = (version.strip(), marker.strip())
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_lock_pins_every_declared_dependency_within_its_range() -> None:
    """Each dependency of pyproject.toml (with the test extra) is pinned, to a version its range allows."""
    pins = locked_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), f"{LOCK.name} pins {name}=={pins[name][0]} outside {requirement}"


def test_every_dependency_has_a_major_version_bound() -> None:
    """Upper bounds keep a fresh resolution (`make lock-upgrade`) off the next major release."""
    unbounded = [str(r) for r in declared_requirements() if not any(spec.operator in ("<", "<=", "==", "~=") for spec in r.specifier)]
    assert unbounded == []


def test_installed_versions_are_the_locked_ones() -> None:
    """The environment the tests run in is the locked one (`make venv` installs with the lock)."""
    from packaging.markers import Marker

    different = {}
    for name, (version, marker) in locked_versions().items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            different[name] = (version, installed)
    assert different == {}, f"locked vs installed: {different}; run `make venv`"
