"""The Redis state store: one :class:`RedisState` per worker process, async, over the keys of :mod:`streams.state.keys`.

Writes are idempotent: a redelivered message leaves the same state. Submissions replace an
earlier one only when newer in event time (then offset); stake updates are members keyed by
their own offset; progress and watermarks only move forward. What is kept of past rounds is
:mod:`streams.state.retention`'s to decide; a round's lifecycle reads back as a
:class:`~streams.state.round_info.RoundInfo`.

Transactions start with ``await self.r.pipeline(transaction=True)``: on a Redis Cluster the
awaited pipeline has its client initialized in this event loop before commands are queued
(redis-py resolves each queued command's slot through a helper thread with its own loop).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import redis.exceptions
from numpy.typing import NDArray

from scoring import RoundBasis
from streams.errors import StateLost
from streams.state.encoding import float64_array, float64_bytes, reply_bytes, reply_text
from streams.state.keys import ROWS_PRUNED, Keys, key_family
from streams.state.neighbours import NeighbourResults
from streams.state.results import Results
from streams.state.retention import RetentionPolicy, RetentionReport, compact_stakes, enforce
from streams.state.round_info import RoundInfo
from streams.state.rows import StakeEntry, SubmissionRow
from streams.state.scripts import Scripts

if TYPE_CHECKING:
    from streams.state.client import StateClient


class RedisState(Results, NeighbourResults):
    """Async access to the service's state; one instance per worker process."""

    def __init__(self, client: StateClient, namespace: str) -> None:
        self.r = client
        self.keys = Keys(namespace)
        self.scripts = Scripts(client)
        #: The retention policy as last stored or read (:meth:`retention_policy`).
        self._policy: RetentionPolicy | None = None
        #: The epoch this process works in (:meth:`claim_epoch`); progress marks are refused
        #: once the stored one differs (see :class:`streams.errors.StateLost`).
        self.epoch_token = ""

    # --- the state's epoch -------------------------------------------------------------------
    async def claim_epoch(self) -> str:
        """Adopt the stored epoch, creating one when there is none (a new namespace)."""
        await self.r.set(self.keys.epoch(), secrets.token_hex(8), nx=True)
        self.epoch_token = reply_text(await self.r.get(self.keys.epoch()) or b"")
        return self.epoch_token

    async def new_epoch(self) -> str:
        """Start a new epoch (after a rebuild from scratch): workers of the old one notice."""
        self.epoch_token = secrets.token_hex(8)
        await self.r.set(self.keys.epoch(), self.epoch_token)
        return self.epoch_token

    async def is_empty(self) -> bool:
        """Whether the namespace holds no key (but the recovery lease) at all."""
        lease = self.keys.recovery_lock().encode()
        async for key in self.r.scan_iter(match=self.keys.everything(), count=1000):
            if key != lease:
                return False
        return True

    async def has_epoch(self) -> bool:
        return bool(await self.r.exists(self.keys.epoch()))

    async def check_epoch(self) -> None:
        """Raise :class:`StateLost` when the stored epoch is no longer this process's."""
        if self.epoch_token and reply_text(await self.r.get(self.keys.epoch()) or b"") != self.epoch_token:
            raise StateLost("the state's epoch changed or vanished: Redis lost the state")

    async def recovery_lock(self, seconds: float) -> bool:
        """Take the lease one worker holds while it rebuilds the state, for ``seconds`` (False:
        someone else holds it). The holder renews it (:meth:`renew_recovery_lock`); a holder that
        died lets it lapse."""
        return bool(await self.r.set(self.keys.recovery_lock(), secrets.token_hex(4), nx=True, px=int(seconds * 1000)))

    async def renew_recovery_lock(self, seconds: float) -> None:
        await self.r.pexpire(self.keys.recovery_lock(), int(seconds * 1000))

    async def release_recovery_lock(self) -> None:
        await self.r.delete(self.keys.recovery_lock())

    async def close(self) -> None:
        await self.r.aclose()

    async def wipe(self) -> int:
        """Delete every key of this namespace (for a rebuild from scratch); returns how many."""
        removed = 0
        batch: list[bytes] = []
        async for key in self.r.scan_iter(match=self.keys.everything(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += await self.r.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self.r.unlink(*batch)
        return removed

    async def memory_by_family(self) -> dict[str, tuple[int, int]]:
        """Keys and bytes by key family (:func:`key_family`), from ``MEMORY USAGE … SAMPLES 0``
        (every element counted, not a sample) — what the memory benchmarks print."""
        keys = [k async for k in self.r.scan_iter(match=self.keys.everything(), count=1000)]
        out: dict[str, tuple[int, int]] = {}
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            pipe = self.r.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key, samples=0)
            for key, size in zip(batch, await pipe.execute(), strict=True):
                family = key_family(self.keys.ns, key.decode())
                n, total = out.get(family, (0, 0))
                out[family] = (n + 1, total + int(size or 0))
        return out

    # --- rounds --------------------------------------------------------------------------
    async def get_round(self, r: int, known_ids: tuple[str, ...] | None = None) -> RoundInfo | None:
        """The round, or None if never opened; pass ``known_ids`` (it never changes) to skip reading it."""
        if known_ids is not None:
            meta, ids = await self.r.hgetall(self.keys.round(r)), None
        else:
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.keys.round(r))
            pipe.get(self.keys.ids(r))
            meta, ids = await pipe.execute()
        if not meta or b"open_ts" not in meta:
            return None
        return RoundInfo.parse(r, meta, universe=None if ids is None else reply_bytes(ids), known_ids=known_ids)

    async def open_round(self, r: int, ids: tuple[str, ...], ts: int, offset: int) -> None:
        pipe = await self.r.pipeline(transaction=True)
        pipe.set(self.keys.ids(r), orjson.dumps(list(ids)))
        pipe.hset(self.keys.round(r), mapping={"open_ts": ts, "open_offset": offset, "n_ids": len(ids)})
        await pipe.execute()
        await self.r.zadd(self.keys.rounds(), {str(r): r})

    async def close_round(self, r: int, ts: int, offset: int) -> None:
        await self.r.hset(self.keys.round(r), mapping={"close_ts": ts, "close_offset": offset})

    async def closed_rounds_to_alert(self, rounds: Iterable[int]) -> list[int]:
        """Those of ``rounds`` that are closed and whose close-stage alerts are not raised yet, ascending."""
        wanted = sorted(rounds)
        pipe = self.r.pipeline(transaction=False)
        for r in wanted:
            pipe.hmget(self.keys.round(r), ["close_ts", "close_alerted"])
        flags = await pipe.execute() if wanted else []
        return [r for r, (closed, alerted) in zip(wanted, flags, strict=True) if closed is not None and alerted != b"1"]

    async def mark_round_alerted(self, r: int) -> None:
        await self.r.hset(self.keys.round(r), "alerted", "1")

    async def known_rounds(self) -> list[int]:
        return [int(reply_text(x)) for x in await self.r.zrange(self.keys.rounds(), 0, -1)]

    # --- submissions ---------------------------------------------------------------------
    async def put_submissions(self, rows: Mapping[tuple[int, str], SubmissionRow], lives: Mapping[tuple[int, int], NDArray[np.float64]]) -> None:
        """Store submissions with their partitions' new live meta-model sums.

        One transaction per round (a round's keys share a hash slot): a round's rows and its live
        sums change together or not at all, and not at all once retention pruned the round's rows.
        ``rows``: (round, model) → row; ``lives``: (round, partition) → ``[Σw, Σw·G]``.
        """
        rounds = sorted({r for r, _ in rows} | {r for r, _ in lives})
        for r in rounds:
            pipe = await self.r.pipeline(transaction=True)
            mapping = {model: row.encode() for (rr, model), row in rows.items() if rr == r}
            if mapping:
                pipe.hset(self.keys.subs(r), mapping=mapping)  # type: ignore[arg-type]
                pipe.hincrby(self.keys.round(r), "subs_version", 1)
            written = [self.keys.subs(r)] if mapping else []
            for (rr, partition), live in lives.items():
                if rr == r:
                    pipe.set(self.keys.live(r, partition), float64_bytes(live))
                    written.append(self.keys.live(r, partition))
            if written:
                undo = [ROWS_PRUNED, "subs_version"] if mapping else [ROWS_PRUNED]
                await self.scripts.drop_if_pruned(keys=[self.keys.round(r), *written], args=undo, client=pipe)
            await pipe.execute()

    async def add_models(self, models: Iterable[str]) -> None:
        """Remember models that have submitted (the set behind the population-wide statistics)."""
        models = list(models)
        if models:
            await self.r.sadd(self.keys.models(), *models)

    async def submission_context(
        self, wanted: list[tuple[int, str, int]], lives: list[tuple[int, int, int]]
    ) -> tuple[list[SubmissionRow | None], list[float], list[NDArray[np.float64]]]:
        """What deciding on a batch of submissions needs, in one round trip.

        Arguments:
            wanted: (round, model, event time) per submission.
            lives: (round, partition, n_ids) per live meta-model sum to update.

        Returns:
            the stored submission of each (round, model) or None; the stake in force for each
            at its event time (:meth:`stakes_at`'s rule); each partition's live sums.
        """
        # One HMGET per round for the rows (redis-py's cost is per command, and a batch is
        # mostly one round), one ZREVRANGEBYSCORE per model (stakes are keyed by model).
        by_round: dict[int, list[int]] = {}
        for i, (r, _, _) in enumerate(wanted):
            by_round.setdefault(r, []).append(i)
        pipe = self.r.pipeline(transaction=False)
        for r, indices in by_round.items():
            pipe.hmget(self.keys.subs(r), [wanted[i][1] for i in indices])
        for _, model, at_ms in wanted:
            pipe.zrevrangebyscore(self.keys.stakes(model), at_ms, "-inf")
        for r, partition, _ in lives:
            pipe.get(self.keys.live(r, partition))
        raw = await pipe.execute()
        rows: list[SubmissionRow | None] = [None] * len(wanted)
        for indices, found in zip(by_round.values(), raw[: len(by_round)], strict=True):
            for i, data in zip(indices, found, strict=True):
                rows[i] = None if data is None else SubmissionRow.decode(data)
        members = raw[len(by_round) : len(by_round) + len(wanted)]
        stakes = [self._stake_in_force(m, r) for m, (r, _, _) in zip(members, wanted, strict=True)]
        sums = [
            np.zeros(n_ids + 1) if data is None else float64_array(data, (n_ids + 1,))
            for data, (_, _, n_ids) in zip(raw[len(by_round) + len(wanted) :], lives, strict=True)
        ]
        return rows, stakes, sums

    async def submissions_version(self, r: int) -> int:
        """Counts the round's stored submission changes: equal versions mean the same submissions.

        -1 once retention pruned the round's rows (no cached copy of them matches any more).
        """
        value, pruned = await self.r.hmget(self.keys.round(r), ["subs_version", ROWS_PRUNED])
        if pruned is not None:
            return -1
        return 0 if value is None else int(value)

    async def get_submissions(self, r: int) -> dict[str, SubmissionRow]:
        raw = await self.r.hgetall(self.keys.subs(r))
        return {reply_text(k): SubmissionRow.decode(reply_bytes(v)) for k, v in raw.items()}

    async def get_live_total(self, r: int, n_ids: int, partitions: int) -> NDArray[np.float64]:
        """Sum of every partition's live sums, partitions added in index order."""
        total = np.zeros(n_ids + 1)
        for data in await self.r.mget([self.keys.live(r, p) for p in range(partitions)]):
            if data is not None:
                total += float64_array(reply_bytes(data), (n_ids + 1,))
        return total

    # --- stakes --------------------------------------------------------------------------
    async def add_stake(self, model: str, entry: StakeEntry) -> None:
        """Store a stake update; one stamped before the stake cut is compacted with the model's others."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.stakes(model), {entry.member(): entry.timestamp_ms})
        pipe.hget(self.keys.retention(), "stake_cut")  # read after the write: see retention.compact_all_stakes
        added, cut = await pipe.execute()
        if added:
            await self.r.incr(self.keys.stakes_version())
        if cut is not None and entry.timestamp_ms < int(cut):
            await compact_stakes(self, [self.keys.stakes(model)], int(cut))

    async def stakes_version(self) -> int:
        """Counts stored stake updates: an unchanged count means unchanged stakes everywhere."""
        value = await self.r.get(self.keys.stakes_version())
        return 0 if value is None else int(value)

    async def stakes_at(self, models: list[str], at_ms: int, round_number: int | None) -> NDArray[np.float64]:
        """Each model's latest stake with event time ≤ ``at_ms`` that applies to ``round_number``.

        An update naming a round applies to that round and later ones; 0 when none applies.
        """
        pipe = self.r.pipeline(transaction=False)
        for model in models:
            pipe.zrevrangebyscore(self.keys.stakes(model), at_ms, "-inf")
        return np.array([self._stake_in_force(members, round_number) for members in await pipe.execute()], dtype=np.float64)

    @classmethod
    def _stake_in_force(cls, members: list[bytes], round_number: int | None) -> float:
        """The newest of ``members`` (newest first: event time, then offset) that applies to the round; 0 if none."""
        for member in members:
            entry = StakeEntry.parse(member)
            if entry.round is None or round_number is None or entry.round <= round_number:
                return entry.stake
        return 0.0

    # --- basis ---------------------------------------------------------------------------
    async def get_basis(self, r: int, fingerprint: str, n_models: int, n_ids: int, draws: int) -> RoundBasis | None:
        raw = await self.r.hgetall(self.keys.basis(r))
        if not raw or reply_text(raw.get(b"fingerprint", b"")) != fingerprint:
            return None
        shapes: dict[str, tuple[int, ...]] = {
            "stakes": (n_models,),
            "meta_model": (n_ids,),
            "meta_gauss": (n_ids,),
            "draws_centered": (draws, n_ids),
            "g_meta": (n_models,),
            "u_draws": (n_models, draws),
            "g15_centered_norm": (n_models,),
            "corr_w_mm": (n_models,),
        }
        return RoundBasis(**{name: float64_array(reply_bytes(raw[name.encode()]), shape) for name, shape in shapes.items()})

    async def get_basis_field(self, r: int, fingerprint: str, name: str, shape: tuple[int, ...]) -> NDArray[np.float64] | None:
        """One array of the stored basis (``corr_w_mm``, …) when it was stored under ``fingerprint``."""
        stored, data = await self.r.hmget(self.keys.basis(r), ["fingerprint", name])
        if stored is None or reply_text(stored) != fingerprint or data is None:
            return None
        return float64_array(reply_bytes(data), shape)

    async def put_basis(self, r: int, fingerprint: str, basis: RoundBasis) -> None:
        mapping: dict[str, bytes] = {
            name: float64_bytes(getattr(basis, name))
            for name in (
                "stakes",
                "meta_model",
                "meta_gauss",
                "draws_centered",
                "g_meta",
                "u_draws",
                "g15_centered_norm",
                "corr_w_mm",
            )
        }
        mapping["fingerprint"] = fingerprint.encode()
        pipe = await self.r.pipeline(transaction=True)
        pipe.delete(self.keys.basis(r))
        pipe.hset(self.keys.basis(r), mapping=mapping)  # type: ignore[arg-type]
        await self.scripts.drop_if_pruned(keys=[self.keys.round(r), self.keys.basis(r)], args=[ROWS_PRUNED], client=pipe)
        await pipe.execute()

    # --- targets and histories (retention acts on them) -------------------------------------
    async def put_targets(self, r: int, day: int, final: bool, targets: NDArray[np.float64]) -> None:
        """Keep the round's latest scored targets (final wins, then the later day), then enforce
        the retention policy with this round's close as the reference (:mod:`streams.state.retention`).

        The last write of a scored targets update: the round is final for retention from here on.
        """
        await self.scripts.put_targets(keys=[self.keys.round(r), self.keys.targets(r)], args=[day, int(final), float64_bytes(targets)])
        policy = await self.retention_policy()
        if policy is not None:
            close_ts = await self.r.hget(self.keys.round(r), "close_ts")
            await enforce(self, policy, None if close_ts is None else int(close_ts))

    async def get_targets(self, r: int, n_ids: int) -> NDArray[np.float64] | None:
        data = await self.r.hget(self.keys.targets(r), "values")
        return None if data is None else float64_array(reply_bytes(data), (n_ids,))

    async def put_history(self, r: int, entries: Mapping[str, dict[str, Any]]) -> None:
        """Each model's entry for round ``r``; its history then keeps its highest ``history``
        rounds of the retention policy (all of them while no policy is stored) — the view
        :func:`streams.worker.context.latest_rounds` gives, so a cold read equals a worker's cache.

        Only the targets worker writes histories (one partition), one update after another.
        """
        await self._put_per_model(r, self.keys.history, {model: orjson.dumps(entry) for model, entry in entries.items()})

    # --- retention -----------------------------------------------------------------------------
    async def retention_policy(self) -> RetentionPolicy | None:
        """The policy the last :meth:`prune_rounds` stored (None before any), read once per instance."""
        if self._policy is None:
            self._policy = RetentionPolicy.from_fields({reply_bytes(k): reply_bytes(v) for k, v in (await self.r.hgetall(self.keys.retention())).items()})
        return self._policy

    async def prune_rounds(self, rows: int, scores: int, history: int, partitions: int) -> RetentionReport:
        """Store the retention policy and enforce it (at every close; :mod:`streams.state.retention`).

        Arguments:
            rows: later closes after which a final round's rows, live sums, basis and targets go.
            scores: the same for its scores and crowding (raised to ``rows`` when below).
            history: rounds of each model's history kept (its highest ones).
            partitions: the input partitions (a round has one live-sum key per partition).

        Idempotent, and it only ever repeats what a scored targets update already did or would
        have done (the reference stays where the targets updates put it): every close re-checks,
        so an enforcement a crash interrupted is completed. Each command stays in one slot.
        """
        if min(rows, scores, history, partitions) < 1:
            raise ValueError("retention settings must be at least 1")
        policy = RetentionPolicy(rows, max(scores, rows), history, partitions)
        await self.r.hset(self.keys.retention(), mapping=policy.fields())  # type: ignore[arg-type]
        self._policy = policy
        return await enforce(self, policy, None)

    # --- progress (barriers) ---------------------------------------------------------------
    async def mark_processed(self, topic: str, done: Iterable[tuple[int, int, int]]) -> None:
        """Record (partition, offset, event time) of ``topic`` as done, in one round trip: each
        partition's progress moves to its highest offset + 1 and the topic's watermark to the
        highest event time (both only ever move forward)."""
        last: dict[int, tuple[int, int]] = {}
        for partition, offset, ts in done:
            o, t = last.get(partition, (-1, -1))
            last[partition] = (max(o, offset), max(t, ts))
        if not last:
            return
        pipe = self.r.pipeline(transaction=False)
        for partition, (offset, ts) in sorted(last.items()):
            await self.scripts.advance(
                keys=[self.keys.progress(topic), self.keys.watermark(), self.keys.epoch()],
                args=[partition, offset + 1, topic, ts, self.epoch_token],
                client=pipe,
            )
        try:
            await pipe.execute()
        except redis.exceptions.ResponseError as exc:
            if "STATE_LOST" in str(exc):
                raise StateLost(str(exc)) from exc
            raise

    async def progress(self, topic: str) -> dict[int, int]:
        raw = await self.r.hgetall(self.keys.progress(topic))
        return {int(k): int(v) for k, v in raw.items()}

    async def watermark(self, topic: str) -> int:
        value = await self.r.hget(self.keys.watermark(), topic)
        return -1 if value is None else int(value)
