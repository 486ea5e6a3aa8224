"""Decoding and validating input records: every refusal has its reason code (pure, no broker)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import InvalidMessage
from streams.messages import records as records_module
from streams.messages.records import (
    REASONS,
    InputRecord,
    RoundClose,
    RoundOpen,
    StakeUpdate,
    Submission,
    TargetsUpdate,
    align_to_universe,
    decode_general,
    decode_input,
    fast_submission,
)

MAX_BYTES = 10_000
MAX_IDS = 100


def record(topic: str, value: object, key: str | None = "m1") -> InputRecord:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return InputRecord(topic, 0, 7, 1_000, None if key is None else key.encode(), raw)


def reason_of(rec: InputRecord) -> str:
    with pytest.raises(InvalidMessage) as info:
        decode_input(rec, MAX_BYTES, MAX_IDS)
    assert info.value.reason in REASONS and info.value.message
    return info.value.reason


def test_valid_messages_decode_to_typed_records() -> None:
    """One valid message per input topic gives its typed record."""
    assert decode_input(record("rounds", {"type": "open", "round": 3, "ids": ["a", "b"]}, "3"), MAX_BYTES, MAX_IDS) == RoundOpen(3, ("a", "b"))
    assert decode_input(record("rounds", {"type": "close", "round": 3}, "3"), MAX_BYTES, MAX_IDS) == RoundClose(3)
    sub = decode_input(record("submissions", {"round": 3, "model": "m1", "predictions": [0.1, 2]}), MAX_BYTES, MAX_IDS)
    assert isinstance(sub, Submission) and sub.predictions.tolist() == [0.1, 2.0] and sub.ids is None
    assert decode_input(record("stakes", {"model": "m1", "stake": 5}), MAX_BYTES, MAX_IDS) == StakeUpdate("m1", 5.0, None)
    assert decode_input(record("stakes", {"model": "m1", "stake": 5, "round": 4}), MAX_BYTES, MAX_IDS) == StakeUpdate("m1", 5.0, 4)
    tgt = decode_input(record("targets", {"round": 3, "day": 1, "final": False, "targets": [0.5, None]}, "3"), MAX_BYTES, MAX_IDS)
    assert isinstance(tgt, TargetsUpdate) and np.isnan(tgt.targets[1]) and tgt.targets[0] == 0.5


@pytest.mark.parametrize(
    "rec, reason",
    [
        (record("stakes", None), "empty"),
        (record("stakes", b""), "empty"),
        (record("stakes", b"x" * (MAX_BYTES + 1)), "oversize"),
        (record("stakes", b"{nope"), "not_json"),
        (record("stakes", b"\xff\xfe"), "not_json"),
        (record("submissions", b'{"round":1,"model":"m1","predictions":[NaN]}'), "non_finite"),
        (record("submissions", b'{"round":1,"model":"m1","predictions":[Infinity]}'), "non_finite"),
        (record("submissions", b'{"round":1,"model":"m1","predictions":[1e999]}'), "not_json"),
        (record("stakes", [1, 2]), "wrong_type"),
        (record("stakes", {"model": "m1"}), "missing_field"),
        (record("stakes", {"model": "m1", "stake": "5"}), "wrong_type"),
        (record("stakes", {"model": "m1", "stake": True}), "wrong_type"),
        (record("stakes", {"model": "m1", "stake": -0.5}), "negative_stake"),
        (record("stakes", {"model": "a:b", "stake": 1}, "a:b"), "bad_model_id"),
        (record("stakes", {"model": "{r1}", "stake": 1}, "{r1}"), "bad_model_id"),
        (record("stakes", {"model": "m\n1", "stake": 1}, "m\n1"), "bad_model_id"),
        (record("stakes", {"model": "*", "stake": 1}, "*"), "bad_model_id"),
        (record("stakes", {"model": "x" * 65, "stake": 1}, "x" * 65), "bad_model_id"),
        (record("stakes", {"model": "m1", "stake": 1}, None), "bad_key"),
        (record("stakes", {"model": "m1", "stake": 1}, "m2"), "bad_key"),
        (record("rounds", {"type": "open", "round": -1, "ids": ["a", "b"]}, "-1"), "bad_field"),
        (record("rounds", {"type": "open", "round": 1.5, "ids": ["a", "b"]}, "1"), "wrong_type"),
        (record("rounds", {"type": "reopen", "round": 1}, "1"), "bad_field"),
        (record("rounds", {"type": "open", "round": 1, "ids": ["a"]}, "1"), "bad_field"),
        (record("rounds", {"type": "open", "round": 1, "ids": ["a", "a"]}, "1"), "duplicate_ids"),
        (record("rounds", {"type": "open", "round": 1, "ids": ["a", 2]}, "1"), "bad_id"),
        (record("rounds", {"type": "open", "round": 1, "ids": [str(i) for i in range(MAX_IDS + 1)]}, "1"), "too_many_ids"),
        (record("submissions", {"round": 1, "model": "m1", "predictions": [0.1, None]}), "non_finite"),
        (record("submissions", {"round": 1, "model": "m1", "predictions": [0.1, "x"]}), "wrong_type"),
        (record("submissions", {"round": 1, "model": "m1", "predictions": [0.1], "ids": ["a", "b"]}), "wrong_length"),
        (record("submissions", {"round": 1, "model": "m1", "predictions": {"a": 1}}), "wrong_type"),
        (record("targets", {"round": 1, "day": 1, "final": "no", "targets": [1]}, "1"), "wrong_type"),
        (record("targets", {"round": 1, "day": 2**60, "final": True, "targets": [1]}, "1"), "bad_field"),
    ],
)
def test_refusals_carry_their_reason(rec: InputRecord, reason: str) -> None:
    """Each kind of bad input is refused with its stable reason code and a message."""
    assert reason_of(rec) == reason


def test_deep_nesting_and_huge_numbers_are_refused_not_crashing() -> None:
    """10,000 nested lists and 400-digit integers are refused cleanly."""
    deep = b"[" * 4_000 + b"]" * 4_000  # under the size limit
    assert reason_of(record("stakes", deep)) in {"not_json", "wrong_type"}
    huge = b'{"model":"m1","stake":' + b"9" * 400 + b"}"
    assert reason_of(record("stakes", huge)) in {"not_json", "non_finite"}


def test_align_to_universe_places_values_by_id() -> None:
    """Values with ids are put in universe order; targets may leave ids out (NaN)."""
    index = {"a": 0, "b": 1, "c": 2}
    out = align_to_universe(np.array([3.0, 1.0, 2.0]), ("c", "a", "b"), index, partial=False)
    assert out.tolist() == [1.0, 2.0, 3.0]
    partial = align_to_universe(np.array([5.0]), ("b",), index, partial=True)
    assert np.isnan(partial[0]) and partial[1] == 5.0 and np.isnan(partial[2])


@pytest.mark.parametrize(
    "values, ids, reason",
    [
        (np.zeros(2), None, "wrong_length"),
        (np.zeros(3), ("a", "b", "z"), "unknown_ids"),
        (np.zeros(2), ("a", "b"), "missing_ids"),
    ],
)
def test_align_to_universe_refusals(values: np.ndarray, ids: tuple[str, ...] | None, reason: str) -> None:
    """Misaligned predictions are refused with wrong_length, unknown_ids or missing_ids."""
    with pytest.raises(InvalidMessage) as info:
        align_to_universe(values, ids, {"a": 0, "b": 1, "c": 2}, partial=False)
    assert info.value.reason == reason


def test_the_refusal_of_deep_json_with_nan_does_not_depend_on_the_callers_stack() -> None:
    # 900 levels around a NaN: within orjson's fixed nesting limit once NaN is nulled, but close
    # to Python's recursion limit — a stack-dependent parser would answer differently when called
    # from deep inside a worker than from here.
    value = b"[" * 900 + b"NaN" + b"]" * 900
    record = InputRecord("stakes", 0, 0, 0, b"m1", value)

    def reason_at(depth: int) -> str:
        if depth:
            return reason_at(depth - 1)
        with pytest.raises(InvalidMessage) as caught:
            decode_input(record, 1 << 20, 1000)
        return caught.value.reason

    assert reason_at(0) == reason_at(800) == "non_finite"


# --- the submissions fast path ------------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False)
number = finite | st.integers(min_value=-(2**63), max_value=2**64 - 1)


def same_decoding(rec: InputRecord) -> Submission | str:
    """decode_input and the general path agree: the same record (bit for bit) or the same reason."""
    outcomes = []
    for decode in (decode_input, decode_general):
        try:
            outcomes.append(decode(rec, 1 << 20, MAX_IDS))
        except InvalidMessage as exc:
            outcomes.append(exc.reason)
    fast, general = outcomes
    if isinstance(general, str):
        assert fast == general
        return general
    assert isinstance(fast, Submission) and isinstance(general, Submission)
    assert (fast.round, fast.model, fast.ids) == (general.round, general.model, general.ids)
    assert fast.predictions.tobytes() == general.predictions.tobytes()
    return fast


@settings(max_examples=300, deadline=None)
@given(st.lists(number, max_size=50), st.integers(min_value=0, max_value=2**53 - 1))
def test_fast_path_gives_the_general_paths_values_bit_for_bit(values: list[float], rnd: int) -> None:
    """Any finite numbers (integers, subnormals, extremes): the fast path takes them and agrees."""
    rec = record("submissions", {"round": rnd, "model": "m1", "predictions": values})
    assert fast_submission(rec, 1 << 20) is not None
    assert isinstance(same_decoding(rec), Submission)


@pytest.mark.parametrize(
    "text",
    [
        b'{"round":1,"model":"m1","predictions":[1E5,-0.0,1e-320,4.9e-324,1.7976931348623157e308,0.1000000000000000055511151231257827]}',
        b'{"round":1,"model":"m1","predictions":[9007199254740993,18446744073709551615,-9223372036854775808]}',
        b' {\n "predictions" : [ 0.5 , 1 ] , "model":"m1", "round":1 }\t',
    ],
)
def test_fast_path_reads_number_spellings_as_the_general_path(text: bytes) -> None:
    rec = record("submissions", text)
    assert fast_submission(rec, 1 << 20) is not None
    assert isinstance(same_decoding(rec), Submission)


@pytest.mark.parametrize(
    "text, key, expected",
    [
        (b'{"round":1,"model":"m1","predictions":[0.5],"ids":["a"]}', "m1", Submission),  # ids: general path
        (b'{"round":1,"model":"m1","predictions":[0.5],"note":"x"}', "m1", Submission),  # extra field
        (b'{"round":1,"model":"m1","predictions":[0.5,[1]]}', "m1", "wrong_type"),  # nested: simdjson would flatten it
        (b'{"round":1,"model":"m1","predictions":[0.5,{"a":1}]}', "m1", "wrong_type"),
        (b'{"round":1,"model":"m1","predictions":[0.5],"predictions":[0.7]}', "m1", Submission),  # duplicate key
        (b'{"round":1.0,"model":"m1","predictions":[0.5]}', "m1", Submission),  # 1.0 is an integer in JSON Schema
        (b'{"round":true,"model":"m1","predictions":[0.5]}', "m1", "wrong_type"),
        (b'{"round":-1,"model":"m1","predictions":[0.5]}', "m1", "bad_field"),
        (b'{"round":9007199254740992,"model":"m1","predictions":[0.5]}', "m1", "bad_field"),
        (b'{"round":1,"model":"m 1","predictions":[0.5]}', "m 1", "bad_model_id"),
        (b'{"round":1,"model":"m1","predictions":[0.5]}', "m2", "bad_key"),
        (b'{"round":1,"model":"m1","predictions":[0.5,null]}', "m1", "non_finite"),
        (b'{"round":1,"model":"m1","predictions":[0.5,NaN]}', "m1", "non_finite"),
        (b'{"round":1,"model":"m1","predictions":[1e400]}', "m1", "not_json"),  # orjson: out of range
        (b'{"round":1,"model":"m1","predictions":[0.5,"0.7"]}', "m1", "wrong_type"),
        (b'{"round":1,"model":"m1","predictions":[0.5,true]}', "m1", "wrong_type"),
        (b'{"round":1,"model":"m1","predictions":0.5}', "m1", "wrong_type"),
        (b'{"round":1,"model":"m1"}', "m1", "missing_field"),
        (b'{"round":1,"model":"m1","predictions":[0.5]} x', "m1", "not_json"),
        (b'{"round":1,"model":"m1","predictions":[0.5]}\xff', "m1", "not_json"),
        (b'[{"round":1,"model":"m1","predictions":[0.5]}]', "m1", "wrong_type"),
    ],
)
def test_fast_path_leaves_anything_unusual_to_the_general_path(text: bytes, key: str, expected: object) -> None:
    """The fast path only accepts; what it is not sure of is decided by the general path (same reason)."""
    rec = record("submissions", text, key)
    assert fast_submission(rec, 1 << 20) is None
    outcome = same_decoding(rec)
    assert outcome == expected if isinstance(expected, str) else isinstance(outcome, expected)


def test_fast_path_respects_the_size_limit() -> None:
    rec = record("submissions", {"round": 1, "model": "m1", "predictions": [0.5] * 100})
    assert fast_submission(rec, len(rec.value) - 1) is None
    assert reason_of(InputRecord("submissions", 0, 7, 1_000, b"m1", rec.value + b" " * MAX_BYTES)) == "oversize"


def test_the_reused_parser_gives_way_while_a_document_of_it_is_still_held() -> None:
    """The fast path reuses one simdjson parser per thread; a document still referenced when the
    next one arrives (simdjson refuses to reuse its parser then) is left intact and a new parser
    decodes the next, to the same result as ever."""
    first = record("submissions", {"round": 1, "model": "m1", "predictions": [0.25, 0.75]})
    second = record("submissions", {"round": 2, "model": "m2", "predictions": [0.5, 0.125]}, "m2")
    assert fast_submission(first, 1 << 20) is not None  # the thread's parser now exists
    held = records_module._parse(first.value)
    reused = records_module._PARSERS.parser
    decoded = fast_submission(second, 1 << 20)
    assert records_module._PARSERS.parser is not reused  # the held document made it give way
    assert decoded is not None and decoded.round == 2 and decoded.model == "m2"
    np.testing.assert_array_equal(decoded.predictions, [0.5, 0.125])
    assert list(held["predictions"]) == [0.25, 0.75]
