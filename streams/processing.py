"""What the worker does with each input record: plain async code, callable without Faust.

:class:`Processor` decodes a record, checks it against the state, updates Redis and sends
the outputs through a :class:`Sender`; a refused record goes to the dead-letter topic with its
reason. The agents in :mod:`streams.app` only move records between Kafka and this class.

Lifecycle rules (event time = the Kafka record timestamp; see :mod:`streams.progress` for how
decisions wait for the other topics):

- ``open`` stores the universe; opening it again (another record) is refused ``round_exists``.
- ``close`` freezes the round at its event time; a second, different close is refused.
- A submission counts when its event time is at or before its round's close; later → ``round_closed``.
  A newer submission (event time, then offset) replaces an older one; an older one arriving
  after a newer one is refused ``superseded``. Submissions for unknown rounds → ``unknown_round``.
- A stake update applies to every round whose close comes after it (with ``"round": r``: to
  round r and later ones only). Stakes for models that never submitted are kept (they may
  submit later). A stake naming a closed round, made after that close → ``round_closed``.
- Targets for an unknown round → ``unknown_round``; before the round's close → ``round_not_closed``;
  for a round without submissions → ``no_submissions``; with more than 20% of ids missing →
  ``too_many_missing_targets`` (the update is not scored). Each scored update (any day, in any
  order, repeated or not) publishes the scores, the leaderboard rows of the round's models and
  the round's crowding figures; the same inputs give the same bytes. Round-level alerts fire
  once per round, at its first scored update.
- A record whose processing fails for a reason other than the input or the infrastructure is
  refused ``internal_error`` (the worker logs the traceback and carries on). Redis or Kafka
  being unreachable is not the input's fault: the agent retries the record instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

import scoring
from scoring.crowding import ScoreTable, stake_jump_events
from scoring.errors import ScoringError
from scoring.rounds import PreparedRound, PreparedSubmission, g15_correlations, gaussian_ranks
from streams import alerts as alert_rules
from streams import failpoints
from streams.admin import read_record
from streams.errors import InvalidMessage
from streams.outputs import Output, dead_letter, encode, json_output
from streams.progress import Barrier
from streams.records import (
    InputRecord,
    RoundClose,
    RoundOpen,
    StakeUpdate,
    Submission,
    TargetsUpdate,
    align_to_universe,
    check_event_time,
    decode_input,
    refuse,
)
from streams.resolution import (
    cwmm_decile_edges,
    history_entry,
    round_figures,
    score_messages,
    standing,
    standing_score,
    trend_figures,
)
from streams.settings import Settings
from streams.state import RedisState, StakeEntry, SubmissionRow
from streams.transient import is_transient, with_retry

log = logging.getLogger(__name__)

Sender = Callable[[list[Output]], Awaitable[None]]
UNIVERSES_CACHED = 32
#: Models of one round whose crowding_tax alert carries their own old-stake forecast (each costs a
#: re-scoring of the round; ≥5× jumps are a handful per round).
TAX_FORECASTS_PER_ROUND = 8
#: Rounds whose running meta-model total a worker keeps (the most recent ones).
LIVE_TOTALS_CACHED = 16
# The live CWMM compares a submission with the round's running meta model as last read; it
# is re-read from Redis at most this often (it moves slowly once a round has many stakers).
LIVE_REFRESH_SECONDS = 1.0

#: Threads a batch of submissions is decoded and ranked on, a piece each. Decoding holds the GIL
#: (simdjson), sorting does not (numpy): one thread is busy all the time while the event loop
#: idles half of it; two give 1,471–1,670/s against 1,372–1,534/s for one (three alternating
#: runs of 10,000 submissions).
RANK_THREADS = 2
#: A submission record's place in its topic: (partition, offset).
RecordKey = tuple[int, int]
#: A ranked row: its prepared row, its G (id space) and the bytes stored for it.
Ranked = tuple[PreparedRound, NDArray[np.float64], bytes]


@dataclass(frozen=True)
class Digest:
    """A batch of submission records decoded and ranked (by :func:`digest_submissions`).

    ``decoded``: each record's submission or the refusal its bytes earned; ``ranks``: the
    prepared row and G of each submission that came in universe order (no ids list).
    """

    decoded: dict[RecordKey, Submission | InvalidMessage]
    ranks: dict[RecordKey, Ranked]


@dataclass(frozen=True)
class SubmissionBatch:
    """What :meth:`Processor.prepare_submissions` started for records: their digest on the rank threads."""

    keys: frozenset[RecordKey]
    digest: asyncio.Future[Digest]

    def covers(self, batch: list[tuple[InputRecord, float]]) -> bool:
        return all((record.partition, record.offset) in self.keys for record, _ in batch)

    def discard(self) -> None:
        """Not going to be applied: let the digest finish unobserved (no "never retrieved" errors)."""
        self.digest.add_done_callback(_ignore_outcome)


class Processor:
    """Applies input records to the state and publishes what follows from them."""

    def __init__(self, settings: Settings, state: RedisState, barrier: Barrier, send: Sender) -> None:
        self.settings = settings
        self.state = state
        self.barrier = barrier
        self.send = send
        self._universes: OrderedDict[int, tuple[tuple[str, ...], dict[str, int]]] = OrderedDict()
        self._live_totals: dict[int, tuple[float, NDArray[np.float64]]] = {}
        self._known_models: set[str] = set()
        self._prepared: OrderedDict[int, tuple[int, list[str], PreparedRound]] = OrderedDict()
        self._history_cache: dict[str, dict[int, dict[str, Any]]] = {}
        self._stakes: dict[int, tuple[tuple[int, int], NDArray[np.float64]]] = {}
        self._bases_at_close: dict[int, asyncio.Task[None]] = {}
        self._alerts_at_close: dict[int, asyncio.Task[None]] = {}
        #: Serialises the close-stage alerts: each round's baseline reads the rounds before it.
        self._close_alerts_lock = asyncio.Lock()

    # --- entry point ------------------------------------------------------------------------
    async def handle(self, record: InputRecord, received_at: float, decoded: Any = None) -> str:
        """Apply one record; returns ``"applied"``, ``"unchanged"`` (a redelivery) or the refusal reason.

        ``decoded``: the record's event when :meth:`triage` decoded it already. Transient
        infrastructure errors (Redis, Kafka) propagate: the caller retries the record.
        """
        if record.topic == "submissions":  # the batch path decodes and refuses on its own
            return (await self.handle_submissions([(record, received_at)]))[0]
        try:
            if decoded is None:
                decoded = self.decode(record)
            if isinstance(decoded, RoundOpen):
                outcome = await self._open(record, decoded)
            elif isinstance(decoded, RoundClose):
                outcome = await self._close(record, decoded)
                if outcome == "applied":
                    self._prepare_basis_at_close(decoded.round, received_at)
                self._raise_alerts_at_close(decoded.round, received_at)  # also on a redelivery: a crash may have cut them short
            elif isinstance(decoded, StakeUpdate):
                outcome = await self._stake(record, decoded, received_at)
            elif isinstance(decoded, TargetsUpdate):
                outcome = await self._targets(record, decoded, received_at)
            else:  # a submission: the topic check above sends those to the batch path
                raise ValueError(f"{record.topic} decoded to {type(decoded).__name__}")
        except InvalidMessage as exc:
            await self._refuse(record, exc)
            return exc.reason
        except ScoringError as exc:
            error = as_refusal(exc)
            await self._refuse(record, error)
            return error.reason
        except Exception as exc:
            if is_transient(exc):
                raise
            error = internal_error(record, exc)
            await self._refuse(record, error)
            return error.reason
        return outcome

    def decode(self, record: InputRecord) -> Any:
        """The record's typed event, or the :class:`InvalidMessage` its bytes or timestamp earn
        (raised): what can be decided without the state or the other topics."""
        self.check_clock(record)
        return decode_input(record, self.settings.max_message_bytes, self.settings.max_ids)

    def check_clock(self, record: InputRecord) -> None:
        """Refuse ``clock_skew`` a record stamped too far ahead of this worker's clock."""
        check_event_time(record, int(time.time() * 1000), int(self.settings.max_clock_skew_seconds * 1000))

    async def triage(self, records: list[InputRecord]) -> tuple[list[str | None], list[Any]]:
        """Decode records of ``rounds``, ``stakes`` or ``targets`` and refuse at once those that
        fail: their dead letters leave in one send, with no barrier wait (a refusal for the bytes
        alone depends on nothing else). Returns each record's outcome (``None``: decoded, still
        to apply) and its decoded event (``None`` when refused)."""
        outcomes: list[str | None] = []
        events: list[Any] = []
        letters: list[Output] = []
        for record in records:
            try:
                events.append(self.decode(record))
                outcomes.append(None)
            except InvalidMessage as exc:
                events.append(None)
                outcomes.append(self._refusal(record, exc, letters))
        if letters:
            await self.send(letters)
        return outcomes, events

    async def _refuse(self, record: InputRecord, error: InvalidMessage) -> None:
        letters: list[Output] = []
        self._refusal(record, error, letters)
        await self.send(letters)

    # --- rounds -------------------------------------------------------------------------------
    async def _open(self, record: InputRecord, event: RoundOpen) -> str:
        existing = await self._round_info(event.round)
        if existing is not None:
            if existing.open_offset == record.offset:
                return "unchanged"
            same = "the same" if existing.ids == event.ids else "a different"
            raise refuse("round_exists", f"round {event.round} is already open (this repeats it with {same} universe)")
        await self.state.open_round(event.round, event.ids, record.timestamp_ms, record.offset)
        return "applied"

    async def _close(self, record: InputRecord, event: RoundClose) -> str:
        info = await self.state.get_round(event.round)
        if info is None:
            raise refuse("unknown_round", f"round {event.round} was never opened")
        if info.closed:
            if info.close_offset == record.offset:
                return "unchanged"
            raise refuse("round_already_closed", f"round {event.round} closed already (offset {info.close_offset})")
        await self.state.close_round(event.round, record.timestamp_ms, record.offset)
        await self.state.prune_rounds(self.settings.retention_rounds, self.settings.retention_score_rounds, self._history_keep, self.settings.partitions)
        return "applied"

    async def _round_for(self, round_number: int, record: InputRecord, received_at: float) -> Any:
        await self.barrier.wait_for("rounds", received_at, record.timestamp_ms)
        info = await self._round_info(round_number)
        if info is None:
            raise refuse("unknown_round", f"round {round_number} was never opened")
        return info

    def _universe(self, info: Any) -> dict[str, int]:
        """id → position in the round's universe (a round's universe never changes once open)."""
        cached = self._universes.get(info.round)
        if cached is None:
            cached = (info.ids, {id_: i for i, id_ in enumerate(info.ids)})
            self._universes[info.round] = cached
            while len(self._universes) > UNIVERSES_CACHED:
                self._universes.popitem(last=False)
        return cached[1]

    # --- submissions --------------------------------------------------------------------------
    def prepare_submissions(self, batch: list[tuple[InputRecord, float]], head_start: bool = True) -> SubmissionBatch:
        """Start decoding and ranking a batch on the rank threads, and its barriers, without waiting.

        Neither depends on the state, so the submissions consumer prepares the next batch while
        the previous one is being applied (:mod:`streams.ingest`). The barrier task is only a head
        start: :meth:`handle_submissions` waits for the barriers itself (a check that started
        after the records were received serves them — :meth:`Barrier.wait_for`).
        """
        loop = asyncio.get_running_loop()
        records = [r for r, _ in batch]
        size = max(1, -(-len(records) // RANK_THREADS))  # ceil: one piece per rank thread
        pieces = [
            loop.run_in_executor(_rank_threads(), digest_submissions, records[i : i + size], self.settings.max_message_bytes, self.settings.max_ids)
            for i in range(0, len(records), size)
        ]
        digest = asyncio.ensure_future(_joined(pieces))
        if head_start:
            task = asyncio.ensure_future(self._submission_barriers(batch))
            task.add_done_callback(_ignore_outcome)  # its error, if any, comes again when waited for
        return SubmissionBatch(frozenset((r.partition, r.offset) for r, _ in batch), digest)

    async def _submission_barriers(self, batch: list[tuple[InputRecord, float]]) -> None:
        latest = max(received_at for _, received_at in batch)
        # The stake stored with a row (its weight in the live meta model) is the one in force at
        # its event time: every stake appended before the batch was received must be applied, or
        # a replay would store a different weight than the live run did. Both topics are checked
        # at once (a check is a few broker round trips).
        await asyncio.gather(
            self.barrier.wait_for("rounds", latest, max(record.timestamp_ms for record, _ in batch)),
            self.barrier.wait_for("stakes", latest),
        )

    async def handle_submissions(self, batch: list[tuple[InputRecord, float]], prepared: SubmissionBatch | None = None) -> list[str]:
        """Apply a batch of ``submissions`` records (log order per partition); one outcome each.

        ``prepared``: the batch's :meth:`prepare_submissions`, if started earlier (else it is
        started here). The batch shares its round trips: one barrier check, one read of every
        stored row, stake and live sum it touches, one write per round, one read for the live
        alerts. The records are decided one after another in memory, so a later record of the
        same model sees the earlier one exactly as if it had been stored. Should anything but
        the input or the infrastructure fail on the shared path, the records are applied one by
        one (each then succeeds or is refused on its own).
        """
        if prepared is None or not prepared.covers(batch):
            prepared = self.prepare_submissions(batch, head_start=False)
        outcomes: list[str | None] = [None] * len(batch)
        refusals: list[Output] = []
        try:
            try:
                await self._submission_barriers(batch)
            except BaseException:
                await asyncio.wait([prepared.digest])  # never leave the thread working for a failed batch
                raise
            digest = await prepared.digest
            decoded: list[tuple[int, InputRecord, Submission]] = []
            for i, (record, _) in enumerate(batch):
                event = digest.decoded[(record.partition, record.offset)]
                try:
                    self.check_clock(record)
                except InvalidMessage as exc:
                    event = exc
                if isinstance(event, InvalidMessage):
                    outcomes[i] = self._refusal(record, event, refusals)
                elif not isinstance(event, Submission):
                    raise ValueError(f"not a submission: {record.topic}[{record.partition}]@{record.offset}")
                else:
                    decoded.append((i, record, event))
            applied = await self._decide_submissions(batch, decoded, outcomes, refusals, digest.ranks)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(batch) > 1:
                log.exception("batch of %d submissions failed; applying them one by one", len(batch))
                return [(await self.handle_submissions([one]))[0] for one in batch]
            error = internal_error(batch[0][0], exc)
            await self._refuse(batch[0][0], error)
            return [error.reason]
        if refusals:
            await self.send(refusals)
        try:
            await self._live_alerts(applied)
        except Exception as exc:  # advisory: never changes the submissions' outcomes
            if is_transient(exc):
                raise
            log.exception("live corr_w_mm check failed for a batch of %d submissions", len(applied))
        return [o if o is not None else "internal_error" for o in outcomes]

    def _refusal(self, record: InputRecord, error: InvalidMessage, into: list[Output]) -> str:
        log.info("dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset, error)
        into.append(dead_letter(record, error, self.settings.topic_prefix, self.settings.deadletter_max_bytes))
        return error.reason

    async def _decide_submissions(
        self,
        batch: list[tuple[InputRecord, float]],
        decoded: list[tuple[int, InputRecord, Submission]],
        outcomes: list[str | None],
        refusals: list[Output],
        ranks: dict[RecordKey, Ranked],
    ) -> list[tuple[InputRecord, Submission, PreparedRound]]:
        """Decide, then store, every decoded submission (barriers passed); returns the applied ones with their ranks."""
        if not decoded:
            return []
        infos = {r: await self._round_info(r) for r in sorted({event.round for _, _, event in decoded})}
        known = [(i, record, event) for i, record, event in decoded if infos[event.round] is not None]
        for i, record, event in decoded:
            if infos[event.round] is None:
                outcomes[i] = self._refusal(record, refuse("unknown_round", f"round {event.round} was never opened"), refusals)
        live_keys = sorted({(event.round, record.partition) for _, record, event in known})
        stored, stakes, sums = await self.state.submission_context(
            [(event.round, event.model, record.timestamp_ms) for _, record, event in known],
            [(r, p, infos[r].n_ids) for r, p in live_keys],
        )
        lives = dict(zip(live_keys, sums, strict=True))
        current: dict[tuple[int, str], SubmissionRow | None] = {}
        for (_, _, event), row in zip(known, stored, strict=True):
            current.setdefault((event.round, event.model), row)
        # 1. Decide every record in log order, in memory: a later record of the same model sees
        #    the earlier one as if it had been stored (its order key, partition and live weight;
        #    its ranks are not needed until step 3, where its G is at hand).
        accepted: list[tuple[InputRecord, Submission, Any, NDArray[np.float64], float, SubmissionRow | None]] = []
        for (i, record, event), stake in zip(known, stakes, strict=True):
            info = infos[event.round]
            key = (event.round, event.model)
            try:
                outcome, values = self._decide_submission(record, event, info, current[key])
            except (InvalidMessage, ScoringError) as exc:
                outcomes[i] = self._refusal(record, as_refusal(exc), refusals)
                continue
            except Exception as exc:
                if is_transient(exc):
                    raise
                outcomes[i] = self._refusal(record, internal_error(record, exc), refusals)
                continue
            outcomes[i] = outcome
            if values is None:
                continue
            accepted.append((record, event, info, values, stake, current[key]))
            current[key] = SubmissionRow(record.timestamp_ms, record.offset, record.partition, stake, b"")
        if not accepted:
            return []
        # 2. Their ranks (by partition and offset): from the digest for values that came in
        #    universe order, the rest (placed by their ids list) ranked here.
        placed = [(record.partition, record.offset, values) for record, event, _, values, _, _ in accepted if event.ids is not None]
        ranks = {**ranks, **dict(zip([(p, o) for p, o, _ in placed], rank_rows([v for _, _, v in placed]), strict=True))}
        ranked = [ranks[(record.partition, record.offset)] for record, *_ in accepted]
        # 3. Move the running meta-model sums in log order and keep the rows to store.
        changed: dict[tuple[int, str], SubmissionRow] = {}
        latest_g: dict[tuple[int, str], NDArray[np.float64]] = {}
        touched: set[tuple[int, int]] = set()
        applied: list[tuple[InputRecord, Submission, PreparedRound]] = []
        for (record, event, info, _, stake, previous), (one, g, stored_bytes) in zip(accepted, ranked, strict=True):
            key = (event.round, event.model)
            row = SubmissionRow(record.timestamp_ms, record.offset, record.partition, stake, stored_bytes)
            live_key = (event.round, record.partition)
            self._move_live(lives[live_key], previous, record.partition, g, stake, info.n_ids, latest_g.get(key))
            changed[key] = row
            latest_g[key] = g
            touched.add(live_key)
            applied.append((record, event, one))
        await self.state.put_submissions(changed, {k: lives[k] for k in touched})
        failpoints.reached("submissions.stored")
        new_models = sorted({m for _, m in changed} - self._known_models)
        await self.state.add_models(new_models)
        self._known_models.update(new_models)
        return applied

    def _decide_submission(self, record: InputRecord, event: Submission, info: Any, existing: SubmissionRow | None) -> tuple[str, NDArray[np.float64] | None]:
        """One submission against the round and the model's current row: (outcome, values to store or None)."""
        if info.closed and record.timestamp_ms > info.close_ts:
            raise refuse("round_closed", f"round {event.round} closed before this submission")
        values = align_to_universe(event.predictions, event.ids, self._universe(info), partial=False)
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

    @staticmethod
    def _move_live(
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

    async def _round_info(self, round_number: int) -> Any:
        """The stored round (None if never opened); its universe is read once per worker — from
        the round's open record on the rounds topic once retention pruned it from the state."""
        cached = self._universes.get(round_number)
        info = await self.state.get_round(round_number, known_ids=cached[0] if cached else None)
        if info is not None and info.ids is None:
            logged = InputRecord.fetched("rounds", await read_record(self.settings, "rounds", 0, info.open_offset))
            opened = decode_input(logged, self.settings.max_message_bytes, self.settings.max_ids)
            if not isinstance(opened, RoundOpen) or opened.round != round_number:
                raise RuntimeError(f"rounds@{info.open_offset} is not round {round_number}'s open record")
            info = dataclasses.replace(info, ids=tuple(opened.ids))
            self._universe(info)  # cached: late records of a pruned round read the log once
        return info

    async def _live_alerts(self, applied: list[tuple[InputRecord, Submission, PreparedRound]]) -> None:
        """Provisional CWMM of each applied submission against its round's running meta model."""
        found: list[tuple[int, dict[str, Any]]] = []
        candidates: list[tuple[InputRecord, Submission, float]] = []
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
        for j, (record, event, _) in enumerate(applied):
            cwmm = cwmms.get(j, float("nan"))
            if np.isfinite(cwmm):
                candidates.append((record, event, cwmm))
        if not candidates:
            return
        histories = {
            m: latest_rounds(h, self._history_keep) for m, h in (await self.state.get_histories(sorted({event.model for _, event, _ in candidates}))).items()
        }
        trend = await self.state.get_trend()
        population = {r: alert_rules.population_decile_mmc(trend, r - 1, self.settings.alert_trend_rounds) for r in {event.round for _, event, _ in candidates}}
        for record, event, cwmm in candidates:
            # Against the latest scored rounds' deciles (this round has none before its targets).
            resolved = [r for r in trend if r < event.round]
            edges = trend[resolved[-1]].get("cwmm_decile_edges") if resolved else None
            previous_edges = trend[resolved[-2]].get("cwmm_decile_edges") if len(resolved) > 1 else None
            alert = alert_rules.cwmm_spike(
                self.settings,
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
            await self._publish_alerts([alert], ts)

    async def _live_total(self, r: int, n_ids: int) -> NDArray[np.float64]:
        """The round's running meta-model sums over all partitions, re-read at most every LIVE_REFRESH_SECONDS."""
        now = time.monotonic()
        cached = self._live_totals.get(r)
        if cached is None or now - cached[0] > LIVE_REFRESH_SECONDS:
            cached = (now, await self.state.get_live_total(r, n_ids, self.settings.partitions))
            self._live_totals[r] = cached
            for old in sorted(self._live_totals)[:-LIVE_TOTALS_CACHED]:
                del self._live_totals[old]
        return cached[1]

    # --- stakes -------------------------------------------------------------------------------
    async def _stake(self, record: InputRecord, event: StakeUpdate, received_at: float) -> str:
        if event.round is not None:
            await self.barrier.wait_for("rounds", received_at, record.timestamp_ms)
            info = await self.state.get_round(event.round)
            if info is not None and info.closed and info.close_ts is not None and record.timestamp_ms > info.close_ts:
                raise refuse("round_closed", f"round {event.round} closed before this stake update")
        await self.state.add_stake(event.model, StakeEntry(record.timestamp_ms, record.offset, event.round, event.stake))
        failpoints.reached("stakes.stored")
        return "applied"

    # --- targets ------------------------------------------------------------------------------
    async def _targets(self, record: InputRecord, event: TargetsUpdate, received_at: float) -> str:
        info = await self._round_for(event.round, record, received_at)
        if not info.closed or record.timestamp_ms < info.close_ts:
            raise refuse("round_not_closed", f"round {event.round} has not closed; targets come after the close")
        clock = PhaseClock()
        await self._round_inputs_applied(received_at)
        clock.lap("barriers")
        targets = align_to_universe(event.targets, event.ids, self._universe(info), partial=True)
        await self._basis_at_close_done(event.round)
        if not info.close_alerted:  # the close-stage alerts, should the worker have stopped before raising them
            await self._close_alerts(event.round)
        models, prepared, stakes, fingerprint, samples = await self._round_inputs(event.round, info)
        clock.lap("load")
        complete = bool(np.isfinite(targets).all())
        basis = await self._basis(event.round, fingerprint, prepared, stakes, samples) if complete else None
        clock.lap("basis")
        scores = scoring.score_prepared(prepared, stakes, targets, samples, basis=basis, max_missing_ratio=self.settings.max_missing_ratio)
        clock.lap("score")
        await self._publish_round(record, event, info, models, stakes, scores, clock, prepared, targets)
        await self.state.put_targets(event.round, event.day, event.final, targets)
        log.info("round %d day %d%s: %d models scored (%s)", event.round, event.day, " final" if event.final else "", len(models), clock)
        return "applied"

    async def _round_inputs_applied(self, received_at: float) -> None:
        """Wait until every submission and stake received before ``received_at`` is applied: what a
        round's rows and frozen stakes are read after. Both at once (neither holds the other's
        locks: see streams.progress on lock order)."""
        await asyncio.gather(self.barrier.wait_for("submissions", received_at), self.barrier.wait_for("stakes", received_at))

    async def _round_inputs(self, r: int, info: Any) -> tuple[list[str], PreparedRound, NDArray[np.float64], str, NDArray[np.int64]]:
        """A closed round's models, prepared rows, frozen stakes, basis fingerprint and bootstrap draws."""
        version, models, prepared = await self._round_rows(r, info.n_ids, info.close_ts)
        stakes = await self._frozen_stakes(r, version, models, info.close_ts)
        samples = scoring.round_samples(stakes, r, self.settings.seed_salt, self.settings.mmc_draws, self.settings.mmc_fraction)
        return models, prepared, stakes, self._fingerprint(r, version, models, stakes), samples

    # --- the basis, prepared at close -------------------------------------------------------
    def _prepare_basis_at_close(self, r: int, received_at: float) -> None:
        """Start computing the round's basis (meta model, bootstrap meta models, per-model
        products) now that it is closed, in the background, so that its first targets update
        finds it ready — in the tournament that update comes a day or more after the close.

        The task waits until every submission and stake received before the close is applied
        (the barriers; it holds up nothing while it waits), then loads the round's rows and
        frozen stakes and stores the basis under its fingerprint (:meth:`_basis`). A targets
        update that arrives while it runs waits for it instead of computing the same basis
        again. Should anything change the inputs afterwards (a submission stamped before the
        close but appended after it, a late stake update), the fingerprint no longer matches and
        the targets update computes the basis itself, as it does when no task ran (a worker
        started after the close). It is advisory: a failure is logged and changes no output.
        """
        if r in self._bases_at_close and not self._bases_at_close[r].done():
            return
        for done in [k for k, task in self._bases_at_close.items() if task.done()]:
            del self._bases_at_close[done]  # rounds whose targets have not come (yet): nothing to wait for
        task = asyncio.ensure_future(self._basis_at_close(r, received_at))
        task.add_done_callback(_ignore_outcome)
        self._bases_at_close[r] = task

    async def _basis_at_close(self, r: int, received_at: float) -> None:
        started = time.perf_counter()
        try:
            await self._round_inputs_applied(received_at)
            info = await self.state.get_round(r)
            if info is None or not info.closed:
                return
            models, prepared, stakes, fingerprint, samples = await self._round_inputs(r, info)
            await self._basis(r, fingerprint, prepared, stakes, samples)
            log.info("round %d: basis prepared at close for %d models in %.0f ms", r, len(models), (time.perf_counter() - started) * 1e3)
        except InvalidMessage as exc:  # no submissions: nothing to prepare
            log.info("round %d: no basis prepared at close (%s)", r, exc)
        except Exception:
            log.warning("round %d: preparing the basis at close failed; its first targets update computes it", r, exc_info=True)

    async def _basis_at_close_done(self, r: int) -> None:
        """Wait for the round's basis task, if one is running (its outcome is its own business)."""
        task = self._bases_at_close.pop(r, None)
        if task is not None:
            await asyncio.wait([task])

    async def settle(self) -> None:
        """Wait until the basis and close-alert tasks started so far are done (tests, tools)."""
        pending = [*self._bases_at_close.values(), *self._alerts_at_close.values()]
        if pending:
            await asyncio.wait(pending)

    def stop_background(self) -> None:
        """Cancel the basis and close-alert tasks still running (the worker stopping)."""
        for tasks in (self._bases_at_close, self._alerts_at_close):
            for task in tasks.values():
                task.cancel()
            tasks.clear()

    # --- the close-stage alerts ------------------------------------------------------------
    def _raise_alerts_at_close(self, r: int, received_at: float) -> None:
        """Raise the round's close-stage ``corr_w_mm_spike`` alerts in the background.

        CWMM needs no targets: the round's basis (its meta model, stakes frozen at close) gives
        every model's CWMM at close. The task waits for the basis task and for the ``targets``
        topic to be applied up to the close (the population's MMC by decile comes from the rounds
        whose first final update was stamped before the close), then raises the alerts of every
        closed round not alerted yet, in round order (:meth:`_close_alerts`). Should the worker
        stop first, the round's first targets update raises them (its updates come after the
        close), with the same bytes.
        """
        for done in [k for k, task in self._alerts_at_close.items() if task.done()]:
            del self._alerts_at_close[done]
        basis = self._bases_at_close.get(r)
        task = asyncio.ensure_future(self._alerts_at_close_task(r, received_at, basis))
        task.add_done_callback(_ignore_outcome)
        self._alerts_at_close[r] = task

    async def _alerts_at_close_task(self, r: int, received_at: float, basis: asyncio.Task[None] | None) -> None:
        try:
            if basis is not None:
                await asyncio.wait([basis])
            await with_retry(lambda: self.barrier.wait_for("targets", received_at), f"waiting for the targets before round {r}'s close")
            await with_retry(lambda: self._close_alerts(r), f"raising round {r}'s close-stage alerts")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("round %d: raising the close-stage alerts failed; its first targets update raises them", r, exc_info=True)

    async def _close_alerts(self, r: int) -> None:
        """Raise the close-stage alerts of round ``r`` and of the closed rounds before it (within
        the baseline's reach) not alerted yet, in round order, each once."""
        s = self.settings
        async with self._close_alerts_lock:
            for rr in await self.state.closed_rounds_to_alert(range(max(0, r - close_alert_reach(s)), r + 1)):
                await self._close_alerts_of(rr, await self._round_info(rr))

    async def _close_alerts_of(self, r: int, info: Any) -> None:
        s = self.settings
        try:
            models, prepared, stakes, fingerprint, samples = await self._round_inputs(r, info)
        except InvalidMessage:  # no submissions, or retention pruned them: nothing to measure
            await self.state.put_close_cwmm(r, {})
            return
        # The basis task stored the basis at close: its CWMMs alone are read, not its MBs of draws.
        cwmm = await self.state.get_basis_field(r, fingerprint, "corr_w_mm", (prepared.n_models,))
        if cwmm is None:
            cwmm = (await self._basis(r, fingerprint, prepared, stakes, samples)).corr_w_mm
        ok = np.isfinite(cwmm)
        reach = close_alert_reach(s)
        earlier = await self.state.get_close_cwmm(list(range(max(0, r - reach), r)))
        finals = await self.state.get_finals()
        resolved = {k: v for k, v in finals.items() if k < r and v["ts"] < info.close_ts}
        population = alert_rules.population_decile_mmc(resolved, r, s.alert_trend_rounds)
        edges = cwmm_decile_edges(cwmm)
        previous_edges = cwmm_decile_edges(np.fromiter(earlier[r - 1].values(), dtype=float)) if r - 1 in earlier else None
        found = []
        for i in np.flatnonzero(ok):
            model = models[i]
            history = {rr: {"corr_w_mm": values[model]} for rr, values in earlier.items() if model in values}
            spike = alert_rules.cwmm_spike(
                s,
                model,
                r,
                float(cwmm[i]),
                history,
                edges,
                previous_edges,
                stage="close",
                stake=float(stakes[i]),
                population=population,
            )
            if spike is not None:
                found.append(spike)
        await self._publish_alerts(found, info.close_ts)
        failpoints.reached("close.alerts_sent")
        await self.state.put_close_cwmm(r, {models[i]: float(cwmm[i]) for i in np.flatnonzero(ok)})
        if found:
            log.info("round %d: %d corr_w_mm_spike alerts at close", r, len(found))

    def _fingerprint(self, r: int, version: int, models: list[str], stakes: NDArray[np.float64]) -> str:
        """Identifies the basis inputs: the round's submission set (by version), stakes, draw settings."""
        h = hashlib.sha256(f"{r}:{version}:{len(models)}".encode())
        h.update("\0".join(models).encode())
        h.update(np.ascontiguousarray(stakes, dtype="<f8").tobytes())
        h.update(f"{self.settings.seed_salt}:{self.settings.mmc_draws}:{self.settings.mmc_fraction}".encode())
        return h.hexdigest()

    async def _round_rows(self, r: int, n_ids: int, close_ts: int) -> tuple[int, list[str], PreparedRound]:
        """The round's submissions version, models (sorted) and prepared rows, reloaded only when
        its submissions changed.

        Only submissions made at or before the close count: one stamped later can only be stored
        when its round's close record came later in the log than it (a producer out of order).
        The caller keeps what this returns: the cache may evict the round while the caller
        awaits (another round's update or basis task loading its rows), and nothing read after
        an await may come from the cache.
        """
        version = await self.state.submissions_version(r)
        cached = self._prepared.get(r)
        if cached is not None and cached[0] == version:
            self._prepared.move_to_end(r)
            return cached
        rows = {m: row for m, row in (await self.state.get_submissions(r)).items() if row.timestamp_ms <= close_ts}
        if not rows:
            raise refuse("no_submissions", f"round {r} has no accepted submission to score")
        models = sorted(rows)
        # on a thread, as the basis: ~0.6 s at 10,000 models that the event loop keeps serving
        prepared = await asyncio.to_thread(lambda: PreparedRound.stack([rows[m].submission(n_ids) for m in models]))
        self._prepared[r] = (version, models, prepared)
        while len(self._prepared) > max(1, self.settings.round_cache_rounds):
            self._prepared.popitem(last=False)
        return version, models, prepared

    async def _frozen_stakes(self, r: int, rows_version: int, models: list[str], close_ts: int) -> NDArray[np.float64]:
        """Stakes in force at the round's close, re-read only when a stake update was stored since
        (``rows_version``: the submissions version the models were read at)."""
        version = (await self.state.stakes_version(), rows_version)
        cached = self._stakes.get(r)
        if cached is not None and cached[0] == version:
            return cached[1]
        stakes = await self.state.stakes_at(models, close_ts, r)
        self._stakes[r] = (version, stakes)
        while len(self._stakes) > max(1, self.settings.round_cache_rounds):
            self._stakes.pop(next(iter(self._stakes)))
        return stakes

    async def _histories(self, models: list[str]) -> dict[str, dict[int, dict[str, Any]]]:
        """Score histories of ``models``, from this worker's cache (it is their only writer while it
        owns the targets partition; the cache is dropped when partitions are revoked)."""
        missing = [m for m in models if m not in self._history_cache]
        if missing:
            fetched = await self.state.get_histories(missing)
            self._history_cache.update({m: latest_rounds(h, self._history_keep) for m, h in fetched.items()})
        return {m: self._history_cache[m] for m in models}

    @property
    def _history_keep(self) -> int:
        """Rounds of a model's history every decision looks at (its latest scored ones)."""
        s = self.settings
        return max(s.history_rounds, s.leaderboard_window, s.alert_cwmm_baseline_rounds + 1)

    def forget_cached_state(self) -> None:
        """Drop every cache of state another worker may change (after a rebalance)."""
        self._prepared.clear()
        self._history_cache.clear()
        self._stakes.clear()
        self._live_totals.clear()

    async def _basis(self, r: int, fingerprint: str, prepared: PreparedRound, stakes: NDArray[np.float64], samples: NDArray[np.int64]) -> scoring.RoundBasis:
        basis = await self.state.get_basis(r, fingerprint, prepared.n_models, prepared.n_ids, samples.shape[0])
        if basis is None:
            # on a thread: ~1.3 s at 10,000 models (numpy releases the GIL) that the event loop keeps serving
            basis = await asyncio.to_thread(scoring.close_round, prepared, stakes, samples)
            await self.state.put_basis(r, fingerprint, basis)
        return basis

    async def _publish_round(
        self,
        record: InputRecord,
        event: TargetsUpdate,
        info: Any,
        models: list[str],
        stakes: NDArray[np.float64],
        scores: scoring.RoundScores,
        clock: PhaseClock,
        prepared: PreparedRound,
        targets: NDArray[np.float64],
    ) -> None:
        s = self.settings
        ts = record.timestamp_ms
        r = event.round
        messages = score_messages(s, r, event.day, event.final, models, stakes, scores)
        entries = {m: history_entry(msg) for m, msg in zip(models, messages, strict=True)}
        # A round's history entry is its latest update: final wins, then the highest day.
        histories = await self._histories(models)
        newer = {m: e for m, e in entries.items() if _update_rank(e) >= _update_rank(histories[m].get(r))}
        await self.state.put_history(r, newer)
        for m, entry in newer.items():
            histories[m][r] = entry
            trimmed = latest_rounds(histories[m], self._history_keep)
            histories[m] = self._history_cache[m] = trimmed
        as_of = {"round": r, "day": event.day, "final": event.final}
        rows = {m: standing(s, m, histories[m], as_of) for m in models}
        await self.state.put_standings({m: (standing_score(row), encode(row)) for m, row in rows.items()})
        failpoints.reached("targets.history_written")
        ranks, board = await self.state.ranks(models)
        clock.lap("leaderboard")
        figures = round_figures(r, event.day, event.final, models, stakes, scores)
        await self.state.put_trend(r, figures)
        if event.final:  # the population's MMC by decile for later close-stage alerts (the first final counts)
            await self.state.put_final(r, ts, figures["mmc_mean_by_cwmm_decile"])
        trend_table = await self.state.get_trend()
        trend = trend_figures(trend_table, upto=r, recent=s.alert_trend_rounds)
        crowding = {**figures, "trend": trend}
        outputs = [json_output("scores", m, msg, ts) for m, msg in zip(models, messages, strict=True)]
        outputs += [json_output("leaderboard", m, {**rows[m], "rank": rank, "n_models": board}, ts) for m, rank in zip(models, ranks, strict=True)]
        outputs.append(json_output("crowding", str(r), crowding, ts))
        clock.lap("crowding")
        await self.send(outputs)
        failpoints.reached("targets.scores_sent")
        clock.lap("send")
        await self.state.put_round_scores(r, {m: o.value for m, o in zip(models, outputs, strict=False)}, encode(crowding))
        if not info.alerted:
            found = await self._round_alerts(event, models, stakes, scores, histories, figures, trend, prepared, targets)
            await self._publish_alerts(found, ts)
            failpoints.reached("targets.alerts_sent")
            await self.state.mark_round_alerted(r)

    async def _round_alerts(
        self,
        event: TargetsUpdate,
        models: list[str],
        stakes: NDArray[np.float64],
        scores: scoring.RoundScores,
        histories: dict[str, dict[int, dict[str, Any]]],
        figures: dict[str, Any],
        trend: dict[str, Any],
        prepared: PreparedRound,
        targets: NDArray[np.float64],
    ) -> list[dict[str, Any]]:
        s, r, day = self.settings, event.round, event.day
        found: list[dict[str, Any]] = []
        jumps = [
            (i, m)
            for i, m in enumerate(models)
            if (prev := histories[m].get(r - 1)) is not None and prev.get("stake", 0) > 0 and stakes[i] >= s.alert_stake_jump_ratio * prev["stake"]
        ]
        if jumps:
            population = await self._population_jump_effect()
            for n, (i, m) in enumerate(jumps):
                previous_stake = histories[m][r - 1]["stake"]
                forecast = (
                    await self._old_stake_forecast(prepared, stakes, targets, i, previous_stake, r, float(scores.contribution[i]))
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
        self,
        prepared: PreparedRound,
        stakes: NDArray[np.float64],
        targets: NDArray[np.float64],
        i: int,
        previous_stake: float,
        r: int,
        contribution: float,
    ) -> dict[str, Any]:
        """The model's own crowding tax in this round: today's MMC (contribution) at its new
        stake (as scored) and at its previous stake, everything else equal — the same round
        re-scored with one stake changed (on a thread: a close's worth of work)."""
        s = self.settings
        whatif = stakes.copy()
        whatif[i] = previous_stake
        samples = scoring.round_samples(whatif, r, s.seed_salt, s.mmc_draws, s.mmc_fraction)
        moved = await asyncio.to_thread(scoring.score_prepared, prepared, whatif, targets, samples, max_missing_ratio=s.max_missing_ratio)
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
        histories = await self._histories(await self.state.all_models())
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
        events = stake_jump_events(table, ratio=self.settings.alert_stake_jump_ratio)
        median = events.median_relative_change
        return {
            "median_relative_change": float(median) if np.isfinite(median) else None,
            "n_events": int(events.n_events),
            "n_compared": int(events.n_compared),
        }

    async def _publish_alerts(self, found: list[dict[str, Any]], ts: int) -> None:
        if not found:
            return
        outputs = [json_output("alerts", a["model"] or str(a["round"]), a, ts) for a in found]
        await self.send(outputs)
        await self.state.push_alerts([(o.timestamp_ms, o.value) for o in outputs])


def close_alert_reach(settings: Settings) -> int:
    """Rounds before a close whose CWMMs at close make a model's baseline: twice the baseline
    rounds, so that a model that skipped some still has its latest ones."""
    return 2 * settings.alert_cwmm_baseline_rounds


class PhaseClock:
    """Wall time of the phases of one resolution, for the log line and the latency metric."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self._last
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self.start

    def __str__(self) -> str:
        return ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.phases.items()) + f"; total {self.total * 1e3:.0f} ms"


def _update_rank(entry: dict[str, Any] | None) -> tuple[int, int]:
    """Order of a round's updates: any day < final; among days, the later one."""
    if entry is None:
        return (-1, -1)
    return (1 if entry["final"] else 0, int(entry["day"]))


def digest_submissions(records: list[InputRecord], max_bytes: int, max_ids: int) -> Digest:
    """Decode every submission record and rank those in universe order — pure, run on the rank threads."""
    decoded: dict[RecordKey, Submission | InvalidMessage] = {}
    for record in records:
        try:
            decoded[(record.partition, record.offset)] = decode_input(record, max_bytes, max_ids)  # type: ignore[assignment]
        except InvalidMessage as exc:
            decoded[(record.partition, record.offset)] = exc
    aligned = [(key, event) for key, event in decoded.items() if isinstance(event, Submission) and event.ids is None]
    return Digest(decoded, dict(zip([key for key, _ in aligned], rank_rows([event.predictions for _, event in aligned]), strict=True)))


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def rank_rows(rows: list[NDArray[np.float64]]) -> list[Ranked]:
    """Rank finite prediction rows at once (per universe size): each row's prepared row, its G and its stored bytes, in order.

    Each row's result is the same whatever rows it is ranked with (rows are sorted one by one).
    """
    out: list[Ranked] = [None] * len(rows)  # type: ignore[list-item]
    by_size: dict[int, list[int]] = {}
    for j, values in enumerate(rows):
        by_size.setdefault(values.size, []).append(j)
    for group in by_size.values():
        prepared = PreparedRound.from_predictions(np.stack([rows[j] for j in group]))
        g = gaussian_ranks(prepared)
        for row, j in enumerate(group):
            one = prepared.rows(np.array([row]))
            out[j] = (one, g[row], PreparedSubmission(order=one.order[0], new_group=one.new_group[0]).to_bytes())
    return out


@functools.cache
def _rank_threads() -> ThreadPoolExecutor:
    """The threads that decode and rank submissions while the event loop waits on Redis and Kafka."""
    return ThreadPoolExecutor(max_workers=RANK_THREADS, thread_name_prefix="mmc-rank")


async def _joined(pieces: list[asyncio.Future[Digest]]) -> Digest:
    """One digest of a batch digested in pieces (every record is decoded and ranked on its own,
    so the pieces give the same values as one digest of the whole batch)."""
    done = await asyncio.gather(*pieces)
    return Digest({k: v for d in done for k, v in d.decoded.items()}, {k: v for d in done for k, v in d.ranks.items()})


def latest_rounds(history: dict[int, Any], keep: int) -> dict[int, Any]:
    """A model's history restricted to its ``keep`` latest rounds — the same view whether it
    comes from a worker's cache or straight from Redis (so decisions never depend on which)."""
    if len(history) <= keep:
        return history
    return {r: history[r] for r in sorted(history)[-keep:]}


def internal_error(record: InputRecord, exc: Exception) -> InvalidMessage:
    """The ``internal_error`` refusal of a record the worker failed on (the traceback is logged)."""
    log.exception("failed on %s[%d]@%d", record.topic, record.partition, record.offset, exc_info=exc)
    return refuse("internal_error", f"{type(exc).__name__}: {exc}"[:500])


def as_refusal(exc: InvalidMessage | ScoringError) -> InvalidMessage:
    """A refusal for an input the scoring core rejected (its reason code when it is one of ours)."""
    if isinstance(exc, InvalidMessage):
        return exc
    return refuse(exc.reason if exc.reason in ("too_many_missing_targets", "non_finite") else "bad_field", str(exc))
