"""The published JSON Schemas: valid draft 2020-12, in step with the code, and what the validator enforces.

The input schemas are what ``decode_input`` validates with; the output schemas must accept
every message a real worker publishes (checked end to end on a small tournament).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import numpy as np
import orjson
import pytest

from streams.errors import InvalidMessage, SchemaViolation
from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS
from streams.messages.records import MAX_ID_LENGTH, MODEL_ID, REASONS, InputRecord, RoundOpen, StakeUpdate, decode_input
from streams.messages.schemas import (
    DEADLETTER_HEADERS,
    INPUT_SCHEMAS,
    OUTPUT_SCHEMAS,
    SCHEMA_DIR,
    input_violation,
    load_schema,
    validate_deadletter_headers,
    validate_output,
)
from tests.e2e.harness import Event
from tests.e2e.tournament import Tournament, TournamentRun, add_bad_inputs, build

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: Bad inputs whose value alone breaks its topic's schema (the rest are refused for their key,
#: size, bytes, or the state of their round).
STRUCTURAL = {
    "wrong_type",
    "missing_field",
    "bad_field",
    "bad_model_id",
    "non_finite",
    "negative_stake",
    "duplicate_ids",
}
MAX_BYTES = 1_000_000
MAX_IDS = 100_000


def all_schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.json"))


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, str(i)))


def published(name: str) -> Any:
    """A validator built straight from the file (independently of streams.messages.schemas)."""
    return jsonschema_rs.validator_for(json.loads((SCHEMA_DIR / name).read_text()))


# --------------------------------------------------------------------------- the files


def test_every_topic_has_a_schema() -> None:
    """Each input topic and each JSON output topic has a schema file; the dead-letter headers have one."""
    assert set(INPUT_SCHEMAS) == set(INPUT_TOPICS)
    assert set(OUTPUT_SCHEMAS) == set(OUTPUT_TOPICS) - {"deadletter"}
    names = {p.name for p in all_schema_files()}
    assert names == {*INPUT_SCHEMAS.values(), *OUTPUT_SCHEMAS.values(), DEADLETTER_HEADERS}


@pytest.mark.parametrize("path", all_schema_files(), ids=lambda p: p.name)
def test_schema_files_are_valid_draft_2020_12(path: Path) -> None:
    """Each file is a valid draft 2020-12 schema with an id, a title and a description."""
    schema = json.loads(path.read_text())
    assert schema["$schema"] == DRAFT
    jsonschema_rs.meta.validate(schema)
    assert schema["$id"].startswith("urn:mmc-stream:schema:") and schema["title"] and schema["description"]
    for example in schema.get("examples", []):
        published(path.name).validate(example)


def test_schemas_and_web_assets_ship_with_the_package() -> None:
    """pyproject.toml puts the schema files and the page's assets into the wheel (the Docker image installs it)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"].get("package-data", {})
    assert "schemas/*.json" in shipped.get("streams.messages", []) and "webstatic/*" in shipped.get("streams", []), shipped


def test_schema_ids_are_unique() -> None:
    """No two files share a $id."""
    ids = [json.loads(p.read_text())["$id"] for p in all_schema_files()]
    assert len(ids) == len(set(ids))


def test_model_ids_and_universe_ids_follow_the_code() -> None:
    """Every model-id pattern is records.MODEL_ID, anchored; every id length limit is MAX_ID_LENGTH."""
    patterns = []
    for path in all_schema_files():
        for where, node in walk(json.loads(path.read_text())):
            if where and where[-1] == "model" and isinstance(node, dict) and "pattern" in node:
                patterns.append(node["pattern"])
            if where[-2:] == ("ids", "items"):
                assert node["maxLength"] == MAX_ID_LENGTH and node["minLength"] == 1
    assert len(patterns) >= 5
    assert set(patterns) == {f"^{MODEL_ID.pattern}$"}


def test_reason_annotations_name_known_reason_codes() -> None:
    """x-mmc-reasons and x-mmc-null-reason only name codes of records.REASONS; the dead-letter enum is all of them."""
    for name in INPUT_SCHEMAS.values():
        for _, node in walk(load_schema(name)):
            if isinstance(node, dict):
                assert set(node.get("x-mmc-reasons", {}).values()) <= set(REASONS)
                assert node.get("x-mmc-null-reason", "empty") in REASONS
    assert load_schema(DEADLETTER_HEADERS)["properties"]["mmc.error.reason"]["enum"] == list(REASONS)


# --------------------------------------------------------------------------- inputs


