"""Worker failover: two workers share the partitions; the one scoring the targets is SIGKILLed
mid-season. The survivor takes its partitions (the Faust group and the submissions consumer
group rebalance), and the season's outputs are exactly those of one undisturbed worker.

The time from the kill to the first score published after it is printed (``-s`` shows it):
it is bounded by the consumer groups' session timeout (``MMC_BROKER_SESSION_TIMEOUT``, 10 s by
default), after which the broker hands the dead member's partitions to the survivor.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.settings import Settings
from tests.conftest import run_sync
from tests.e2e.harness import Event, collect, end_offsets, produce, workers
from tests.e2e.test_tournament import _comparable
from tests.e2e.tournament import OUTPUTS, build, complete, run_tournament, tournament_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _scoring_worker(logs: list[Path]) -> int:
    """Index of the worker whose log shows scored targets updates (the one holding ``targets``)."""
    counts = [log.read_text(errors="replace").count(" models scored (") for log in logs]
    return max(range(len(logs)), key=lambda i: counts[i])


def _update(value: dict[str, Any]) -> tuple[int, int]:
    return int(value["round"]), int(value["day"])


def _targets_updates(events: list[Event]) -> set[tuple[int, int]]:
    """(round, day) of the valid targets updates among ``events``."""
    found = set()
    for e in events:
        if e.topic == "targets" and e.value:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                found.add(_update(orjson.loads(e.value)))
    return found


def test_a_killed_worker_s_partitions_move_to_the_survivor_and_nothing_changes(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = build(n_models=40, n_ids=400, n_rounds=6, days=3, seed=4)
    events = sorted(t.events, key=lambda e: e.timestamp_ms)
    half = len(events) // 2

    reference_settings = tournament_settings(make_settings)
    (tmp_path / "one").mkdir()
    reference = run_tournament(reference_settings, t, 1, tmp_path / "one")

    settings = tournament_settings(make_settings)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    run_sync(produce(settings, events[:half]))
    with workers(settings, 2, log_dir=tmp_path) as procs:
        first = run_sync(collect(settings, ["scores"], lambda got: len(got) > 0, timeout=180))
        assert first, "no score before the kill: the first half of the season holds no targets update"
        victim = _scoring_worker(logs)
        marks = run_sync(end_offsets(settings, ["scores"]))
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        killed_at = time.monotonic()
        run_sync(produce(settings, events[half:]))
        late = _targets_updates(events[half:])
        after = run_sync(collect(settings, ["scores"], lambda got: any(_update(m.json()) in late for m in got), timeout=180, start=marks))
        first_score_after = time.monotonic() - killed_at
        assert after, "no score of a later targets update: the survivor never took the partitions"
        received = run_sync(collect(settings, OUTPUTS, complete(t), timeout=240))
        survivor = procs[1 - victim]
        assert survivor.poll() is None, logs[1 - victim].read_text(errors="replace")[-3000:]
    assert complete(t)(received)
    assert _comparable(received, settings.topic_prefix) == _comparable(reference, reference_settings.topic_prefix)
    assert " models scored (" in logs[1 - victim].read_text(errors="replace"), "the survivor never scored: it did not take the targets partition"
    with capsys.disabled():
        print(
            f"\nfailover: worker {victim} (scoring the targets) SIGKILLed; first score of a targets update sent after the kill in {first_score_after:.1f} s "
            f"(session timeout {settings.broker_session_timeout:.0f} s)"
        )
