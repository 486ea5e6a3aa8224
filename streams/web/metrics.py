"""The Prometheus metrics of ``mmc web`` (prometheus-client), served with the state's gauges (:mod:`streams.metrics`).

``mmc web`` — ``GET /metrics`` on its own port (``MMC_WEB_PORT``):

- ``mmc_web_requests_total{route, method, status}``, ``mmc_web_request_duration_seconds{route}``;
- ``mmc_web_live_clients`` — open ``/api/stream`` connections;
- ``mmc_web_live_dropped_total{reason}`` — live clients dropped: ``buffer`` (too far behind),
  ``write_timeout`` (their socket stopped taking data); they reconnect;
- ``mmc_web_live_messages_total{topic}`` — output messages relayed to live clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.metrics import StateGauges

if TYPE_CHECKING:
    from streams.state import RedisState


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
