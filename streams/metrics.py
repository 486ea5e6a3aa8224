"""Prometheus metrics (prometheus-client) of the workers and of the ``mmc web`` server.

Every process builds its own :class:`~prometheus_client.CollectorRegistry` (no module-level
default registry: tests run several workers' worth of metrics in one process).

Worker — ``GET /metrics`` on the Faust web server (``MMC_WEB_ENABLED``, ``MMC_WORKER_WEB_PORT``):

- ``mmc_input_messages_total{topic, outcome}`` — input records handled; ``outcome`` is
  ``applied`` (changed the state), ``unchanged`` (a redelivery) or ``refused`` (dead letter);
- ``mmc_output_messages_total{topic}`` — records produced and acknowledged, per output topic;
- ``mmc_dead_letters_total{reason}`` — dead letters by ``mmc.error.reason``;
- ``mmc_resolution_latency_seconds`` — histogram: a targets record handed to the agent →
  every output of that update (scores, leaderboard, crowding, alerts) acknowledged.

``mmc web`` — ``GET /metrics`` on its own port (``MMC_WEB_PORT``):

- ``mmc_web_requests_total{route, method, status}``, ``mmc_web_request_duration_seconds{route}``;
- ``mmc_web_live_clients`` — open ``/api/stream`` connections;
- ``mmc_web_live_dropped_total{reason}`` — live clients dropped: ``buffer`` (too far behind),
  ``write_timeout`` (their socket stopped taking data); they reconnect;
- ``mmc_web_live_messages_total{topic}`` — output messages relayed to live clients.

Both — the state in Redis, read at scrape time (the same value from every process: aggregate
with ``max``; a worker reports them once it has handled its first record):

- ``mmc_rounds_known``, ``mmc_rounds_open`` (opened, not closed yet);
- ``mmc_redis_round_memory_bytes{round}`` — ``MEMORY USAGE`` summed over the round's keys
  (universe, submissions, live sums, basis, targets, scores, crowding), names from
  :class:`streams.state.Keys`; only for rounds whose rows retention keeps, so the series are
  bounded by ``MMC_RETENTION_ROUNDS`` plus the rounds not final (a pruned round's series goes);
- ``mmc_redis_used_memory_bytes``, ``mmc_redis_maxmemory_bytes`` — Redis ``INFO memory``
  (``used_memory``, ``maxmemory``; 0 = no limit): alert well before the first reaches the second,
  since Redis then refuses writes (``noeviction``) and the workers retry until memory is freed;
- ``mmc_state_scrape_errors_total`` — scrapes whose Redis read failed (the counters above are
  still served).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from streams.messages.outputs import Output
    from streams.state import RedisState

log = logging.getLogger(__name__)

#: The ``Content-Type`` of a scrape (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("applied", "unchanged")
# Resolution of a round takes from milliseconds (tests) to tens of seconds (5,000 models × 5,000 ids).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The state store's fields of a round's hash set when the round closes and when retention
# deletes its rows (see streams.state.keys).
_CLOSE_FIELD = "close_ts"
_ROWS_PRUNED_FIELD = "rows_pruned"


class StateGauges:
    """Gauges of the Redis state, refreshed from Redis at every scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds_known = Gauge("mmc_rounds_known", "Rounds ever opened.", registry=registry)
        self.rounds_open = Gauge("mmc_rounds_open", "Rounds opened and not closed yet.", registry=registry)
        self.round_memory = Gauge(
            "mmc_redis_round_memory_bytes",
            "Redis MEMORY USAGE summed over the round's keys.",
            ["round"],
            registry=registry,
        )
        self.scrape_errors = Counter(
            "mmc_state_scrape_errors",
            "Scrapes whose read of the Redis state failed.",
            registry=registry,
        )
        self.used_memory = Gauge("mmc_redis_used_memory_bytes", "Redis INFO memory used_memory.", registry=registry)
        self.maxmemory = Gauge(
            "mmc_redis_maxmemory_bytes",
            "Redis INFO memory maxmemory (0: no limit); writes are refused beyond it.",
            registry=registry,
        )

    async def refresh(self, state: RedisState, partitions: int) -> None:
        """Read the rounds and their memory from Redis (three pipelined round trips)."""
        try:
            rounds = await state.known_rounds()
            keys = state.keys
            pipe = state.r.pipeline(transaction=False)
            for r in rounds:
                pipe.hmget(keys.round(r), [_CLOSE_FIELD, _ROWS_PRUNED_FIELD])
            flags = await pipe.execute() if rounds else []
            # Memory series only for rounds whose rows are kept: bounded by retention.
            kept = [r for r, (_, pruned) in zip(rounds, flags, strict=True) if pruned is None]
            pipe = state.r.pipeline(transaction=False)
            per_round = []
            for r in kept:
                names = [
                    keys.round(r),
                    keys.ids(r),
                    keys.subs(r),
                    keys.basis(r),
                    keys.targets(r),
                    keys.scores(r),
                    keys.crowding(r),
                ]
                names += [keys.live(r, p) for p in range(partitions)]
                for name in names:
                    pipe.memory_usage(name)
                per_round.append(len(names))
            results = await pipe.execute() if kept else []
        except Exception as exc:  # a scrape never fails because Redis did: the counters still count
            log.warning("metrics: cannot read the state from Redis: %r", exc)
            self.scrape_errors.inc()
            return
        self.rounds_known.set(len(rounds))
        self.rounds_open.set(sum(1 for closed, _ in flags if closed is None))
        self.round_memory.clear()
        i = 0
        for r, n in zip(kept, per_round, strict=True):
            self.round_memory.labels(str(r)).set(sum(int(x) for x in results[i : i + n] if x is not None))
            i += n
        try:
            info = await state.r.info("memory")
        except Exception as exc:  # INFO may be refused (ACLs of a managed Redis): the rest still counts
            log.debug("metrics: no Redis INFO memory: %r", exc)
            return
        self.used_memory.set(float(info.get("used_memory", 0)))
        self.maxmemory.set(float(info.get("maxmemory", 0)))


