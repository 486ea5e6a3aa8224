"""A small tournament for end-to-end tests, its bad inputs, and the batch recomputation of its scores."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

import scoring
from tests.e2e.harness import Event, Received

if TYPE_CHECKING:
    from streams.settings import Settings
    from streams.tools.whatif import WhatIfRow

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
DAY = 86_400_000
CLOSE_AFTER = DAY // 2
SPIKE_MODEL = "m07"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass
class Tournament:
    """Inputs in event-time order plus what the service must make of them."""

    n_models: int
    n_ids: int
    rounds: list[int]
    days: int
    events: list[Event] = field(default_factory=list)
    ids: dict[int, list[str]] = field(default_factory=dict)
    close_ts: dict[int, int] = field(default_factory=dict)
    # accepted submissions: (round, model) -> (ts, predictions aligned to the universe)
    accepted: dict[tuple[int, str], tuple[int, np.ndarray]] = field(default_factory=dict)
    stake_events: list[tuple[int, str, float]] = field(default_factory=list)  # (ts, model, stake)
    target_updates: list[tuple[int, int, bool, np.ndarray]] = field(default_factory=list)  # round, day, final, targets
    bad: list[tuple[str, str]] = field(default_factory=list)  # (reason, description)

    @property
    def models(self) -> list[str]:
        return [f"m{i:02d}" for i in range(self.n_models)]

    def add(self, topic: str, key: str | None, value: Any, ts: int) -> None:
        raw = value if isinstance(value, bytes) or value is None else dumps(value)
        self.events.append(Event(topic, None if key is None else key.encode(), raw, ts))

    def add_bad(self, reason: str, topic: str, key: str | None, value: Any, ts: int) -> None:
        self.add(topic, key, value, ts)
        self.bad.append((reason, topic))

    def stakes_at(self, models: list[str], ts: int) -> np.ndarray:
        out = np.zeros(len(models))
        for i, m in enumerate(models):
            mine = [(t, s) for t, mm, s in self.stake_events if mm == m and t <= ts]
            if mine:
                out[i] = max(mine, key=lambda x: x[0])[1]
        return out

    def batch_scores(self, r: int, day: int, salt: str) -> tuple[list[str], np.ndarray, scoring.RoundScores]:
        """The update's scores recomputed in one call from the raw inputs (the oracle)."""
        models = sorted(m for (rr, m) in self.accepted if rr == r)
        preds = np.stack([self.accepted[(r, m)][1] for m in models])
        stakes = self.stakes_at(models, self.close_ts[r])
        targets = next(t for rr, d, _, t in self.target_updates if rr == r and d == day)
        return models, stakes, scoring.score_round(preds, stakes, targets, round=r, salt=salt)


