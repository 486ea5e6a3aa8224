"""The published JSON Schemas (draft 2020-12) of every topic, and the input validator built on them.

``streams/messages/schemas/`` holds one schema per topic — the contract producers and consumers read:

- inputs: ``rounds.json``, ``submissions.json``, ``stakes.json``, ``targets.json``;
- outputs: ``scores.json``, ``leaderboard.json``, ``crowding.json``, ``alerts.json``,
  ``neighbours.json``;
- ``deadletter.headers.json``: the dead-letter record's headers as a JSON object (its value is
  the original bytes, so it has no schema of its own).

They are the one source of truth for the *structure* of an input: :func:`input_violation` is
what :func:`streams.messages.records.decode_input` validates with, so a message the published schema
accepts is never refused for its structure, and the reverse. What a value alone cannot tell
(the Kafka key, the size limits, alignment with the round's ids, the round's state) stays in
code. A violation is reported with the dead-letter reason code the schema names for it:

- ``x-mmc-reasons`` on a subschema maps a keyword to a reason (``{"pattern": "bad_model_id"}``);
- ``x-mmc-null-reason`` names the reason when the instance is ``null`` where the subschema
  wants another type (``non_finite`` for a null prediction);
- otherwise ``required`` → ``missing_field``, ``type`` → ``wrong_type``, any other keyword →
  ``bad_field``.

Validation is compiled once per schema with ``jsonschema-rs`` (Rust): a submission of 6,720
predictions validates in tens of microseconds, where a validator generated in Python
(fastjsonschema) loops over the items at ~1 ms — more than the whole decode took before.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs

from streams.errors import SchemaViolation

SCHEMA_DIR = Path(__file__).with_name("schemas")

#: Topic short name → schema file, for the input topics (validated on every message).
INPUT_SCHEMAS: dict[str, str] = {
    "rounds": "rounds.json",
    "submissions": "submissions.json",
    "stakes": "stakes.json",
    "targets": "targets.json",
}
#: Topic short name → schema file, for the JSON output topics.
OUTPUT_SCHEMAS: dict[str, str] = {
    "scores": "scores.json",
    "leaderboard": "leaderboard.json",
    "crowding": "crowding.json",
    "alerts": "alerts.json",
    "neighbours": "neighbours.json",
}
#: The dead-letter topic's headers (its value is the original bytes).
DEADLETTER_HEADERS = "deadletter.headers.json"

_DEFAULT_REASONS = {"required": "missing_field", "type": "wrong_type"}
_MESSAGE_CHARS = 300
_REPORT_DEPTH = 64  # nesting kept when a violation must be found on a truncated copy


@functools.cache
def load_schema(filename: str) -> dict[str, Any]:
    """The parsed schema file ``filename`` of ``streams/messages/schemas/`` (read once per process)."""
    with (SCHEMA_DIR / filename).open("rb") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@functools.cache
def _validator(filename: str) -> Any:
    """The compiled validator of ``filename`` (compiled on first use, then reused)."""
    return jsonschema_rs.validator_for(load_schema(filename))


def input_violation(topic: str, doc: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(reason, message)`` when ``doc`` breaks input topic ``topic``'s schema, else None.

    ``doc`` is a decoded JSON object. A topic without a schema returns None (the caller
    decides what an unknown topic means).
    """
    filename = INPUT_SCHEMAS.get(topic)
    if filename is None:
        return None
    validator = _validator(filename)
    try:
        validator.validate(doc)
    except jsonschema_rs.ValidationError as error:
        return _reason(load_schema(filename), doc, error)
    except ValueError:
        # jsonschema-rs cannot build the error of an instance nested deeper than 255 levels
        # ("Recursion limit reached"). No rule looks that deep: find it on a truncated copy.
        shallow = _truncated(doc, _REPORT_DEPTH)
        try:
            validator.validate(shallow)
        except jsonschema_rs.ValidationError as error:
            return _reason(load_schema(filename), shallow, error)
        return "bad_field", "the value is nested too deeply to tell which rule it breaks"
    return None


def _truncated(value: Any, depth: int) -> Any:
    """``value`` with every array and object nested deeper than ``depth`` levels emptied (types kept)."""
    if isinstance(value, list):
        return [_truncated(item, depth - 1) for item in value] if depth > 0 else []
    if isinstance(value, dict):
        return {key: _truncated(item, depth - 1) for key, item in value.items()} if depth > 0 else {}
    return value


def validate_output(topic: str, value: Any) -> None:
    """Check an output value (decoded JSON) against its topic's schema.

    Raises:
        SchemaViolation: the first rule it breaks.
        KeyError: ``topic`` has no output schema.
    """
    _check(OUTPUT_SCHEMAS[topic], value)


def validate_deadletter_headers(headers: Mapping[str, bytes]) -> None:
    """Check a dead-letter record's headers (name → bytes) against ``deadletter.headers.json``."""
    _check(DEADLETTER_HEADERS, {k: v.decode("utf-8") for k, v in headers.items()})


def _check(filename: str, value: Any) -> None:
    try:
        _validator(filename).validate(value)
    except jsonschema_rs.ValidationError as error:
        keyword = str(error.schema_path[-1]) if error.schema_path else ""
        raise SchemaViolation(filename, _pointer(error.instance_path), keyword, str(error.message)[:_MESSAGE_CHARS]) from None


def _pointer(path: Any) -> str:
    """``predictions[3]``-style location of an instance path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _at(node: Any, path: Any) -> Any:
    for part in path:
        node = node[part]
    return node


def _reason(schema: dict[str, Any], doc: Mapping[str, Any], error: Any) -> tuple[str, str]:
    """The reason code and a message for the first violation ``error`` of ``doc``."""
    keyword = str(error.schema_path[-1])
    subschema = _at(schema, error.schema_path[:-1])
    where = _pointer(error.instance_path)
    instance = _at(doc, error.instance_path)
    if keyword == "required":
        missing = [name for name in subschema["required"] if name not in instance]
        field = f"{where}.{missing[0]}" if where else missing[0]
        return "missing_field", f"field {field!r} is required"
    if keyword == "type" and instance is None and "x-mmc-null-reason" in subschema:
        return subschema["x-mmc-null-reason"], f"{where} is null; a finite number is required"
    reason = subschema.get("x-mmc-reasons", {}).get(keyword) or _DEFAULT_REASONS.get(keyword, "bad_field")
    if keyword == "type":
        wanted = subschema["type"]
        wanted_text = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return reason, f"{where or 'the value'} must be {wanted_text}, got {_json_type(instance)}"
    if reason == "bad_model_id":
        return reason, f"model id {str(instance)[:80]!r} does not match {subschema['pattern']}"
    if reason == "duplicate_ids":
        dup = _first_duplicate(instance)
        what = "an item" if dup is None else f"id {str(dup)[:80]!r}"
        return reason, f"{what} appears more than once in {where!r}"
    return reason, f"{where or 'the value'}: {str(error.message)[:_MESSAGE_CHARS]}"


def _first_duplicate(items: list[Any]) -> Any:
    """The first scalar of ``items`` equal (as JSON Schema compares) to an earlier one, else None.

    Arrays and objects are skipped: they are unhashable, and an id must be a string anyway.
    """
    seen: set[tuple[str, Any]] = set()
    for item in items:
        if isinstance(item, (list, dict)):
            continue
        # true is not 1 in JSON Schema (it is in Python); 1 and 1.0 are equal in both.
        kind = "bool" if isinstance(item, bool) else "str" if isinstance(item, str) else "scalar"
        key = (kind, item)
        if key in seen:
            return item
        seen.add(key)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
