"""Live clients of ``mmc web`` are bounded: a cap on streams, and slow clients dropped.

- the feed's own rules (no server): a client too far behind is dropped, one event never drops it;
- an in-process server on a real socket (real Redis): the client over the cap gets 503 with
  ``Retry-After``; a client that stops reading is dropped after the write timeout while a
  client that reads gets every event;
- a real ``mmc web`` process following real topics: 200 clients that never read, several MB
  of output messages, and the process's memory stays flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web as aioweb
from aiokafka import AIOKafkaProducer
from prometheus_client import generate_latest

from streams import web
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings
from streams.tools.stack import free_port
from streams.web.metrics import WebMetrics
from tests.conftest import run_sync
from tests.streams.web.test_web import http, metric, parse_metrics, wait_until, web_process

MiB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def dropped(samples: dict[Any, float], reason: str | None = None) -> float:
    """``mmc_web_live_dropped_total``, for one reason or summed."""
    reasons = [reason] if reason else list(web.LIVE_DROP_REASONS)
    return sum(metric(samples, "mmc_web_live_dropped_total", reason=r) for r in reasons)


def slow_socket(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A client that asks for ``/api/stream`` and never reads: a small receive buffer, no recv."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    return sock


def was_closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server ended the connection (reset, or EOF after whatever it had sent)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


READER = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
conn.request("GET", "/api/stream")
response = conn.getresponse()
assert response.status == 200, response.status
with open(sys.argv[2], "wb", buffering=0) as out:
    while chunk := response.read1(1 << 16):
        out.write(chunk)
"""


@contextmanager
def reading_client(port: int, path: Path) -> Iterator[Callable[[str], int]]:
    """A client in its own process that reads ``/api/stream`` as fast as it can into ``path``.

    Yields a function counting the events of a name received so far.
    """
    path.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", READER, str(port), str(path)])

    def count(event: str) -> int:
        return path.read_bytes().count(b"event: %s\n" % event.encode())

    try:
        yield count
    finally:
        proc.kill()
        proc.wait()


def kernel_send_queue(port: int) -> int:
    """Bytes in the kernel send queues of the sockets a server on ``port`` writes to (``/proc/net/tcp``)."""
    local = f"0100007F:{port:04X}"
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":  # established
            total += int(fields[4].split(":")[0], 16)
    return total


@contextlib.asynccontextmanager
async def serving(app: aioweb.Application) -> AsyncIterator[str]:
    """``app`` on a real loopback socket with the runner options of ``mmc web``; yields its URL."""
    runner = aioweb.AppRunner(app, access_log=None, shutdown_timeout=3.0)
    await runner.setup()
    port = free_port()
    site = aioweb.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- the feed's rules


def test_a_client_too_far_behind_is_dropped_and_counted() -> None:
    """Past the byte bound a client is dropped (counted by reason); an empty buffer takes any event."""
    metrics = WebMetrics()
    feed = web.LiveFeed(Settings(web_live_client_buffer_bytes=64 * 1024), metrics)
    behind = feed.subscribe()
    reading = feed.subscribe()
    big = b"x" * (100 * 1024)  # one event larger than the bound
    feed.publish("crowding", big)
    assert feed.clients == 2 and behind.pending > 64 * 1024  # one event never drops a client
    reading.take()
    feed.publish("scores", b'{"model":"m1"}')
    assert behind.ended and not reading.ended
    assert list(behind.chunks) == [] and behind.pending == 0  # what waited for it is released
    assert feed.clients == 1 and feed.dropped == 1
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert dropped(samples, "buffer") == 1 and dropped(samples, "write_timeout") == 0
    assert metric(samples, "mmc_web_live_clients") == 1
    # events are joined into pieces no larger than LIVE_CHUNK, in order
    pieces = feed.pieces([("scores", b"z" * 1000)] * 100)
    assert len(pieces) > 1 and all(len(p) <= web.LIVE_CHUNK for p in pieces)
    assert b"".join(pieces) == web.sse_frame("scores", b"z" * 1000) * 100