def build(n_models: int = 40, n_ids: int = 400, n_rounds: int = 5, days: int = 3, seed: int = 0) -> Tournament:
    """Rounds overlap; stakes change between rounds; one model jumps 8× and copies the crowd in round 4."""
    rng = np.random.default_rng(seed)
    t = Tournament(n_models, n_ids, list(range(1, n_rounds + 1)), days)
    models = t.models
    stakes = {m: (float(rng.lognormal(3, 1)) if i < 30 else 0.0) for i, m in enumerate(models)}
    loading = {m: float(rng.uniform(0.0, 1.0)) for m in models}
    for r in t.rounds:
        base = T0 + r * DAY
        ids = [f"id{r:02d}{i:04d}" for i in range(n_ids)]
        t.ids[r] = ids
        t.add("rounds", str(r), {"type": "open", "round": r, "ids": ids}, base)
        crowd = rng.normal(size=n_ids)
        signal = 0.6 * crowd + rng.normal(size=n_ids)
        # stake updates for this round (before its close)
        for i, m in enumerate(models):
            if stakes[m] > 0 and r > 1:
                stakes[m] *= float(rng.uniform(0.8, 1.3))
            if m == SPIKE_MODEL and r == 4:
                stakes[m] *= 8.0
            if r == 1 or stakes[m] > 0:
                ts = base + 1_000 + i
                t.add("stakes", m, {"model": m, "stake": stakes[m]}, ts)
                t.stake_events.append((ts, m, stakes[m]))
        # submissions; staked models lean further into the crowd each round (a crowding trend)
        order = [m for m in models if m != SPIKE_MODEL] + [SPIKE_MODEL]
        for j, m in enumerate(order):
            weight = min(1.0, loading[m] + 0.15 * r) if stakes[m] > 0 else loading[m]
            if m == SPIKE_MODEL:
                weight = 0.05 if r < 4 else 1.0
            preds = weight * crowd + (1 - weight) * rng.normal(size=n_ids) + 0.05 * rng.normal(size=n_ids)
            if j % 9 == 0:
                preds = np.round(preds, 1)  # ties
            ts = base + 10_000 + j * 10
            if j % 11 == 3:  # submitted twice: the later one counts
                first = rng.normal(size=n_ids)
                t.add("submissions", m, {"round": r, "model": m, "predictions": first.tolist()}, ts - 5)
            if j % 7 == 2:  # with ids beside the predictions, shuffled
                perm = rng.permutation(n_ids)
                value = {"round": r, "model": m, "ids": [ids[k] for k in perm], "predictions": preds[perm].tolist()}
            else:
                value = {"round": r, "model": m, "predictions": preds.tolist()}
            t.add("submissions", m, value, ts)
            t.accepted[(r, m)] = (ts, preds)
        close = base + CLOSE_AFTER
        t.close_ts[r] = close
        t.add("rounds", str(r), {"type": "close", "round": r}, close)
        final_targets = np.clip(np.round((signal / signal.std()) * 1.1 + 2), 0, 4) / 4
        for d in range(1, days + 1):
            targets = final_targets.copy()
            if d < days:
                flip = rng.random(n_ids) < 0.1
                targets[flip] = rng.integers(0, 5, flip.sum()) / 4
            if d == 1:
                targets[rng.choice(n_ids, n_ids // 20, replace=False)] = np.nan  # 5% not resolved yet
            t.target_updates.append((r, d, d == days, targets))
            values = [None if np.isnan(x) else float(x) for x in targets]
            t.add("targets", str(r), {"round": r, "day": d, "final": d == days, "targets": values}, close + d * DAY)
    add_bad_inputs(t, rng)
    t.events.sort(key=lambda e: e.timestamp_ms)
    return t


def add_bad_inputs(t: Tournament, rng: np.random.Generator) -> None:
    """One input of every refusal kind, between the good ones."""
    r = 2
    base = T0 + r * DAY + 20_000
    n = t.n_ids
    good = rng.normal(size=n).tolist()
    ids = t.ids[r]
    t.add_bad("not_json", "submissions", "m01", b"{not json", base + 1)
    t.add_bad("wrong_type", "submissions", "m01", [1, 2, 3], base + 2)
    t.add_bad("missing_field", "submissions", "m01", {"round": r, "model": "m01"}, base + 3)
    t.add_bad("bad_field", "rounds", str(r), {"type": "reopen", "round": r}, base + 4)
    t.add_bad("bad_key", "submissions", "m02", {"round": r, "model": "m01", "predictions": good}, base + 5)
    t.add_bad("bad_model_id", "submissions", "bad model!", {"round": r, "model": "bad model!", "predictions": good}, base + 6)
    t.add_bad("non_finite", "submissions", "m01", {"round": r, "model": "m01", "predictions": [None] + good[1:]}, base + 7)
    t.add_bad("non_finite", "submissions", "m01", b'{"round": 2, "model": "m01", "predictions": [NaN, 1.0]}', base + 8)
    t.add_bad("negative_stake", "stakes", "m01", {"model": "m01", "stake": -5.0}, base + 9)
    t.add_bad("wrong_length", "submissions", "m01", {"round": r, "model": "m01", "predictions": good[:-1]}, base + 10)
    t.add_bad("duplicate_ids", "submissions", "m01", {"round": r, "model": "m01", "ids": [ids[0]] + ids[:-1], "predictions": good}, base + 11)
    t.add_bad("unknown_ids", "submissions", "m01", {"round": r, "model": "m01", "ids": ["nope"] + ids[1:], "predictions": good}, base + 12)
    t.add_bad("missing_ids", "submissions", "m01", {"round": r, "model": "m01", "ids": ids[:-1], "predictions": good[:-1]}, base + 13)
    t.add_bad("unknown_round", "submissions", "m01", {"round": 99, "model": "m01", "predictions": good}, base + 14)
    t.add_bad("round_exists", "rounds", str(r), {"type": "open", "round": r, "ids": ["a", "b"]}, base + 15)
    t.add_bad("oversize", "submissions", "m01", {"round": r, "model": "m01", "predictions": good * 40}, base + 16)
    t.add_bad("empty", "stakes", "m01", None, base + 17)
    # after round 2's close: a late submission; targets of round 3 before its close
    t.add_bad("round_closed", "submissions", "m01", {"round": r, "model": "m01", "predictions": good}, t.close_ts[r] + 1)
    t.add_bad("round_not_closed", "targets", "3", {"round": 3, "day": 1, "final": False, "targets": [0.5] * n}, T0 + 3 * DAY + 5)
    many_missing = [None] * (n // 3) + [0.5] * (n - n // 3)
    t.add_bad("too_many_missing_targets", "targets", "1", {"round": 1, "day": 9, "final": False, "targets": many_missing}, t.close_ts[1] + 9 * 3_600_000)
    # a round that opens and closes without submissions, then gets targets
    empty_round = 50
    t.add("rounds", str(empty_round), {"type": "open", "round": empty_round, "ids": ["x1", "x2", "x3"]}, T0 + 6 * DAY)
    t.add("rounds", str(empty_round), {"type": "close", "round": empty_round}, T0 + 6 * DAY + 1)
    t.add_bad("no_submissions", "targets", str(empty_round), {"round": empty_round, "day": 1, "final": True, "targets": [0, 0.5, 1]}, T0 + 6 * DAY + 2)


def score_mismatches(t: Tournament, messages: list[dict[str, Any]], salt: str) -> list[str]:
    """How published ``scores`` messages differ from the batch recomputation (empty: identical).

    Checks every field recomputed in batch bit for bit, the stake and the MMC percentile, and
    that each (round, day, model) of the tournament has exactly one distinct message.
    """
    from streams.messages.resolution import percentiles

    problems: list[str] = []
    seen: dict[tuple[int, int, str], dict[str, Any]] = {}
    for v in messages:
        key = (v["round"], v["day"], v["model"])
        if key in seen and seen[key] != v:
            problems.append(f"{key}: two different messages")
        seen[key] = v
    for r, day, final, _ in t.target_updates:
        models, stakes, batch = t.batch_scores(r, day, salt)
        pct = percentiles(batch.mmc)
        for i, model in enumerate(models):
            got = seen.pop((r, day, model), None)
            if got is None:
                problems.append(f"{(r, day, model)}: no scores message")
                continue
            want = {name: getattr(batch, name)[i] for name in ("corr", "mmc", "contribution", "corr_w_mm")}
            for name, value in want.items():
                if got[name] != (None if np.isnan(value) else value):
                    problems.append(f"{(r, day, model)} {name}: {got[name]!r} != {value!r}")
            if got["final"] is not final or got["stake"] != stakes[i] or got["percentiles"]["mmc"] != pct[i]:
                problems.append(f"{(r, day, model)}: final/stake/percentile differ")
    problems += [f"{key}: not expected" for key in seen]
    return problems


def expected_counts(t: Tournament) -> dict[str, int]:
    """Distinct outputs the tournament must produce: a scores and a leaderboard message per
    (update, model), a crowding message per update, a dead letter per bad input."""
    per_update = {r: sum(1 for (rr, _) in t.accepted if rr == r) for r in t.rounds}
    scored = sum(per_update[r] for r, _, _, _ in t.target_updates)
    return {"scores": scored, "leaderboard": scored, "crowding": len(t.target_updates), "deadletter": len(t.bad)}


#: The output topics a tournament run reads.
OUTPUTS = ["scores", "leaderboard", "crowding", "alerts", "neighbours", "deadletter"]


def tournament_settings(make_settings: Callable[..., Settings], **extra: object) -> Settings:
    """Settings under which every alert kind of the default tournament fires."""
    return make_settings(
        max_message_bytes=100_000,
        alert_min_effective_models=1000.0,  # every round counts as concentrated
        alert_trend_rounds=3,
        alert_trend_min_t=0.0,
        **extra,
    )


def complete(t: Tournament) -> Callable[[list[Received]], bool]:
    """Whether the outputs read so far hold every output of ``t`` (and a neighbours message per
    model of every closed round, and an alert)."""
    want = {**expected_counts(t), "neighbours": len(t.accepted)}

    def done(received: list[Received]) -> bool:
        have = Counter(m.topic for m in received)
        return all(have[k] >= v for k, v in want.items()) and have["alerts"] > 0

    return done


def run_tournament(settings: Settings, t: Tournament, n_workers: int, log_dir: Path) -> list[Received]:
    """Send ``t``, run ``n_workers`` real workers until its outputs are complete, return them."""
    from tests.conftest import run_sync
    from tests.e2e.harness import collect, produce, workers

    run_sync(produce(settings, t.events))
    with workers(settings, n_workers, log_dir=log_dir):
        received = run_sync(collect(settings, OUTPUTS, complete(t), timeout=240))
    assert complete(t)(received), f"outputs missing: {Counter(m.topic for m in received)} vs {expected_counts(t)}"
    return received


@dataclass(frozen=True)
class TournamentRun:
    """A tournament streamed through one worker: its settings, its outputs, and the service's
    what-if answer for :data:`SPIKE_MODEL` at 5× its stake over the last two rounds, asked of
    the state the run left (before any other test can touch the session's Redis)."""

    settings: Settings
    tournament: Tournament
    received: list[Received]
    whatif: list[WhatIfRow]


def one_worker_run(make_settings: Callable[..., Settings], t: Tournament, log_dir: Path) -> TournamentRun:
    from streams.tools.whatif import stake_whatif
    from tests.conftest import run_sync

    settings = tournament_settings(make_settings)
    received = run_tournament(settings, t, 1, log_dir)
    rows = run_sync(stake_whatif(settings, SPIKE_MODEL, 5.0, rounds=2))
    return TournamentRun(settings, t, received, rows)
