"""What the API takes and what it answers: parameter models and response models.

The same classes check a request's path and query parameters (:func:`parse_parameters`) and
describe them in the OpenAPI document (:mod:`streams.web.openapi`), so what is documented is
what is enforced. A parameter is a path parameter when the route's path names it
(``/api/rounds/{round}/scores``), a query parameter otherwise; one that breaks its constraints is
refused with HTTP 400 and the reason code of its :class:`Refusal`.

Bodies that are output-topic messages (scores, leaderboard rows, crowding reports, alerts) are
passed through as published: they are typed ``dict`` here and documented by the topic's JSON
Schema in ``streams/messages/schemas/`` (:func:`topic_schema`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation, ValidationError
from pydantic.json_schema import GenerateJsonSchema, WithJsonSchema

from streams.errors import ApiError
from streams.messages.records import MODEL_ID
from streams.state import ALERTS_KEPT

#: Most rows one request returns from a leaderboard or a round's scores.
LEADERBOARD_MAX = 10_000
SortKey = Literal["payout", "corr", "mmc", "contribution", "corr_w_mm", "stake", "model"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
Order = Literal["desc", "asc"]
#: Where a placeholder for a topic's JSON Schema sits in a generated schema (see :func:`topic_schema`).
TOPIC_SCHEMA_KEY = "x-topic-schema"


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Refusal:
    """How a parameter that breaks its constraints is refused: HTTP 400 with ``code`` and ``message``.

    In both, ``{name}`` is the parameter's name; in ``message``, ``{value}`` is the value sent
    (quoted, at most 80 characters) and ``{maximum}`` / ``{enum}`` are the bounds the OpenAPI document gives for it.
    """

    code: str
    message: str

    def render(self, name: str, value: object, schema: Mapping[str, Any]) -> str:
        fills = {
            "{name}": name,
            "{value}": repr(str(value)[:80]),
            "{maximum}": str(schema.get("maximum", "")),
            "{enum}": ", ".join(map(str, schema.get("enum", ()))),
        }
        text = self.message
        for placeholder, fill in fills.items():
            text = text.replace(placeholder, fill)
        return text


def digits(most: int) -> BeforeValidator:
    """Only plain decimal digits (at most ``most``) become a number: no sign, space, ``_`` or fraction."""
    pattern = re.compile(f"[0-9]{{1,{most}}}")

    def check(value: object) -> object:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"not a number of at most {most} digits")
        return value

    return BeforeValidator(check)


ModelId = Annotated[
    str,
    Field(pattern=f"^{MODEL_ID.pattern}$", description="A model id (the input topics' pattern)."),
    Refusal("bad_model_id", f"model id {{value}} does not match ^{MODEL_ID.pattern}$"),
]
RoundNumber = Annotated[
    int,
    # Rounds are JSON numbers: from 2^53 on, JavaScript clients would read another round.
    Field(ge=0, lt=2**53, description="A round number."),
    digits(16),
    Refusal("bad_round", "round {value} is not a non-negative integer below 2^53"),
]
Limit = Annotated[
    int,
    Field(ge=1, description="How many to return at most."),
    digits(6),
    Refusal("bad_limit", "limit must be an integer from 1 to {maximum}"),
]
OneOf = Refusal("bad_{name}", "{name} must be one of {enum}")


class Parameters(BaseModel):
    """A route's path and query parameters; query parameters it does not name are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class NoParameters(Parameters):
    """A route without parameters."""


class ModelPath(Parameters):
    model: ModelId


class RoundPath(Parameters):
    round: RoundNumber


class ModelNeighboursQuery(Parameters):
    model: ModelId
    round: Annotated[
        int | None,
        Field(ge=0, lt=2**53, description="The round (default: the model's latest round with neighbours)."),
        digits(16),
        Refusal("bad_round", "round {value} is not a non-negative integer below 2^53"),
    ] = None


class LeaderboardQuery(Parameters):
    limit: Limit = Field(100, le=LEADERBOARD_MAX)


class AlertsQuery(Parameters):
    limit: Limit = Field(50, le=ALERTS_KEPT)


class RoundScoresParameters(Parameters):
    round: RoundNumber
    sort: Annotated[SortKey, OneOf] = Field("payout", description="The column to sort by; models without it come last.")
    order: Annotated[Order | None, OneOf] = Field(None, description="desc by default (asc when sorting by model).")
    limit: Limit = Field(LEADERBOARD_MAX, le=LEADERBOARD_MAX)

    @property
    def direction(self) -> Order:
        """The order asked for, or the default for the sort key."""
        if self.order is not None:
            return self.order
        return "asc" if self.sort == "model" else "desc"


P = TypeVar("P", bound=Parameters)


class DocumentSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema without a title on every property (the property's name says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def parameter_schema(model: type[Parameters]) -> dict[str, Any]:
    """The JSON Schema of a parameter model's fields."""
    return model.model_json_schema(mode="validation", schema_generator=DocumentSchema)


def without_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter's schema without its ``null`` branch: an absent parameter is simply not sent."""
    out = dict(schema)
    branches = [b for b in out.pop("anyOf", ()) if b != {"type": "null"}]
    if len(branches) == 1:
        out.update(branches[0])
    elif branches:
        out["anyOf"] = branches
    if out.get("default", ...) is None:
        del out["default"]
    return out


def parse_parameters(model: type[P], values: Mapping[str, str]) -> P:
    """``values`` (path and query, as sent) checked by ``model``; the first broken one is refused.

    Raises :class:`ApiError` 400 with the field's :class:`Refusal` (``bad_<name>`` when it has none).
    """
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "parameters"
        field = model.model_fields.get(name)
        refusal = next((m for m in field.metadata if isinstance(m, Refusal)), None) if field else None
        schema = without_null(parameter_schema(model)["properties"].get(name, {}))
        if refusal is None:
            refusal = Refusal("bad_{name}", "{name}: " + first["msg"])
        raise ApiError(400, refusal.code.replace("{name}", name), refusal.render(name, values.get(name), schema)) from None


# --------------------------------------------------------------------------- responses


def topic_schema(component: str) -> WithJsonSchema:
    """Document a passed-through topic message by the topic's JSON Schema (component ``component``)."""
    return WithJsonSchema({TOPIC_SCHEMA_KEY: component})


ScoreMessage = Annotated[dict[str, Any], topic_schema("Score")]
LeaderboardRow = Annotated[dict[str, Any], topic_schema("LeaderboardRow")]
StandingRow = Annotated[dict[str, Any], topic_schema("Standing")]
CrowdingMessage = Annotated[dict[str, Any], topic_schema("Crowding")]
RoundFigures = Annotated[dict[str, Any], topic_schema("RoundFigures")]
AlertMessage = Annotated[dict[str, Any], topic_schema("Alert")]
NeighboursMessage = Annotated[dict[str, Any], topic_schema("Neighbours")]


class Body(BaseModel):
    """A JSON response body. Lists of topic messages are not copied or checked again: they were checked when published."""

    model_config = ConfigDict(frozen=True)


class Leaderboard(Body):
    """The rolling leaderboard (latest ``MMC_LEADERBOARD_WINDOW`` rounds), best payout first."""

    window: int = Field(description="Rounds in the rolling window.")
    n_models: int = Field(description="Models on the leaderboard.")
    rows: SkipValidation[list[LeaderboardRow]] = Field(description="Leaderboard messages with their rank.")


class HistoryEntry(Body):
    """The model's latest update in a round (final when it has arrived)."""

    round: int
    day: int
    final: bool
    stake: float
    corr: float | None
    mmc: float | None
    contribution: float | None
    corr_w_mm: float | None
    payout: float | None


class ModelView(Body):
    """A model's score history by round, its rank and its rolling standing."""

    model: str
    rank: int | None = Field(description="Its place on the leaderboard (none before it is on it).")
    n_models: int | None
    standing: StandingRow | None = Field(description="Its rolling standing computed from its history (as on the leaderboard topic, without rank).")
    history: list[HistoryEntry] = Field(description="One entry per round, oldest first.")


class CrowdPoint(Body):
    """A model's crowd in one round (from that round's neighbours message)."""

    round: int
    crowd_share: float | None = Field(description="Share of the round's stake held by the other stakers correlated ≥ threshold with the model.")
    crowd_size: int = Field(description="How many stakers that is.")
    own_share: float | None = Field(description="The model's own share of the round's stake.")


class CrowdTaxEntry(Body):
    """A model's crowding tax in one final round: today's MMC as scored and without its nearest stakers' stake."""

    round: int
    contribution: float | None = Field(description="MMC earned (today's MMC: contribution), as the round's stakes made it.")
    contribution_without_crowd: float | None = Field(description="The same with the stakes of its MMC_NEIGHBOURS_K nearest stakers set to 0.")
    tax: float | None = Field(description="contribution − contribution_without_crowd: what its crowd cost it (negative: its crowd helped).")
    removed_share: float | None = Field(description="The share of the round's stake set to 0.")
    status: str = Field(description="ok, no_neighbours, no_stake_left or no_meta_model (scoring.CrowdTax.status).")


class ModelNeighbours(Body):
    """Who crowds a model: its neighbours in one round, its crowd over its recent rounds and its crowding tax in recent final rounds."""

    model: str
    round: int = Field(description="The round of ``neighbours``.")
    neighbours: SkipValidation[NeighboursMessage] = Field(description="The round's neighbours message (as on the neighbours topic).")
    crowd: list[CrowdPoint] = Field(description="The model's crowd in every round with neighbours kept, oldest first.")
    tax: list[CrowdTaxEntry] = Field(description="Its crowding tax in the final rounds kept (stakers only), oldest first.")


class RoundSummary(Body):
    """A round and the headline figures of its latest scored update (none before one)."""

    round: int
    scored: bool
    day: int | None
    final: bool | None
    n_models: int | None
    stake_weighted_cwmm: float | None
    median_cwmm: float | None


class Rounds(Body):
    """Every round ever opened, newest last."""

    rounds: list[RoundSummary]


class RoundScores(Body):
    """The round's latest score message of every model, sorted; models without the sort column last."""

    round: int
    day: int | None
    final: bool | None
    n_models: int
    sort: SortKey
    order: Order
    scores: SkipValidation[list[ScoreMessage]]


class Alerts(Body):
    """Recent alerts (as on the alerts topic), newest first."""

    alerts: SkipValidation[list[AlertMessage]]


class Trend(Body):
    """Each scored round's crowding figures, oldest first."""

    trend: SkipValidation[list[RoundFigures]]


class Health(Body):
    """Whether Redis answers, the live feed's state and its clients."""

    status: Literal["ok", "unavailable"]
    redis: str
    kafka: str = Field(description="The live feed: starting, following, waiting for topics …, reconnecting …, off.")
    live_clients: int = Field(description="Open /api/stream connections.")
    live_clients_max: int = Field(description="The cap on them (MMC_WEB_LIVE_MAX_CLIENTS).")
    live_dropped: int = Field(description="Live clients dropped since start for falling behind or not reading.")


class ErrorDetail(Body):
    status: int = Field(description="The HTTP status.")
    code: str = Field(description="A stable reason code, e.g. bad_limit, unknown_round, redis_unavailable.")
    message: str


class Error(Body):
    """Every error the server answers: its status, a stable code and a message."""

    error: ErrorDetail
