"""A log filter that keeps a worker's log readable while Kafka or Redis is down.

The Kafka clients log every failed reconnect and metadata refresh — with the broker gone,
well over a hundred lines a second between them. :class:`Throttle` lets the first line of each
kind through (kind = logger name, level and message template, so lines that differ only in
their arguments count as one) and then at most one every ``interval`` seconds, each saying how
many like it were left out. The service's own lines (``streams.*``) are never held back: its
retries already back off and name what they wait for.
"""

from __future__ import annotations

import logging
import time

#: Seconds between two lines of the same kind from a client library.
INTERVAL_SECONDS = 30.0


class Throttle(logging.Filter):
    """Passes a client library's line of one kind at most once every ``interval`` seconds."""

    def __init__(self, interval: float = INTERVAL_SECONDS, clock: object = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind → (last passed, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "streams" or record.name.startswith("streams."):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()  # type: ignore[operator]
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.interval:
            self._kinds[kind] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.msg} ({last[1]} more like this in the last {now - last[0]:.0f} s)"
        self._kinds[kind] = (now, 0)
        if len(self._kinds) > 10_000:  # templates are few; this only bounds a pathological case
            self._kinds.clear()
        return True


def throttle_root_handlers(interval: float = INTERVAL_SECONDS) -> Throttle:
    """Attach one :class:`Throttle` to every handler of the root logger (where the worker's lines go)."""
    throttle = Throttle(interval)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, Throttle) for f in handler.filters):
            handler.addFilter(throttle)
    return throttle
