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

Live updates: ``GET /api/stream`` is a server-sent-event stream. Every message on the
``scores``, ``leaderboard``, ``crowding`` and ``alerts`` topics is relayed as an event named
after its topic, with the message value (JSON) as its data, as soon as the consumer fetches it
(fetch wait 100 ms). When the feed itself comes back after losing the broker, it sends a
``resync`` event: pages reload what they missed.

Live clients are bounded (see :class:`LiveFeed`): at most ``MMC_WEB_LIVE_MAX_CLIENTS`` streams
(one more gets 503 ``too_many_live_clients`` with ``Retry-After``); a client more than
``MMC_WEB_LIVE_CLIENT_BUFFER_BYTES`` behind, or whose socket does not take what is written to
it within ``MMC_WEB_LIVE_WRITE_TIMEOUT_SECONDS``, is dropped. Dropping loses nothing the page
needs: the browser's ``EventSource`` reconnects by itself and the page reloads its data from the
API. A client that stops reading therefore costs a bounded amount of memory for a bounded time.

Errors are JSON (``{"error": {"status", "code", "message"}}``) with the HTTP status; model ids
in paths are checked against :data:`streams.records.MODEL_ID` before they reach Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.admin import kafka_client_options, redis_client
from streams.logs import quiet_libraries
from streams.metrics import CONTENT_TYPE, WebMetrics
from streams.records import MODEL_ID
from streams.resolution import standing
from streams.schemas import OUTPUT_SCHEMAS, load_schema
from streams.settings import Settings
from streams.state import ALERTS_KEPT, RedisState
from streams.transient import Backoff

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("webstatic")
#: Output topics relayed to live clients (the dead-letter topic is not: it carries raw input).
LIVE_TOPICS = ("scores", "leaderboard", "crowding", "alerts")
#: Largest piece of the stream written to a live client at once: the events fetched together
#: are joined up to this size (an event larger than this is a piece of its own).
LIVE_CHUNK = 32 * 1024
#: Why a live client is dropped: too far behind, or its socket stopped taking data.
LIVE_DROP_REASONS = ("buffer", "write_timeout")
#: Seconds a client refused for the live-client cap is asked to wait (``Retry-After``).
LIVE_RETRY_AFTER_SECONDS = 30
KEEPALIVE_SECONDS = 15.0
#: How often an idle stream checks that its client is still connected.
LIVE_PEER_CHECK_SECONDS = 1.0
LEADERBOARD_MAX = 10_000
ROUND_PATTERN = re.compile(r"[0-9]{1,16}")
LIMIT_PATTERN = re.compile(r"[0-9]{1,6}")
SORT_KEYS = ("payout", "corr", "mmc", "contribution", "corr_w_mm", "stake", "model")
HTML_HEADERS = {
    "Cache-Control": "no-cache",
    # Everything the page needs is served from here: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An HTTP error with a stable code, rendered as JSON by :func:`errors_as_json`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# --------------------------------------------------------------------------- live feed


def sse_frame(event: str, data: bytes) -> bytes:
    """One server-sent event; a multi-line value becomes several ``data:`` lines (joined by the client)."""
    lines = data.splitlines() or [b""]
    return b"event: " + event.encode() + b"\n" + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


class LiveClient:
    """One ``/api/stream`` connection: the stream waiting for it and the socket it is written to.

    ``chunks`` are pieces of the stream (frames joined up to :data:`LIVE_CHUNK`) shared with
    every other client: a waiting piece costs this client a reference, not a copy. ``pending``
    is their size in bytes.
    """

    __slots__ = ("chunks", "pending", "wake", "ended", "transport")

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self.chunks: deque[bytes] = deque()
        self.pending = 0
        self.wake = asyncio.Event()
        self.ended = False
        self.transport = transport

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.pending -= len(chunk)
        return chunk


class LiveFeed:
    """Follows the output topics (no group, from the end) and fans their messages out to SSE clients.

    Live clients are bounded, so a client that does not read cannot grow the server:

    - at most ``MMC_WEB_LIVE_MAX_CLIENTS`` connections; one more is refused (HTTP 503,
      ``too_many_live_clients``, ``Retry-After``) before anything is streamed;
    - a client more than ``MMC_WEB_LIVE_CLIENT_BUFFER_BYTES`` behind (events waiting for it)
      is dropped; so is one whose socket has not taken what was written to it within
      ``MMC_WEB_LIVE_WRITE_TIMEOUT_SECONDS``. Nothing more is written to a client until its
      socket has taken the previous piece (at most :data:`LIVE_CHUNK`, or one larger event),
      and a dropped client's connection is aborted, its unsent bytes discarded.

    Dropping is safe: the browser's ``EventSource`` reconnects by itself and the page reloads
    its data from the API. Drops are counted (``mmc_web_live_dropped_total{reason}``, and
    ``live_dropped`` in ``/api/health``).
    """

    def __init__(self, settings: Settings, metrics: WebMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.status = "starting"
        self.messages = 0
        self.dropped = 0
        self._followed = False
        self._clients: set[LiveClient] = set()
        for reason in LIVE_DROP_REASONS:  # exported at 0 from the start
            metrics.live_dropped.labels(reason)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self, transport: asyncio.Transport | None = None) -> LiveClient:
        """A new live client, or :class:`ApiError` 503 when ``MMC_WEB_LIVE_MAX_CLIENTS`` are open."""
        limit = self.settings.web_live_max_clients
        if len(self._clients) >= limit:
            raise ApiError(
                503,
                "too_many_live_clients",
                f"this server streams to {limit} live clients already; retry in {LIVE_RETRY_AFTER_SECONDS} s or use another replica",
                headers={"Retry-After": str(LIVE_RETRY_AFTER_SECONDS)},
            )
        client = LiveClient(transport)
        self._clients.add(client)
        self.metrics.live_clients.set(len(self._clients))
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        self._clients.discard(client)
        self.metrics.live_clients.set(len(self._clients))

    def _end(self, client: LiveClient) -> None:
        """End a client's stream: forget what waits for it and wake its handler."""
        client.ended = True
        client.chunks.clear()
        client.pending = 0
        client.wake.set()
        self.unsubscribe(client)

    def drop(self, client: LiveClient, reason: str) -> None:
        """Drop a slow client (``reason``: ``buffer`` or ``write_timeout``): its connection is aborted."""
        if client.ended:
            return
        self._end(client)
        self.dropped += 1
        self.metrics.live_dropped.labels(reason).inc()
        if client.transport is not None:
            client.transport.abort()  # unsent bytes are discarded now, not when the peer reads
        log.info("live client dropped (%s); it reconnects", reason)

    def close_all(self) -> None:
        """End every stream (at shutdown)."""
        for client in list(self._clients):
            self._end(client)

    def publish(self, topic: str, value: bytes) -> None:
        """Relay one message to every live client."""
        for chunk in self.pieces([(topic, value)]):
            self._broadcast(chunk)

    def pieces(self, messages: list[tuple[str, bytes]]) -> list[bytes]:
        """Messages, in order, as events joined into pieces of at most :data:`LIVE_CHUNK` (counted as relayed)."""
        chunks: list[bytes] = []
        frames: list[bytes] = []
        size = 0
        for topic, value in messages:
            self.messages += 1
            self.metrics.live_messages.labels(topic).inc()
            frame = sse_frame(topic, value)
            if frames and size + len(frame) > LIVE_CHUNK:
                chunks.append(b"".join(frames))
                frames, size = [], 0
            frames.append(frame)
            size += len(frame)
        if frames:
            chunks.append(b"".join(frames))
        return chunks

    def _broadcast(self, chunk: bytes) -> None:
        limit = self.settings.web_live_client_buffer_bytes
        for client in list(self._clients):
            # An empty buffer takes any piece, however large: one event never drops a client.
            if client.pending and client.pending + len(chunk) > limit:
                self.drop(client, "buffer")
                continue
            client.chunks.append(chunk)
            client.pending += len(chunk)
            client.wake.set()

    async def send(
        self,
        client: LiveClient,
        response: web.StreamResponse,
        writer: AbstractStreamWriter,
        data: bytes,
    ) -> bool:
        """Write to a client and wait until its socket has taken all of it; False once it is dropped.

        The stream's transport pauses as soon as anything is left unsent (see :func:`api_stream`),
        so ``writer.drain()`` returns when the kernel has taken the last byte: a client that
        does not read within ``MMC_WEB_LIVE_WRITE_TIMEOUT_SECONDS`` is dropped.
        """
        try:
            async with asyncio.timeout(self.settings.web_live_write_timeout_seconds):
                await response.write(data)
                await writer.drain()
        except TimeoutError:
            self.drop(client, "write_timeout")
            return False
        return not client.ended

    async def run(self) -> None:
        """Follow the topics until cancelled; reconnect with backoff when the broker goes away."""
        backoff = Backoff()
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status = f"reconnecting ({type(exc).__name__})"
                delay = backoff.next()
                log.warning("live feed: %r; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20,
        )
        await consumer.start()
        try:
            short = {self.settings.topic(t): t for t in LIVE_TOPICS}
            parts = await self._partitions(consumer, list(short))
            consumer.assign(parts)
            await consumer.seek_to_end(*parts)
            # Resolve the end offsets now: nothing produced after "following" is missed.
            for tp in parts:
                await consumer.position(tp)
            # The embedded broker (Tansu) answers ListOffsets(latest) with the last record batch's
            # base offset + 1, not the high watermark, so "the end" can be inside the last batch.
            # The high watermark of the first fetch response is right: records below it were
            # there before we started and are skipped (on Kafka this skips nothing).
            floor: dict[TopicPartition, int] = {}
            while True:
                batch = await consumer.getmany(timeout_ms=200 if len(floor) < len(parts) else 1000)
                for tp in parts:
                    if tp not in floor and consumer.highwater(tp) is not None:
                        floor[tp] = consumer.highwater(tp)
                        if len(floor) == len(parts):
                            self.status = "following"
                            log.info("live feed following %s", ", ".join(sorted(short)))
                            # Back after an outage: pages reload what they missed.
                            if self._followed:
                                self._broadcast(sse_frame("resync", b"{}"))
                            self._followed = True
                messages = [
                    (short[tp.topic], record.value)
                    for tp, records in batch.items()
                    for record in records
                    if record.value is not None and record.offset >= floor.get(tp, 0)
                ]
                for chunk in self.pieces(messages):
                    self._broadcast(chunk)
                    # Let the clients' handlers write it before the next piece: a client that
                    # reads keeps up with a burst instead of finding it all queued at once.
                    await asyncio.sleep(0)
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
        """Every partition of ``topics``, waiting until the topics exist."""
        while True:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - metadata of unsubscribed topics
            found = {t: consumer.partitions_for_topic(t) for t in topics}
            missing = [t for t, p in found.items() if not p]
            if not missing:
                return [TopicPartition(t, p) for t in topics for p in sorted(found[t] or ())]
            self.status = f"waiting for topics {', '.join(missing)}"
            await asyncio.sleep(2.0)


# --------------------------------------------------------------------------- app

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", RedisState)
FEED = web.AppKey("feed", LiveFeed)
METRICS = web.AppKey("metrics", WebMetrics)
FEED_TASK = web.AppKey("feed_task", asyncio.Task)


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


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"status": status, "code": code, "message": message}}, status, headers)


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


