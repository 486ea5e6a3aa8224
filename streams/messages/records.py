"""Input messages: decode, validate, and turn into typed records — or refuse with a reason code.

Two stages, both pure (no Redis, no Kafka):

1. :func:`decode_input` — bytes → a typed record, checking only what the message itself can
   tell: size and JSON here, then its structure against the topic's published JSON Schema
   (``streams/messages/schemas/*.json`` through :func:`streams.messages.schemas.input_violation`: types, the
   model-id pattern, finiteness, duplicates …), then the key;
2. :func:`align_to_universe` — a record's values placed on its round's universe (wrong
   length, unknown or missing ids), once the worker has looked the round up.

Every refusal is an :class:`~streams.errors.InvalidMessage` whose ``reason`` is a stable code,
listed in :data:`REASONS`; the worker puts the original bytes on the dead-letter topic with it.
Unknown extra fields are ignored (producers may add fields before the service knows them).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson
from numpy.typing import NDArray

from streams.errors import InvalidMessage
from streams.messages.schemas import input_violation

#: Every reason code the service puts in the ``mmc.error.reason`` header.
REASONS: dict[str, str] = {
    "empty": "the message has no value",
    "oversize": "the message is larger than MMC_MAX_MESSAGE_BYTES",
    "not_json": "the value is not UTF-8 JSON",
    "wrong_type": "the value is not a JSON object, or a field has the wrong JSON type",
    "missing_field": "a required field is absent",
    "bad_field": "a field has an invalid value (e.g. a negative round, an unknown event type)",
    "bad_key": "the Kafka key is missing or does not match the value (model for submissions/stakes, round for rounds/targets)",
    "bad_model_id": "the model id does not match ^[A-Za-z0-9_\\-\\.]{1,64}$",
    "bad_id": "an id of the universe is not a string of 1-128 characters",
    "non_finite": "a number is NaN, ±inf or null where a finite number is required",
    "negative_stake": "a stake is below zero",
    "wrong_length": "predictions/targets do not line up with the round's ids (or with the ids given beside them)",
    "duplicate_ids": "the same id appears twice",
    "unknown_ids": "an id is not in the round's universe",
    "missing_ids": "a submission does not cover every id of the round",
    "too_many_ids": "a universe larger than MMC_MAX_IDS",
    "unknown_round": "the round was never opened",
    "round_exists": "a round is opened again with a different universe",
    "round_already_closed": "a second, different close for a round that is closed",
    "round_closed": "a submission (or round-specific stake) after the round's close",
    "superseded": "a submission older (in event time) than the one already stored for that round and model",
    "round_not_closed": "targets for a round that has not closed",
    "too_many_missing_targets": "more than 20% of the round's ids have no target: the update is not scored",
    "no_submissions": "targets for a round without any accepted submission",
    "clock_skew": "the record's timestamp is further ahead of the worker's clock than MMC_MAX_CLOCK_SKEW_SECONDS",
    "internal_error": "the worker failed on this message; see the error message and the worker log",
}

NON_FINITE_LITERAL = re.compile(rb"-?\bInfinity\b|\bNaN\b")
MODEL_ID = re.compile(r"[A-Za-z0-9_\-\.]{1,64}")
MAX_ID_LENGTH = 128
#: Integer fields (round, day) stay below 2^53, where JSON numbers are exact in every parser.
INTEGER_LIMIT = 2**53


def refuse(reason: str, message: str) -> InvalidMessage:
    """An :class:`InvalidMessage` with a known reason code."""
    if reason not in REASONS:  # a programming error, never input-dependent
        raise ValueError(f"unknown reason code {reason!r}")
    return InvalidMessage(reason, message)


def check_event_time(record: InputRecord, now_ms: int, max_skew_ms: int) -> None:
    """Refuse ``clock_skew`` a record stamped more than ``max_skew_ms`` after ``now_ms``.

    Event time drives every lifecycle decision and the rounds watermark only moves forward,
    so one record stamped in the future (a producer with a wrong clock) would otherwise stand
    for every record after it. The bound is Kafka's own at append time
    (``log.message.timestamp.after.max.ms``).
    """
    if record.timestamp_ms > now_ms + max_skew_ms:
        ahead = (record.timestamp_ms - now_ms) / 1000
        raise refuse("clock_skew", f"the record is stamped {ahead:,.0f} s ahead of the worker's clock (limit {max_skew_ms / 1000:,.0f} s)")


@dataclass(frozen=True)
class InputRecord:
    """One Kafka record as the worker received it."""

    topic: str  # short name: rounds, submissions, stakes, targets
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def fetched(cls, topic: str, message: Any) -> InputRecord:
        """A record fetched by an aiokafka consumer, under its topic's short name."""
        return cls(topic, message.partition, message.offset, message.timestamp, message.key, message.value)