# --------------------------------------------------------------------------- an in-process server


def test_a_client_over_the_cap_gets_503_with_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    """With the cap at 1, the second stream is refused (503 JSON, Retry-After); its place frees when the first leaves."""
    settings = make_settings(create=False, web_live_max_clients=1)

    async def scenario() -> None:
        app = web.create_web_app(settings, follow=False)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            first = await session.get(url + "/api/stream")
            assert first.status == 200
            head = await first.content.readuntil(b"\n\n")  # retry: …
            head += await first.content.readuntil(b"\n\n")
            assert b"event: hello" in head, head
            second = await session.get(url + "/api/stream")
            assert second.status == 503
            assert second.headers["Retry-After"] == str(web.LIVE_RETRY_AFTER_SECONDS)
            assert second.headers["Content-Type"].startswith("application/json")
            error = (await second.json())["error"]
            assert error["status"] == 503 and error["code"] == "too_many_live_clients"
            health = await (await session.get(url + "/api/health")).json()
            assert health["live_clients"] == 1 and health["live_clients_max"] == 1
            samples = parse_metrics(await (await session.get(url + "/metrics")).text())
            assert metric(samples, "mmc_web_requests_total", route="/api/stream", method="GET", status="503") == 1
            first.close()  # the client leaves: its place is free within a peer check
            await until(lambda: app[web.FEED].clients == 0, 5, "the first stream to end")
            third = await session.get(url + "/api/stream")
            assert third.status == 200
            third.close()

    run_sync(scenario())


def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    """A non-reading socket is dropped (write_timeout) and reset; a reading client gets every event."""
    settings = make_settings(
        create=False,
        web_live_write_timeout_seconds=1.0,
        web_live_client_buffer_bytes=256 * MiB,  # the timeout, not the bound, must drop it
    )
    event = orjson.dumps({"round": 1, "figures": "c" * 20_000})
    n_events = 200  # ~4 MB: more than the kernel buffers of a connection hold

    async def scenario() -> tuple[int, bool]:
        app = web.create_web_app(settings, follow=False)
        async with serving(app) as url, aiohttp.ClientSession() as session:
            feed = app[web.FEED]
            port = int(url.rsplit(":", 1)[1])
            stalled = await asyncio.to_thread(slow_socket, port)
            response = await session.get(url + "/api/stream")
            got = 0

            async def read() -> None:
                nonlocal got
                async for line in response.content:
                    if line.startswith(b"event: crowding"):
                        got += 1

            reader = asyncio.create_task(read())
            await until(lambda: feed.clients == 2, 5, "both clients")
            began = time.monotonic()
            for _ in range(n_events):
                feed.publish("crowding", event)
                await asyncio.sleep(0)
            await until(lambda: feed.dropped == 1, 10, "the stalled client to be dropped")
            waited = time.monotonic() - began
            assert waited >= 0.9, f"dropped after {waited:.2f} s, before the write timeout"
            await until(lambda: got == n_events, 10, "the reading client to get every event")
            reset = await asyncio.to_thread(was_closed_by_server, stalled)
            stalled.close()
            samples = parse_metrics(await (await session.get(url + "/metrics")).text())
            assert dropped(samples, "write_timeout") == 1 and dropped(samples, "buffer") == 0
            health = await (await session.get(url + "/api/health")).json()
            assert health["live_dropped"] == 1 and health["live_clients"] == 1
            reader.cancel()
            response.close()
            return got, reset

    got, reset = run_sync(scenario())
    assert got == n_events
    assert reset, "the dropped client's connection is still open"


# --------------------------------------------------------------------------- a real mmc web process


