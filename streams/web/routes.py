"""Every route of ``mmc web`` in one table: the application is built from it and the OpenAPI document describes it.

A :class:`Route` names its path, its handler, the model of its parameters and the responses it
gives; :func:`streams.web.app.create_web_app` registers exactly these routes and
:func:`streams.web.openapi.openapi_document` documents exactly these, so what is served and what
is documented cannot differ.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic

from aiohttp import web
from pydantic import BaseModel

from streams.settings import Settings
from streams.web.asyncapi import api_asyncapi
from streams.web.handlers import (
    api_alerts,
    api_health,
    api_leaderboard,
    api_model,
    api_model_neighbours,
    api_openapi,
    api_round_crowding,
    api_round_scores,
    api_rounds,
    api_trend,
    metrics_page,
    model_page,
    page,
)
from streams.web.live import KEEPALIVE_SECONDS, api_stream
from streams.web.models import (
    Alerts,
    AlertsQuery,
    CrowdingMessage,
    Error,
    Health,
    Leaderboard,
    LeaderboardQuery,
    ModelNeighbours,
    ModelNeighboursQuery,
    ModelPath,
    ModelView,
    NoParameters,
    P,
    RoundPath,
    Rounds,
    RoundScores,
    RoundScoresParameters,
    Trend,
    parse_parameters,
)
from streams.web.responses import json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: A route's handler: the request and its checked parameters in, a response model (JSON, 200) or a response out.
Endpoint = Callable[[web.Request, P], Awaitable[BaseModel | web.StreamResponse]]
PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Reply:
    """A response a route gives: what it means, its body's type (anything pydantic can describe) and media type."""

    description: str
    body: Any
    media: str = "application/json"
    #: Response headers worth documenting: name → what its (integer) value means.
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route(Generic[P]):
    """One GET route: its path template, handler, parameter model and responses (the 400 for bad parameters is implied)."""

    path: str
    name: str
    endpoint: Endpoint[P]
    parameters: type[P]
    summary: str
    tag: str
    ok: Reply
    errors: Mapping[int, Reply] = field(default_factory=dict)
    #: The operation's longer description, which may quote the settings in force.
    describe: Callable[[Settings], str] | None = None

    def __post_init__(self) -> None:
        missing = set(self.placeholders) - set(self.parameters.model_fields)
        if missing:
            raise ValueError(f"{self.path}: {self.parameters.__name__} has no field for {', '.join(sorted(missing))}")

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The path parameters' names, in order."""
        return tuple(PLACEHOLDER.findall(self.path))

    @property
    def pattern(self) -> str:
        """The path for aiohttp's router: a placeholder takes any one segment, so the parameter model decides what is refused."""
        return PLACEHOLDER.sub(r"{\1:[^/]+}", self.path)

    def handler(self) -> Handler:
        """The aiohttp handler: parameters checked (400 when broken), the endpoint called, a model written as JSON."""

        async def handle(request: web.Request) -> web.StreamResponse:
            values = {name: request.query[name] for name in self.parameters.model_fields if name in request.query}
            values.update(request.match_info)
            result = await self.endpoint(request, parse_parameters(self.parameters, values))
            return json_response(result) if isinstance(result, BaseModel) else result

        return handle


def _stream_description(settings: Settings) -> str:
    return (
        "Events named scores, leaderboard, crowding and alerts carry one message of that topic "
        "(JSON, the Score / LeaderboardRow / Crowding / Alert schemas) each; a hello event opens the stream, "
        "a resync event asks the client to reload its data; "
        f"comments keep it alive every {KEEPALIVE_SECONDS:g} s. "
        f"At most {settings.web_live_max_clients} streams are open (MMC_WEB_LIVE_MAX_CLIENTS); a client more "
        f"than {settings.web_live_client_buffer_bytes} bytes behind (MMC_WEB_LIVE_CLIENT_BUFFER_BYTES), or "
        f"whose socket does not take a write within {settings.web_live_write_timeout_seconds:g} s "
        "(MMC_WEB_LIVE_WRITE_TIMEOUT_SECONDS), is disconnected: reconnect and reload."
    )


HTML = Reply("The page (HTML; the data comes from the API)", str, "text/html")
REDIS_DOWN = {503: Reply("Redis unreachable (redis_unavailable)", Error)}

