"""A Redis Cluster of three primaries on loopback, from the embedded stack's ``redis-server``:
slots assigned in three ranges, nodes met, ``cluster_state:ok`` awaited on every node."""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.errors import StackError
from streams.tools.stack.processes import Child, free_port, popen_child, redis_server_binary, terminate_child

#: Redis Cluster's hash slots, and the offset of a node's cluster bus port from its client port
#: (fixed before Redis 7, whose ``cluster-port`` the embedded Redis 6.2 lacks).
_CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000


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
        self._nodes: list[Child] = []
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
                node = Child(f"redis-cluster-{i}", argv, port, self._tmpdir / f"redis-{port}.log", lambda: False)
                popen_child(node, self._tmpdir)
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
            terminate_child(node, self.stop_grace)
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

    def _until(self, deadline: float, node: Child, ready: Callable[[], bool], what: str) -> None:
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
