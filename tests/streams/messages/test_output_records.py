"""Unit tests of the output record builders (:mod:`streams.messages.outputs`, and the values
:mod:`streams.messages.resolution` builds for them): keys, stable bytes, NaN as null, the field names of
the published JSON Schemas (checked with :func:`streams.messages.schemas.validate_output` /
:func:`streams.messages.schemas.validate_deadletter_headers`), and dead letters that always fit.
No Redis, no Kafka.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import orjson
import pytest

import scoring
from streams.errors import SchemaViolation
from streams.messages.outputs import DEAD_LETTER_KEY_BYTES, DEAD_LETTER_MESSAGE_BYTES, Output, dead_letter, encode, json_output
from streams.messages.records import InputRecord, refuse
from streams.messages.resolution import round_figures, score_messages, standing, trend_figures
from streams.messages.schemas import load_schema, validate_deadletter_headers, validate_output
from streams.settings import Settings

SETTINGS = Settings()


def scores_of(n: int, seed: int = 0, nan_at: int | None = None) -> scoring.RoundScores:
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(0, 0.02, n), rng.normal(0, 0.01, n), rng.normal(0, 0.01, n), rng.uniform(0.1, 0.9, n)]
    if nan_at is not None:
        for a in arrays:
            a[nan_at] = np.nan
    corr, mmc, contribution, cwmm = arrays
    return scoring.RoundScores(corr=corr, mmc=mmc, contribution=contribution, corr_w_mm=cwmm, meta_model=np.zeros(5), n_ids_scored=5, n_ids_missing=0)


def decoded(output: Output) -> Any:
    return orjson.loads(output.value)


# --- encode / json_output ----------------------------------------------------------------------


def test_encode_sorts_keys_so_insertion_order_does_not_change_the_bytes() -> None:
    assert encode({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'
    one = {"round": 3, "model": "m1", "corr": 0.1}
    other = {"corr": 0.1, "model": "m1", "round": 3}
    assert encode(one) == encode(other)


def test_encode_writes_nan_and_infinities_as_null_also_in_numpy_values() -> None:
    value = {"a": float("nan"), "b": math.inf, "c": np.float64(-np.inf), "d": np.array([1.5, np.nan]), "e": np.int64(7)}
    assert encode(value) == b'{"a":null,"b":null,"c":null,"d":[1.5,null],"e":7}'


def test_encode_round_trips_floats_exactly() -> None:
    rng = np.random.default_rng(5)
    values = [float(x) for x in rng.standard_normal(200)]
    assert orjson.loads(encode({"v": values}))["v"] == values


def test_json_output_carries_topic_key_timestamp_and_no_headers() -> None:
    out = json_output("scores", "model.é-1", {"x": 1}, 1_700_000_000_123)
    assert out == Output("scores", "model.é-1".encode(), b'{"x":1}', 1_700_000_000_123, ())
    assert json_output("crowding", str(812), {"round": 812}, 5).key == b"812"


def test_identical_input_gives_identical_output_records() -> None:
    scores = scores_of(6, nan_at=2)
    models = [f"m{i}" for i in range(6)]
    stakes = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    built = [
        [json_output("scores", m, msg, 42) for m, msg in zip(models, score_messages(SETTINGS, 9, 3, False, models, stakes, scores), strict=True)]
        for _ in range(2)
    ]
    assert built[0] == built[1]
    # a copy of the inputs (fresh arrays) gives the same bytes too
    copy = scoring.RoundScores(
        corr=scores.corr.copy(),
        mmc=scores.mmc.copy(),
        contribution=scores.contribution.copy(),
        corr_w_mm=scores.corr_w_mm.copy(),
        meta_model=scores.meta_model.copy(),
        n_ids_scored=5,
        n_ids_missing=0,
    )
    again = [json_output("scores", m, msg, 42) for m, msg in zip(models, score_messages(SETTINGS, 9, 3, False, models, stakes.copy(), copy), strict=True)]
    assert again == built[0]


# --- values built for each output topic match the published schemas ---------------------------


def test_score_messages_match_the_scores_schema_field_for_field() -> None:
    models = ["a", "b.c", "d-e_f"]
    messages = score_messages(SETTINGS, 812, 20, True, models, np.array([0.0, 10.0, 20.0]), scores_of(3, nan_at=0))
    required = set(load_schema("scores.json")["required"])
    for msg in messages:
        assert set(msg) == required
        validate_output("scores", orjson.loads(encode(msg)))
    assert messages[0]["corr"] is None and messages[0]["percentiles"]["corr"] is None


def test_a_wrong_field_is_caught_by_the_schema_check_used_here() -> None:
    """The validation helper is strict, so the schema checks in this file can fail."""
    msg = score_messages(SETTINGS, 1, 1, False, ["a"], np.array([1.0]), scores_of(1))[0]
    with pytest.raises(SchemaViolation):
        validate_output("scores", {**msg, "extra": 1})
    with pytest.raises(SchemaViolation):
        validate_output("scores", {k: v for k, v in msg.items() if k != "payout"})


def test_leaderboard_rows_match_the_leaderboard_schema() -> None:
    as_of = {"round": 5, "day": 20, "final": True}
    history = {
        r: {"round": r, "day": 20, "final": True, "stake": 3.0, "corr": 0.01, "mmc": None, "contribution": 0.002, "corr_w_mm": 0.4, "payout": 0.009}
        for r in range(1, 6)
    }
    required = set(load_schema("leaderboard.json")["required"])
    for hist in (history, {}):
        row = {**standing(SETTINGS, "m1", hist, as_of), "rank": 1, "n_models": 1}
        assert set(row) == required
        validate_output("leaderboard", orjson.loads(encode(row)))


@pytest.mark.parametrize("n_models", [1, 3, 40])
def test_crowding_values_match_the_crowding_schema(n_models: int) -> None:
    models = [f"m{i:02d}" for i in range(n_models)]
    stakes = np.linspace(0.0, 100.0, n_models)
    figures = round_figures(7, 2, False, models, stakes, scores_of(n_models, seed=n_models))
    trend = trend_figures({6: {"stake_weighted_cwmm": 0.3, "median_cwmm": 0.2, "top10_stakers": ["m00"]}, 7: figures}, upto=7, recent=20)
    value = {**figures, "trend": trend}
    assert set(value) == set(load_schema("crowding.json")["required"])
    assert set(trend) == set(load_schema("crowding.json")["properties"]["trend"]["required"])
    validate_output("crowding", orjson.loads(encode(value)))


def test_crowding_value_of_a_round_without_stake_or_cwmm_matches_the_schema() -> None:
    nan = np.full(2, np.nan)
    empty = scoring.RoundScores(nan, nan, nan, nan, np.zeros(3), 0, 3)
    figures = round_figures(1, 1, False, ["a", "b"], np.zeros(2), empty)
    value = {**figures, "trend": trend_figures({1: figures}, upto=1, recent=20)}
    validate_output("crowding", orjson.loads(encode(value)))
    assert figures["cwmm_decile_edges"] is None and figures["stake_weighted_cwmm"] is None


# --- dead letters ----------------------------------------------------------------------------


def record(value: bytes | None, key: bytes | None = b"m1") -> InputRecord:
    return InputRecord("submissions", 3, 1234, 1_700_000_000_000, key, value)


def header_map(out: Output) -> dict[str, bytes]:
    names = [name for name, _ in out.headers]
    assert len(names) == len(set(names))  # no header twice
    return dict(out.headers)


def test_dead_letter_keeps_the_original_bytes_key_and_time_with_the_reason_in_headers() -> None:
    original = b'{"round": 1, "model": "m1", "predictions": [NaN]}'
    out = dead_letter(record(original), refuse("non_finite", "a prediction is NaN"), "mmc.", 1024 * 1024)
    assert (out.topic, out.key, out.value, out.timestamp_ms) == ("deadletter", b"m1", original, 1_700_000_000_000)
    headers = header_map(out)
    assert headers == {
        "mmc.error.reason": b"non_finite",
        "mmc.error.message": b"a prediction is NaN",
        "mmc.error.topic": b"mmc.submissions",
        "mmc.error.partition": b"3",
        "mmc.error.offset": b"1234",
    }
    validate_deadletter_headers(headers)


def test_dead_letter_of_a_record_without_value_or_key() -> None:
    out = dead_letter(record(None, key=None), refuse("empty", "the message has no value"), "p.", 1024)
    assert out.value == b"" and out.key is None
    validate_deadletter_headers(header_map(out))


def test_dead_letter_value_at_the_limit_is_not_cut_and_one_byte_more_is() -> None:
    limit = 1024
    at = dead_letter(record(b"x" * limit), refuse("oversize", "too big"), "mmc.", limit)
    assert at.value == b"x" * limit and "mmc.error.truncated" not in header_map(at)
    original = bytes(range(256)) * 4 + b"!"
    over = dead_letter(record(original), refuse("oversize", "too big"), "mmc.", limit)
    headers = header_map(over)
    assert over.value == original[:limit]
    assert headers["mmc.error.truncated"] == b"value"
    assert headers["mmc.error.original.size"] == b"1025"
    assert headers["mmc.error.original.sha256"] == hashlib.sha256(original).hexdigest().encode()
    validate_deadletter_headers(headers)


def test_dead_letter_cuts_a_hostile_key_and_says_so() -> None:
    key = b"k" * (DEAD_LETTER_KEY_BYTES + 10)
    out = dead_letter(record(b"v" * 2000, key=key), refuse("bad_key", "key too long"), "mmc.", 1024)
    headers = header_map(out)
    assert out.key == key[:DEAD_LETTER_KEY_BYTES] and len(out.value) == 1024
    assert headers["mmc.error.truncated"] == b"key,value"
    assert headers["mmc.error.original.key.size"] == str(len(key)).encode()
    assert headers["mmc.error.original.key.sha256"] == hashlib.sha256(key).hexdigest().encode()
    validate_deadletter_headers(headers)
    at_limit = dead_letter(record(b"v", key=b"k" * DEAD_LETTER_KEY_BYTES), refuse("bad_key", "x"), "mmc.", 1024)
    assert "mmc.error.truncated" not in header_map(at_limit)


def test_dead_letter_message_header_is_bounded() -> None:
    out = dead_letter(record(b"v"), refuse("bad_field", "x" * 10_000), "mmc.", 1024)
    assert len(header_map(out)["mmc.error.message"]) == DEAD_LETTER_MESSAGE_BYTES
    validate_deadletter_headers(header_map(out))


def test_dead_letter_message_header_cut_stays_utf8() -> None:
    out = dead_letter(record(b"v"), refuse("bad_field", "€" * 1000), "mmc.", 1024)
    validate_deadletter_headers(header_map(out))


def test_dead_letter_is_deterministic() -> None:
    def make() -> Output:
        return dead_letter(record(b"z" * 5000, key=b"q" * 5000), refuse("oversize", "big"), "mmc.", 1024)

    assert make() == make()
