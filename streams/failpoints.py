"""Failpoints: named places where a fault-injection run kills the worker with SIGKILL.

The reliability suite (``tests/e2e/test_faults.py``) kills real worker processes at random
moments from outside, and — because the interesting windows between two writes last
microseconds — also at exact places from inside: ``MMC_FAILPOINTS="name:n,other:m"`` makes
the worker send itself SIGKILL the n-th time it passes ``name``. Nothing is cleaned up, no
``finally`` runs, no buffer is flushed: the same as ``kill -9`` at that instruction.

Without the variable (production) :func:`reached` is a dictionary lookup on an empty dict.

The places (each between two effects that a crash must not separate wrongly):

======================================  ==========================================================
``submissions.stored``                  a batch of submissions is in Redis, its offsets not yet marked
``submissions.marked``                  a batch's offsets are marked (by an agent or a catch-up), not yet committed
``stakes.stored``                       a stake update is in Redis, its offset not yet marked
``targets.history_written``             an update's history and leaderboard are written, nothing sent
``targets.scores_sent``                 the outputs are sent, the round's scores not yet stored
``targets.alerts_sent``                 the round's alerts are sent, not yet marked as alerted
======================================  ==========================================================
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

NAMES = (
    "submissions.stored",
    "submissions.marked",
    "stakes.stored",
    "targets.history_written",
    "targets.scores_sent",
    "targets.alerts_sent",
)


def parse(spec: str) -> dict[str, int]:
    """``"name:n,other:m"`` → ``{name: n, other: m}``; unknown names or counts < 1 are errors."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        if name not in NAMES:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(NAMES)}")
        n = int(count or "1")
        if n < 1:
            raise ValueError(f"failpoint {name!r}: the count must be ≥ 1, got {n}")
        out[name] = n
    return out


_armed: dict[str, int] = parse(os.environ.get("MMC_FAILPOINTS", ""))
_passed: dict[str, int] = {}


def reached(name: str) -> None:
    """Count a pass through ``name``; SIGKILL this process on the armed pass."""
    if name not in _armed:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == _armed[name]:
        log.warning("failpoint %s reached (pass %d): SIGKILL", name, _passed[name])
        os.kill(os.getpid(), signal.SIGKILL)
