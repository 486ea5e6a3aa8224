"""The processor against the real broker and Redis: ranks on the rank threads, a failing batch, the basis at close.

The worker's Runtime is driven directly (no Faust): records go through ``apply_unless_applied``
exactly as the agents hand them over, with the real barriers, Redis state and output producer.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest

import scoring
from scoring.prepared import PreparedRound, gaussian_ranks
from streams.errors import InvalidMessage
from streams.messages.records import InputRecord
from streams.settings import Settings
from streams.worker import ranking
from streams.worker.basis_at_close import BasisAtClose
from streams.worker.close_alerts import CloseAlerts
from streams.worker.processor import Processor
from streams.worker.runtime import Runtime, apply_unless_applied
from tests.conftest import run_sync
from tests.e2e.harness import collect

N_IDS = 50
T0 = 1_767_225_600_000


def rec(topic: str, offset: int, value: dict, key: str, partition: int = 0, ts: int = T0) -> tuple[InputRecord, float]:
    return InputRecord(topic, partition, offset, ts, key.encode(), orjson.dumps(value)), time.monotonic()


def submission(offset: int, model: str, values: list[float], ts: int, ids: list[str] | None = None) -> tuple[InputRecord, float]:
    body: dict = {"round": 1, "model": model, "predictions": values}
    if ids is not None:
        body["ids"] = ids
    return rec("submissions", offset, body, model, ts=ts)


async def apply_batch(settings: Settings, batches: list[list[tuple[InputRecord, float]]]) -> tuple[Runtime, list[str]]:
    """Apply the batches in order through a fresh runtime; returns it (stopped) and every outcome."""
    runtime = Runtime(settings)
    outcomes: list[str] = []
    original = runtime.metrics.input_handled

    def count(topic: str, outcome: str, received_at: float) -> None:
        outcomes.append(outcome)
        original(topic, outcome, received_at)

    runtime.metrics.input_handled = count  # type: ignore[method-assign]
    try:
        for batch in batches:
            await apply_unless_applied(runtime, batch)
        return runtime, outcomes
    finally:
        await runtime.stop()


def test_batch_ranks_equal_one_by_one_and_ids_are_aligned(settings: Settings) -> None:
    """Rows ranked together on the thread, and rows sent with an ids list, store the ranks of each alone."""
    rng = np.random.default_rng(0)
    ids = [f"n{i:03d}" for i in range(N_IDS)]
    preds = rng.normal(size=(4, N_IDS))
    preds[1] = np.round(preds[1], 1)  # ties
    opened = rec("rounds", 0, {"type": "open", "round": 1, "ids": ids}, "1")
    shuffled = rng.permutation(N_IDS)
    subs = [submission(i, f"m{i}", preds[i].tolist(), T0 + 10 + i) for i in range(3)]
    subs.append(submission(3, "m3", preds[3][shuffled].tolist(), T0 + 20, ids=[ids[j] for j in shuffled]))

    async def scenario() -> dict:
        runtime, outcomes = await apply_batch(settings, [[opened], subs])
        assert outcomes == ["applied"] * 5
        runtime = Runtime(settings)
        try:
            await runtime.processor()
            assert runtime.state is not None
            return await runtime.state.get_submissions(1)
        finally:
            await runtime.stop()

    stored = run_sync(scenario())
    for i in range(4):
        alone = PreparedRound.from_predictions(preds[i : i + 1])
        got = stored[f"m{i}"].submission(N_IDS)
        assert got.order.tolist() == alone.order[0].tolist()
        assert got.new_group.tolist() == alone.new_group[0].tolist()
        assert np.array_equal(gaussian_ranks(PreparedRound.stack([got])), gaussian_ranks(alone))


def test_a_batch_digested_in_pieces_on_the_rank_threads_equals_one_digest_of_it() -> None:
    """The pieces a batch is split into for the rank threads give the very bytes one digest gives."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(7, N_IDS))
    values[2] = np.round(values[2], 1)  # ties
    batch = [submission(i, f"m{i}", values[i].tolist(), T0 + i) for i in range(7)]
    batch.append(rec("submissions", 7, {"round": 1}, "m7"))  # refused: no model, no predictions
    whole = ranking.digest_submissions([r for r, _ in batch], 1 << 20, 1000)

    async def in_pieces() -> ranking.Digest:
        prepared = Processor(Settings(), None, None, None).prepare_submissions(batch, head_start=False)  # type: ignore[arg-type]
        return await prepared.digest

    pieces = run_sync(in_pieces())
    assert ranking.RANK_THREADS > 1
    assert sorted(pieces.decoded) == sorted(whole.decoded) == [(0, i) for i in range(8)]
    for key, event in whole.decoded.items():
        other = pieces.decoded[key]
        assert type(other) is type(event)
        if isinstance(event, InvalidMessage):
            assert (other.reason, str(other)) == (event.reason, str(event))  # type: ignore[union-attr]
        else:
            assert (other.round, other.model) == (event.round, event.model)  # type: ignore[union-attr]
            assert other.predictions.tobytes() == event.predictions.tobytes()  # type: ignore[union-attr]
    assert sorted(pieces.ranks) == sorted(whole.ranks) == [(0, i) for i in range(7)]
    for key, (prepared, g, stored) in whole.ranks.items():
        got_prepared, got_g, got_stored = pieces.ranks[key]
        assert got_stored == stored
        assert got_g.tobytes() == g.tobytes()
        assert got_prepared.order.tobytes() == prepared.order.tobytes()
        assert got_prepared.new_group.tobytes() == prepared.new_group.tobytes()