class RecordingTournament(Tournament):
    """A Tournament that remembers which event each bad input added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_events: list[tuple[str, Event]] = []

    def add_bad(self, reason: str, topic: str, key: str | None, value: Any, ts: int) -> None:
        super().add_bad(reason, topic, key, value, ts)
        self.bad_events.append((reason, self.events[-1]))


@pytest.fixture(scope="module")
def corpus() -> tuple[Tournament, list[tuple[str, Event]]]:
    """The e2e tournament and its bad inputs, each with the event it added."""
    t = build(n_models=12, n_ids=120, n_rounds=4, days=2)
    recording = RecordingTournament(t.n_models, t.n_ids, t.rounds, t.days, ids=t.ids, close_ts=t.close_ts)
    add_bad_inputs(recording, np.random.default_rng(0))
    assert Counter(r for r, _ in recording.bad_events) == Counter(r for r, _ in t.bad)
    return t, recording.bad_events


def as_record(event: Event) -> InputRecord:
    return InputRecord(event.topic, 0, 0, event.timestamp_ms, event.key, event.value)


def test_good_inputs_are_accepted_by_the_published_schemas(
    corpus: tuple[Tournament, list[tuple[str, Event]]],
) -> None:
    """Every valid input of the tournament validates against its topic's schema file."""
    t, bad = corpus
    bad_slots = {(e.topic, e.key, e.timestamp_ms) for _, e in bad}  # same slots in t, other random values
    good = [e for e in t.events if (e.topic, e.key, e.timestamp_ms) not in bad_slots]
    assert len(t.events) - len(good) == len(bad)
    assert len(good) > 100
    for event in good:
        published(INPUT_SCHEMAS[event.topic]).validate(orjson.loads(event.value))
        decode_input(as_record(event), MAX_BYTES, MAX_IDS)


def test_structural_bad_inputs_are_rejected_with_their_reason(
    corpus: tuple[Tournament, list[tuple[str, Event]]],
) -> None:
    """The schema rejects every structurally bad input, and decode_input refuses it with the e2e reason code."""
    _, bad = corpus
    structural = [(reason, e) for reason, e in bad if reason in STRUCTURAL and _is_json(e.value)]
    assert {reason for reason, _ in structural} == STRUCTURAL
    for reason, event in structural:
        value = orjson.loads(event.value)
        assert not published(INPUT_SCHEMAS[event.topic]).is_valid(value), reason
        if isinstance(value, dict):
            assert input_violation(event.topic, value) is not None
            assert input_violation(event.topic, value)[0] == reason  # type: ignore[index]
        with pytest.raises(InvalidMessage) as info:
            decode_input(as_record(event), MAX_BYTES, MAX_IDS)
        assert info.value.reason == reason


def test_other_bad_inputs_are_structurally_valid(
    corpus: tuple[Tournament, list[tuple[str, Event]]],
) -> None:
    """Inputs refused for their key, size or round state pass the schema: the schema describes structure only."""
    _, bad = corpus
    others = [(reason, e) for reason, e in bad if reason not in STRUCTURAL and _is_json(e.value)]
    assert {
        "bad_key",
        "wrong_length",
        "unknown_ids",
        "missing_ids",
        "unknown_round",
        "round_exists",
        "round_closed",
    } <= {r for r, _ in others}
    for reason, event in others:
        assert published(INPUT_SCHEMAS[event.topic]).is_valid(orjson.loads(event.value)), reason


def _is_json(value: bytes | None) -> bool:
    try:
        orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return False
    return True


def _record(topic: str, value: Any, key: str) -> InputRecord:
    return InputRecord(topic, 0, 0, 0, key.encode(), orjson.dumps(value))


@pytest.mark.parametrize(
    "topic, value, key, reason",
    [
        (
            "stakes",
            {"model": "m1\n", "stake": 1},
            "m1\n",
            "bad_model_id",
        ),  # "$" does not match before a newline
        ("stakes", {"model": "", "stake": 1}, "", "bad_model_id"),
        ("stakes", {"model": 7, "stake": 1}, "7", "wrong_type"),
        ("stakes", {"model": "m1", "stake": None}, "m1", "wrong_type"),
        ("stakes", {"model": "m1", "stake": 1, "round": -3}, "m1", "bad_field"),
        ("stakes", {"model": "m1", "stake": 1, "round": "4"}, "m1", "wrong_type"),
        ("rounds", {"type": "open", "round": 1}, "1", "missing_field"),
        ("rounds", {"type": "open", "round": 1, "ids": ["a", ""]}, "1", "bad_id"),
        ("rounds", {"type": "open", "round": 1, "ids": ["a", "x" * 129]}, "1", "bad_id"),
        ("rounds", {"type": 1, "round": 1}, "1", "bad_field"),
        ("rounds", {"type": "close", "round": 2**53}, str(2**53), "bad_field"),
        (
            "submissions",
            {"round": 1, "model": "m1", "predictions": [True, 0.5]},
            "m1",
            "wrong_type",
        ),
        (
            "submissions",
            {"round": 1, "model": "m1", "predictions": [0.5], "ids": "a"},
            "m1",
            "wrong_type",
        ),
        (
            "submissions",
            {"round": 1, "model": "m1", "predictions": [0.5, 0.1], "ids": ["a", "a"]},
            "m1",
            "duplicate_ids",
        ),
        ("targets", {"round": 1, "day": -1, "final": False, "targets": [0.5]}, "1", "bad_field"),
        ("targets", {"round": 1, "day": 1, "final": False, "targets": ["0.5"]}, "1", "wrong_type"),
        ("targets", {"round": 1, "day": 1, "final": None, "targets": [0.5]}, "1", "wrong_type"),
    ],
)
def test_schema_violations_map_to_reason_codes(topic: str, value: Any, key: str, reason: str) -> None:
    """Each kind of structural fault is refused with the reason code the schema names for it, and a message."""
    with pytest.raises(InvalidMessage) as info:
        decode_input(_record(topic, value, key), MAX_BYTES, MAX_IDS)
    assert info.value.reason == reason and info.value.message
    assert not published(INPUT_SCHEMAS[topic]).is_valid(value)