# --------------------------------------------------------------------------- parameters


def _model(request: web.Request) -> str:
    model = request.match_info["model"]
    if not MODEL_ID.fullmatch(model):
        raise ApiError(
            400,
            "bad_model_id",
            f"model id {model[:80]!r} does not match ^[A-Za-z0-9_\\-\\.]{{1,64}}$",
        )
    return model


def _round(request: web.Request) -> int:
    raw = request.match_info["round"]
    if not ROUND_PATTERN.fullmatch(raw) or int(raw) >= 2**53:
        raise ApiError(400, "bad_round", f"round {raw[:40]!r} is not a non-negative integer below 2^53")
    return int(raw)


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not LIMIT_PATTERN.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise ApiError(400, "bad_limit", f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise ApiError(400, f"bad_{name}", f"{name} must be one of {', '.join(choices)}")
    return value


# --------------------------------------------------------------------------- pages


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=HTML_HEADERS)


async def model_page(request: web.Request) -> web.StreamResponse:
    _model(request)
    return web.FileResponse(STATIC_DIR / "index.html", headers=HTML_HEADERS)


async def metrics_page(request: web.Request) -> web.Response:
    app = request.app
    body = await app[METRICS].render(app.get(STATE), app[SETTINGS].partitions)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


# --------------------------------------------------------------------------- API