def test_a_batch_whose_shared_path_fails_is_refused_record_by_record(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-input failure on the shared path: the batch is retried one by one and each record is
    refused ``internal_error`` (on the dead-letter topic), instead of the single-record retry
    failing again forever."""
    ids = [f"n{i:03d}" for i in range(N_IDS)]
    opened = rec("rounds", 0, {"type": "open", "round": 1, "ids": ids}, "1")
    subs = [submission(i, f"m{i}", np.linspace(0, 1, N_IDS).tolist(), T0 + 10 + i) for i in range(3)]
    calls = []

    def broken(rows: list) -> dict:
        calls.append(len(rows))
        raise RuntimeError("ranking is broken")

    async def scenario() -> list[str]:
        _, outcomes = await apply_batch(settings, [[opened]])
        monkeypatch.setattr(ranking, "rank_rows", broken)
        _, more = await apply_batch(settings, [subs])
        return outcomes + more

    outcomes = run_sync(scenario())
    assert outcomes == ["applied", "internal_error", "internal_error", "internal_error"]
    # the batch once (in one piece per rank thread: 2 + 1), then each record once: no retry loop
    assert sorted(calls) == [1, 1, 1, 1, 2]
    letters = run_sync(collect(settings, ["deadletter"], lambda got: len(got) >= 3, timeout=20))
    assert sorted(m.value for m in letters) == sorted(r.value for r, _ in subs)
    assert {m.headers["mmc.error.reason"] for m in letters} == {b"internal_error"}
    assert all(b"ranking is broken" in m.headers["mmc.error.message"] for m in letters)


def test_the_basis_is_prepared_at_close_and_the_first_update_uses_it(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a round starts its basis in the background; the first targets update finds it
    stored under the same fingerprint and does not compute it again, and publishes the same bytes
    as a worker that computes the basis then (a second runtime on fresh state, no basis task)."""
    ids = [f"n{i:03d}" for i in range(N_IDS)]
    rng = np.random.default_rng(5)
    inputs = [[rec("rounds", 0, {"type": "open", "round": 1, "ids": ids}, "1")]]
    inputs.append([rec("stakes", i, {"model": f"m{i}", "stake": 10.0 + i}, f"m{i}", ts=T0 + 1 + i) for i in range(4)])
    inputs.append([submission(i, f"m{i}", rng.normal(size=N_IDS).tolist(), T0 + 10 + i) for i in range(4)])
    inputs.append([rec("rounds", 1, {"type": "close", "round": 1}, "1", ts=T0 + 1000)])
    targets = rec("targets", 0, {"round": 1, "day": 1, "final": False, "targets": rng.uniform(size=N_IDS).tolist()}, "1", ts=T0 + 2000)
    computed: list[int] = []
    close_round = scoring.close_round

    def counted(*args: object) -> object:
        computed.append(1)
        return close_round(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring, "close_round", counted)

    async def scenario(wait_for_basis: bool) -> tuple[int, list[bytes]]:
        run = settings.model_copy(update={"state_namespace": f"s{int(wait_for_basis)}{settings.app_id[-8:]}"})
        runtime = Runtime(run)
        try:
            for batch in inputs:
                await apply_unless_applied(runtime, batch)
            assert runtime.state is not None
            if wait_for_basis:
                deadline = time.monotonic() + 30
                while not await runtime.state.r.exists(runtime.state.keys.basis(1)):
                    assert time.monotonic() < deadline, "no basis stored after the close"
                    await asyncio.sleep(0.05)
            at_close = len(computed)
            await apply_unless_applied(runtime, [targets])
            assert len(computed) == at_close + (0 if wait_for_basis else 1)
            scores = await runtime.state.r.hgetall(runtime.state.keys.scores(1))
            crowding = await runtime.state.r.get(runtime.state.keys.crowding(1))
            return at_close, [scores[k] for k in sorted(scores)] + [crowding]
        finally:
            await runtime.stop()

    at_close, prepared = run_sync(scenario(True))
    assert at_close == 1
    computed.clear()
    # a worker that did not see the close being applied (started after it): no basis task, no close-alert task
    monkeypatch.setattr(BasisAtClose, "start", lambda self, r, received_at: None)
    monkeypatch.setattr(CloseAlerts, "start", lambda self, r, received_at: None)
    at_close, lazily = run_sync(scenario(False))
    assert at_close == 0 and len(computed) == 1
    assert len(prepared) == 5 and prepared == lazily  # four models' scores + the crowding figures, same bytes


def _crowd_season() -> tuple[list[list[tuple[InputRecord, float]]], dict[int, tuple[InputRecord, float]]]:
    """Three rounds of five staked models; m0 is original in rounds 1–2 and copies the crowd in
    round 3 (a corr_w_mm_spike at round 3's close). Returns the inputs up to the closes and a
    first targets update per round."""
    rng = np.random.default_rng(11)
    batches: list[list[tuple[InputRecord, float]]] = []
    targets = {}
    offsets = {"rounds": 0, "stakes": 0, "submissions": 0, "targets": 0}

    def nxt(topic: str) -> int:
        offsets[topic] += 1
        return offsets[topic] - 1

    for r in (1, 2, 3):
        base = T0 + r * 86_400_000
        ids = [f"r{r}n{i:03d}" for i in range(N_IDS)]
        crowd = rng.normal(size=N_IDS)
        batches.append([rec("rounds", nxt("rounds"), {"type": "open", "round": r, "ids": ids}, str(r), ts=base)])
        if r == 1:
            batches.append([rec("stakes", nxt("stakes"), {"model": f"m{i}", "stake": 10.0 + i}, f"m{i}", ts=base + 1 + i) for i in range(5)])
        subs = []
        for i in range(5):
            weight = 0.0 if (i == 0 and r < 3) else (1.0 if i == 0 else 0.7)
            values = weight * crowd + (1 - weight) * rng.normal(size=N_IDS) + 0.05 * rng.normal(size=N_IDS)
            body = {"round": r, "model": f"m{i}", "predictions": values.tolist()}
            subs.append(rec("submissions", nxt("submissions"), body, f"m{i}", ts=base + 10 + i))
        batches.append(subs)
        batches.append([rec("rounds", nxt("rounds"), {"type": "close", "round": r}, str(r), ts=base + 1000)])
    for r in (1, 2, 3):
        body = {"round": r, "day": 1, "final": False, "targets": rng.uniform(size=N_IDS).tolist()}
        targets[r] = rec("targets", nxt("targets"), body, str(r), ts=T0 + 5 * 86_400_000 + r)
    return batches, targets


def test_close_stage_alerts_are_raised_at_close_or_else_by_the_first_targets_update(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crowd-copying model alerts at its round's close (stage close, before any targets); a
    worker that never ran the close-alert task raises the very same alerts at the round's first
    targets update."""
    batches, targets = _crowd_season()

    async def close_alerts(namespace: str, with_targets: bool) -> list[bytes]:
        runtime = Runtime(settings.model_copy(update={"state_namespace": namespace}))
        try:
            for batch in batches:
                await apply_unless_applied(runtime, batch)
            if with_targets:
                await apply_unless_applied(runtime, [targets[3]])
            await (await runtime.processor()).settle()
            assert runtime.state is not None
            raised = await runtime.state.r.zrange(runtime.state.keys.alerts(), 0, -1)
            return sorted(a for a in raised if orjson.loads(a)["stage"] == "close")
        finally:
            await runtime.stop()

    at_close = run_sync(close_alerts(f"c1{settings.app_id[-8:]}", with_targets=False))
    spikes = [a for a in map(orjson.loads, at_close) if a["model"] == "m0"]
    assert [(a["kind"], a["round"], a["trigger"]) for a in spikes] == [("corr_w_mm_spike", 3, "baseline")]
    assert spikes[0]["stake"] == 10.0 and spikes[0]["value"] > spikes[0]["baseline"] + 0.4
    monkeypatch.setattr(CloseAlerts, "start", lambda self, r, received_at: None)
    assert run_sync(close_alerts(f"c2{settings.app_id[-8:]}", with_targets=False)) == []
    assert run_sync(close_alerts(f"c3{settings.app_id[-8:]}", with_targets=True)) == at_close