def test_what_the_schema_accepts_decodes() -> None:
    """Integral floats are integers in JSON Schema (812.0 is round 812); extra fields are ignored."""
    opened = decode_input(
        _record("rounds", {"type": "open", "round": 812.0, "ids": ["a", "b"], "note": "x"}, "812"),
        MAX_BYTES,
        MAX_IDS,
    )
    assert opened == RoundOpen(812, ("a", "b"))
    stake = decode_input(
        _record("stakes", {"model": "m.1-x_Y", "stake": 0, "round": None}, "m.1-x_Y"),
        MAX_BYTES,
        MAX_IDS,
    )
    assert stake == StakeUpdate("m.1-x_Y", 0.0, None)


# --------------------------------------------------------------------------- outputs


def test_output_schemas_are_strict() -> None:
    """An unknown field, a missing field or a wrong type in an output message is caught (the test below is not vacuous)."""
    score = {
        "round": 1,
        "day": 1,
        "final": False,
        "model": "m1",
        "stake": 1.0,
        "corr": 0.01,
        "mmc": None,
        "contribution": 0.0,
        "corr_w_mm": 0.5,
        "payout": 0.005,
        "percentiles": {
            "corr": 0.5,
            "mmc": None,
            "contribution": 0.5,
            "corr_w_mm": 0.5,
            "payout": 0.5,
        },
        "n_ids_scored": 10,
        "n_ids_missing": 0,
    }
    validate_output("scores", score)
    for broken in (
        {**score, "extra": 1},
        {k: v for k, v in score.items() if k != "corr"},
        {**score, "round": "1"},
    ):
        with pytest.raises(SchemaViolation):
            validate_output("scores", broken)
    alert = {
        "kind": "concentration",
        "severity": "warning",
        "model": None,
        "round": 1,
        "day": 1,
        "stage": "resolution",
        "value": 3.0,
        "threshold": 10.0,
        "message": "m",
    }
    validate_output("alerts", alert)
    with pytest.raises(SchemaViolation):
        validate_output("alerts", {**alert, "kind": "crowding_tax"})  # its extra fields are required
    with pytest.raises(SchemaViolation):
        validate_output("alerts", {**alert, "baseline": 0.2})  # not a field of this kind
    with pytest.raises(SchemaViolation):
        validate_deadletter_headers(
            {
                "mmc.error.reason": b"made_up",
                "mmc.error.message": b"m",
                "mmc.error.topic": b"t",
                "mmc.error.partition": b"0",
                "mmc.error.offset": b"1",
            }
        )


@pytest.mark.e2e
def test_every_output_message_of_a_real_worker_matches_its_schema(one_worker_tournament: TournamentRun) -> None:
    """The default tournament through a real worker (the run tests/e2e/test_tournament.py checks
    against the batch recomputation): each score, leaderboard row, crowding report, alert of every
    kind, neighbours message and dead letter validates."""
    t, received = one_worker_tournament.tournament, one_worker_tournament.received
    per_round = Counter(r for (r, _) in t.accepted)
    want = {
        "scores": sum(per_round[r] for r, _, _, _ in t.target_updates),
        "crowding": len(t.target_updates),
        "neighbours": len(t.accepted),  # every model of every closed round
        "deadletter": len(t.bad),
    }
    kinds = {"corr_w_mm_spike", "crowding_tax", "crowding_trend", "concentration"}
    have = Counter(m.topic for m in received)
    assert all(have[k] >= v for k, v in want.items()) and have["leaderboard"] >= want["scores"], have
    assert kinds <= {m.json()["kind"] for m in received if m.topic == "alerts"}
    originals = {e.value or b"" for e in t.events}
    checked: Counter[str] = Counter()
    for m in received:
        if m.topic == "deadletter":
            validate_deadletter_headers(m.headers)
            assert m.value in originals
        else:
            validate_output(m.topic, m.json())
        checked[m.topic] += 1
    assert checked["scores"] == want["scores"] and checked["deadletter"] == len(t.bad)
