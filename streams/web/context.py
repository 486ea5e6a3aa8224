"""What the application holds for its handlers: settings, state store, metrics, its OpenAPI document (aiohttp app keys).

The live feed's key, :data:`streams.web.live.FEED`, is defined beside the feed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from streams.settings import Settings
from streams.state import RedisState
from streams.web.metrics import WebMetrics

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", RedisState)
METRICS = web.AppKey("metrics", WebMetrics)
FEED_TASK = web.AppKey("feed_task", asyncio.Task)
OPENAPI = web.AppKey("openapi", dict[str, Any])
