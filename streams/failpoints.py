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
``close.alerts_sent``                   a round's close-stage alerts are sent, not yet marked as raised
``agent.marked``                        an agent's batch is applied and marked (outside every handler)
======================================  ==========================================================

``name:n:raise`` raises :class:`FailpointError` there instead: a bug where no handler catches
it, to show that a worker whose agent stops goes down (and is restarted) rather than run on.
"""

from __future__ import annotations

import logging
import os
import signal

from streams.errors import FailpointError

log = logging.getLogger(__name__)

NAMES = (
    "submissions.stored",
    "submissions.marked",
    "stakes.stored",
    "targets.history_written",
    "targets.scores_sent",
    "targets.alerts_sent",
    "close.alerts_sent",
    "agent.marked",
)


def parse(spec: str) -> dict[str, int]:
    """``"name:n,other:m"`` → ``{name: n, other: m}``; unknown names or counts < 1 are errors."""
    return {name: n for name, (n, _) in parse_actions(spec).items()}


def parse_actions(spec: str) -> dict[str, tuple[int, str]]:
    """``"name:n[:raise],…"`` → ``{name: (n, "kill" | "raise")}``."""
    out: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rest = part.partition(":")
        count, _, action = rest.partition(":")
        if name not in NAMES:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(NAMES)}")
        n = int(count or "1")
        if n < 1:
            raise ValueError(f"failpoint {name!r}: the count must be ≥ 1, got {n}")
        if action not in ("", "kill", "raise"):
            raise ValueError(f"failpoint {name!r}: the action is kill or raise, got {action!r}")
        out[name] = (n, action or "kill")
    return out


_armed: dict[str, tuple[int, str]] = parse_actions(os.environ.get("MMC_FAILPOINTS", ""))
_passed: dict[str, int] = {}


def reached(name: str) -> None:
    """Count a pass through ``name``; SIGKILL this process (or raise) on the armed pass."""
    if name not in _armed:
        return
    _passed[name] = _passed.get(name, 0) + 1
    n, action = _armed[name]
    if _passed[name] == n:
        log.warning("failpoint %s reached (pass %d): %s", name, n, action)
        if action == "raise":
            raise FailpointError(f"failpoint {name} (pass {n})")
        os.kill(os.getpid(), signal.SIGKILL)