def score_message(i: int) -> bytes:
    """A score message of the usual size (~0.5 KB)."""
    return orjson.dumps(
        {
            "round": 900 + i // 5000,
            "day": 3,
            "final": False,
            "model": f"model_{i % 5000:05d}",
            "stake": 120.5 + i,
            "corr": 0.0123456789,
            "mmc": -0.00234567891,
            "contribution": 0.00345678912,
            "corr_w_mm": 0.456789123,
            "payout": 0.00123456789,
            "percentiles": {m: 0.5 + (i % 97) / 200 for m in ("corr", "mmc", "contribution", "corr_w_mm", "payout")},
            "n_ids_scored": 5000,
            "n_ids_missing": 0,
        }
    )


def crowding_message(i: int) -> bytes:
    """A large crowding message (~40 KB: its figures by decile and a long running trend)."""
    trend = [{"round": r, "stake_weighted_cwmm": 0.41 + r / 1e4, "median_cwmm": 0.38, "gap": 0.03, "hhi": 0.012} for r in range(330)]
    return orjson.dumps({"round": 900 + i, "day": 3, "final": False, "trend": trend})


async def produce_outputs(settings: Settings, n_scores: int, n_crowding: int, rate: float = 2 * MiB) -> int:
    """Score and crowding messages onto the output topics the live feed follows, at about ``rate``
    bytes a second (a client that reads keeps up even on a busy machine); returns their bytes."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=20, max_batch_size=512 * 1024, max_request_size=4 * MiB)
    await producer.start()
    total = 0
    began = time.monotonic()
    try:
        futures = []
        every = n_scores // n_crowding  # a crowding report after every `every` scores
        for i in range(n_scores):
            value = score_message(i)
            total += len(value)
            futures.append(await producer.send(settings.topic("scores"), value, key=b"model_%05d" % (i % 5000)))
            if i % every == every - 1:
                value = crowding_message(i // every)
                total += len(value)
                futures.append(await producer.send(settings.topic("crowding"), value, key=b"%d" % (i // every)))
                ahead = total / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return total


class Sampler(threading.Thread):
    """The largest RSS of a process and kernel send queue of its server port, sampled every 20 ms."""

    def __init__(self, pid: int, port: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.rss = rss_bytes(pid)
        self.send_queue = kernel_send_queue(port)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self.rss = max(self.rss, rss_bytes(self.pid))
            self.send_queue = max(self.send_queue, kernel_send_queue(self.port))

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join()
        return self.rss, self.send_queue


@pytest.mark.e2e
def test_two_hundred_clients_that_never_read_leave_memory_flat(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """200 non-reading streams and ~8 MB of output messages: RSS grows < 50 MB, they are dropped, a reader gets all.

    Growth is measured from after a warm-up with the same messages and the reader alone (the
    feed's consumer and the allocator at their working size) to the largest RSS sampled while
    the 200 streams are open.
    """
    settings = make_settings()
    n_slow, n_scores, n_crowding = 200, 16_000, 100
    with (
        web_process(settings, tmp_path) as (url, proc),
        reading_client(int(url.rsplit(":", 1)[1]), tmp_path / "stream.txt") as received,
    ):
        port = int(url.rsplit(":", 1)[1])
        started = rss_bytes(proc.pid)
        wait_until(lambda: received("hello") == 1, 10, "the reading client's hello")
        # Warm-up with the reader only: the feed's consumer and the allocator reach their working size.
        warm = run_sync(produce_outputs(settings, n_scores, n_crowding))
        wait_until(
            lambda: received("scores") == n_scores and received("crowding") == n_crowding,
            30,
            "the warm-up messages at the reader",
        )
        time.sleep(0.5)
        baseline = rss_bytes(proc.pid)
        slow = [slow_socket(port) for _ in range(n_slow)]
        try:
            wait_until(
                lambda: http("GET", url + "/api/health").json()["live_clients"] == n_slow + 1,
                20,
                "every stream open",
            )
            with_clients = rss_bytes(proc.pid)
            sampler = Sampler(proc.pid, port)
            sampler.start()
            began = time.monotonic()
            sent = run_sync(produce_outputs(settings, n_scores, n_crowding))
            wait_until(
                lambda: http("GET", url + "/api/health").json()["live_dropped"] >= n_slow,
                30,
                "the non-reading clients to be dropped",
            )
            wait_until(
                lambda: received("scores") == 2 * n_scores and received("crowding") == 2 * n_crowding,
                30,
                "every message at the reading client",
            )
            elapsed = time.monotonic() - began
            time.sleep(0.5)
            peak, send_queue = sampler.stop()
            after = rss_bytes(proc.pid)
            health = http("GET", url + "/api/health").json()
            samples = parse_metrics(http("GET", url + "/metrics").text)
            closed = sum(was_closed_by_server(s, timeout=5.0) for s in slow)
        finally:
            for s in slow:
                s.close()
    figures = {
        "rss_start_mb": started / MiB,
        "rss_baseline_mb": baseline / MiB,
        "rss_with_clients_mb": with_clients / MiB,
        "rss_peak_mb": peak / MiB,
        "rss_after_mb": after / MiB,
        "kernel_send_queue_peak_mb": send_queue / MiB,
        "sent_mb": sent / MiB,
        "warmup_mb": warm / MiB,
        "seconds": elapsed,
    }
    for name, value in figures.items():
        record_property(name, round(value, 1))
    print("live clients memory:", {k: round(v, 1) for k, v in figures.items()})
    assert health["live_dropped"] == n_slow and health["live_clients"] == 1  # the reader stays
    assert dropped(samples) == n_slow
    assert closed == n_slow, f"{n_slow - closed} dropped clients still connected"
    growth = peak - baseline
    assert growth < 50 * MiB, f"RSS grew {growth / MiB:.1f} MB with {n_slow} clients that never read"
    # what the kernel holds for them is bounded by the socket buffer (SO_SNDBUF, doubled by Linux)
    assert send_queue <= (n_slow + 1) * 2 * settings.web_live_socket_buffer_bytes, send_queue


def test_the_live_feed_reconnects_with_backoff_and_starts_over_after_a_clean_return(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The broker going away twice: pauses 0.5-1 then 1-1.5 s (stamina's backoff, jittered), one
    warning each and the status says so; a clean return starts a new retry context (0.5-1 s
    again); stopping the server (cancellation) is not retried."""
    from streams.transient import RETRY_JITTER_SECONDS, RETRY_MIN_SECONDS

    real_sleep = asyncio.sleep
    pauses: list[float] = []
    statuses: list[str] = []

    async def sleep(delay: float, result: object = None) -> object:
        pauses.append(delay)
        statuses.append(feed.status)
        return await real_sleep(0, result)

    runs = [0]

    async def follow() -> None:
        runs[0] += 1
        if runs[0] in (1, 2, 4):
            raise ConnectionResetError(f"run {runs[0]}")
        if runs[0] == 5:
            raise asyncio.CancelledError

    feed = web.LiveFeed(Settings(), WebMetrics())
    monkeypatch.setattr(feed, "_follow", follow)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    caplog.set_level(logging.WARNING, logger="streams.web.live")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(feed.run())
    first = (RETRY_MIN_SECONDS, RETRY_MIN_SECONDS + RETRY_JITTER_SECONDS)
    second = (2 * RETRY_MIN_SECONDS, 2 * RETRY_MIN_SECONDS + RETRY_JITTER_SECONDS)
    assert runs == [5] and len(pauses) == 3, pauses
    assert all(low <= pause <= high for pause, (low, high) in zip(pauses, (first, second, first), strict=True)), pauses
    assert statuses == ["reconnecting (ConnectionResetError)"] * 3
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [f"live feed: ConnectionResetError('run {run}'); retrying in {pause:.1f} s" for run, pause in zip((1, 2, 4), pauses, strict=True)]
