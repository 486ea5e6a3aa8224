"""The worker's health: ``/health`` answers for its components, and a worker whose agent stops
on a bug goes down (non-zero exit, one critical line) instead of running on with a topic unread."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.worker.runtime import EXIT_FAILED
from tests.conftest import run_sync
from tests.e2e.harness import Event, produce, start_worker, stop_workers
from tests.e2e.tournament import T0

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_health(port: int) -> tuple[int, dict[str, object]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


# The default suite checks the same answer on the worker that scores the newcomer's tournament
# (tests/streams/cli/test_newcomer_path.py::test_a_worker_and_mmc_web_run_side_by_side).
@pytest.mark.slow
def test_health_is_ok_while_every_component_runs(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A running worker answers 200 ``{"status": "ok", "problems": []}`` at /health."""
    settings = make_settings()
    port = free_port()
    proc = start_worker(settings, tmp_path / "worker.log", MMC_WEB_ENABLED="true", MMC_WORKER_WEB_PORT=str(port))
    try:
        deadline = time.monotonic() + 90
        answer = None
        while time.monotonic() < deadline and answer is None:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            answer = get_health(port)
            time.sleep(0.2)
        assert answer == (200, {"status": "ok", "problems": []})
    finally:
        stop_workers([proc])


def test_a_worker_whose_agent_stops_on_a_bug_exits_non_zero(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """An exception no handler catches (a failpoint armed to raise after the first rounds batch):
    the worker stops itself with exit status 70 and says why in one critical line, within its
    grace period (the record it failed on is never acknowledged, so the clean shutdown waits
    for it until then)."""
    settings = make_settings(fail_grace_seconds=3.0)
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log, MMC_FAILPOINTS="agent.marked:1:raise")
    try:
        run_sync(produce(settings, [Event("rounds", b"1", b'{"type":"open","round":1,"ids":["a","b","c"]}', T0)]))
        proc.wait(timeout=120)
    finally:
        stop_workers([proc])
    text = log.read_text(errors="replace")
    assert proc.returncode == EXIT_FAILED, text[-3000:]
    assert "the rounds agent stopped: FailpointError" in text
