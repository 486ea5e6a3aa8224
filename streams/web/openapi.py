"""The OpenAPI 3.1 document of ``mmc web``, generated from the route table and the models.

- paths and operations: one per :data:`~streams.web.routes.ROUTES` entry, the table the
  application registers;
- parameters: from each route's parameter model (the model that checks them), a path
  parameter when the path names it, a query parameter otherwise; a route with parameters
  documents the 400 its model answers, with the reason codes it can give;
- response bodies: the response models' JSON Schemas (by pydantic), and for output-topic
  messages the topic's published JSON Schema (``streams/messages/schemas/``) as a component.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import orjson
from pydantic import TypeAdapter

from streams.messages.schemas import OUTPUT_SCHEMAS, load_schema
from streams.settings import Settings
from streams.web.models import TOPIC_SCHEMA_KEY, DocumentSchema, Error, Refusal, parameter_schema, without_null
from streams.web.routes import ROUTES, Reply, Route

COMPONENTS = "#/components/schemas/"
BodySchema = Callable[[Any], dict[str, Any]]


def openapi_document(settings: Settings, routes: Sequence[Route[Any]] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``routes`` (every route served, by default)."""
    body_schema, models = _body_schemas(routes)
    topics = topic_components()
    clash = set(models) & set(topics)
    if clash:
        raise ValueError(f"response models named like topic schemas: {', '.join(sorted(clash))}")
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "mmc-stream live leaderboard API",
            "version": "1",
            "description": "Read-only views of the scorer's state (Redis) and a live stream of its output topics "
            f"(prefix {settings.topic_prefix!r}). Bodies of scores, leaderboard rows, crowding reports and alerts are "
            "the messages of those topics, described by the JSON Schemas in streams/messages/schemas/.",
        },
        "tags": [
            {"name": "pages", "description": "The live leaderboard's HTML pages"},
            {"name": "api", "description": "The JSON API and the live stream"},
            {"name": "ops", "description": "Health, metrics and this document"},
        ],
        "paths": {route.path: {"get": _operation(route, settings, body_schema)} for route in routes},
        "components": {"schemas": {**topics, **models}},
    }
    pointed: dict[str, Any] = _point_to_topics(document)
    return pointed


# --------------------------------------------------------------------------- operations


def _operation(route: Route[Any], settings: Settings, body_schema: BodySchema) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.name, "summary": route.summary, "tags": [route.tag]}
    if route.describe is not None:
        operation["description"] = route.describe(settings)
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    responses = {"200": _response(route.ok, body_schema)}
    if parameters:
        responses["400"] = _response(_bad_parameter(route), body_schema)
    responses.update((str(status), _response(reply, body_schema)) for status, reply in sorted(route.errors.items()))
    operation["responses"] = responses
    return operation


def _parameters(route: Route[Any]) -> list[dict[str, Any]]:
    """The route's parameter objects, from the JSON Schema of its parameter model."""
    schema = parameter_schema(route.parameters)
    if "$defs" in schema:
        raise ValueError(f"{route.parameters.__name__}: parameters are described inline (Literal, not Enum)")
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        described = without_null(prop)
        description = described.pop("description", None)
        where = "path" if name in route.placeholders else "query"
        parameter: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required, "schema": described}
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def _bad_parameter(route: Route[Any]) -> Reply:
    """The 400 a route's parameter model answers, with the reason codes its fields give."""
    codes = []
    for name, info in route.parameters.model_fields.items():
        refusal = next((m for m in info.metadata if isinstance(m, Refusal)), Refusal("bad_{name}", ""))
        codes.append(refusal.code.replace("{name}", name))
    return Reply(f"Bad parameter ({', '.join(codes)})", Error)


def _response(reply: Reply, body_schema: BodySchema) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": reply.description,
        "content": {reply.media: {"schema": body_schema(reply.body)}},
    }
    if reply.headers:
        response["headers"] = {name: {"description": text, "schema": {"type": "integer"}} for name, text in reply.headers.items()}
    return response


def _body_schemas(routes: Sequence[Route[Any]]) -> tuple[BodySchema, dict[str, Any]]:
    """Every response body's schema (a reference for a model) and the models' schemas, by pydantic in one pass."""
    bodies: list[Any] = [Error]
    for route in routes:
        for reply in (route.ok, *route.errors.values()):
            if not any(reply.body is seen for seen in bodies):
                bodies.append(reply.body)
    schemas, definitions = TypeAdapter.json_schemas(
        [(i, "serialization", TypeAdapter(body)) for i, body in enumerate(bodies)],
        ref_template=COMPONENTS + "{model}",
        schema_generator=DocumentSchema,
    )

    def body_schema(body: Any) -> dict[str, Any]:
        index = next(i for i, seen in enumerate(bodies) if body is seen)
        return deepcopy(schemas[(index, "serialization")])

    return body_schema, definitions.get("$defs", {})


# --------------------------------------------------------------------------- topic schemas


def topic_components() -> dict[str, Any]:
    """The output topics' JSON Schemas as components, and the two views the API derives from them."""
    leaderboard = _component("LeaderboardRow", OUTPUT_SCHEMAS["leaderboard"])
    crowding = _component("Crowding", OUTPUT_SCHEMAS["crowding"])
    standing = _retarget(_without(leaderboard, "rank", "n_models"), "LeaderboardRow", "Standing")
    standing["description"] = "The model's rolling standing computed from its history (as on the leaderboard topic, without rank)."
    figures = _retarget(_without(crowding, "trend"), "Crowding", "RoundFigures")
    figures["description"] = "A round's crowding figures at its latest scored update (the crowding message without its trend)."
    return {
        "Score": _component("Score", OUTPUT_SCHEMAS["scores"]),
        "LeaderboardRow": leaderboard,
        "Standing": standing,
        "Crowding": crowding,
        "RoundFigures": figures,
        "Alert": _component("Alert", OUTPUT_SCHEMAS["alerts"]),
        "Neighbours": _component("Neighbours", OUTPUT_SCHEMAS["neighbours"]),
    }


def _component(name: str, filename: str) -> dict[str, Any]:
    """A topic schema as an OpenAPI 3.1 component: its ``#/$defs`` refs re-pointed into components."""
    schema = deepcopy(load_schema(filename))
    schema.pop("$schema", None)
    schema.pop("$id", None)

    def repoint(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (f"{COMPONENTS}{name}/$defs/{v[len('#/$defs/') :]}" if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/") else repoint(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [repoint(x) for x in node]
        return node

    return repoint(schema)  # type: ignore[no-any-return]


def _without(schema: dict[str, Any], *names: str) -> dict[str, Any]:
    """A copy of an object schema without the properties ``names``."""
    out = deepcopy(schema)
    for name in names:
        out["properties"].pop(name)
        out["required"].remove(name)
    return out


def _retarget(schema: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Re-point a copied component's internal refs from ``old`` to ``new``."""
    raw = orjson.dumps(schema).replace(f"{COMPONENTS}{old}/".encode(), f"{COMPONENTS}{new}/".encode())
    return orjson.loads(raw)  # type: ignore[no-any-return]


def _point_to_topics(node: Any) -> Any:
    """Every topic-schema placeholder left by :func:`streams.web.models.topic_schema` as a reference to its component."""
    if isinstance(node, dict):
        return {("$ref" if k == TOPIC_SCHEMA_KEY else k): (COMPONENTS + v if k == TOPIC_SCHEMA_KEY else _point_to_topics(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_point_to_topics(x) for x in node]
    return node
