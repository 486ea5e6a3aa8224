"""Running ``mmc web``: the aiohttp application served until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from streams.logs import quiet_libraries
from streams.settings import Settings
from streams.web.app import create_web_app

log = logging.getLogger(__name__)


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
