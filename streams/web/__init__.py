"""``mmc web``: the live leaderboard page, its JSON API, server-sent events and ``/metrics``.

A standalone aiohttp server, deliberately **not** views on the workers' Faust web server:

- **It scales on its own.** Workers scale with the input partitions (the volume of
  submissions); the web tier scales with the number of people and dashboards watching. Any
  number of ``mmc web`` replicas can run behind a load balancer, and none of them is a worker.
- **It needs no partitions.** It reads the state the workers keep in Redis through
  :class:`~streams.state.RedisState` (leaderboard, round scores, histories, trend, alerts) and
  follows the output topics with its own aiokafka consumer — no consumer group, every
  partition assigned, starting at the end — so it never joins the workers' group, never
  causes a rebalance, and every replica sees every update.
- **It cannot slow scoring down.** A slow browser or a burst of API calls costs the workers
  nothing; a web server that dies takes no partition with it. Workers keep only ``/metrics``
  on their own web server.

The package, one module per concern:

- :mod:`~streams.web.live` — the live feed and ``/api/stream`` (server-sent events, bounded live clients);
- :mod:`~streams.web.models` — the parameter and response models;
- :mod:`~streams.web.handlers` — the page, the JSON API and ``/metrics``;
- :mod:`~streams.web.routes` — the route table the application is built from;
- :mod:`~streams.web.openapi` — the OpenAPI document, generated from the route table and the models;
- :mod:`~streams.web.app` — the aiohttp application: routes and middlewares;
- :mod:`~streams.web.server` — serving it (``mmc web``).

Errors are JSON (``{"error": {"status", "code", "message"}}``) with the HTTP status; path and
query parameters are checked by the models the OpenAPI document describes them with.
"""

from __future__ import annotations

from streams.errors import ApiError
from streams.web.app import count_requests, create_web_app, errors_as_json
from streams.web.context import FEED_TASK, METRICS, OPENAPI, SETTINGS, STATE
from streams.web.handlers import HTML_HEADERS, STATIC_DIR
from streams.web.live import (
    FEED,
    KEEPALIVE_SECONDS,
    LIVE_CHUNK,
    LIVE_DROP_REASONS,
    LIVE_PEER_CHECK_SECONDS,
    LIVE_RETRY_AFTER_SECONDS,
    LIVE_TOPICS,
    LiveClient,
    LiveFeed,
    sse_frame,
)
from streams.web.models import LEADERBOARD_MAX, SORT_KEYS
from streams.web.openapi import openapi_document
from streams.web.responses import error_response, json_response
from streams.web.routes import ROUTES, Handler, Reply, Route
from streams.web.server import run_web, serve

__all__ = [
    "FEED",
    "FEED_TASK",
    "HTML_HEADERS",
    "KEEPALIVE_SECONDS",
    "LEADERBOARD_MAX",
    "LIVE_CHUNK",
    "LIVE_DROP_REASONS",
    "LIVE_PEER_CHECK_SECONDS",
    "LIVE_RETRY_AFTER_SECONDS",
    "LIVE_TOPICS",
    "METRICS",
    "OPENAPI",
    "ROUTES",
    "SETTINGS",
    "SORT_KEYS",
    "STATE",
    "STATIC_DIR",
    "ApiError",
    "Handler",
    "LiveClient",
    "LiveFeed",
    "Reply",
    "Route",
    "count_requests",
    "create_web_app",
    "error_response",
    "errors_as_json",
    "json_response",
    "openapi_document",
    "run_web",
    "serve",
    "sse_frame",
]
