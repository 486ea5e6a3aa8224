"""The page, the JSON API's handlers and ``/metrics``: read-only views of the state the workers keep in Redis.

Errors are raised as :class:`~streams.web.responses.ApiError` (rendered as JSON with their
status); model ids in paths are checked against :data:`streams.records.MODEL_ID` before they
reach Redis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.metrics import CONTENT_TYPE
from streams.records import MODEL_ID
from streams.resolution import standing
from streams.state import ALERTS_KEPT
from streams.web.context import METRICS, SETTINGS, STATE
from streams.web.live import FEED
from streams.web.responses import ApiError, json_response

STATIC_DIR = Path(__file__).parents[1] / "webstatic"
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
