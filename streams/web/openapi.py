"""The OpenAPI 3.1 document of ``mmc web``: every route, its parameters and its response bodies.

Bodies that are output-topic messages reference the topics' JSON Schemas (``streams/schemas/``).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import orjson

from streams.records import MODEL_ID
from streams.schemas import OUTPUT_SCHEMAS, load_schema
from streams.settings import Settings
from streams.state import ALERTS_KEPT
from streams.web.handlers import LEADERBOARD_MAX, SORT_KEYS
from streams.web.live import KEEPALIVE_SECONDS


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