ROUTES: tuple[Route[Any], ...] = (
    Route("/", "page", page, NoParameters, "Live leaderboard page", "pages", HTML),
    Route("/models/{model}", "model_page", model_page, ModelPath, "A model's page: score history and CWMM over rounds", "pages", HTML),
    Route(
        "/api/leaderboard",
        "leaderboard",
        api_leaderboard,
        LeaderboardQuery,
        "Rolling leaderboard (latest MMC_LEADERBOARD_WINDOW rounds), best payout first",
        "api",
        Reply("Leaderboard rows as on the leaderboard topic", Leaderboard),
        REDIS_DOWN,
    ),
    Route(
        "/api/models/{model}",
        "model",
        api_model,
        ModelPath,
        "A model's score history by round, rank and rolling standing",
        "api",
        Reply("The model", ModelView),
        {404: Reply("The model has never submitted (unknown_model)", Error), **REDIS_DOWN},
    ),
    Route(
        "/api/models/{model}/neighbours",
        "model_neighbours",
        api_model_neighbours,
        ModelNeighboursQuery,
        "Who crowds a model: its nearest stakers in a round, its crowd's stake share over rounds, its crowding tax",
        "api",
        Reply("The model's neighbours (as on the neighbours topic), crowd and tax", ModelNeighbours),
        {
            404: Reply(
                "The model has never submitted (unknown_model), the round was never opened (unknown_round) or has no neighbours kept for it (no_neighbours)",
                Error,
            ),
            **REDIS_DOWN,
        },
    ),
    Route(
        "/api/rounds",
        "rounds",
        api_rounds,
        NoParameters,
        "Every round ever opened, with its latest scored update's headline",
        "api",
        Reply("Rounds", Rounds),
        REDIS_DOWN,
    ),
    Route(
        "/api/rounds/{round}/scores",
        "round_scores",
        api_round_scores,
        RoundScoresParameters,
        "The round's latest score message of every model, sorted",
        "api",
        Reply("Scores as on the scores topic; models without the sort metric last", RoundScores),
        {404: Reply("The round was never opened (unknown_round)", Error), **REDIS_DOWN},
    ),
    Route(
        "/api/rounds/{round}/crowding",
        "round_crowding",
        api_round_crowding,
        RoundPath,
        "The round's latest crowding report (as on the crowding topic)",
        "api",
        Reply("Crowding figures", CrowdingMessage),
        {404: Reply("The round was never opened (unknown_round) or has no scored update yet (not_scored)", Error), **REDIS_DOWN},
    ),
    Route(
        "/api/alerts",
        "alerts",
        api_alerts,
        AlertsQuery,
        "Recent alerts, newest first",
        "api",
        Reply("Alerts as on the alerts topic", Alerts),
        REDIS_DOWN,
    ),
    Route(
        "/api/trend",
        "trend",
        api_trend,
        NoParameters,
        "Crowding trend: each scored round's figures (stake-weighted mean vs median CWMM …)",
        "api",
        Reply("By round, oldest first", Trend),
        REDIS_DOWN,
    ),
    Route(
        "/api/health",
        "health",
        api_health,
        NoParameters,
        "Liveness: Redis reachable (200) or not (503); the live feed's state",
        "ops",
        Reply("Healthy", Health),
        {503: Reply("Redis unreachable", Health)},
    ),
    Route(
        "/api/stream",
        "stream",
        api_stream,
        NoParameters,
        "Live updates as server-sent events",
        "api",
        Reply("An endless event stream", str, "text/event-stream"),
        {
            503: Reply(
                "Too many live clients (too_many_live_clients): retry after Retry-After seconds",
                Error,
                headers={"Retry-After": "Seconds to wait before retrying"},
            )
        },
        describe=_stream_description,
    ),
    Route("/api/openapi.json", "openapi", api_openapi, NoParameters, "This document", "ops", Reply("OpenAPI 3.1", dict[str, Any])),
    Route(
        "/api/asyncapi.json",
        "asyncapi",
        api_asyncapi,
        NoParameters,
        "The Kafka topics (this server's prefix and partitions) as an AsyncAPI 3.0 document",
        "ops",
        Reply("AsyncAPI 3.0.0", dict[str, Any]),
    ),
    Route(
        "/metrics",
        "metrics",
        metrics_page,
        NoParameters,
        "Prometheus metrics of this server and of the state in Redis",
        "ops",
        Reply("Prometheus text format 0.0.4", str, "text/plain"),
    ),
)
