"""The ``targets`` topic: a round's resolved targets scored and published.

Targets for an unknown round → ``unknown_round``; before the round's close → ``round_not_closed``;
for a round without submissions → ``no_submissions``; with more than 20% of ids missing →
``too_many_missing_targets`` (the update is not scored). Each scored update (any day, in any
order, repeated or not) publishes the scores, the leaderboard rows of the round's models and the
round's crowding figures; the same inputs give the same bytes. Round-level alerts fire once per
round, at its first scored update. Each scored update also makes sure the round's ``neighbours``
were published for the inputs it scores, and a final one stores the round's crowding tax
(:mod:`streams.worker.neighbours`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

import scoring
from scoring.crowding import ScoreTable, stake_jump_events
from streams import failpoints
from streams.messages.outputs import encode, json_output
from streams.messages.records import InputRecord, TargetsUpdate, align_to_universe, refuse
from streams.messages.resolution import history_entry, round_figures, score_messages, standing, standing_score, trend_figures
from streams.transient import is_transient
from streams.worker import alerts as alert_rules
from streams.worker.basis_at_close import BasisAtClose
from streams.worker.close_alerts import CloseAlerts
from streams.worker.context import PhaseClock, WorkerContext, latest_rounds
from streams.worker.neighbours import RoundNeighbours
from streams.worker.round_inputs import RoundInputs, ScoringInputs
from streams.worker.round_reader import RoundReader

log = logging.getLogger(__name__)

#: Models of one round whose crowding_tax alert carries their own old-stake forecast (each costs a
#: re-scoring of the round; ≥5× jumps are a handful per round).
TAX_FORECASTS_PER_ROUND = 8

#: A model's score history: round → its latest history entry in that round.
History = dict[int, dict[str, Any]]


class TargetsHandler:
    """Scores targets updates and publishes what follows; owns the models' score histories."""

    def __init__(
        self,
        ctx: WorkerContext,
        rounds: RoundReader,
        inputs: RoundInputs,
        basis: BasisAtClose,
        close_alerts: CloseAlerts,
        neighbours: RoundNeighbours | None = None,
    ) -> None:
        self.ctx = ctx
        self.rounds = rounds
        self.inputs = inputs
        self.basis = basis
        self.close_alerts = close_alerts
        self.neighbours = neighbours
        self._history_cache: dict[str, History] = {}

    def forget(self) -> None:
        """Drop the cached histories (another worker may own the targets partition next)."""
        self._history_cache.clear()

    async def handle(self, record: InputRecord, event: TargetsUpdate, received_at: float) -> str:
        """Score and publish one targets update; ``"applied"``, or raises the refusal."""
        r = event.round
        info = await self.rounds.opened(r, record, received_at)
        if info.close_ts is None or record.timestamp_ms < info.close_ts:
            raise refuse("round_not_closed", f"round {r} has not closed; targets come after the close")
        clock = PhaseClock()
        await self.ctx.round_inputs_applied(received_at)
        clock.lap("barriers")
        targets = align_to_universe(event.targets, event.ids, self.rounds.universe(info), partial=True)
        await self.basis.done(r)
        if not info.close_alerted:  # the close-stage alerts, should the worker have stopped before raising them
            await self.close_alerts.raise_pending(r)
        inputs = await self.inputs.load(r, info.n_ids, info.close_ts)
        clock.lap("load")
        complete = bool(np.isfinite(targets).all())
        basis = await self.inputs.basis(r, inputs) if complete else None
        clock.lap("basis")
        s = self.ctx.settings
        scores = scoring.score_prepared(inputs.prepared, inputs.stakes, targets, inputs.samples, basis=basis, max_missing_ratio=s.max_missing_ratio)
        clock.lap("score")
        first_scored = not info.alerted
        histories, figures, trend = await self._publish(record, event, inputs, scores, clock)
        if first_scored:
            found = await self._round_alerts(event, inputs, scores, histories, figures, trend, targets)
            await self.ctx.publish_alerts(found, record.timestamp_ms)
            failpoints.reached("targets.alerts_sent")
            await self.ctx.state.mark_round_alerted(r)
        if self.neighbours is not None:
            await self._neighbours(self.neighbours, r, info.close_ts, inputs, targets if event.final else None)
            clock.lap("neighbours")
        await self.ctx.state.put_targets(r, event.day, event.final, targets)
        log.info("round %d day %d%s: %d models scored (%s)", r, event.day, " final" if event.final else "", len(inputs.models), clock)
        return "applied"

    async def _neighbours(self, neighbours: RoundNeighbours, r: int, close_ts: int, inputs: ScoringInputs, final_targets: NDArray[np.float64] | None) -> None:
        """The round's neighbours published if they were not for these inputs, and on final
        targets its crowding tax stored. A failure other than Kafka's or Redis' is logged: the
        update's scores stand."""
        try:
            await neighbours.publish(r, inputs, close_ts)
            if final_targets is not None:
                await neighbours.store_tax(r, inputs, final_targets)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("round %d: publishing its neighbours or storing its crowding tax failed", r, exc_info=True)

    async def _publish(
        self, record: InputRecord, event: TargetsUpdate, inputs: ScoringInputs, scores: scoring.RoundScores, clock: PhaseClock
    ) -> tuple[dict[str, History], dict[str, Any], dict[str, Any]]:
        """Store and send the update's scores, leaderboard rows and crowding figures; returns the
        models' histories, the round's figures and the running trend (for the round alerts)."""
        s, state = self.ctx.settings, self.ctx.state
        ts, r, models, stakes = record.timestamp_ms, event.round, inputs.models, inputs.stakes
        messages = score_messages(s, r, event.day, event.final, models, stakes, scores)
        histories = await self._record_histories(r, {m: history_entry(msg) for m, msg in zip(models, messages, strict=True)})
        as_of = {"round": r, "day": event.day, "final": event.final}
        rows = {m: standing(s, m, histories[m], as_of) for m in models}
        await state.put_standings({m: (standing_score(row), encode(row)) for m, row in rows.items()})
        failpoints.reached("targets.history_written")
        ranks, board = await state.ranks(models)
        clock.lap("leaderboard")
        figures = round_figures(r, event.day, event.final, models, stakes, scores)
        await state.put_trend(r, figures)
        if event.final:  # the population's MMC by decile for later close-stage alerts (the first final counts)
            await state.put_final(r, ts, figures["mmc_mean_by_cwmm_decile"])
        trend = trend_figures(await state.get_trend(), upto=r, recent=s.alert_trend_rounds)
        crowding = {**figures, "trend": trend}
        outputs = [json_output("scores", m, msg, ts) for m, msg in zip(models, messages, strict=True)]
        outputs += [json_output("leaderboard", m, {**rows[m], "rank": rank, "n_models": board}, ts) for m, rank in zip(models, ranks, strict=True)]
        outputs.append(json_output("crowding", str(r), crowding, ts))
        clock.lap("crowding")
        await self.ctx.send(outputs)
        failpoints.reached("targets.scores_sent")
        clock.lap("send")
        await state.put_round_scores(r, {m: o.value for m, o in zip(models, outputs, strict=False)}, encode(crowding))
        return histories, figures, trend

    async def _record_histories(self, r: int, entries: dict[str, dict[str, Any]]) -> dict[str, History]:
        """Store the update's history entries where they are the round's latest (final wins, then
        the highest day); returns the models' histories with them."""
        histories = await self._histories(list(entries))
        newer = {m: e for m, e in entries.items() if _update_rank(e) >= _update_rank(histories[m].get(r))}
        await self.ctx.state.put_history(r, newer)
        for m, entry in newer.items():
            histories[m][r] = entry
            trimmed = latest_rounds(histories[m], self.ctx.history_keep)
            histories[m] = self._history_cache[m] = trimmed
        return histories

    async def _histories(self, models: list[str]) -> dict[str, History]:
        """Score histories of ``models``, from this worker's cache (it is their only writer while it
        owns the targets partition; the cache is dropped when partitions are revoked)."""
        missing = [m for m in models if m not in self._history_cache]
        if missing:
            fetched = await self.ctx.state.get_histories(missing)
            self._history_cache.update({m: latest_rounds(h, self.ctx.history_keep) for m, h in fetched.items()})
        return {m: self._history_cache[m] for m in models}

    async def _round_alerts(
        self,
        event: TargetsUpdate,
        inputs: ScoringInputs,
        scores: scoring.RoundScores,
        histories: dict[str, History],
        figures: dict[str, Any],
        trend: dict[str, Any],
        targets: NDArray[np.float64],
    ) -> list[dict[str, Any]]:
        """The round's ``crowding_tax``, ``crowding_trend`` and ``concentration`` alerts."""
        s, r, day, stakes = self.ctx.settings, event.round, event.day, inputs.stakes
        found: list[dict[str, Any]] = []
        jumps = [
            (i, m)
            for i, m in enumerate(inputs.models)
            if (prev := histories[m].get(r - 1)) is not None and prev.get("stake", 0) > 0 and stakes[i] >= s.alert_stake_jump_ratio * prev["stake"]
        ]
        if jumps:
            population = await self._population_jump_effect()
            for n, (i, m) in enumerate(jumps):
                previous_stake = histories[m][r - 1]["stake"]
                forecast = (
                    await self._old_stake_forecast(inputs, targets, i, previous_stake, r, float(scores.contribution[i]))
                    if n < TAX_FORECASTS_PER_ROUND
                    else None
                )
                tax = alert_rules.crowding_tax(s, m, r, float(stakes[i]), previous_stake, population, day=day, forecast=forecast)
                if tax is not None:
                    found.append(tax)
        for rule in (
            alert_rules.crowding_trend(s, r, trend, day=day),
            alert_rules.concentration(s, r, figures["effective_models"], day=day),
        ):
            if rule is not None:
                found.append(rule)
        return found

    async def _old_stake_forecast(
        self, inputs: ScoringInputs, targets: NDArray[np.float64], i: int, previous_stake: float, r: int, contribution: float
    ) -> dict[str, Any]:
        """The model's own crowding tax in this round: today's MMC (contribution) at its new
        stake (as scored) and at its previous stake, everything else equal — the same round
        re-scored with one stake changed (on a thread: a close's worth of work)."""
        s = self.ctx.settings
        whatif = inputs.stakes.copy()
        whatif[i] = previous_stake
        samples = scoring.round_samples(whatif, r, s.seed_salt, s.mmc_draws, s.mmc_fraction)
        moved = await asyncio.to_thread(scoring.score_prepared, inputs.prepared, whatif, targets, samples, max_missing_ratio=s.max_missing_ratio)
        at_old = float(moved.contribution[i])
        finite = np.isfinite(contribution) and np.isfinite(at_old)
        return {
            "contribution_at_new_stake": contribution if np.isfinite(contribution) else None,
            "contribution_at_old_stake": at_old if np.isfinite(at_old) else None,
            "tax": contribution - at_old if finite else None,
        }

    async def _population_jump_effect(self) -> dict[str, Any]:
        """The measured change of today's MMC (contribution) after ≥ratio× stake jumps, over
        every model's history so far."""
        histories = await self._histories(await self.ctx.state.all_models())
        rows = [(r, m, e) for m, h in histories.items() for r, e in h.items()]
        if not rows:
            return {"median_relative_change": None, "n_events": 0, "n_compared": 0}
        table = ScoreTable.from_arrays(
            rounds=np.array([r for r, _, _ in rows]),
            models=np.array([m for _, m, _ in rows], dtype=object),
            stakes=np.array([e["stake"] for _, _, e in rows], dtype=float),
            corr_w_mm=np.array([np.nan if e["corr_w_mm"] is None else e["corr_w_mm"] for _, _, e in rows]),
            mmc=np.array([np.nan if e["mmc"] is None else e["mmc"] for _, _, e in rows]),
            contribution=np.array([np.nan if e["contribution"] is None else e["contribution"] for _, _, e in rows]),
        )
        events = stake_jump_events(table, ratio=self.ctx.settings.alert_stake_jump_ratio)
        median = events.median_relative_change
        return {
            "median_relative_change": float(median) if np.isfinite(median) else None,
            "n_events": int(events.n_events),
            "n_compared": int(events.n_compared),
        }


def _update_rank(entry: dict[str, Any] | None) -> tuple[int, int]:
    """Order of a round's updates: any day < final; among days, the later one."""
    if entry is None:
        return (-1, -1)
    return (1 if entry["final"] else 0, int(entry["day"]))
