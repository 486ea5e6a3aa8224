"""The aiohttp application of ``mmc web``: routes, middlewares and what the handlers share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from streams.errors import ApiError
from streams.settings import Settings
from streams.state import RedisState
from streams.state.client import redis_client
from streams.web.context import FEED_TASK, METRICS, OPENAPI, SETTINGS, STATE
from streams.web.handlers import STATIC_DIR
from streams.web.live import FEED, LiveFeed
from streams.web.metrics import WebMetrics
from streams.web.openapi import openapi_document
from streams.web.responses import error_response
from streams.web.routes import ROUTES, Handler

log = logging.getLogger(__name__)


def create_web_app(settings: Settings, *, follow: bool = True) -> web.Application:
    """The aiohttp application: the routes of :data:`~streams.web.routes.ROUTES` and the page's static files.

    Redis is connected on startup; with ``follow`` the live feed starts following the output
    topics (without it ``/api/stream`` only sends keep-alives — for API-only deployments).
    """
    metrics = WebMetrics()
    app = web.Application(middlewares=[count_requests, errors_as_json])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[FEED] = LiveFeed(settings, metrics)
    app[OPENAPI] = openapi_document(settings, ROUTES)

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

    for route in ROUTES:
        app.router.add_get(route.pattern, route.handler(), name=route.name)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    return app


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