@dataclass(frozen=True)
class RoundOpen:
    round: int
    ids: tuple[str, ...]


@dataclass(frozen=True)
class RoundClose:
    round: int


@dataclass(frozen=True)
class Submission:
    round: int
    model: str
    predictions: NDArray[np.float64]
    ids: tuple[str, ...] | None  # None: aligned to the round's universe


@dataclass(frozen=True)
class StakeUpdate:
    model: str
    stake: float
    round: int | None  # None: effective for every round closing after the update


@dataclass(frozen=True)
class TargetsUpdate:
    round: int
    day: int
    final: bool
    targets: NDArray[np.float64]  # NaN = not resolved yet
    ids: tuple[str, ...] | None


Record = RoundOpen | RoundClose | Submission | StakeUpdate | TargetsUpdate


def parse_json(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """The JSON object in ``value``; refuses empty, oversize, non-JSON and non-object values."""
    if value is None or len(value) == 0:
        raise refuse("empty", "the message has no value")
    if len(value) > max_bytes:
        raise refuse("oversize", f"{len(value):,} bytes is over the {max_bytes:,}-byte limit")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _explain_json_error(value, exc) from None
    if not isinstance(doc, dict):
        raise refuse("wrong_type", f"the value must be a JSON object, got {type(doc).__name__}")
    return doc


def _explain_json_error(value: bytes, exc: orjson.JSONDecodeError) -> InvalidMessage:
    """``non_finite`` for JSON that only fails because of NaN/Infinity literals, else ``not_json``."""
    if b"NaN" in value or b"Infinity" in value:
        # With the literals made null, does it parse? Then they were the only problem. (orjson
        # again, not the stdlib: its nesting limit is fixed, so the answer never depends on how
        # deep the caller's stack happens to be.)
        try:
            orjson.loads(NON_FINITE_LITERAL.sub(b"null", value))
        except orjson.JSONDecodeError:
            pass
        else:
            return refuse("non_finite", "NaN/Infinity are not JSON numbers; send finite numbers (or null for a missing target)")
    return refuse("not_json", f"not valid UTF-8 JSON: {exc}")


def _field(doc: dict[str, Any], name: str) -> Any:
    if name not in doc:
        raise refuse("missing_field", f"field {name!r} is required")
    return doc[name]


def _int_field(doc: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = _field(doc, name)
    if isinstance(value, float) and value.is_integer():  # 812.0 is an integer in JSON Schema
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse("wrong_type", f"{name!r} must be an integer, got {type(value).__name__}")
    if value < minimum or value >= INTEGER_LIMIT:
        raise refuse("bad_field", f"{name!r} must be between {minimum} and 2^53, got {value}")
    return value


def _model_field(doc: dict[str, Any]) -> str:
    model = _field(doc, "model")
    if not isinstance(model, str):
        raise refuse("wrong_type", f"'model' must be a string, got {type(model).__name__}")
    if not MODEL_ID.fullmatch(model):
        raise refuse("bad_model_id", f"model id {model[:80]!r} does not match ^[A-Za-z0-9_\\-\\.]{{1,64}}$")
    return model


def _ids_field(doc: dict[str, Any], name: str = "ids") -> tuple[str, ...]:
    # The input schema checked the list, each id (bad_id) and uniqueness (duplicate_ids).
    ids = _field(doc, name)
    if not isinstance(ids, list):
        raise refuse("wrong_type", f"{name!r} must be a list of strings")
    return tuple(ids)


def _numbers_field(doc: dict[str, Any], name: str, allow_null: bool) -> NDArray[np.float64]:
    values = _field(doc, name)
    if not isinstance(values, list):
        raise refuse("wrong_type", f"{name!r} must be a list of numbers")
    # The input schema checked every value (a number; null only where allow_null: a missing
    # target), so the conversion needs no Python loop per value.
    # null -> NaN with np.array; fromiter is the faster conversion when nulls are refused
    arr = np.array(values, dtype=np.float64) if allow_null else np.fromiter(values, dtype=np.float64, count=len(values))
    if np.isinf(arr).any():
        raise refuse("non_finite", f"{name} holds a number too large for float64")
    return arr


def _key_text(record: InputRecord) -> str:
    if record.key is None:
        raise refuse("bad_key", "the message has no key; always key messages (model or round)")
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("bad_key", "the key is not UTF-8") from None


def _check_key(record: InputRecord, expected: str) -> None:
    key = _key_text(record)
    if key != expected:
        raise refuse("bad_key", f"key {key[:80]!r} does not match the value's {expected[:80]!r}")


def decode_input(record: InputRecord, max_bytes: int, max_ids: int) -> Record:
    """Decode and validate one input record (everything that needs no state).

    A submission in the common shape takes :func:`fast_submission` (same result, no Python
    object per prediction); anything that path is not sure of goes the general way.

    Raises:
        InvalidMessage: with a reason code from :data:`REASONS`.
    """
    if record.topic == "submissions":
        fast = fast_submission(record, max_bytes)
        if fast is not None:
            return fast
    return decode_general(record, max_bytes, max_ids)


def decode_general(record: InputRecord, max_bytes: int, max_ids: int) -> Record:
    """:func:`decode_input` without the submissions fast path: JSON, then the published schema."""
    doc = parse_json(record.value, max_bytes)
    violation = input_violation(record.topic, doc)
    if violation is not None:
        raise refuse(*violation)
    if record.topic == "rounds":
        kind = _field(doc, "type")
        rnd = _int_field(doc, "round")
        _check_key(record, str(rnd))
        if kind == "open":
            ids = _ids_field(doc)
            if len(ids) < 2:
                raise refuse("bad_field", "a round needs at least 2 ids")
            if len(ids) > max_ids:
                raise refuse("too_many_ids", f"{len(ids):,} ids is over the {max_ids:,} limit")
            return RoundOpen(rnd, ids)
        if kind == "close":
            return RoundClose(rnd)
        raise refuse("bad_field", f"'type' must be 'open' or 'close', got {str(kind)[:40]!r}")
    if record.topic == "submissions":
        rnd = _int_field(doc, "round")
        model = _model_field(doc)
        _check_key(record, model)
        preds = _numbers_field(doc, "predictions", allow_null=False)
        given_ids = _ids_field(doc) if "ids" in doc else None
        if given_ids is not None and len(given_ids) != preds.size:
            raise refuse("wrong_length", f"{preds.size} predictions beside {len(given_ids)} ids")
        return Submission(rnd, model, preds, given_ids)
    if record.topic == "stakes":
        model = _model_field(doc)
        _check_key(record, model)
        stake = _field(doc, "stake")
        if isinstance(stake, bool) or not isinstance(stake, (int, float)):
            raise refuse("wrong_type", f"'stake' must be a number, got {type(stake).__name__}")
        if not math.isfinite(stake):
            raise refuse("non_finite", "'stake' must be finite")
        if stake < 0:
            raise refuse("negative_stake", f"stake {stake} is below zero")
        rnd_opt = _int_field(doc, "round") if doc.get("round") is not None else None
        return StakeUpdate(model, float(stake), rnd_opt)
    if record.topic == "targets":
        rnd = _int_field(doc, "round")
        _check_key(record, str(rnd))
        day = _int_field(doc, "day")
        final = _field(doc, "final")
        if not isinstance(final, bool):
            raise refuse("wrong_type", "'final' must be true or false")
        targets = _numbers_field(doc, "targets", allow_null=True)
        given_ids = _ids_field(doc) if "ids" in doc else None
        if given_ids is not None and len(given_ids) != targets.size:
            raise refuse("wrong_length", f"{targets.size} targets beside {len(given_ids)} ids")
        return TargetsUpdate(rnd, day, final, targets, given_ids)
    raise ValueError(f"not an input topic: {record.topic!r}")  # wiring error, not input


_SUBMISSION_FIELDS = frozenset({"round", "model", "predictions"})


def fast_submission(record: InputRecord, max_bytes: int) -> Submission | None:
    """The submission in ``record`` when it certainly is a valid one in the common shape, else None.

    The common shape is a flat object ``{"round": int, "model": str, "predictions": [numbers]}``
    (no ``ids``, no other fields) keyed by its model. It is parsed with simdjson straight into
    a float64 array — no Python float per prediction, ~4× faster than JSON → list → array —
    and only *accepted* here: every check below implies the published schema's, and anything
    else (other fields, nesting, duplicate keys, a non-number, ``812.0`` as round, a bad key …)
    returns None so that :func:`decode_input`'s general path decides, refusals included. Both
    parsers round decimal text to the nearest double, so the values are the same bits
    (``tests/streams/messages/test_records.py`` checks both paths against each other).
    """
    value = record.value
    if value is None or not 0 < len(value) <= max_bytes:
        return None
    # One '[' and one '{': no nested array inside predictions (simdjson's buffer would
    # flatten it) and no nested object anywhere. ids/other fields take the general path.
    if value.find(b"[", value.find(b"[") + 1) != -1 or value.find(b"{", value.find(b"{") + 1) != -1:
        return None  # (find is memchr: ~20x faster than count on 130 KB)
    try:
        doc = _parse(value)
        if not isinstance(doc, simdjson.Object):
            return None
        keys = list(doc.keys())
        if len(keys) != 3 or set(keys) != _SUBMISSION_FIELDS:
            return None
        rnd, model, predictions = doc["round"], doc["model"], doc["predictions"]
        if not isinstance(predictions, simdjson.Array):
            return None
        values = np.frombuffer(predictions.as_buffer(of_type="d"), dtype=np.float64).copy()
    except (ValueError, TypeError, RuntimeError):  # not JSON, a number out of range, a non-number item …
        return None
    if type(rnd) is not int or not 0 <= rnd < INTEGER_LIMIT:
        return None
    if type(model) is not str or not MODEL_ID.fullmatch(model):
        return None
    if record.key is None or record.key != model.encode():
        return None
    if not np.isfinite(values).all():
        return None
    return Submission(rnd, model, values, None)


_PARSERS = threading.local()


def _parse(value: bytes) -> Any:
    """Parse with this thread's simdjson parser, reused: a new parser allocates its buffers for
    every document (~0.07 ms of a submission's ~0.3 ms decode). A parser cannot be reused while
    anything of its previous document is still referenced (simdjson raises); :func:`fast_submission`
    keeps nothing, but should anything hold on, a new parser takes over."""
    parser = getattr(_PARSERS, "parser", None)
    if parser is not None:
        try:
            return parser.parse(value)
        except RuntimeError as exc:
            if "re-use" not in str(exc):
                raise
    parser = _PARSERS.parser = simdjson.Parser()
    return parser.parse(value)


def align_to_universe(values: NDArray[np.float64], ids: tuple[str, ...] | None, universe_index: dict[str, int], partial: bool) -> NDArray[np.float64]:
    """Place ``values`` on the round's universe order.

    Arguments:
        values: as sent; ids: the ids beside them, or None when already aligned.
        universe_index: id → position in the round's universe.
        partial: True for targets (absent ids become NaN = missing), False for submissions
            (every id required).
    """
    n = len(universe_index)
    if ids is None:
        if values.size != n:
            raise refuse("wrong_length", f"{values.size} values for a round of {n} ids")
        return values
    out = np.full(n, np.nan)
    positions = [universe_index.get(i, -1) for i in ids]
    if -1 in positions:
        unknown = ids[positions.index(-1)]
        raise refuse("unknown_ids", f"id {unknown[:80]!r} is not in the round's universe")
    out[np.asarray(positions, dtype=np.intp)] = values
    if not partial and len(ids) != n:
        raise refuse("missing_ids", f"{n - len(ids)} of the round's {n} ids have no prediction")
    return out