class WorkerMetrics:
    """A worker's counters, and its state gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inputs = Counter(
            "mmc_input_messages",
            "Input records handled, by topic and outcome (applied, unchanged = redelivery, refused = dead letter).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.outputs = Counter(
            "mmc_output_messages",
            "Output records produced and acknowledged, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "mmc_dead_letters",
            "Dead letters by reason code (mmc.error.reason).",
            ["reason"],
            registry=self.registry,
        )
        self.resolution_latency = Histogram(
            "mmc_resolution_latency_seconds",
            "Targets record handed to the worker -> every output of the update acknowledged.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.state = StateGauges(self.registry)

    def input_handled(self, topic: str, outcome: str, received_at: float) -> None:
        """Count one handled record; ``outcome`` as :meth:`streams.worker.processor.Processor.handle` returns it.

        ``received_at`` is the ``time.monotonic()`` at which the agent received the record.
        """
        kind = outcome if outcome in OUTCOMES else "refused"
        self.inputs.labels(topic, kind).inc()
        if topic == "targets" and outcome == "applied":
            self.resolution_latency.observe(max(0.0, time.monotonic() - received_at))

    def outputs_sent(self, outputs: Iterable[Output]) -> None:
        """Count acknowledged outputs; dead letters also by their reason header."""
        for output in outputs:
            self.outputs.labels(output.topic).inc()
            if output.topic == "deadletter":
                reason = dict(output.headers).get("mmc.error.reason", b"unknown")
                self.dead_letters.labels(reason.decode("utf-8", "replace")).inc()

    async def render(self, state: RedisState | None, partitions: int) -> bytes:
        """The scrape body; state gauges are refreshed first when the worker has a state store."""
        if state is not None:
            await self.state.refresh(state, partitions)
        return generate_latest(self.registry)


class WebMetrics:
    """The ``mmc web`` server's counters, and the state gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mmc_web_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mmc_web_request_duration_seconds",
            "HTTP request duration by route (not /api/stream).",
            ["route"],
            registry=self.registry,
        )
        self.live_clients = Gauge("mmc_web_live_clients", "Open /api/stream connections.", registry=self.registry)
        self.live_dropped = Counter(
            "mmc_web_live_dropped",
            "Live clients dropped, by reason: buffer (too far behind), write_timeout (not reading).",
            ["reason"],
            registry=self.registry,
        )
        self.live_messages = Counter(
            "mmc_web_live_messages",
            "Output messages relayed to live clients, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.state = StateGauges(self.registry)

    async def render(self, state: RedisState | None, partitions: int) -> bytes:
        if state is not None:
            await self.state.refresh(state, partitions)
        return generate_latest(self.registry)


def worker_metrics_page(runtime: object) -> object:
    """A Faust page handler serving ``runtime.metrics`` (register with ``app.page("/metrics")``)."""
    from aiohttp.web import Response

    async def metrics(_view: object, _request: object) -> Response:
        body = await runtime.metrics.render(runtime.state, runtime.settings.partitions)  # type: ignore[attr-defined]
        return Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return metrics
