"""The ``submissions`` topic: predictions decided against their round, stored with the running
(live) meta model, and checked against it for a provisional ``corr_w_mm_spike``.

A submission counts when its event time is at or before its round's close; later → ``round_closed``.
A newer submission (event time, then offset) replaces an older one; an older one arriving after a
newer one is refused ``superseded``. Submissions for unknown rounds → ``unknown_round``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scoring.errors import ScoringError
from scoring.prepared import PreparedRound, g15_correlations, gaussian_ranks
from streams import failpoints
from streams.errors import InvalidMessage
from streams.messages.outputs import Output
from streams.messages.records import InputRecord, Submission, align_to_universe, refuse
from streams.state import RoundInfo, SubmissionRow
from streams.transient import is_transient
from streams.worker import alerts as alert_rules
from streams.worker.context import WorkerContext, as_refusal, ignore_outcome, internal_error, latest_rounds
from streams.worker.ranking import Digest, Ranked, RecordKey, digest_in_pieces, rank_rows
from streams.worker.round_reader import RoundReader

log = logging.getLogger(__name__)

#: Rounds whose running meta-model total a worker keeps (the most recent ones).
LIVE_TOTALS_CACHED = 16
# The live CWMM compares a submission with the round's running meta model as last read; it
# is re-read from Redis at most this often (it moves slowly once a round has many stakers).
LIVE_REFRESH_SECONDS = 1.0

#: A batch's records as handed over: each record and when it was received (monotonic seconds).
Batch = list[tuple[InputRecord, float]]
#: A submission accepted by the decision: its record, event, round, values, stake in force and the row it replaces.
Accepted = tuple[InputRecord, Submission, RoundInfo, NDArray[np.float64], float, SubmissionRow | None]
#: An applied submission with its prepared (ranked) row.
Applied = tuple[InputRecord, Submission, PreparedRound]


@dataclass(frozen=True)
class SubmissionBatch:
    """What :meth:`SubmissionsHandler.prepare` started for records: their digest on the rank threads."""

    keys: frozenset[RecordKey]
    digest: asyncio.Future[Digest]

    def covers(self, batch: Batch) -> bool:
        return all((record.partition, record.offset) in self.keys for record, _ in batch)

    def discard(self) -> None:
        """Not going to be applied: let the digest finish unobserved (no "never retrieved" errors)."""
        self.digest.add_done_callback(ignore_outcome)


class SubmissionsHandler:
    """Applies batches of submissions; owns the live meta-model totals it reads for the live alerts."""

    def __init__(self, ctx: WorkerContext, rounds: RoundReader) -> None:
        self.ctx = ctx
        self.rounds = rounds
        self._live_totals: dict[int, tuple[float, NDArray[np.float64]]] = {}
        self._known_models: set[str] = set()

    def forget(self) -> None:
        """Drop the cached live totals (other workers move them)."""
        self._live_totals.clear()

    def prepare(self, batch: Batch, head_start: bool = True) -> SubmissionBatch:
        """Start decoding and ranking a batch on the rank threads, and its barriers, without waiting.

        Neither depends on the state, so the submissions consumer prepares the next batch while
        the previous one is being applied (:mod:`streams.worker.ingest`). The barrier task is only a head
        start: :meth:`handle` waits for the barriers itself (a check that started after the
        records were received serves them — :meth:`Barrier.wait_for`).
        """
        s = self.ctx.settings
        digest = digest_in_pieces([r for r, _ in batch], s.max_message_bytes, s.max_ids)
        if head_start:
            task = asyncio.ensure_future(self._barriers(batch))
            task.add_done_callback(ignore_outcome)  # its error, if any, comes again when waited for
        return SubmissionBatch(frozenset((r.partition, r.offset) for r, _ in batch), digest)

    async def _barriers(self, batch: Batch) -> None:
        latest = max(received_at for _, received_at in batch)
        # The stake stored with a row (its weight in the live meta model) is the one in force at
        # its event time: every stake appended before the batch was received must be applied, or
        # a replay would store a different weight than the live run did. Both topics are checked
        # at once (a check is a few broker round trips).
        barrier = self.ctx.barrier
        await asyncio.gather(
            barrier.wait_for("rounds", latest, max(record.timestamp_ms for record, _ in batch)),
            barrier.wait_for("stakes", latest),
        )

    async def handle(self, batch: Batch, prepared: SubmissionBatch | None = None) -> list[str]:
        """Apply a batch of ``submissions`` records (log order per partition); one outcome each.

        ``prepared``: the batch's :meth:`prepare`, if started earlier (else it is started here).
        The batch shares its round trips: one barrier check, one read of every stored row, stake
        and live sum it touches, one write per round, one read for the live alerts. The records
        are decided one after another in memory, so a later record of the same model sees the
        earlier one exactly as if it had been stored. Should anything but the input or the
        infrastructure fail on the shared path, the records are applied one by one (each then
        succeeds or is refused on its own).
        """
        if prepared is None or not prepared.covers(batch):
            prepared = self.prepare(batch, head_start=False)
        outcomes: list[str | None] = [None] * len(batch)
        refusals: list[Output] = []
        try:
            try:
                await self._barriers(batch)
            except BaseException:
                await asyncio.wait([prepared.digest])  # never leave the thread working for a failed batch
                raise
            digest = await prepared.digest
            decoded = self._triage(batch, digest, outcomes, refusals)
            applied = await self._apply(decoded, outcomes, refusals, digest.ranks)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(batch) > 1:
                log.exception("batch of %d submissions failed; applying them one by one", len(batch))
                return [(await self.handle([one]))[0] for one in batch]
            error = internal_error(batch[0][0], exc)
            await self.ctx.refuse(batch[0][0], error)
            return [error.reason]
        if refusals:
            await self.ctx.send(refusals)
        try:
            await self._live_alerts(applied)
        except Exception as exc:  # advisory: never changes the submissions' outcomes
            if is_transient(exc):
                raise
            log.exception("live corr_w_mm check failed for a batch of %d submissions", len(applied))
        return [o if o is not None else "internal_error" for o in outcomes]

    def _triage(self, batch: Batch, digest: Digest, outcomes: list[str | None], refusals: list[Output]) -> list[tuple[int, InputRecord, Submission]]:
        """The batch's decoded submissions (with their place in it); those whose bytes or timestamp
        earn a refusal are refused into ``refusals``."""
        decoded: list[tuple[int, InputRecord, Submission]] = []
        for i, (record, _) in enumerate(batch):
            event = digest.decoded[(record.partition, record.offset)]
            try:
                self.ctx.check_clock(record)
            except InvalidMessage as exc:
                event = exc
            if isinstance(event, InvalidMessage):
                outcomes[i] = self.ctx.refusal(record, event, refusals)
            elif not isinstance(event, Submission):
                raise ValueError(f"not a submission: {record.topic}[{record.partition}]@{record.offset}")
            else:
                decoded.append((i, record, event))
        return decoded

    async def _apply(
        self,
        decoded: list[tuple[int, InputRecord, Submission]],
        outcomes: list[str | None],
        refusals: list[Output],
        ranks: dict[RecordKey, Ranked],
    ) -> list[Applied]:
        """Decide, then store, every decoded submission (barriers passed); returns the applied ones with their ranks."""
        if not decoded:
            return []
        infos = {r: await self.rounds.info(r) for r in sorted({event.round for _, _, event in decoded})}
        known: list[tuple[int, InputRecord, Submission, RoundInfo]] = []
        for i, record, event in decoded:
            info = infos[event.round]
            if info is None:
                outcomes[i] = self.ctx.refusal(record, refuse("unknown_round", f"round {event.round} was never opened"), refusals)
            else:
                known.append((i, record, event, info))
        live_keys = sorted({(event.round, record.partition) for _, record, event, _ in known})
        n_ids = {info.round: info.n_ids for _, _, _, info in known}
        stored, stakes, sums = await self.ctx.state.submission_context(
            [(event.round, event.model, record.timestamp_ms) for _, record, event, _ in known],
            [(r, p, n_ids[r]) for r, p in live_keys],
        )
        lives = dict(zip(live_keys, sums, strict=True))
        accepted = self._decide_all(known, stored, stakes, outcomes, refusals)
        if not accepted:
            return []
        return await self._store(accepted, ranks, lives)

    def _decide_all(
        self,
        known: list[tuple[int, InputRecord, Submission, RoundInfo]],
        stored: list[SubmissionRow | None],
        stakes: list[float],
        outcomes: list[str | None],
        refusals: list[Output],
    ) -> list[Accepted]:
        """Decide every record in log order, in memory: a later record of the same model sees the
        earlier one as if it had been stored (its order key, partition and live weight; its ranks
        are not needed until :meth:`_store`, where its G is at hand)."""
        current: dict[tuple[int, str], SubmissionRow | None] = {}
        for (_, _, event, _), row in zip(known, stored, strict=True):
            current.setdefault((event.round, event.model), row)
        accepted: list[Accepted] = []
        for (i, record, event, info), stake in zip(known, stakes, strict=True):
            key = (event.round, event.model)
            try:
                outcome, values = self._decide(record, event, info, current[key])
            except (InvalidMessage, ScoringError) as exc:
                outcomes[i] = self.ctx.refusal(record, as_refusal(exc), refusals)
                continue
            except Exception as exc:
                if is_transient(exc):
                    raise
                outcomes[i] = self.ctx.refusal(record, internal_error(record, exc), refusals)
                continue
            outcomes[i] = outcome
            if values is None:
                continue
            accepted.append((record, event, info, values, stake, current[key]))
            current[key] = SubmissionRow(record.timestamp_ms, record.offset, record.partition, stake, b"")
        return accepted

    async def _store(self, accepted: list[Accepted], ranks: dict[RecordKey, Ranked], lives: dict[tuple[int, int], NDArray[np.float64]]) -> list[Applied]:
        """Rank the accepted submissions not ranked yet, move the running meta-model sums in log
        order and store the rows with them."""
        # Their ranks (by partition and offset): from the digest for values that came in universe
        # order, the rest (placed by their ids list) ranked here.
        placed = [(record.partition, record.offset, values) for record, event, _, values, _, _ in accepted if event.ids is not None]
        ranks = {**ranks, **dict(zip([(p, o) for p, o, _ in placed], rank_rows([v for _, _, v in placed]), strict=True))}
        ranked = [ranks[(record.partition, record.offset)] for record, *_ in accepted]
        changed: dict[tuple[int, str], SubmissionRow] = {}
        latest_g: dict[tuple[int, str], NDArray[np.float64]] = {}
        touched: set[tuple[int, int]] = set()
        applied: list[Applied] = []
        for (record, event, info, _, stake, previous), (one, g, stored_bytes) in zip(accepted, ranked, strict=True):
            key = (event.round, event.model)
            row = SubmissionRow(record.timestamp_ms, record.offset, record.partition, stake, stored_bytes)
            live_key = (event.round, record.partition)
            move_live(lives[live_key], previous, record.partition, g, stake, info.n_ids, latest_g.get(key))
            changed[key] = row
            latest_g[key] = g
            touched.add(live_key)
            applied.append((record, event, one))
        state = self.ctx.state
        await state.put_submissions(changed, {k: lives[k] for k in touched})
        failpoints.reached("submissions.stored")
        new_models = sorted({m for _, m in changed} - self._known_models)
        await state.add_models(new_models)
        self._known_models.update(new_models)
        return applied

    def _decide(self, record: InputRecord, event: Submission, info: RoundInfo, existing: SubmissionRow | None) -> tuple[str, NDArray[np.float64] | None]:
        """One submission against the round and the model's current row: (outcome, values to store or None)."""
        if info.close_ts is not None and record.timestamp_ms > info.close_ts:
            raise refuse("round_closed", f"round {event.round} closed before this submission")
        values = align_to_universe(event.predictions, event.ids, self.rounds.universe(info), partial=False)
        new_key = (record.timestamp_ms, record.offset)
        if existing is not None:
            if existing.order_key == new_key:
                return "unchanged", None
            if existing.order_key > new_key:
                if existing.partition == record.partition and existing.offset > record.offset:
                    # The stored one came later in this partition's log: this record was applied
                    # before it and then replaced — a redelivery after a crash. Nothing to do.
                    return "unchanged", None
                raise refuse("superseded", f"a newer submission of {event.model} for round {event.round} is stored")
        return "applied", values  # finite: decode_input refuses anything else

    async def _live_alerts(self, applied: list[Applied]) -> None:
        """Provisional CWMM of each applied submission against its round's running meta model."""
        cwmms = await self._live_cwmms(applied)
        candidates: list[tuple[InputRecord, Submission, float]] = []
        for j, (record, event, _) in enumerate(applied):
            cwmm = cwmms.get(j, float("nan"))
            if np.isfinite(cwmm):
                candidates.append((record, event, cwmm))
        if not candidates:
            return
        s, state = self.ctx.settings, self.ctx.state
        keep = self.ctx.history_keep
        histories = {m: latest_rounds(h, keep) for m, h in (await state.get_histories(sorted({event.model for _, event, _ in candidates}))).items()}
        trend = await state.get_trend()
        population = {r: alert_rules.population_decile_mmc(trend, r - 1, s.alert_trend_rounds) for r in {event.round for _, event, _ in candidates}}
        found: list[tuple[int, dict[str, Any]]] = []
        for record, event, cwmm in candidates:
            # Against the latest scored rounds' deciles (this round has none before its targets).
            resolved = [r for r in trend if r < event.round]
            edges = trend[resolved[-1]].get("cwmm_decile_edges") if resolved else None
            previous_edges = trend[resolved[-2]].get("cwmm_decile_edges") if len(resolved) > 1 else None
            alert = alert_rules.cwmm_spike(
                s,
                event.model,
                event.round,
                cwmm,
                histories[event.model],
                edges,
                previous_edges,
                stage="live",
                population=population[event.round],  # the stake in force is not at hand here: null
            )
            if alert is not None:
                found.append((record.timestamp_ms, alert))
        for ts, alert in found:
            await self.ctx.publish_alerts([alert], ts)

    async def _live_cwmms(self, applied: list[Applied]) -> dict[int, float]:
        """Each applied submission's CWMM (by its place in ``applied``) against its round's live meta
        model; none for a round without staked submissions."""
        by_round: dict[int, list[int]] = {}
        for j, (_, event, _) in enumerate(applied):
            by_round.setdefault(event.round, []).append(j)
        cwmms: dict[int, float] = {}
        for r, group in sorted(by_round.items()):
            total = await self._live_total(r, applied[group[0]][2].n_ids)
            if total[0] <= 0:
                continue
            rows = PreparedRound(
                order=np.concatenate([applied[j][2].order for j in group]),
                new_group=np.concatenate([applied[j][2].new_group for j in group]),
            )
            # in sorted space, as the resolution's CWMM is (no row scattered to id space)
            found_cwmm = g15_correlations(rows, total[1:] / total[0])
            cwmms.update(zip(group, (float(c) for c in found_cwmm), strict=True))
        return cwmms

    async def _live_total(self, r: int, n_ids: int) -> NDArray[np.float64]:
        """The round's running meta-model sums over all partitions, re-read at most every LIVE_REFRESH_SECONDS."""
        now = time.monotonic()
        cached = self._live_totals.get(r)
        if cached is None or now - cached[0] > LIVE_REFRESH_SECONDS:
            cached = (now, await self.ctx.state.get_live_total(r, n_ids, self.ctx.settings.partitions))
            self._live_totals[r] = cached
            for old in sorted(self._live_totals)[:-LIVE_TOTALS_CACHED]:
                del self._live_totals[old]
        return cached[1]


def move_live(
    live: NDArray[np.float64],
    existing: SubmissionRow | None,
    partition: int,
    g: NDArray[np.float64],
    stake: float,
    n_ids: int,
    existing_g: NDArray[np.float64] | None = None,
) -> None:
    """Put a submission into its partition's running ``[Σw, Σw·G]``, in place of the model's earlier one.

    ``existing_g``: the earlier one's G when it is at hand (decided in the same batch).
    """
    if existing is not None and existing.partition == partition and existing.live_weight > 0:
        old = existing_g if existing_g is not None else gaussian_ranks(PreparedRound.stack([existing.submission(n_ids)]))[0]
        live[0] -= existing.live_weight
        live[1:] -= existing.live_weight * old
    if stake > 0:
        live[0] += stake
        live[1:] += stake * g