async def api_leaderboard(request: web.Request) -> web.Response:
    """The rolling leaderboard, best first: each row as on the leaderboard topic (rank, n_models included)."""
    limit = _limit(request, 100, LEADERBOARD_MAX)
    state = request.app[STATE]
    rows = await state.leaderboard(limit)
    _, size = await state.ranks([])
    ranked = [{**row, "rank": i, "n_models": size} for i, row in enumerate(rows, start=1)]
    return json_response({"window": request.app[SETTINGS].leaderboard_window, "n_models": size, "rows": ranked})


async def api_model(request: web.Request) -> web.Response:
    """A model's score history by round, its rank and its rolling standing."""
    model = _model(request)
    state = request.app[STATE]
    history = (await state.get_histories([model]))[model]
    if not history and model not in await state.all_models():
        raise ApiError(404, "unknown_model", f"model {model!r} has never submitted")
    rank: int | None = None
    size: int | None = None
    row: dict[str, Any] | None = None
    if history:
        try:
            ranks, size = await state.ranks([model])
            rank = ranks[0]
        except TypeError:  # scored but not on the board yet (the worker writes history first)
            rank = None
        latest = history[max(history)]
        as_of = {"round": latest["round"], "day": latest["day"], "final": latest["final"]}
        row = standing(request.app[SETTINGS], model, history, as_of)
    return json_response(
        {
            "model": model,
            "rank": rank,
            "n_models": size,
            "standing": row,
            "history": [history[r] for r in sorted(history)],
        }
    )


