"""The page, the JSON API and ``/metrics``: read-only views of the state the workers keep in Redis.

Each handler takes the request and its parameters, already checked by the route's parameter
model (:mod:`streams.web.models`), and returns a response model (written as JSON, status 200)
or a finished response. Errors are raised as :class:`~streams.errors.ApiError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.errors import ApiError
from streams.messages.resolution import standing
from streams.metrics import CONTENT_TYPE
from streams.web.context import METRICS, OPENAPI, SETTINGS, STATE
from streams.web.live import FEED
from streams.web.models import (
    Alerts,
    AlertsQuery,
    CrowdPoint,
    CrowdTaxEntry,
    Health,
    HistoryEntry,
    Leaderboard,
    LeaderboardQuery,
    ModelNeighbours,
    ModelNeighboursQuery,
    ModelPath,
    ModelView,
    NoParameters,
    RoundPath,
    Rounds,
    RoundScores,
    RoundScoresParameters,
    RoundSummary,
    Trend,
)
from streams.web.responses import json_response

STATIC_DIR = Path(__file__).parents[1] / "webstatic"
HTML_HEADERS = {
    "Cache-Control": "no-cache",
    # Everything the page needs is served from here: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


# --------------------------------------------------------------------------- pages


async def page(request: web.Request, params: NoParameters) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=HTML_HEADERS)


async def model_page(request: web.Request, params: ModelPath) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=HTML_HEADERS)


async def metrics_page(request: web.Request, params: NoParameters) -> web.StreamResponse:
    app = request.app
    body = await app[METRICS].render(app.get(STATE), app[SETTINGS].partitions)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def api_openapi(request: web.Request, params: NoParameters) -> web.StreamResponse:
    return json_response(request.app[OPENAPI])


# --------------------------------------------------------------------------- API


async def api_leaderboard(request: web.Request, params: LeaderboardQuery) -> Leaderboard:
    """The rolling leaderboard, best first: each row as on the leaderboard topic (rank, n_models included)."""
    state = request.app[STATE]
    rows = await state.leaderboard(params.limit)
    _, size = await state.ranks([])
    ranked = [{**row, "rank": i, "n_models": size} for i, row in enumerate(rows, start=1)]
    return Leaderboard(window=request.app[SETTINGS].leaderboard_window, n_models=size, rows=ranked)


async def api_model(request: web.Request, params: ModelPath) -> ModelView:
    """A model's score history by round, its rank and its rolling standing."""
    model = params.model
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
    return ModelView(
        model=model,
        rank=rank,
        n_models=size,
        standing=row,
        history=[HistoryEntry.model_validate(history[r]) for r in sorted(history)],
    )


async def api_model_neighbours(request: web.Request, params: ModelNeighboursQuery) -> ModelNeighbours:
    """Who crowds a model: its neighbours message of a round (its latest by default), its crowd over
    the rounds kept and its crowding tax in the final rounds kept."""
    model = params.model
    state = request.app[STATE]
    stored = await state.get_neighbours(model)
    if not stored and model not in await state.all_models():
        raise ApiError(404, "unknown_model", f"model {model!r} has never submitted")
    if params.round is None:
        if not stored:
            raise ApiError(404, "no_neighbours", f"no round of model {model!r} has closed with neighbours yet")
        r = max(stored)
    else:
        r = await _known_round(request, params.round)
        if r not in stored:
            raise ApiError(404, "no_neighbours", f"model {model!r} has no neighbours kept for round {r}")
    tax = await state.get_crowd_tax(model)
    return ModelNeighbours(
        model=model,
        round=r,
        neighbours=stored[r],
        crowd=[CrowdPoint(round=rr, crowd_share=m["crowd_share"], crowd_size=m["crowd_size"], own_share=m["own_share"]) for rr, m in stored.items()],
        tax=[CrowdTaxEntry(round=rr, **figures) for rr, figures in tax.items()],
    )


async def api_rounds(request: web.Request, params: NoParameters) -> Rounds:
    """Every round ever opened, newest last, with its latest scored update's headline figures."""
    state = request.app[STATE]
    rounds = await state.known_rounds()
    trend = await state.get_trend()
    out = []
    for r in rounds:
        figures = trend.get(r) or {}
        out.append(
            RoundSummary(
                round=r,
                scored=r in trend,
                day=figures.get("day"),
                final=figures.get("final"),
                n_models=figures.get("n_models"),
                stake_weighted_cwmm=figures.get("stake_weighted_cwmm"),
                median_cwmm=figures.get("median_cwmm"),
            )
        )
    return Rounds(rounds=out)


def _sort_key(key: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    def by(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(key)
        return (1, 0) if value is None or (isinstance(value, float) and math.isnan(value)) else (0, value)

    return by


async def _known_round(request: web.Request, r: int) -> int:
    if r not in await request.app[STATE].known_rounds():
        raise ApiError(404, "unknown_round", f"round {r} was never opened")
    return r


async def api_round_scores(request: web.Request, params: RoundScoresParameters) -> RoundScores:
    """The round's latest score message of every model (as on the scores topic), sorted."""
    r = await _known_round(request, params.round)
    key, order = params.sort, params.direction
    scores = list((await request.app[STATE].get_round_scores(r)).values())
    present = [s for s in scores if _sort_key(key)(s)[0] == 0]
    absent = sorted((s for s in scores if _sort_key(key)(s)[0] == 1), key=lambda s: s["model"])
    present.sort(key=lambda s: (s[key], s["model"]), reverse=order == "desc")
    latest = max(scores, key=lambda s: (s["final"], s["day"]), default=None)
    return RoundScores(
        round=r,
        day=latest["day"] if latest else None,
        final=latest["final"] if latest else None,
        n_models=len(scores),
        sort=key,
        order=order,
        scores=(present + absent)[: params.limit],
    )


async def api_round_crowding(request: web.Request, params: RoundPath) -> web.StreamResponse:
    """The round's latest crowding message (as on the crowding topic)."""
    r = await _known_round(request, params.round)
    crowding = await request.app[STATE].get_round_crowding(r)
    if crowding is None:
        raise ApiError(404, "not_scored", f"round {r} has no scored update yet")
    return json_response(crowding)


async def api_alerts(request: web.Request, params: AlertsQuery) -> Alerts:
    """Recent alerts, newest first."""
    return Alerts(alerts=await request.app[STATE].recent_alerts(params.limit))


async def api_trend(request: web.Request, params: NoParameters) -> Trend:
    """Each scored round's crowding figures, by round: stake-weighted mean vs median CWMM and more."""
    trend = await request.app[STATE].get_trend()
    return Trend(trend=[trend[r] for r in sorted(trend)])


async def api_health(request: web.Request, params: NoParameters) -> web.StreamResponse:
    """200 when Redis answers (the live feed's state is reported, not required), else 503."""
    app = request.app
    feed = app[FEED]
    redis = "ok"
    try:
        await app[STATE].r.ping()
    except Exception as exc:
        redis = f"unreachable ({type(exc).__name__})"
    body = Health(
        status="ok" if redis == "ok" else "unavailable",
        redis=redis,
        kafka=feed.status,
        live_clients=feed.clients,
        live_clients_max=app[SETTINGS].web_live_max_clients,
        live_dropped=feed.dropped,
    )
    return json_response(body, 200 if body.status == "ok" else 503)
