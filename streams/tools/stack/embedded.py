"""The embedded stack: the Tansu broker and Redis (one server or a loopback cluster) started,
checked and stopped together (:mod:`streams.tools.stack`)."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.errors import StackError
from streams.tools.stack.cluster import LoopbackRedisCluster
from streams.tools.stack.processes import START_ATTEMPTS, Child, free_port, popen_child, redis_server_binary, tansu_binary, terminate_child


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
        self._children: dict[str, Child] = {}
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
            for attempt in range(START_ATTEMPTS):
                pending = [name for name in names if self._needs_start(name)]
                if not pending:
                    break
                for name in pending:
                    self._spawn(self._make_child(name, kafka_bin, redis_bin))
                self._wait_ready(
                    [self._children[name] for name in pending],
                    last_attempt=attempt == START_ATTEMPTS - 1,
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
                self.terminate_child(child)
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

    def _child(self, name: str) -> Child:
        child = self._children.get(name)
        if child is None:
            raise StackError(f"the embedded stack is not running (no {name} server)")
        return child

    def _needs_start(self, name: str) -> bool:
        child = self._children.get(name)
        return child is None or child.process is None or child.process.poll() is not None

    def _port(self, name: str) -> int:
        return self._requested_ports[name] or free_port(self.host)

    def _make_child(self, name: str, kafka_bin: str, redis_bin: str) -> Child:
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
            return Child(name, argv, port, log_path, lambda: _kafka_answers(bootstrap))
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
        return Child(name, argv, port, log_path, lambda: _redis_answers(self.host, port))

    def _spawn(self, child: Child) -> None:
        old = self._children.pop(child.name, None)
        if old is not None:
            self.terminate_child(old)
        if self._tmpdir is None:
            raise StackError("the embedded stack was not started")
        popen_child(child, self._tmpdir)
        self._children[child.name] = child

    def _wait_ready(self, children: list[Child], *, last_attempt: bool) -> None:
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

    def terminate_child(self, child: Child) -> None:
        terminate_child(child, self.stop_grace)


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
