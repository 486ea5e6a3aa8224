"""The aiohttp application of ``mmc web``: routes, middlewares and what the handlers share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from streams.admin import redis_client
from streams.metrics import WebMetrics
from streams.settings import Settings
from streams.state import RedisState
from streams.web.context import FEED_TASK, METRICS, SETTINGS, STATE
from streams.web.handlers import (
    STATIC_DIR,
    api_alerts,
    api_health,
    api_leaderboard,
    api_model,
    api_round_crowding,
    api_round_scores,
    api_rounds,
    api_trend,
    metrics_page,
    model_page,
    page,
)
from streams.web.live import FEED, LiveFeed, api_stream
from streams.web.openapi import openapi_document
from streams.web.responses import ApiError, error_response, json_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_web_app(settings: Settings, *, follow: bool = True) -> web.Application:
    """The aiohttp application: page, API, live stream and metrics.

    Redis is connected on startup; with ``follow`` the live feed starts following the output
    topics (without it ``/api/stream`` only sends keep-alives — for API-only deployments).
    """
    metrics = WebMetrics()
    app = web.Application(middlewares=[count_requests, errors_as_json])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[FEED] = LiveFeed(settings, metrics)

    async def start(app: web.Application) -> None:
        app[STATE] = RedisState(redis_client(settings), settings.state_namespace)
        if follow:
            app[FEED_TASK] = asyncio.create_task(app[FEED].run(), name="mmc-live-feed")
        else:
            app[FEED].status = "off"

    async def stop_streams(app: web.Application) -> None:
        app[FEED].close_all()  # ends every /api/stream handler, so shutdown does not wait on them

    async def stop(app: web.Application) -> None:
        if FEED_TASK in app:
            app[FEED_TASK].cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await app[FEED_TASK]
        await app[STATE].close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop_streams)
    app.on_cleanup.append(stop)

    r = app.router
    r.add_get("/", page, name="page")
    r.add_get("/models/{model:[^/]+}", model_page, name="model_page")
    r.add_get("/api/leaderboard", api_leaderboard, name="leaderboard")
    r.add_get("/api/models/{model:[^/]+}", api_model, name="model")
    r.add_get("/api/rounds", api_rounds, name="rounds")
    r.add_get("/api/rounds/{round:[^/]+}/scores", api_round_scores, name="round_scores")
    r.add_get("/api/rounds/{round:[^/]+}/crowding", api_round_crowding, name="round_crowding")
    r.add_get("/api/alerts", api_alerts, name="alerts")
    r.add_get("/api/trend", api_trend, name="trend")
    r.add_get("/api/health", api_health, name="health")
    r.add_get("/api/stream", api_stream, name="stream")
    r.add_get("/api/openapi.json", api_openapi, name="openapi")
    r.add_get("/metrics", metrics_page, name="metrics")
    r.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    return app


async def api_openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[SETTINGS]))


# --------------------------------------------------------------------------- middlewares


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests and their durations by route template (bounded label values)."""
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = _route_label(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).inc()
        if route != "/api/stream":
            metrics.duration.labels(route).observe(time.perf_counter() - began)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON with its status: API errors, unknown routes, Redis down, bugs."""
    import redis.exceptions

    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("%s %s: Redis unavailable: %r", request.method, request.path, exc)
        return error_response(503, "redis_unavailable", "the state store (Redis) is unreachable; retry shortly")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "the server failed on this request; see its log")
