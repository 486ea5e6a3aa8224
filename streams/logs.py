"""Logging shared by every long-running command (worker, web): the client libraries' chatter off."""

from __future__ import annotations

import logging

#: Client libraries whose INFO lines are start-up and consumer-group chatter, several of them
#: multi-line tables (Faust formats aiokafka's subscriptions and assignments as tables, on every
#: rebalance and whenever a paused topic resumes). Below DEBUG the worker's log keeps only their
#: warnings and errors, so that at INFO it reads one line per scored update.
CHATTY_LIBRARIES = ("aiokafka", "faust", "mode")


def quiet_libraries(loglevel: str | int) -> None:
    """Below DEBUG, show only warnings and errors of :data:`CHATTY_LIBRARIES` (Faust's logging
    set-up keeps the levels of existing loggers)."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    if not isinstance(level, int) or level <= logging.DEBUG:
        return
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
