"""Event files, replay onto the real broker and tailing it back; the CLI commands end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from streams.cli import app
from streams.errors import ConfigurationError, EventFileError, ReplayError
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings
from streams.tools.replay import count_events, read_events, send_events, write_events
from streams.tools.simulation import TOPICS, SimEvent, SimulationConfig, simulate
from streams.tools.tail import TailedMessage, compact_number, describe, tail
from tests.conftest import run_sync

SHORT = SimulationConfig.small(n_models=12, n_ids=40, n_rounds=4, n_jumps=2, resolution_days=3)


async def collect(settings: Settings, topic: str, **options: Any) -> list[TailedMessage]:
    """Every message a tail yields."""
    return [m async for m in tail(settings, topic, **options)]


async def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    """Send raw (key, value, headers) records to a topic."""
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(settings.topic(topic), value, key=key, headers=headers)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- files


def test_event_file_round_trip(tmp_path: Path) -> None:
    """write_events then read_events gives the same events; count_events counts per topic."""
    events = list(simulate(SHORT))
    path = tmp_path / "season.jsonl"
    assert write_events(events, path) == len(events)
    assert list(read_events(path)) == events
    expected: dict[str, int] = defaultdict(int)
    for e in events:
        expected[e.topic] += 1
    assert count_events(path) == dict(expected)
    first = orjson.loads(path.read_bytes().splitlines()[0])
    assert list(first) == ["topic", "key", "timestamp_ms", "value"]


def test_bad_event_line_names_the_line(tmp_path: Path) -> None:
    """A broken line raises EventFileError with file and line number."""
    path = tmp_path / "bad.jsonl"
    good = orjson.dumps({"topic": "stakes", "key": "m", "timestamp_ms": 1, "value": {"model": "m", "stake": 1.0}})
    path.write_bytes(good + b"\n\n" + b'{"topic": "stakes", "key": 5}\n')
    with pytest.raises(EventFileError, match=r"bad.jsonl:3: 'key' must be a string"):
        list(read_events(path))
    path.write_bytes(b"not json\n")
    with pytest.raises(EventFileError, match=r":1: not JSON"):
        list(read_events(path))


# --------------------------------------------------------------------------- broker


def test_replay_then_tail_returns_the_same_messages(settings: Settings) -> None:
    """Sent events come back per topic: same keys, values and timestamps, in order per key."""
    events = list(simulate(SHORT))
    progress: dict[str, int] = defaultdict(int)

    def on_progress(topic: str, n: int) -> None:
        progress[topic] += n

    sent = run_sync(send_events(settings, events, progress=on_progress))
    by_topic: dict[str, list[SimEvent]] = defaultdict(list)
    for e in events:
        by_topic[e.topic].append(e)
    assert sent == {t: len(v) for t, v in by_topic.items()} == dict(progress)
    for topic in TOPICS:
        back = run_sync(collect(settings, topic, from_beginning=True, until_end=True))
        assert all(m.is_json and m.headers == () and m.topic == settings.topic(topic) for m in back)
        got = sorted((m.timestamp_ms, m.key, orjson.dumps(m.value)) for m in back)
        want = sorted((e.timestamp_ms, e.key, orjson.dumps(e.value)) for e in by_topic[topic])
        assert got == want, topic
        # Per key (so per partition), the broker keeps the send order = timestamp order.
        per_key: dict[str | None, list[int]] = defaultdict(list)
        for m in back:
            per_key[m.key].append(m.timestamp_ms)
        assert all(ts == sorted(ts) for ts in per_key.values())


def test_tail_limit_and_only_new_messages(settings: Settings) -> None:
    """--limit stops early; without from_beginning only messages sent after the start appear."""
    run_sync(send_events(settings, simulate(SHORT)))
    assert len(run_sync(collect(settings, "submissions", from_beginning=True, limit=5))) == 5
    assert run_sync(collect(settings, "rounds", until_end=True)) == []  # the end, nothing older

    async def live() -> list[TailedMessage]:
        task = asyncio.create_task(collect(settings, "alerts", limit=3))
        n = 0
        while not task.done():  # keep sending: the tail shows what arrives once it is assigned
            await produce(settings, "alerts", [(b"m", orjson.dumps({"n": n}), [])])
            n += 1
            await asyncio.sleep(0.2)
        return await asyncio.wait_for(task, 30)

    got = run_sync(live())
    numbers = [m.value["n"] for m in got]
    assert numbers == list(range(numbers[0], numbers[0] + 3))  # consecutive, from where it joined


def test_tail_in_a_group_resumes_where_it_stopped(make_settings: Callable[..., Settings]) -> None:
    """With a group, a second tail continues after the first one's messages (not after what
    the first one fetched)."""
    # Short sessions: on Tansu the second join waits for the first member's session to expire.
    settings = make_settings(broker_session_timeout=3, broker_heartbeat_interval=0.5)
    records = [(b"k", orjson.dumps({"n": n}), []) for n in range(8)]
    run_sync(produce(settings, "crowding", records))
    group = f"tail-{uuid.uuid4().hex[:8]}"
    first = run_sync(collect(settings, "crowding", from_beginning=True, limit=3, group=group))
    second = run_sync(collect(settings, "crowding", from_beginning=True, limit=5, group=group))
    assert [m.value["n"] for m in first] == [0, 1, 2]
    assert [m.value["n"] for m in second] == [3, 4, 5, 6, 7]


def test_tail_decodes_dead_letters(settings: Settings) -> None:
    """Non-JSON values stay text, headers are decoded."""
    headers = [("mmc.error.reason", b"not_json"), ("mmc.error.offset", b"7")]
    run_sync(produce(settings, "deadletter", [(b"model_1", b"\xff{oops", headers)]))
    (message,) = run_sync(collect(settings, "deadletter", from_beginning=True, until_end=True))
    assert not message.is_json and message.value == "\ufffd{oops" and message.key == "model_1"
    assert message.headers == (("mmc.error.reason", "not_json"), ("mmc.error.offset", "7"))
    line = describe(message).plain
    assert "model_1" in line and "mmc.error.reason=not_json" in line


def test_tail_of_a_missing_topic_is_an_error_and_creates_nothing(settings: Settings) -> None:
    """A wrong prefix is reported, not auto-created."""
    other = settings.model_copy(update={"topic_prefix": f"missing{uuid.uuid4().hex[:6]}."})
    with pytest.raises(ConfigurationError, match="does not exist"):
        run_sync(collect(other, "scores", from_beginning=True, until_end=True))

    async def topics() -> set[str]:
        admin = AIOKafkaAdminClient(**kafka_client_options(settings))
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    assert other.topic("scores") not in run_sync(topics())


def test_send_refuses_other_topics(settings: Settings) -> None:
    """Replay only writes input topics."""
    with pytest.raises(ReplayError, match="only"):
        run_sync(send_events(settings, [SimEvent("scores", "m", 1, {"x": 1})]))


@pytest.mark.parametrize(
    ("x", "shown"),
    [
        (0.012345678901234567, "0.01235"),
        (-0.0034567890123456789, "-0.003457"),
        (0.8123456789012345, "0.8123"),
        (123.45678901234567, "123.5"),
        (123456.7, "123457"),
        (2.0, "2"),
        (0.5, "0.5"),
        (-1.234e-05, "-0.00001234"),
        (0.0, "0"),
        (float("nan"), "nan"),
    ],
)
def test_compact_numbers_have_four_significant_digits(x: float, shown: str) -> None:
    assert compact_number(x) == shown


def test_compact_view_is_one_line_of_the_main_fields() -> None:
    """A score: time, topic, key, its main fields in order (the model is the key, so left out),
    floats rounded, the rest (percentiles, id counts) only in --json."""
    value = {
        "round": 812,
        "day": 3,
        "final": False,
        "model": "m07",
        "stake": 120.50000000000001,
        "corr": 0.012345678901234567,
        "mmc": -0.0034567890123456789,
        "contribution": None,
        "corr_w_mm": 0.8123456789012345,
        "payout": 0.0071234567890123456,
        "percentiles": {"corr": 0.5},
        "n_ids_scored": 400,
        "n_ids_missing": 0,
    }
    message = TailedMessage("mmc.scores", 2, 41, 1_767_225_600_000, "m07", value, True, ())
    assert describe(message).plain == (
        "2026-01-01 00:00:00 mmc.scores m07 round=812 day=3 final=false stake=120.5 corr=0.01235 "
        "mmc=-0.003457 contribution=null corr_w_mm=0.8123 payout=0.007123"
    )
    opened = TailedMessage("t1.rounds", 0, 0, 1_767_225_600_000, "812", {"type": "open", "round": 812, "ids": ["a"] * 2000}, True, ())
    assert describe(opened).plain == "2026-01-01 00:00:00 t1.rounds 812 type=open ids=[2000 items]"
    alert = TailedMessage("mmc.alerts", 0, 5, 1_767_225_600_000, "m07", {"kind": "crowding_tax", "model": "m07", "message": "stake rose 8×"}, True, ())
    assert describe(alert).plain == '2026-01-01 00:00:00 mmc.alerts m07 kind=crowding_tax message="stake rose 8×"'


# --------------------------------------------------------------------------- CLI


def test_cli_simulate_replay_tail_report(settings: Settings, tmp_path: Path) -> None:
    """mmc simulate → replay → tail → report through the configured broker."""
    runner = CliRunner()
    env = {
        "MMC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MMC_TOPIC_PREFIX": settings.topic_prefix,
    }
    path = tmp_path / "s.jsonl"
    args = [
        "simulate",
        "--small",
        "--models",
        "12",
        "--ids",
        "40",
        "--rounds",
        "3",
        "--jumps",
        "1",
        "--out",
        str(path),
    ]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    events = list(read_events(path))
    config = SimulationConfig.small(n_models=12, n_ids=40, n_rounds=3, n_jumps=1)
    assert events == list(simulate(config))

    result = runner.invoke(app, ["replay", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert f"sent {len(events):,} events" in result.output

    result = runner.invoke(app, ["tail", "rounds", "--from-beginning", "--until-end", "--json"], env=env)
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted((x["key"], x["value"]["type"]) for x in lines) == sorted((e.key, e.value["type"]) for e in events if e.topic == "rounds")
    result = runner.invoke(app, ["tail", "stakes", "--from-beginning", "--limit", "2"], env=env)
    assert result.exit_code == 0 and result.stdout.count("\n") == 2, result.output

    result = runner.invoke(app, ["report", "--out", str(tmp_path / "report")], env=env)
    assert result.exit_code == 0, result.output
    assert "no scores" in result.output and (tmp_path / "report" / "report.html").is_file()


def test_cli_simulate_needs_a_destination() -> None:
    """Without --out or --send, simulate explains and exits 2."""
    result = CliRunner().invoke(app, ["simulate", "--small"])
    assert result.exit_code == 2 and "--out" in result.output
