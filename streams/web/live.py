"""The live feed: the output topics followed without a consumer group, fanned out to ``/api/stream``.

Every message on the ``scores``, ``leaderboard``, ``crowding`` and ``alerts`` topics is relayed
as a server-sent event named after its topic, with the message value (JSON) as its data, as
soon as the consumer fetches it (fetch wait 100 ms). When the feed itself comes back after
losing the broker, it sends a ``resync`` event: pages reload what they missed.

Live clients are bounded (see :class:`LiveFeed`): at most ``MMC_WEB_LIVE_MAX_CLIENTS`` streams
(one more gets 503 ``too_many_live_clients`` with ``Retry-After``); a client more than
``MMC_WEB_LIVE_CLIENT_BUFFER_BYTES`` behind, or whose socket does not take what is written to
it within ``MMC_WEB_LIVE_WRITE_TIMEOUT_SECONDS``, is dropped. Dropping loses nothing the page
needs: the browser's ``EventSource`` reconnects by itself and the page reloads its data from the
API. A client that stops reading therefore costs a bounded amount of memory for a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiokafka import AIOKafkaConsumer, TopicPartition
from stamina.instrumentation import RetryDetails

from streams.errors import ApiError
from streams.kafka.clients import kafka_client_options
from streams.kafka.watermarks import HighWatermarks
from streams.settings import Settings
from streams.transient import reporting_retries, retries
from streams.web.context import SETTINGS
from streams.web.metrics import WebMetrics
from streams.web.models import NoParameters

log = logging.getLogger(__name__)

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
        """Follow the topics until cancelled; reconnect with backoff when the broker goes away.

        The pauses are stamina's (:func:`streams.transient.retries`), one warning per reconnect.
        stamina cannot reset a context's pauses, so a clean return of :meth:`_follow` ends the
        retry context and a new one starts: the next reconnect pauses from the first again.
        """

        def report(details: RetryDetails) -> None:
            self.status = f"reconnecting ({type(details.caused_by).__name__})"
            log.warning("live feed: %r; retrying in %.1f s", details.caused_by, details.wait_for)

        while True:
            with reporting_retries(report):
                async for attempt in retries(Exception):  # not CancelledError: stopping stops
                    with attempt:
                        await self._follow()

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
            # Records below the high watermark of the first fetch response were there before
            # the feed started and are skipped (streams.kafka.watermarks).
            ends = HighWatermarks(parts)
            while True:
                batch = await consumer.getmany(timeout_ms=1000 if ends.complete else 200)
                if ends.observe(consumer):
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
                    if record.value is not None and not ends.before(tp, record.offset)
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


FEED = web.AppKey("feed", LiveFeed)


async def api_stream(request: web.Request, params: NoParameters) -> web.StreamResponse:
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
