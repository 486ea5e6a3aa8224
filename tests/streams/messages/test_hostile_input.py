"""Hostile input: property-based fuzzing of every input topic's decoder (pure: no broker, no Redis).

Whatever bytes arrive on ``rounds``, ``submissions``, ``stakes`` or ``targets``,
:func:`streams.messages.records.decode_input` returns a well-formed typed record or raises
:class:`~streams.errors.InvalidMessage` with a reason code of :data:`streams.messages.records.REASONS`
and a non-empty message — never another exception, never a hang. The same holds for
:func:`streams.messages.records.align_to_universe` on what the decoder accepted.

Example counts: ``MMC_FUZZ_EXAMPLES`` (default 300) per property in the default run;
the ``slow`` variant (``make test-slow``, i.e. ``pytest -m slow``) runs every property again with
``MMC_FUZZ_SLOW_EXAMPLES`` (default 2,000) examples: 7 properties, at least 14,000 examples and
about 32,000 decoded messages (the default run: about 4,800). Runs are derandomized (same
examples every run, no example database), and every example must finish within ``DEADLINE``
(Hypothesis' per-example deadline).

Found by these tests and fixed: NaN/Infinity inside JSON nested deeper than the stdlib parser
goes raised RecursionError (records._explain_json_error); a schema violation in a value nested
deeper than 255 levels raised jsonschema-rs' ValueError "Recursion limit reached"
(schemas.input_violation); duplicate arrays/objects in "ids" raised TypeError (unhashable)
while the refusal message was built (schemas._reason).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.messages.records as records_module
from streams.errors import InvalidMessage
from streams.messages.records import (
    MAX_ID_LENGTH,
    MODEL_ID,
    REASONS,
    InputRecord,
    Record,
    RoundClose,
    RoundOpen,
    StakeUpdate,
    Submission,
    TargetsUpdate,
    align_to_universe,
    decode_input,
)
from streams.state import Keys

ROOT = Path(__file__).resolve().parents[3]
TOPICS = ("rounds", "submissions", "stakes", "targets")
MAX_BYTES = 4 * 1024 * 1024  # Settings.max_message_bytes' default
MAX_IDS = 1_000
DEFAULT_EXAMPLES = int(os.environ.get("MMC_FUZZ_EXAMPLES", "300"))
SLOW_EXAMPLES = int(os.environ.get("MMC_FUZZ_SLOW_EXAMPLES", "2000"))
DEADLINE = timedelta(seconds=1)  # per example; a decode takes microseconds to milliseconds
SINGLE_DECODE_SECONDS = 1.0  # the same bound for the hand-written giant inputs

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=DEADLINE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of the suite's 600 s default

#: examples run and messages decoded, per property (the slow variant checks its budget with it).
COUNTS: Counter[str] = Counter()

# --- the checks every decoded message goes through -----------------------------------------

RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "rounds": (RoundOpen, RoundClose),
    "submissions": (Submission,),
    "stakes": (StakeUpdate,),
    "targets": (TargetsUpdate,),
}


def make_record(topic: str, key: bytes | None, value: bytes | None) -> InputRecord:
    return InputRecord(topic, 0, 42, 1_700_000_000_000, key, value)


def decode_checked(record: InputRecord, max_bytes: int = MAX_BYTES, max_ids: int = MAX_IDS) -> Record | InvalidMessage:
    """decode_input's record (checked well formed) or its InvalidMessage (checked documented).

    Any other exception propagates and fails the calling test.
    """
    COUNTS["messages"] += 1
    started = time.perf_counter()
    try:
        out = decode_input(record, max_bytes, max_ids)
    except InvalidMessage as exc:
        assert exc.reason in REASONS, f"undocumented reason {exc.reason!r}"
        assert isinstance(exc.message, str) and exc.message.strip(), f"empty message for {exc.reason!r}"
        result: Record | InvalidMessage = exc
    else:
        assert_well_formed(record, out, max_ids)
        result = out
    elapsed = time.perf_counter() - started
    assert elapsed < SINGLE_DECODE_SECONDS, f"decode took {elapsed:.2f} s"
    return result


def _is_round_number(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**53


def _assert_universe_ids(ids: object) -> None:
    assert isinstance(ids, tuple)
    assert all(isinstance(i, str) and 1 <= len(i) <= MAX_ID_LENGTH for i in ids), ids
    assert len(set(ids)) == len(ids), "duplicate ids accepted"


def assert_well_formed(record: InputRecord, out: Record, max_ids: int) -> None:
    """What an accepted record guarantees to the worker (and to the Redis keys built from it)."""
    assert isinstance(out, RECORD_TYPES[record.topic]), (record.topic, type(out))
    assert record.key is not None
    key = record.key.decode("utf-8")
    if isinstance(out, (RoundOpen, RoundClose, TargetsUpdate)):
        assert _is_round_number(out.round) and key == str(out.round)
    if isinstance(out, RoundOpen):
        _assert_universe_ids(out.ids)
        assert 2 <= len(out.ids) <= max_ids
    if isinstance(out, (Submission, StakeUpdate)):
        assert isinstance(out.model, str) and MODEL_ID.fullmatch(out.model), out.model
        assert key == out.model
    if isinstance(out, Submission):
        assert _is_round_number(out.round)
        assert out.predictions.dtype == np.float64 and out.predictions.ndim == 1
        assert np.isfinite(out.predictions).all()
    if isinstance(out, TargetsUpdate):
        assert _is_round_number(out.day) and isinstance(out.final, bool)
        assert out.targets.dtype == np.float64 and out.targets.ndim == 1
        assert not np.isinf(out.targets).any()
    if isinstance(out, (Submission, TargetsUpdate)):
        values = out.predictions if isinstance(out, Submission) else out.targets
        if out.ids is not None:
            _assert_universe_ids(out.ids)
            assert len(out.ids) == values.size
    if isinstance(out, StakeUpdate):
        assert type(out.stake) is float and math.isfinite(out.stake) and out.stake >= 0
        assert out.round is None or _is_round_number(out.round)


def reason_of(result: Record | InvalidMessage) -> str:
    return result.reason if isinstance(result, InvalidMessage) else "ok"


def same_record(a: Record, b: Record) -> bool:
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif x != y:
            return False
    return True


# --- strategies --------------------------------------------------------------------------

FIELD_NAMES = ("type", "round", "ids", "model", "predictions", "stake", "day", "final", "targets")
REQUIRED = {
    "rounds": {"type", "round"},
    "submissions": {"round", "model", "predictions"},
    "stakes": {"model", "stake"},
    "targets": {"round", "day", "final", "targets"},
}
NO_SURROGATES = st.characters(exclude_categories=("Cs",))
TEXT = st.one_of(st.text(max_size=20), st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3))
HUGE_INTS = st.sampled_from([10**400, -(10**400), 2**53, 2**53 - 1, 2**63, 2**64, -(2**63) - 1, 10**30])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(), TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.sampled_from(FIELD_NAMES) | TEXT, children, max_size=6),
    max_leaves=25,
)
#: JSON that any parser takes as it is: no NaN/Infinity, no integer beyond float64, no surrogate.
CLEAN_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(NO_SURROGATES, max_size=20),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(NO_SURROGATES, max_size=8), children, max_size=4),
    max_leaves=12,
)
PLAUSIBLE = st.one_of(
    st.sampled_from(["open", "close", "m1", "812", "", "NaN"]),
    st.integers(-5, 10**6),
    st.floats(),
    st.lists(st.floats() | st.none(), max_size=6),
    st.lists(st.text(max_size=6), max_size=6),
    st.from_regex(MODEL_ID, fullmatch=True),
    st.booleans(),
    st.none(),
)
VALID_MODEL = st.from_regex(MODEL_ID, fullmatch=True)
ROUND = st.integers(0, 2**53 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ID_TEXT = st.text(NO_SURROGATES, min_size=1, max_size=20)
HOSTILE_KEYS = st.one_of(
    st.none(),
    st.binary(max_size=80),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"m1", b"812", b"1", b"\xff", b"m1\x00", b" m1"]),
)
#: Characters that would matter in a Redis key (separators, hash tags, glob patterns, control
#: characters), and look-alikes of the allowed ones (Cyrillic а/е/М, fullwidth m, Kelvin K,
#: dotless i, Unicode hyphen and dot leader, fullwidth/small colon, NBSP, zero-width space, RLO).
INJECTION = (
    ":", "{", "}", "*", "?", "[", "]", "\n", "\r", "\x00", " ", "\t", "\\", "/", '"', "'", "$", "%", "\x7f", "\x1b",
    "\u0430", "\u0435", "\u041c", "\uff4d", "\u212a", "\u0131", "\u2010", "\u2024", "\uff1a", "\ufe55",
    "\u00a0", "\u200b", "\u202e", "\U0001f600", "é",
)  # fmt: skip
JSON_TOKENS = (
    b"{", b"}", b"[", b"]", b",", b":", b'"', b'"model"', b'"round"', b'"ids"', b'"predictions"', b'"stake"',
    b'"type"', b'"open"', b'"targets"', b'"final"', b'"day"', b"NaN", b"Infinity", b"-Infinity", b"1", b"-1",
    b"0.5", b"1e999", b"1" * 400, b"null", b"true", b"false", b'"\\ud800"', b'"\\u0000"', b"\xff", b"\xc3\xa9",
    b"\xed\xa0\x80", b" ", b"\n", b'"m1"', b"812", b"\x00",
)  # fmt: skip
HOSTILE_BYTES = st.one_of(st.binary(max_size=512), st.lists(st.sampled_from(JSON_TOKENS), max_size=60).map(b"".join))


def encode(doc: Any, ensure_ascii: bool = False) -> bytes:
    """JSON bytes as a careless producer writes them: NaN/Infinity literals, lone surrogates kept."""
    return json.dumps(doc, allow_nan=True, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def nest(inner: bytes, depth: int, style: str) -> bytes:
    if style == "array":
        return b"[" * depth + inner + b"]" * depth
    return b'{"a":' * depth + inner + b"}" * depth


@st.composite
def json_messages(draw: st.DrawFn) -> tuple[bytes | None, bytes]:
    """(key, value): an arbitrary JSON document (sometimes wrapped or holding 1,000+ nesting levels)."""
    doc = draw(st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from(FIELD_NAMES) | TEXT, PLAUSIBLE | JSON_VALUES, max_size=9)))
    value = encode(doc, ensure_ascii=draw(st.booleans()))
    style = draw(st.sampled_from(["none", "none", "wrap", "in_field"]))
    if style != "none":
        depth = draw(st.integers(1_000, 3_000))
        kind = draw(st.sampled_from(["array", "object"]))
        if style == "in_field" and isinstance(doc, dict):
            placeholder = "\x00deep\x00"
            with_placeholder = dict(doc, **{draw(st.sampled_from(FIELD_NAMES) | TEXT): placeholder})
            value = encode(with_placeholder).replace(encode(placeholder), nest(encode(draw(JSON_VALUES)), depth, kind), 1)
        else:
            value = nest(value, depth, kind)
    if isinstance(doc, dict) and draw(st.booleans()):  # a key that matches the value, to get past bad_key
        key_source = doc.get("model") if isinstance(doc.get("model"), str) else doc.get("round")
        key: bytes | None = str(key_source).encode("utf-8", "surrogatepass")
    else:
        key = draw(HOSTILE_KEYS)
    return key, value


@st.composite
def valid_messages(draw: st.DrawFn, topics: tuple[str, ...] = TOPICS) -> tuple[str, dict[str, Any], bytes, tuple[str, ...]]:
    """(topic, document, key, the round's universe): a message the decoder must accept."""
    topic = draw(st.sampled_from(topics))
    universe = draw(st.lists(ID_TEXT, min_size=2, max_size=8, unique=True))
    n = len(universe)
    rnd = draw(ROUND)
    doc: dict[str, Any]
    if topic == "rounds":
        doc = {"type": "open", "round": rnd, "ids": list(universe)} if draw(st.booleans()) else {"type": "close", "round": rnd}
        key = str(rnd)
    elif topic == "submissions":
        key = draw(VALID_MODEL)
        doc = {"round": rnd, "model": key, "predictions": draw(st.lists(FINITE, min_size=n, max_size=n))}
        if draw(st.booleans()):
            doc["ids"] = draw(st.permutations(universe))
    elif topic == "stakes":
        key = draw(VALID_MODEL)
        doc = {"model": key, "stake": draw(st.one_of(st.floats(0, 1e12), st.integers(0, 10**12)))}
        if draw(st.booleans()):
            doc["round"] = draw(st.none() | ROUND)
    else:
        key = str(rnd)
        doc = {"round": rnd, "day": draw(st.integers(0, 20)), "final": draw(st.booleans())}
        ids = None
        if draw(st.booleans()):
            ids = draw(st.permutations(universe))[: draw(st.integers(1, n))]
            doc["ids"] = ids
        doc["targets"] = draw(st.lists(FINITE | st.none(), min_size=len(ids or universe), max_size=len(ids or universe)))
    return topic, doc, key.encode(), tuple(universe)


#: JSON type of each schema slot → values of another type, and the reason they are refused with.
WRONG_TYPE: dict[str, tuple[list[Any], str]] = {
    "int": (["812", True, False, None, [1], {"r": 1}, 1.5, ""], "wrong_type"),
    "int_or_null": (["812", True, [1], {}, 0.5], "wrong_type"),
    "number": (["1", True, None, [1], {}, ""], "wrong_type"),
    "model": ([5, 1.5, True, None, [], {}, ["m1"]], "wrong_type"),
    "event_type": ([1, None, True, [], {}, "OPEN", "opened", " open", "оpen"], "bad_field"),  # enum
    "bool": ([0, 1, "true", None, [], {}], "wrong_type"),
    "array": (["a", 5, {}, None, True, "[]"], "wrong_type"),
    "prediction": (["0.5", True, [], {}], "wrong_type"),
    "target": (["0.5", False, [None], {}], "wrong_type"),
    "id": ([5, None, [], {}, True, 1.5], "bad_id"),
}
NUMERIC_SLOTS = {"int", "int_or_null", "number", "prediction", "target"}


def slots(topic: str, doc: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Every place of ``doc`` a mutation can target: (path, slot kind)."""
    kinds = {
        "type": "event_type",
        "round": "int_or_null" if topic == "stakes" else "int",
        "day": "int",
        "model": "model",
        "stake": "number",
        "final": "bool",
        "ids": "array",
        "predictions": "array",
        "targets": "array",
    }
    items = {"ids": "id", "predictions": "prediction", "targets": "target"}
    out: list[tuple[tuple[Any, ...], str]] = []
    for name, value in doc.items():
        out.append(((name,), kinds[name]))
        if name in items:
            out.extend(((name, i), items[name]) for i in range(len(value)))
    return out


def get_at(doc: dict[str, Any], path: tuple[Any, ...]) -> Any:
    return doc[path[0]] if len(path) == 1 else doc[path[0]][path[1]]


def set_at(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    if len(path) == 1:
        doc[path[0]] = value
    else:
        doc[path[0]][path[1]] = value


#: Values a careless or hostile producer puts anywhere (NaN/Infinity become JSON literals).
HOSTILE_VALUES = (
    None, True, False, 0, -1, -1.5, 0.5, 5e-324, -0.0, 2**53, 2**64, 10**400, -(10**400), 1e308, -1e308,
    math.nan, math.inf, -math.inf, "", "812", "m1", "\x00", "\ud800", "\ud83d\ude00", "\U0001f600", "ﬁ", "x" * 10_000,
    [], {}, [None], [[1, 2]], {"a": 1}, [math.nan], ["a", "a"], "NaN", "open", "close", list(range(2_000)),
)  # fmt: skip


MUTATIONS = (
    "wrong_type",
    "delete",
    "non_finite",
    "negative",
    "huge",
    "unicode",
    "hostile",
    "duplicate",
    "length",
    "key",
    "extra",
    "none",
)


@st.composite
def almost_valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message with one thing wrong, and what the decoder must say about it.

    ``expected``: a set of reason codes (``"ok"`` = decoded), or None when only the general
    property applies (any documented refusal or a well-formed record).
    """
    topic, original, key, universe = draw(valid_messages())
    doc = json.loads(json.dumps(original))  # a deep copy
    mutation = draw(st.sampled_from(MUTATIONS))
    expected: set[str] | None = {"ok"}
    places = slots(topic, doc)
    field = draw(st.sampled_from(sorted({path[0] for path, _ in places})))  # a field, then maybe one of its items
    path, kind = draw(st.sampled_from([(path, kind) for path, kind in places if path[0] == field]))
    if mutation == "delete":
        field = draw(st.sampled_from(sorted(doc)))
        del doc[field]
        needed = REQUIRED[topic] | ({"ids"} if doc.get("type") == "open" else set())
        expected = {"missing_field"} if field in needed else {"ok"}
    elif mutation == "wrong_type":
        values, reason = WRONG_TYPE[kind]
        set_at(doc, path, draw(st.sampled_from(values)))
        expected = {reason}
        if kind == "prediction" and get_at(doc, path) is None:
            expected = {"non_finite"}
    elif mutation == "non_finite":
        if kind in NUMERIC_SLOTS:
            set_at(doc, path, draw(st.sampled_from([math.nan, math.inf, -math.inf])))
            expected = {"non_finite"}
    elif mutation == "negative":
        value = get_at(doc, path)
        if kind in NUMERIC_SLOTS and value is not None:
            offsets = [1, 10**6] if kind.startswith("int") else [1, 0.5, 10**6]  # an integer stays an integer
            set_at(doc, path, -abs(value) - draw(st.sampled_from(offsets)))
            expected = {"negative_stake"} if kind == "number" else {"bad_field"} if kind.startswith("int") else {"ok"}
    elif mutation == "huge":
        if kind in NUMERIC_SLOTS:
            value = draw(st.sampled_from([2**53, 2**64, 10**30, 1e308, 10**400]))
            set_at(doc, path, value)
            if value == 10**400:  # beyond float64: orjson refuses it
                expected = {"not_json", "non_finite"}
            elif kind.startswith("int"):
                expected = {"bad_field"}
    elif mutation == "unicode":
        char = draw(st.sampled_from(INJECTION))
        if kind == "model":
            set_at(doc, path, doc["model"][:30] + char)
            expected = {"bad_model_id"}
        elif kind == "event_type":
            set_at(doc, path, doc["type"] + char)
            expected = {"bad_field"}
        elif kind == "id":
            fresh = get_at(doc, path)[: MAX_ID_LENGTH - 1] + char
            expected = {"duplicate_ids"} if fresh in doc["ids"] else {"ok"}
            set_at(doc, path, fresh)
    elif mutation == "hostile":
        set_at(doc, path, draw(st.one_of(st.sampled_from(list(HOSTILE_VALUES)), JSON_VALUES)))
        expected = None
    elif mutation == "duplicate":
        if "ids" in doc:
            ids = doc["ids"]
            if len(ids) >= 2 and draw(st.booleans()):
                ids[-1] = ids[0]
            else:
                ids.append(ids[0])
            expected = {"duplicate_ids"}
    elif mutation == "length":
        if topic == "rounds" and "ids" in doc:
            doc["ids"] = doc["ids"][: draw(st.integers(0, 1))]
            expected = {"bad_field"}
        elif topic in ("submissions", "targets"):
            name = "predictions" if topic == "submissions" else "targets"
            if draw(st.booleans()) or not doc[name]:
                doc[name].append(0.5)
            else:
                doc[name].pop()
            expected = {"wrong_length"} if "ids" in doc else {"ok"}
    elif mutation == "key":
        new_key = draw(HOSTILE_KEYS)
        expected = {"ok"} if new_key == key else {"bad_key"}
        key = new_key
    elif mutation == "extra":
        field = draw(st.text(NO_SURROGATES, max_size=12).filter(lambda name: name not in FIELD_NAMES))
        doc[field] = draw(CLEAN_JSON)
    value = encode(doc, ensure_ascii=draw(st.booleans()))
    return {
        "topic": topic,
        "original": original,
        "universe": universe,
        "mutation": mutation,
        "key": key,
        "value": value,
        "expected": expected,
    }


@st.composite
def hostile_model_ids(draw: st.DrawFn) -> str:
    """Model ids MODEL_ID refuses: injected characters, look-alikes, 65+ characters, empty, any text."""
    kind = draw(st.sampled_from(["inject", "inject", "long", "empty", "text"]))
    if kind == "empty":
        return ""
    if kind == "long":
        return draw(st.from_regex(r"[A-Za-z0-9_\-\.]{65,300}", fullmatch=True))
    if kind == "text":
        return draw(st.text(NO_SURROGATES, min_size=1, max_size=80).filter(lambda s: not MODEL_ID.fullmatch(s)))
    model = draw(VALID_MODEL)
    for char in draw(st.lists(st.sampled_from(INJECTION), min_size=1, max_size=3)):
        at = draw(st.integers(0, len(model)))
        model = model[:at] + char + model[at:]
    return model


@st.composite
def hostile_universe_ids(draw: st.DrawFn) -> list[str]:
    """Universe ids with key-breaking characters, look-alikes, empty and over-long ones."""
    one = st.one_of(
        st.text(NO_SURROGATES, max_size=140),
        st.sampled_from(INJECTION),
        st.builds(lambda base, char, rest: base + char + rest, ID_TEXT, st.sampled_from(INJECTION), st.text(NO_SURROGATES, max_size=10)),
        st.text(st.sampled_from("ab:{}*?[\n"), min_size=MAX_ID_LENGTH - 2, max_size=MAX_ID_LENGTH + 3),
    )
    return draw(st.lists(one, min_size=2, max_size=12, unique=True))


# --- the properties ------------------------------------------------------------------------


def property_arbitrary_bytes(key: bytes | None, value: bytes) -> None:
    """Arbitrary bytes under any key, on every input topic: a record or a documented refusal."""
    COUNTS["bytes"] += 1
    for topic in TOPICS:
        result = decode_checked(make_record(topic, key, value))
        if not value:
            assert reason_of(result) == "empty"


def property_arbitrary_json(message: tuple[bytes | None, bytes]) -> None:
    """Arbitrary JSON documents (unicode, huge ints, NaN/Infinity, 1,000+ levels) on every topic."""
    COUNTS["json"] += 1
    key, value = message
    for topic in TOPICS:
        result = decode_checked(make_record(topic, key, value))
        if not value.lstrip().startswith(b"{"):
            assert isinstance(result, InvalidMessage)  # only an object can be a message


def property_almost_valid(case: dict[str, Any]) -> None:
    """A valid message with one field mutated: the documented reason, or a well-formed record."""
    COUNTS["almost_valid"] += 1
    topic, universe = case["topic"], case["universe"]
    original = decode_checked(make_record(topic, encode_key(case), encode(case["original"])))
    assert not isinstance(original, InvalidMessage), f"a valid {topic} message was refused: {original}"
    result = decode_checked(make_record(topic, case["key"], case["value"]))
    if case["expected"] is not None:
        assert reason_of(result) in case["expected"], (case["mutation"], case["expected"], result)
    if case["mutation"] in ("none", "extra") or (case["mutation"] == "key" and reason_of(result) == "ok"):
        assert not isinstance(result, InvalidMessage) and same_record(result, original)  # unknown fields are ignored
    if isinstance(result, (Submission, TargetsUpdate)):
        check_alignment(result, universe)


def encode_key(case: dict[str, Any]) -> bytes:
    doc = case["original"]
    return str(doc["model"] if "model" in doc else doc["round"]).encode()


def check_alignment(record: Submission | TargetsUpdate, universe: tuple[str, ...]) -> None:
    """align_to_universe: the documented outcome, and values at their ids' positions."""
    partial = isinstance(record, TargetsUpdate)
    values = record.targets if partial else record.predictions
    index = {id_: i for i, id_ in enumerate(universe)}
    if record.ids is None:
        expected = "ok" if values.size == len(universe) else "wrong_length"
    elif any(i not in index for i in record.ids):
        expected = "unknown_ids"
    elif not partial and len(record.ids) != len(universe):
        expected = "missing_ids"
    else:
        expected = "ok"
    try:
        aligned = align_to_universe(values, record.ids, index, partial=partial)
    except InvalidMessage as exc:
        assert exc.reason in REASONS and exc.message.strip()
        assert exc.reason == expected, (exc.reason, expected)
        return
    assert expected == "ok"
    assert aligned.shape == (len(universe),)
    if record.ids is None:
        assert np.array_equal(aligned, values, equal_nan=True)
    else:
        placed = np.full(len(universe), np.nan)
        for id_, value in zip(record.ids, values, strict=True):
            placed[index[id_]] = value
        assert np.array_equal(aligned, placed, equal_nan=True)
        if not partial:
            assert np.isfinite(aligned).all()


def property_alignment(message: tuple[str, dict[str, Any], bytes, tuple[str, ...]], change: str, data: st.DataObject) -> None:
    """align_to_universe on accepted submissions/targets against the round's universe, or a changed one."""
    COUNTS["alignment"] += 1
    topic, doc, key, universe = message
    record = decode_checked(make_record(topic, key, encode(doc)))
    assert isinstance(record, (Submission, TargetsUpdate)), record
    if change == "drop":
        universe = tuple(u for u in universe if u != data.draw(st.sampled_from(universe)))
    elif change == "add":
        universe = (*universe, data.draw(ID_TEXT.filter(lambda i: i not in universe)))
    elif change == "shuffle":
        universe = tuple(data.draw(st.permutations(universe)))
    check_alignment(record, universe)


def property_model_ids(model: str, topic: str) -> None:
    """Model ids: accepted exactly when they match MODEL_ID, so a Redis key built from one stays one key."""
    COUNTS["model_ids"] += 1
    doc: dict[str, Any] = {"round": 7, "model": model, "predictions": [0.1, 0.9]} if topic == "submissions" else {"model": model, "stake": 1.5}
    result = decode_checked(make_record(topic, model.encode(), encode(doc)))
    if MODEL_ID.fullmatch(model) is None:
        assert reason_of(result) == "bad_model_id", (model, result)
        return
    assert isinstance(result, (Submission, StakeUpdate)) and result.model == model
    # The only keys a model id goes into: ns:{m:MODEL}:stakes and ns:{m:MODEL}:history
    # (streams/state/keys.py). The hash tag (Redis Cluster: between the first "{" and the next
    # "}") must be exactly m:MODEL, and the key free of glob, whitespace and control characters.
    keys = Keys("mmc")
    for built, suffix in ((keys.stakes(model), "stakes"), (keys.history(model), "history")):
        assert re.fullmatch(r"mmc:\{m:[A-Za-z0-9_\-\.]{1,64}\}:" + suffix, built), built
        opening = built.index("{")
        assert built[opening + 1 : built.index("}", opening)] == f"m:{model}"


def property_universe_ids(ids: list[str], topic: str) -> None:
    """Universe ids of any characters: accepted as sent when 1-128 characters, else bad_id.

    They never reach a Redis key: streams/state/store.py stores a round's universe as a JSON *value*
    (``open_round``: ``SET ns:{rN}:ids orjson.dumps(list(ids))``) and builds keys only from round
    numbers, model ids, partitions and topic names (test_redis_keys_take_no_universe_ids checks
    Keys' parameters). So they only have to survive the JSON round trip, checked here.
    """
    COUNTS["universe_ids"] += 1
    if topic == "rounds":
        doc: dict[str, Any] = {"type": "open", "round": 9, "ids": ids}
        key = b"9"
    elif topic == "submissions":
        doc = {"round": 9, "model": "m1", "ids": ids, "predictions": [0.5] * len(ids)}
        key = b"m1"
    else:
        doc = {"round": 9, "day": 1, "final": True, "ids": ids, "targets": [0.25] * len(ids)}
        key = b"9"
    result = decode_checked(make_record(topic, key, encode(doc)))
    if all(1 <= len(i) <= MAX_ID_LENGTH for i in ids):
        assert not isinstance(result, InvalidMessage), (ids, result)
        assert result.ids == tuple(ids)  # type: ignore[union-attr]
        assert orjson.loads(orjson.dumps(list(result.ids))) == ids  # type: ignore[union-attr]  # how state.py stores them
        if isinstance(result, (Submission, TargetsUpdate)):  # the round opened with the same ids, in reverse
            check_alignment(result, tuple(reversed(ids)))
    else:
        assert reason_of(result) == "bad_id", (ids, result)


def property_oversize(topic: str, max_bytes: int, extra: int, filler: bytes, valid: tuple[str, dict[str, Any], bytes, tuple[str, ...]]) -> None:
    """Values over max_bytes are refused "oversize" before any parsing; at the limit they are parsed."""
    COUNTS["oversize"] += 1
    value = (filler * (max_bytes // len(filler) + 2))[: max_bytes + extra]

    def must_not_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an oversize message was parsed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records_module, "orjson", types.SimpleNamespace(loads=must_not_parse, JSONDecodeError=orjson.JSONDecodeError))
        patch.setattr(records_module, "input_violation", must_not_parse)
        assert reason_of(decode_checked(make_record(topic, b"m1", value), max_bytes=max_bytes)) == "oversize"
    valid_topic, doc, key, _ = valid
    exact = encode(doc)
    assert reason_of(decode_checked(make_record(valid_topic, key, exact), max_bytes=len(exact))) == "ok"
    assert reason_of(decode_checked(make_record(valid_topic, key, exact), max_bytes=len(exact) - 1)) == "oversize"


PROPERTIES: dict[str, tuple[Callable[..., None], dict[str, st.SearchStrategy[Any]]]] = {
    "bytes": (property_arbitrary_bytes, {"key": HOSTILE_KEYS, "value": HOSTILE_BYTES}),
    "json": (property_arbitrary_json, {"message": json_messages()}),
    "almost_valid": (property_almost_valid, {"case": almost_valid_messages()}),
    "alignment": (
        property_alignment,
        {
            "message": valid_messages(topics=("submissions", "targets")),
            "change": st.sampled_from(["none", "drop", "add", "shuffle"]),
            "data": st.data(),
        },
    ),
    "model_ids": (
        property_model_ids,
        {
            "model": st.one_of(hostile_model_ids(), VALID_MODEL, st.text(NO_SURROGATES, max_size=70)),
            "topic": st.sampled_from(["submissions", "stakes"]),
        },
    ),
    "universe_ids": (
        property_universe_ids,
        {"ids": hostile_universe_ids(), "topic": st.sampled_from(["rounds", "submissions", "targets"])},
    ),
    "oversize": (
        property_oversize,
        {
            "topic": st.sampled_from(TOPICS),
            "max_bytes": st.integers(1, 4_096),
            "extra": st.integers(1, 1_024),
            "filler": st.binary(min_size=1, max_size=64),
            "valid": valid_messages(),
        },
    ),
}


def run_property(name: str, examples: int) -> int:
    """Run property ``name`` for ``examples`` examples; the number of messages it decoded."""
    check, strategies = PROPERTIES[name]
    examples_before, messages_before = COUNTS[name], COUNTS["messages"]
    settings(FUZZ_SETTINGS, max_examples=examples)(given(**strategies)(check))()
    ran = COUNTS[name] - examples_before
    assert ran >= examples, f"{name}: Hypothesis ran {ran} of {examples} examples"
    return COUNTS["messages"] - messages_before


# --- default run: MMC_FUZZ_EXAMPLES examples per property -------------------------------------


def test_arbitrary_bytes_and_keys() -> None:
    assert run_property("bytes", DEFAULT_EXAMPLES) >= 4 * DEFAULT_EXAMPLES


def test_arbitrary_json_documents() -> None:
    assert run_property("json", DEFAULT_EXAMPLES) >= 4 * DEFAULT_EXAMPLES


def test_almost_valid_messages() -> None:
    assert run_property("almost_valid", DEFAULT_EXAMPLES) >= 2 * DEFAULT_EXAMPLES


def test_alignment_to_the_universe() -> None:
    assert run_property("alignment", DEFAULT_EXAMPLES) >= DEFAULT_EXAMPLES


def test_model_ids_cannot_inject_redis_keys() -> None:
    assert run_property("model_ids", DEFAULT_EXAMPLES) >= DEFAULT_EXAMPLES


def test_universe_ids_with_any_characters() -> None:
    assert run_property("universe_ids", DEFAULT_EXAMPLES) >= DEFAULT_EXAMPLES


def test_oversize_is_refused_without_parsing() -> None:
    assert run_property("oversize", DEFAULT_EXAMPLES) >= 3 * DEFAULT_EXAMPLES


# --- slow run: MMC_FUZZ_SLOW_EXAMPLES examples per property (≥ 10,000 messages in all) -------


@pytest.mark.slow
@pytest.mark.timeout(3_600)
@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_slow_fuzz_corpus(name: str) -> None:
    assert run_property(name, SLOW_EXAMPLES) >= SLOW_EXAMPLES


# --- hand-written hostile inputs ----------------------------------------------------------

DEPTH = 100_000
DEEP_VALUES = {
    "arrays_open": b"[" * DEPTH,
    "arrays": nest(b"1", DEPTH, "array"),
    "objects": nest(b"1", DEPTH, "object"),
    "arrays_with_nan": nest(b"NaN", DEPTH, "array"),  # the stdlib fallback parser must not raise RecursionError
    "objects_with_infinity": nest(b"Infinity", DEPTH, "object"),
    "stake_with_deep_field": b'{"model":"m1","stake":1,"x":' + nest(b"[]", DEPTH, "array") + b"}",
    "stake_with_deep_nan_field": b'{"model":"m1","stake":1,"x":' + nest(b"NaN", DEPTH, "array") + b"}",
    "stake_with_1000_levels": b'{"model":"m1","stake":1,"x":' + nest(b"1", 1_000, "object") + b"}",
}


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("name", sorted(DEEP_VALUES))
def test_deep_nesting_is_refused_not_a_recursion_error(name: str, topic: str) -> None:
    key = b"m1" if topic in ("submissions", "stakes") else b"1"
    result = decode_checked(make_record(topic, key, DEEP_VALUES[name]))
    if name == "stake_with_1000_levels":  # deep, but within the parser's limit: an ordinary message
        assert reason_of(result) == ("ok" if topic == "stakes" else "missing_field")
    else:
        assert reason_of(result) == "not_json", result


def test_duplicate_unhashable_ids_are_refused_as_duplicates() -> None:
    """Duplicate arrays/objects in "ids" are refused ``duplicate_ids`` or ``bad_id``; unhashable values do not break the refusal."""
    for ids in ([[1], [1]], [{"a": 1}, {"a": 1}], [[[]], [[]], "x"]):
        for topic, doc, key in (
            ("rounds", {"type": "open", "round": 1, "ids": ids}, b"1"),
            ("submissions", {"round": 1, "model": "m1", "ids": ids, "predictions": [0.0] * len(ids)}, b"m1"),
            ("targets", {"round": 1, "day": 1, "final": False, "ids": ids, "targets": [0.0] * len(ids)}, b"1"),
        ):
            assert reason_of(decode_checked(make_record(topic, key, encode(doc)))) in {"duplicate_ids", "bad_id"}


def test_largest_message_decodes_within_the_bound() -> None:
    """A near-limit submission (4 MiB of predictions) is decoded, not slowly refused."""
    n = 150_000
    doc = {"round": 1, "model": "m1", "predictions": [0.123456789] * n, "ids": [f"id{i:07d}" for i in range(n)]}
    value = encode(doc)
    assert len(value) <= MAX_BYTES
    result = decode_checked(make_record("submissions", b"m1", value))
    assert isinstance(result, Submission) and result.predictions.size == n


def test_redis_keys_take_no_universe_ids() -> None:
    """Keys are built from round numbers, model ids (MODEL_ID-checked), partitions and topic names only."""
    allowed = {"self", "r", "partition", "model", "topic"}
    methods = {name: fn for name, fn in inspect.getmembers(Keys, inspect.isfunction) if not name.startswith("_")}
    assert {"stakes", "history", "ids", "subs"} <= set(methods)
    for name, fn in methods.items():
        params = set(inspect.signature(fn).parameters)
        assert params <= allowed, f"Keys.{name} takes {sorted(params - allowed)}: could a universe id reach a key?"


# --- no pickle anywhere; Faust topics carry raw bytes ---------------------------------------

UNSAFE_DESERIALIZERS = re.compile(r"\bimport\s+pickle\b|\bfrom\s+pickle\b|\bpickle\.|\bcPickle\b|\bdill\b|\bshelve\b")


def test_the_project_never_uses_pickle() -> None:
    # The pattern catches what it is meant to catch (so an empty result means something).
    for line in (
        "import pickle",
        "from pickle import loads",
        "x = pickle.loads(b)",
        "import cPickle",
        "import dill",
        "import shelve, os",
    ):
        assert UNSAFE_DESERIALIZERS.search(line), line
    files = sorted([*ROOT.joinpath("streams").rglob("*.py"), *ROOT.joinpath("scoring").rglob("*.py")])
    assert len(files) >= 20, files
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if UNSAFE_DESERIALIZERS.search(line)
    ]
    assert hits == []


FAUST_PROBE = """
import json, sys
from streams.worker.main import create_app
from streams.settings import Settings
settings = Settings(app_id="hostile-input-probe", kafka_bootstrap="127.0.0.1:1", topic_prefix="probe.", web_enabled=False)
app, _runtime = create_app(settings)  # builds the app and its agents; connects to nothing
out = {}
for name, agent in app.agents.items():
    channel = agent.channel
    out[name] = {
        "topics": sorted(channel.topics),
        "key_serializer": channel.key_serializer,
        "value_serializer": channel.value_serializer,
        "key_type": getattr(channel.key_type, "__name__", repr(channel.key_type)),
        "value_type": getattr(channel.value_type, "__name__", repr(channel.value_type)),
    }
json.dump(out, sys.stdout)
"""


def test_faust_input_topics_are_raw_bytes(tmp_path: Path) -> None:
    """The agents get the record's bytes untouched (decode_input parses them; Faust never deserializes).

    Every input topic but ``submissions`` has its agent; submissions are read by the worker's
    own librdkafka consumer, which has no deserializer (``tests/streams/worker/test_ingest.py`` sends
    it bytes that are not JSON and finds them refused ``not_json``)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # Faust's data dir goes under the temp dir
    done = subprocess.run([sys.executable, "-c", FAUST_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    agents = json.loads(done.stdout)
    assert {topic for agent in agents.values() for topic in agent["topics"]} == {f"probe.{t}" for t in TOPICS if t != "submissions"}
    for name, agent in agents.items():
        assert len(agent["topics"]) == 1, name
        assert agent["key_serializer"] == "raw" and agent["value_serializer"] == "raw", (name, agent)
        assert agent["key_type"] == "bytes" and agent["value_type"] == "bytes", (name, agent)


# --- every slot of every topic, deterministically (what the fuzzing reaches by chance) -------


def schema_examples() -> list[tuple[str, dict[str, Any], bytes]]:
    """(topic, document, key) for every example of the published input schemas."""
    out = []
    for topic in TOPICS:
        for doc in json.loads((ROOT / "streams" / "messages" / "schemas" / f"{topic}.json").read_text(encoding="utf-8"))["examples"]:
            out.append((topic, doc, str(doc["model"] if "model" in doc else doc["round"]).encode()))
    return out


def test_every_slot_refuses_wrong_types_and_non_finite_numbers() -> None:
    cases = 0
    for topic, original, key in schema_examples():
        assert reason_of(decode_checked(make_record(topic, key, encode(original)))) == "ok"
        for path, kind in slots(topic, original):
            values, reason = WRONG_TYPE[kind]
            substitutes = [(value, reason) for value in values]
            if kind in NUMERIC_SLOTS:
                substitutes += [(value, "non_finite") for value in (math.nan, math.inf, -math.inf)]
            if kind == "prediction":
                substitutes = [(v, "non_finite" if v is None else r) for v, r in substitutes]
            for value, expected in substitutes:
                doc = json.loads(json.dumps(original))
                set_at(doc, path, value)
                result = decode_checked(make_record(topic, key, encode(doc)))
                assert reason_of(result) == expected, (topic, path, value, result)
                cases += 1
        for field in original:
            doc = dict(original)
            del doc[field]
            needed = REQUIRED[topic] | ({"ids"} if doc.get("type") == "open" else set())
            assert reason_of(decode_checked(make_record(topic, key, encode(doc)))) == ("missing_field" if field in needed else "ok")
    assert cases > 200
