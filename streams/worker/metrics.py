"""The workers' Prometheus metrics (prometheus-client), served by each worker with the state's gauges (:mod:`streams.metrics`).

Worker — ``GET /metrics`` on the Faust web server (``MMC_WEB_ENABLED``, ``MMC_WORKER_WEB_PORT``):

- ``mmc_input_messages_total{topic, outcome}`` — input records handled; ``outcome`` is
  ``applied`` (changed the state), ``unchanged`` (a redelivery) or ``refused`` (dead letter);
- ``mmc_output_messages_total{topic}`` — records produced and acknowledged, per output topic;
- ``mmc_dead_letters_total{reason}`` — dead letters by ``mmc.error.reason``;
- ``mmc_resolution_latency_seconds`` — histogram: a targets record handed to the agent →
  every output of that update (scores, leaderboard, crowding, alerts) acknowledged;
- ``mmc_alerts_total{kind}`` — alerts published, by kind (``corr_w_mm_spike``, ``crowding_tax``,
  ``crowding_trend``, ``concentration``);
- ``mmc_input_lag_records{topic}`` — records in an input topic's log not applied yet (end
  offsets from the broker minus the progress in Redis, read at scrape time: the same value from
  every worker, aggregate with ``max``); a scrape whose broker or Redis read fails counts in
  ``mmc_state_scrape_errors_total`` and leaves the last value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.kafka.topics import INPUT_TOPICS
from streams.metrics import CONTENT_TYPE, StateGauges

if TYPE_CHECKING:
    from streams.messages.outputs import Output
    from streams.state import RedisState
    from streams.state.progress import Barrier

log = logging.getLogger(__name__)

OUTCOMES = ("applied", "unchanged")
# Resolution of a round takes from milliseconds (tests) to tens of seconds (5,000 models × 5,000 ids).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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
        self.alerts = Counter("mmc_alerts", "Alerts published, by kind.", ["kind"], registry=self.registry)
        self.lag = Gauge("mmc_input_lag_records", "Records in the input topic's log not applied yet.", ["topic"], registry=self.registry)
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
            elif output.topic == "alerts":
                self.alerts.labels(alert_kind(output.value)).inc()

    async def render(self, state: RedisState | None, partitions: int, barrier: Barrier | None = None) -> bytes:
        """The scrape body; state gauges (and the input lag, with the worker's barrier) are
        refreshed first when the worker has a state store."""
        if state is not None:
            await self.state.refresh(state, partitions)
            if barrier is not None:
                await self.refresh_lag(barrier)
        return generate_latest(self.registry)

    async def refresh_lag(self, barrier: Barrier) -> None:
        try:
            lags = {topic: await barrier.lag(topic) for topic in INPUT_TOPICS}
        except Exception as exc:  # a scrape never fails on the infrastructure: counted, the last values kept
            log.warning("metrics: cannot read the input lag: %r", exc)
            self.state.scrape_errors.inc()
            return
        for topic, lag in lags.items():
            self.lag.labels(topic).set(lag)


def alert_kind(value: bytes) -> str:
    """An alert message's ``kind`` (``unknown`` if it has none)."""
    try:
        kind = orjson.loads(value).get("kind")
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown"
    return kind if isinstance(kind, str) else "unknown"


def worker_metrics_page(runtime: object) -> object:
    """A Faust page handler serving ``runtime.metrics`` (register with ``app.page("/metrics")``)."""
    from aiohttp.web import Response

    async def metrics(_view: object, _request: object) -> Response:
        body = await runtime.metrics.render(runtime.state, runtime.settings.partitions, runtime.barrier)  # type: ignore[attr-defined]
        return Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return metrics
