"""End to end through the real broker, real Redis and real worker processes: a small tournament."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import scoring
from streams.messages.neighbours import neighbour_messages
from streams.messages.outputs import encode
from streams.settings import Settings
from tests.conftest import run_sync
from tests.e2e.harness import Received, collect, end_offsets, produce, start_worker, stop_workers, workers
from tests.e2e.tournament import (
    OUTPUTS,
    SPIKE_MODEL,
    Tournament,
    TournamentRun,
    build,
    complete,
    expected_counts,
    score_mismatches,
    tournament_settings,
)

pytestmark = pytest.mark.e2e


def test_scores_equal_batch_recomputation_bit_for_bit(one_worker_tournament: TournamentRun) -> None:
    """Every score message equals scoring.score_round recomputed in batch; bad inputs land on the dead-letter topic."""
    settings, t, received = one_worker_tournament.settings, one_worker_tournament.tournament, one_worker_tournament.received
    by_topic: dict[str, list[Received]] = {}
    for m in received:
        by_topic.setdefault(m.topic, []).append(m)

    # scores: bit for bit against the batch recomputation
    scores = {(v["round"], v["day"], v["model"]): v for v in (m.json() for m in by_topic["scores"])}
    assert len(scores) == expected_counts(t)["scores"]
    assert score_mismatches(t, list(scores.values()), settings.seed_salt) == []
    for (_, day, _), got in scores.items():
        assert got["n_ids_missing"] == (t.n_ids // 20 if day == 1 else 0)

    # every score message carries its target update's event time
    target_ts = {(e_round, e_day): ts for (e_round, e_day), ts in _target_times(t).items()}
    for m in by_topic["scores"]:
        v = m.json()
        assert m.timestamp_ms == target_ts[(v["round"], v["day"])]

    # dead letters: one per bad input, with its reason and the source coordinates
    reasons = Counter(m.headers["mmc.error.reason"].decode() for m in by_topic["deadletter"])
    assert reasons == Counter(reason for reason, _ in t.bad)
    for m in by_topic["deadletter"]:
        assert m.headers["mmc.error.topic"].decode().startswith(settings.topic_prefix)
        assert int(m.headers["mmc.error.offset"]) >= 0 and m.headers["mmc.error.message"]
    originals = {e.value for e in t.events}
    assert all(m.value in originals or m.value == b"" for m in by_topic["deadletter"])

    # leaderboard: the last row of each model equals its rolling means from the batch scores
    last_rows = {}
    for m in by_topic["leaderboard"]:
        last_rows[m.key.decode()] = m.json()
    for model in t.models:
        finals = [t.batch_scores(r, t.days, settings.seed_salt) for r in t.rounds]
        payouts = []
        for models, _, batch in finals:
            i = models.index(model)
            corr, contrib = batch.corr[i], batch.contribution[i]
            payouts.append(float(np.clip(0.5 * corr + 2 * contrib, -0.05, 0.05)))
        row = last_rows[model]
        assert row["rounds"] == len(t.rounds)
        assert row["payout_mean"] == pytest.approx(float(np.mean(payouts)), abs=1e-15)
    ranks = sorted(row["rank"] for row in last_rows.values())
    assert ranks == list(range(1, len(t.models) + 1))

    # crowding: stake-weighted vs median CWMM per update, against the batch
    for m in by_topic["crowding"]:
        v = m.json()
        _, stakes, batch = t.batch_scores(v["round"], v["day"], settings.seed_salt)
        staked = (stakes > 0) & np.isfinite(batch.corr_w_mm)
        weighted = np.sum(stakes[staked] * batch.corr_w_mm[staked]) / np.sum(stakes[staked])
        assert v["stake_weighted_cwmm"] == pytest.approx(weighted, abs=1e-12)
        assert v["median_cwmm"] == pytest.approx(float(np.nanmedian(batch.corr_w_mm)), abs=1e-12)

    # neighbours: every model of every closed round, the batch computation's bytes on the stakes frozen at close
    neighbours = {(v["round"], v["model"]): (m, v) for m in by_topic["neighbours"] for v in [m.json()]}
    assert set(neighbours) == set(t.accepted)
    for r in t.rounds:
        models = sorted(m for (rr, m) in t.accepted if rr == r)
        preds = np.stack([t.accepted[(r, m)][1] for m in models])
        found = scoring.crowd_neighbours(preds, t.stakes_at(models, t.close_ts[r]), settings.neighbours_k, settings.crowd_threshold)
        for want in neighbour_messages(r, models, found):
            m, _ = neighbours[(r, want["model"])]
            assert (m.key, m.value, m.timestamp_ms) == (want["model"].encode(), encode(want), t.close_ts[r])

    # alerts: the 8× stake jump, the crowd-copying spike, trend, concentration (live alerts: see test_live_alert)
    alerts = [m.json() for m in by_topic["alerts"]]
    kinds = Counter((a["kind"], a["stage"]) for a in alerts)
    tax = [a for a in alerts if a["kind"] == "crowding_tax"]
    assert any(a["model"] == SPIKE_MODEL and a["round"] == 4 and a["value"] >= 5 for a in tax), tax
    # its own forecast: today's MMC as published, and the round re-scored in batch at the old stake
    jump = next(a for a in tax if a["model"] == SPIKE_MODEL and a["round"] == 4)
    models, stakes, batch = t.batch_scores(4, jump["day"], settings.seed_salt)
    i = models.index(SPIKE_MODEL)
    old = stakes.copy()
    old[i] = jump["previous_stake"]
    preds = np.stack([t.accepted[(4, m)][1] for m in models])
    targets = next(tt for rr, d, _, tt in t.target_updates if rr == 4 and d == jump["day"])
    at_old = scoring.score_round(preds, old, targets, round=4, salt=settings.seed_salt).contribution[i]
    assert jump["own_forecast"]["contribution_at_new_stake"] == pytest.approx(batch.contribution[i], abs=1e-12)
    assert jump["own_forecast"]["contribution_at_old_stake"] == pytest.approx(at_old, abs=1e-12)
    # the crowd-copying spike is raised at close, against the meta model at close (no targets needed)
    spikes = [a for a in alerts if a["kind"] == "corr_w_mm_spike" and a["model"] == SPIKE_MODEL and a["round"] == 4]
    assert {a["stage"] for a in spikes} == {"close"}, spikes
    models, stakes, batch = t.batch_scores(4, t.days, settings.seed_salt)
    assert spikes[0]["value"] == pytest.approx(batch.corr_w_mm[models.index(SPIKE_MODEL)], abs=1e-12)
    assert spikes[0]["stake"] == pytest.approx(stakes[models.index(SPIKE_MODEL)], abs=1e-12)
    assert not [a for a in alerts if a["kind"] == "corr_w_mm_spike" and a["stage"] == "resolution"]
    assert kinds[("concentration", "resolution")] == len(t.rounds)
    assert kinds[("crowding_trend", "resolution")] >= 1

    # what-if from the service's state equals the counterfactual on the raw inputs
    from scoring import stake_counterfactual

    rows = one_worker_tournament.whatif
    assert [row.round for row in rows] == t.rounds[-2:]
    for row in rows:
        models = sorted(m for (rr, m) in t.accepted if rr == row.round)
        preds = np.stack([t.accepted[(row.round, m)][1] for m in models])
        stakes = t.stakes_at(models, t.close_ts[row.round])
        final = next(tt for rr, d, f, tt in t.target_updates if rr == row.round and f)
        want = stake_counterfactual(preds, stakes, final, models.index(SPIKE_MODEL), 5.0, round=row.round, salt=settings.seed_salt)
        assert row.counterfactual == want
        assert row.counterfactual.corr_w_mm_whatif > row.counterfactual.corr_w_mm


def _target_times(t: Tournament) -> dict[tuple[int, int], int]:
    import orjson

    out = {}
    for e in t.events:
        if e.topic == "targets" and e.value:
            v = orjson.loads(e.value)
            out[(v["round"], v["day"])] = e.timestamp_ms
    return out


def _comparable(received: list[Received], prefix: str) -> set[tuple[str, bytes | None, bytes, int, tuple]]:
    """Distinct outputs, without the provisional live alerts and with the topic prefix removed.

    Delivery is at-least-once: a record re-applied after a rebalance is published again with
    identical bytes, so runs are compared as sets of distinct messages.
    """
    out: set[tuple[str, bytes | None, bytes, int, tuple]] = set()
    for m in received:
        if m.topic == "alerts" and m.json()["stage"] == "live":
            continue
        headers = tuple(sorted((k, v.replace(prefix.encode(), b"")) for k, v in m.headers.items()))
        out.add((m.topic, m.key, m.value, m.timestamp_ms, headers))
    return out


def test_two_workers_and_a_replay_give_the_same_outputs(make_settings: Callable[..., Settings], one_worker_tournament: TournamentRun, tmp_path: Path) -> None:
    """One worker, two workers sharing the partitions, and a replay into fresh state publish
    identical bytes. The two-worker run (topics of its own) and the replay (the one-worker run's
    topics) run side by side: they share nothing but the broker and Redis."""
    one, tournament, first = one_worker_tournament.settings, one_worker_tournament.tournament, one_worker_tournament.received
    two = tournament_settings(make_settings)
    (tmp_path / "two").mkdir()
    (tmp_path / "replay").mkdir()
    run_sync(produce(two, tournament.events))
    # replay: a new consumer group and empty state re-read the same input topics
    marks = run_sync(end_offsets(one, OUTPUTS))
    fresh = one.model_copy(update={"app_id": one.app_id + "-replay", "state_namespace": one.state_namespace + "r"})
    procs = [start_worker(two, tmp_path / "two" / f"worker{i}.log") for i in range(2)] + [start_worker(fresh, tmp_path / "replay" / "worker0.log")]
    try:
        second = run_sync(collect(two, OUTPUTS, complete(tournament), timeout=240))
        replayed = run_sync(collect(fresh, OUTPUTS, complete(tournament), timeout=240, start=marks))
    finally:
        stop_workers(procs)  # all three at once
    assert complete(tournament)(second), f"outputs missing: {Counter(m.topic for m in second)} vs {expected_counts(tournament)}"
    assert _comparable(first, one.topic_prefix) == _comparable(second, two.topic_prefix)
    assert _comparable(replayed, one.topic_prefix) == _comparable(first, one.topic_prefix)


def test_live_alert_flags_a_crowding_submission_before_the_round_resolves(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A model that starts copying the meta model is flagged when its submission arrives, before any targets."""
    settings = tournament_settings(make_settings)
    t = build(n_models=12, n_ids=200, n_rounds=4, days=1, seed=3)
    first = [e for e in t.events if e.timestamp_ms < t.close_ts[3] + 2 * 86_400_000 and not _is_round(e, 4)]
    rest = [e for e in t.events if e not in first]
    with workers(settings, 1, log_dir=tmp_path):
        run_sync(produce(settings, first))
        finals = sum(1 for (r, _) in t.accepted if r <= 3)
        run_sync(collect(settings, ["scores"], lambda rec: len(rec) >= finals, timeout=120))
        run_sync(produce(settings, [e for e in rest if e.topic != "targets"]))
        found = run_sync(
            collect(
                settings,
                ["alerts"],
                lambda rec: any(m.json()["stage"] == "live" and m.json()["model"] == SPIKE_MODEL for m in rec),
                timeout=60,
            )
        )
    live = [m.json() for m in found if m.json()["stage"] == "live" and m.json()["model"] == SPIKE_MODEL]
    assert live and live[0]["kind"] == "corr_w_mm_spike" and live[0]["round"] == 4
    assert live[0]["value"] > live[0]["threshold"]
    assert not any(m.topic == "scores" and m.json()["round"] == 4 for m in found)


def _is_round(e, r: int) -> bool:
    import orjson

    if not e.value:
        return False
    try:
        value = orjson.loads(e.value)
        return isinstance(value, dict) and value.get("round") == r
    except orjson.JSONDecodeError:
        return False