async def api_rounds(request: web.Request) -> web.Response:
    """Every round ever opened, newest last, with its latest scored update's headline figures."""
    state = request.app[STATE]
    rounds = await state.known_rounds()
    trend = await state.get_trend()
    out = []
    for r in rounds:
        figures = trend.get(r)
        out.append(
            {
                "round": r,
                "scored": figures is not None,
                "day": figures.get("day") if figures else None,
                "final": figures.get("final") if figures else None,
                "n_models": figures.get("n_models") if figures else None,
                "stake_weighted_cwmm": figures.get("stake_weighted_cwmm") if figures else None,
                "median_cwmm": figures.get("median_cwmm") if figures else None,
            }
        )
    return json_response({"rounds": out})


def _sort_key(key: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    def by(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(key)
        return (1, 0) if value is None or (isinstance(value, float) and math.isnan(value)) else (0, value)

    return by


async def _known_round(request: web.Request) -> int:
    r = _round(request)
    if r not in await request.app[STATE].known_rounds():
        raise ApiError(404, "unknown_round", f"round {r} was never opened")
    return r


async def api_round_scores(request: web.Request) -> web.Response:
    """The round's latest score message of every model (as on the scores topic), sorted."""
    r = await _known_round(request)
    key = _choice(request, "sort", SORT_KEYS, "payout")
    order = _choice(request, "order", ("desc", "asc"), "asc" if key == "model" else "desc")
    limit = _limit(request, LEADERBOARD_MAX, LEADERBOARD_MAX)
    scores = list((await request.app[STATE].get_round_scores(r)).values())
    present = [s for s in scores if _sort_key(key)(s)[0] == 0]
    absent = sorted((s for s in scores if _sort_key(key)(s)[0] == 1), key=lambda s: s["model"])
    present.sort(key=lambda s: (s[key], s["model"]), reverse=order == "desc")
    ordered = (present + absent)[:limit]
    latest = max(scores, key=lambda s: (s["final"], s["day"]), default=None)
    return json_response(
        {
            "round": r,
            "day": latest["day"] if latest else None,
            "final": latest["final"] if latest else None,
            "n_models": len(scores),
            "sort": key,
            "order": order,
            "scores": ordered,
        }
    )


async def api_round_crowding(request: web.Request) -> web.Response:
    """The round's latest crowding message (as on the crowding topic)."""
    r = await _known_round(request)
    crowding = await request.app[STATE].get_round_crowding(r)
    if crowding is None:
        raise ApiError(404, "not_scored", f"round {r} has no scored update yet")
    return json_response(crowding)


async def api_alerts(request: web.Request) -> web.Response:
    limit = _limit(request, 50, ALERTS_KEPT)
    return json_response({"alerts": await request.app[STATE].recent_alerts(limit)})


async def api_trend(request: web.Request) -> web.Response:
    """Each scored round's crowding figures, by round: stake-weighted mean vs median CWMM and more."""
    trend = await request.app[STATE].get_trend()
    return json_response({"trend": [trend[r] for r in sorted(trend)]})


async def api_health(request: web.Request) -> web.Response:
    """200 when Redis answers (the live feed's state is reported, not required), else 503."""
    app = request.app
    feed = app[FEED]
    body: dict[str, Any] = {
        "status": "ok",
        "redis": "ok",
        "kafka": feed.status,
        "live_clients": feed.clients,
        "live_clients_max": app[SETTINGS].web_live_max_clients,
        "live_dropped": feed.dropped,
    }
    try:
        await app[STATE].r.ping()
    except Exception as exc:
        body.update(status="unavailable", redis=f"unreachable ({type(exc).__name__})")
        return json_response(body, 503)
    return json_response(body)


async def api_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one event per output message, named after its topic.

    Over ``MMC_WEB_LIVE_MAX_CLIENTS`` open streams the answer is 503 ``too_many_live_clients``
    with ``Retry-After``; a client that falls behind or stops reading is dropped (see
    :class:`LiveFeed`) and its ``EventSource`` reconnects.
    """
    feed = request.app[FEED]
    client = feed.subscribe(request.transport)  # over the cap: 503 before anything is streamed
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    transport = client.transport
    writer = request.writer
    if transport is not None:
        # Paused while anything is unsent, resumed when the kernel has taken it all: a drain
        # waits for the socket, and at most one piece of the stream is held for this client.
        transport.set_write_buffer_limits(high=0)
        sndbuf = request.app[SETTINGS].web_live_socket_buffer_bytes
        sock = transport.get_extra_info("socket")
        if sndbuf and sock is not None:
            with contextlib.suppress(OSError):  # and what the kernel holds for it is bounded too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        hello = orjson.dumps({"topics": list(LIVE_TOPICS), "kafka": feed.status})
        if not await feed.send(client, response, writer, b"retry: 2000\n\n" + sse_frame("hello", hello)):
            return response
        written = loop.time()
        while not client.ended:
            if not client.chunks:
                client.wake.clear()
                try:
                    await asyncio.wait_for(client.wake.wait(), timeout=LIVE_PEER_CHECK_SECONDS)
                except TimeoutError:
                    if transport is None or transport.is_closing():
                        break  # the client went away: free its place now, not at the next write
                    if loop.time() - written >= KEEPALIVE_SECONDS:
                        if not await feed.send(client, response, writer, b": keep-alive\n\n"):
                            break
                        written = loop.time()
                    continue
                if client.ended:
                    break
            if not await feed.send(client, response, writer, client.take()):
                break
            written = loop.time()
    except (ConnectionError, asyncio.CancelledError):  # the client went away
        pass
    finally:
        feed.unsubscribe(client)
    return response


async def api_openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[SETTINGS]))


# --------------------------------------------------------------------------- OpenAPI


def _component(name: str, filename: str) -> dict[str, Any]:
    """A topic schema as an OpenAPI 3.1 component: its ``#/$defs`` refs re-pointed into components."""
    schema = deepcopy(load_schema(filename))
    schema.pop("$schema", None)
    schema.pop("$id", None)

    def repoint(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (
                    f"#/components/schemas/{name}/$defs/{v[len('#/$defs/') :]}"
                    if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/")
                    else repoint(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [repoint(x) for x in node]
        return node

    return repoint(schema)  # type: ignore[no-any-return]


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {400: "Bad parameter", 404: "Not found", 503: "Redis unreachable"}
    return {
        str(s): {
            "description": texts[s],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route (response bodies reference the topic schemas)."""

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "null"}]}

    model_param = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{MODEL_ID.pattern}$"},
    }
    round_param = {
        "name": "round",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }

    def limit_param(default: int, maximum: int) -> dict[str, Any]:
        return {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        }

    html = {
        "200": {
            "description": "The page (HTML; the data comes from the API)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }
    leaderboard_row = ref("LeaderboardRow")
    history_entry = {
        "type": "object",
        "description": "The model's latest update in a round (final when it has arrived).",
        "required": [
            "round",
            "day",
            "final",
            "stake",
            "corr",
            "mmc",
            "contribution",
            "corr_w_mm",
            "payout",
        ],
        "properties": {
            "round": {"type": "integer"},
            "day": {"type": "integer"},
            "final": {"type": "boolean"},
            "stake": {"type": "number"},
            **{m: {"type": ["number", "null"]} for m in ("corr", "mmc", "contribution", "corr_w_mm", "payout")},
        },
    }
    standing_row = deepcopy(_component("LeaderboardRow", OUTPUT_SCHEMAS["leaderboard"]))
    for name in ("rank", "n_models"):
        standing_row["properties"].pop(name)
        standing_row["required"].remove(name)
    standing_row["description"] = "The model's rolling standing computed from its history (as on the leaderboard topic, without rank)."
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Live leaderboard page", "tags": ["pages"], "responses": html}},
        "/models/{model}": {
            "get": {
                "summary": "A model's page: score history and CWMM over rounds",
                "tags": ["pages"],
                "parameters": [model_param],
                "responses": {**html, **_errors(400)},
            }
        },
        "/api/leaderboard": {
            "get": {
                "summary": "Rolling leaderboard (latest MMC_LEADERBOARD_WINDOW rounds), best payout first",
                "tags": ["api"],
                "parameters": [limit_param(100, LEADERBOARD_MAX)],
                "responses": {
                    **_ok(
                        "Leaderboard rows as on the leaderboard topic",
                        {
                            "type": "object",
                            "required": ["window", "n_models", "rows"],
                            "properties": {
                                "window": {"type": "integer"},
                                "n_models": {"type": "integer"},
                                "rows": {"type": "array", "items": leaderboard_row},
                            },
                        },
                    ),
                    **_errors(400, 503),
                },
            }
        },
        "/api/models/{model}": {
            "get": {
                "summary": "A model's score history by round, rank and rolling standing",
                "tags": ["api"],
                "parameters": [model_param],
                "responses": {
                    **_ok(
                        "The model",
                        {
                            "type": "object",
                            "required": ["model", "rank", "n_models", "standing", "history"],
                            "properties": {
                                "model": {"type": "string"},
                                "rank": nullable({"type": "integer"}),
                                "n_models": nullable({"type": "integer"}),
                                "standing": nullable(ref("Standing")),
                                "history": {"type": "array", "items": ref("HistoryEntry")},
                            },
                        },
                    ),
                    **_errors(400, 404, 503),
                },
            }
        },
        "/api/rounds": {
            "get": {
                "summary": "Every round ever opened, with its latest scored update's headline",
                "tags": ["api"],
                "responses": {
                    **_ok(
                        "Rounds",
                        {
                            "type": "object",
                            "required": ["rounds"],
                            "properties": {
                                "rounds": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["round", "scored"],
                                        "properties": {
                                            "round": {"type": "integer"},
                                            "scored": {"type": "boolean"},
                                            "day": nullable({"type": "integer"}),
                                            "final": nullable({"type": "boolean"}),
                                            "n_models": nullable({"type": "integer"}),
                                            "stake_weighted_cwmm": nullable({"type": "number"}),
                                            "median_cwmm": nullable({"type": "number"}),
                                        },
                                    },
                                }
                            },
                        },
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/rounds/{round}/scores": {
            "get": {
                "summary": "The round's latest score message of every model, sorted",
                "tags": ["api"],
                "parameters": [
                    round_param,
                    {
                        "name": "sort",
                        "in": "query",
                        "schema": {"enum": list(SORT_KEYS), "default": "payout"},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "schema": {"enum": ["desc", "asc"]},
                        "description": "default desc (asc for model)",
                    },
                    limit_param(LEADERBOARD_MAX, LEADERBOARD_MAX),
                ],
                "responses": {
                    **_ok(
                        "Scores as on the scores topic; models without the sort metric last",
                        {
                            "type": "object",
                            "required": [
                                "round",
                                "day",
                                "final",
                                "n_models",
                                "sort",
                                "order",
                                "scores",
                            ],
                            "properties": {
                                "round": {"type": "integer"},
                                "day": nullable({"type": "integer"}),
                                "final": nullable({"type": "boolean"}),
                                "n_models": {"type": "integer"},
                                "sort": {"enum": list(SORT_KEYS)},
                                "order": {"enum": ["asc", "desc"]},
                                "scores": {"type": "array", "items": ref("Score")},
                            },
                        },
                    ),
                    **_errors(400, 404, 503),
                },
            }
        },
        "/api/rounds/{round}/crowding": {
            "get": {
                "summary": "The round's latest crowding report (as on the crowding topic)",
                "tags": ["api"],
                "parameters": [round_param],
                "responses": {**_ok("Crowding figures", ref("Crowding")), **_errors(400, 404, 503)},
            }
        },
        "/api/alerts": {
            "get": {
                "summary": "Recent alerts, newest first",
                "tags": ["api"],
                "parameters": [limit_param(50, ALERTS_KEPT)],
                "responses": {
                    **_ok(
                        "Alerts as on the alerts topic",
                        {
                            "type": "object",
                            "required": ["alerts"],
                            "properties": {"alerts": {"type": "array", "items": ref("Alert")}},
                        },
                    ),
                    **_errors(400, 503),
                },
            }
        },
        "/api/trend": {
            "get": {
                "summary": "Crowding trend: each scored round's figures (stake-weighted mean vs median CWMM …)",
                "tags": ["api"],
                "responses": {
                    **_ok(
                        "By round, oldest first",
                        {
                            "type": "object",
                            "required": ["trend"],
                            "properties": {"trend": {"type": "array", "items": ref("RoundFigures")}},
                        },
                    ),
                    **_errors(503),
                },
            }
        },
        "/api/health": {
            "get": {
                "summary": "Liveness: Redis reachable (200) or not (503); the live feed's state",
                "tags": ["ops"],
                "responses": {
                    **_ok("Healthy", ref("Health")),
                    "503": {
                        "description": "Redis unreachable",
                        "content": {"application/json": {"schema": ref("Health")}},
                    },
                },
            }
        },
        "/api/stream": {
            "get": {
                "summary": "Live updates as server-sent events",
                "description": "Events named scores, leaderboard, crowding and alerts carry one message of that topic "
                "(JSON, the Score / LeaderboardRow / Crowding / Alert schemas) each; a hello event opens the stream, "
                "a resync event asks the client to reload its data; "
                f"comments keep it alive every {KEEPALIVE_SECONDS:g} s. "
                f"At most {settings.web_live_max_clients} streams are open (MMC_WEB_LIVE_MAX_CLIENTS); a client more "
                f"than {settings.web_live_client_buffer_bytes} bytes behind (MMC_WEB_LIVE_CLIENT_BUFFER_BYTES), or "
                f"whose socket does not take a write within {settings.web_live_write_timeout_seconds:g} s "
                "(MMC_WEB_LIVE_WRITE_TIMEOUT_SECONDS), is disconnected: reconnect and reload.",
                "tags": ["api"],
                "responses": {
                    **_ok("An endless event stream", {"type": "string"}, "text/event-stream"),
                    "503": {
                        "description": "Too many live clients (too_many_live_clients): retry after Retry-After seconds",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["ops"],
                "responses": _ok("OpenAPI 3.1", {"type": "object"}),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this server and of the state in Redis",
                "tags": ["ops"],
                "responses": _ok("Prometheus text format 0.0.4", {"type": "string"}, "text/plain"),
            }
        },
    }
    round_figures = deepcopy(_component("Crowding", OUTPUT_SCHEMAS["crowding"]))
    round_figures["properties"].pop("trend")
    round_figures["required"].remove("trend")
    round_figures["description"] = "A round's crowding figures at its latest scored update (the crowding message without its trend)."
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mmc-stream live leaderboard API",
            "version": "1",
            "description": "Read-only views of the scorer's state (Redis) and a live stream of its output topics "
            f"(prefix {settings.topic_prefix!r}). Bodies of scores, leaderboard rows, crowding reports and alerts are "
            "the messages of those topics, described by the JSON Schemas in streams/schemas/.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Score": _component("Score", OUTPUT_SCHEMAS["scores"]),
                "LeaderboardRow": _component("LeaderboardRow", OUTPUT_SCHEMAS["leaderboard"]),
                "Standing": _retarget(standing_row, "LeaderboardRow", "Standing"),
                "Crowding": _component("Crowding", OUTPUT_SCHEMAS["crowding"]),
                "RoundFigures": _retarget(round_figures, "Crowding", "RoundFigures"),
                "Alert": _component("Alert", OUTPUT_SCHEMAS["alerts"]),
                "HistoryEntry": history_entry,
                "Health": {
                    "type": "object",
                    "required": [
                        "status",
                        "redis",
                        "kafka",
                        "live_clients",
                        "live_clients_max",
                        "live_dropped",
                    ],
                    "properties": {
                        "status": {"enum": ["ok", "unavailable"]},
                        "redis": {"type": "string"},
                        "kafka": {
                            "type": "string",
                            "description": "the live feed: starting, following, waiting for topics …, reconnecting …",
                        },
                        "live_clients": {"type": "integer", "description": "open /api/stream connections"},
                        "live_clients_max": {
                            "type": "integer",
                            "description": "the cap on them (MMC_WEB_LIVE_MAX_CLIENTS)",
                        },
                        "live_dropped": {
                            "type": "integer",
                            "description": "live clients dropped since start for falling behind or not reading",
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "code", "message"],
                            "properties": {
                                "status": {"type": "integer"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            }
        },
    }


def _retarget(schema: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Re-point a copied component's internal refs from ``old`` to ``new``."""
    raw = orjson.dumps(schema).replace(f"#/components/schemas/{old}/".encode(), f"#/components/schemas/{new}/".encode())
    return orjson.loads(raw)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- running


async def serve(settings: Settings, host: str, port: int, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    app = create_web_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=3.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname() if site._server and site._server.sockets else (host, port)  # type: ignore[attr-defined]  # noqa: SLF001
    url = f"http://{host}:{bound[1]}"
    log.info(
        "serving %s (Redis namespace %r, topics %s*)",
        url,
        settings.state_namespace,
        settings.topic_prefix,
    )
    if ready is not None:
        ready(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_web(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the web server in the foreground (``mmc web``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries(logging.INFO)
    asyncio.run(serve(settings, host or settings.web_host, settings.web_port if port is None else port, ready))
