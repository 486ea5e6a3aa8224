"""Retention: what the state keeps of past rounds, enforced at every close and every scored targets update.

The policy comes from the settings ``MMC_RETENTION_*`` (stored by
:meth:`~streams.state.store.RedisState.prune_rounds`). A round's bulk — its
rows, live sums, basis and targets — is deleted once the round is **final** (a final targets
update was scored) **and expired**: ``retention_rounds`` rounds with a higher number have closed.
Its scores, crowding figures and CWMMs at close go by the same rule with ``retention_score_rounds``.
The universe goes with the rows: a late record that needs it (a repeated open, a submission or
targets update that must be checked against it) reads it back from the round's open record on
the ``rounds`` topic (``open_offset``), so every decision is the same as when it was kept. What
stays of a pruned round: its ``round`` hash (marked ``rows_pruned`` / ``scores_pruned``), its
trend figures and first final update (``finals``) and every model's history entry (histories
keep each model's latest ``history`` rounds): about 2 KB per round, whatever the number of
models and ids. A round never final keeps everything.

"Expired" is measured against the closes up to the close of the latest round a scored targets
update was applied to (the ``reference`` field), not against the latest close applied: both the
targets topic (one partition, applied in log order) and the rounds applied before a targets
update (every close stamped before it, by the barriers) are the same in a live run and in a
replay, whereas how far the rounds topic has run ahead of the targets is not — a replay applies
the whole rounds topic first. So a round is pruned at the same targets update in both, and an
update that comes after its round's final one (a repeat, a correction) gets the same answer:
scored while the round's rows are kept, refused ``no_submissions`` once they are gone.

Stake updates are compacted behind the **stake cut**, the earliest open time of a round whose
rows are kept: of the updates stamped before it, only those that can still be the one in force
for some round at or after the cut stay (the latest one without a round, and the later ones
naming a round no earlier update covers). Every query that remains — the stake at a kept
round's close, or at a submission's event time for a round still open — looks at or after the
cut, so it gets the same answer as before compaction.

Writes for a pruned round leave nothing (rows, live sums, basis, targets; scores and crowding
once those are pruned): each is checked, or undone, in the same transaction in the round's own
slot, so a late record cannot bring the bulk back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.state.keys import ROWS_PRUNED, SCORES_PRUNED
from streams.state.rows import StakeEntry

if TYPE_CHECKING:
    from streams.state.store import RedisState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    """How much of the past the state keeps (the module docstring says how it is enforced).

    ``rows``: later closes after which a final round's bulk goes; ``scores``: the same for its
    scores and crowding (never fewer than ``rows``); ``history``: rounds of each model's history
    kept (its highest ones); ``partitions``: live-sum keys per round to delete.
    """

    rows: int
    scores: int
    history: int
    partitions: int

    def fields(self) -> dict[str, int]:
        return {"rows": self.rows, "scores": self.scores, "history": self.history, "partitions": self.partitions}

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes]) -> RetentionPolicy | None:
        try:
            return cls(*(int(raw[name]) for name in (b"rows", b"scores", b"history", b"partitions")))
        except KeyError:
            return None


@dataclass(frozen=True)
class RetentionReport:
    """What one enforcement of the retention policy deleted."""

    rows_pruned: tuple[int, ...] = ()
    scores_pruned: tuple[int, ...] = ()
    stake_cut: int | None = None
    stakes_removed: int = 0


def shadowed_stakes(members: list[bytes]) -> list[bytes]:
    """Stake members (newest first) that no query can return any more: each one that a newer
    member of the list applies wherever it does (no round, or a round no later than its own).

    Only valid for members older than every query's time (the stake cut): a query then sees
    all of them, and :meth:`~streams.state.store.RedisState.stakes_at` takes the newest that applies.
    """
    out: list[bytes] = []
    lowest = math.inf  # the earliest round a newer member applies from (-inf: every round)
    for member in members:
        entry = StakeEntry.parse(member)
        start = -math.inf if entry.round is None else entry.round
        if lowest <= start:
            out.append(member)
        else:
            lowest = start
    return out


async def enforce(state: RedisState, policy: RetentionPolicy, reference: int | None) -> RetentionReport:
    """Prune every round final and expired as of the reference (raised to ``reference`` first,
    a close time), then compact the stake updates behind the new stake cut."""
    if reference is not None:
        ref: int | None = int(await state.scripts.raise_field(keys=[state.keys.retention()], args=["reference", reference]))
    else:
        stored = await state.r.hget(state.keys.retention(), "reference")
        ref = None if stored is None else int(stored)
    rounds = await state.known_rounds()
    if not rounds:
        return RetentionReport()
    pipe = state.r.pipeline(transaction=False)
    for r in rounds:
        pipe.hmget(state.keys.round(r), ["open_ts", "close_ts", ROWS_PRUNED, SCORES_PRUNED])
    meta = dict(zip(rounds, await pipe.execute(), strict=True))
    rows_due: list[int] = []
    scores_due: list[int] = []
    if ref is not None:
        closed = [r for r in rounds if meta[r][1] is not None and int(meta[r][1]) <= ref]  # ascending
        if len(closed) >= policy.rows:  # expired: at least `rows` higher rounds closed by the reference
            rows_due = [r for r in rounds if r < closed[-policy.rows] and meta[r][2] is None]
        if len(closed) >= policy.scores:
            scores_due = [r for r in rounds if r < closed[-policy.scores] and meta[r][3] is None]
    final = {r: meta[r][2] is not None for r in rounds}  # rows pruned: it was final
    ask = sorted({*rows_due, *scores_due} - {r for r in rounds if final[r]})
    if ask:
        pipe = state.r.pipeline(transaction=False)
        for r in ask:
            pipe.hget(state.keys.targets(r), "final")
        final.update({r: flag == b"1" for r, flag in zip(ask, await pipe.execute(), strict=True)})
    rows_now = tuple(r for r in rows_due if final[r])
    scores_now = tuple(r for r in scores_due if final[r])
    if rows_now or scores_now:
        pipe = state.r.pipeline(transaction=False)
        for r in rows_now:
            bulk = [state.keys.subs(r), state.keys.basis(r), state.keys.targets(r), state.keys.ids(r)]
            bulk += [state.keys.live(r, p) for p in range(policy.partitions)]
            await state.scripts.prune(keys=[state.keys.round(r), *bulk], args=[ROWS_PRUNED], client=pipe)
        for r in scores_now:
            scored = [state.keys.scores(r), state.keys.crowding(r), state.keys.close_cwmm(r)]
            await state.scripts.prune(keys=[state.keys.round(r), *scored], args=[SCORES_PRUNED], client=pipe)
        await pipe.execute()
    kept = [int(meta[r][0]) for r in rounds if meta[r][2] is None and r not in rows_now and meta[r][0] is not None]
    cut, removed = (await compact_all_stakes(state, min(kept))) if kept else (None, 0)
    if rows_now or scores_now or removed:
        log.info(
            "retention: rows of rounds %s and scores of rounds %s pruned; %d stake updates before %s compacted",
            list(rows_now),
            list(scores_now),
            removed,
            cut,
        )
    return RetentionReport(rows_now, scores_now, cut, removed)


async def compact_all_stakes(state: RedisState, cut: int) -> tuple[int, int]:
    """Raise the stake cut to ``cut`` and compact every model's stake updates behind it (once
    per cut); returns the cut in force and how many updates went.

    The cut is stored before the stake sets are read, and :meth:`RedisState.add_stake` reads it after its
    write: an update stored meanwhile is compacted by one of the two.
    """
    cut = int(await state.scripts.raise_field(keys=[state.keys.retention()], args=["stake_cut", cut]))
    done = await state.r.hget(state.keys.retention(), "stakes_compacted")
    if done is not None and int(done) >= cut:
        return cut, 0
    removed = 0
    batch: list[bytes] = []
    async for key in state.r.scan_iter(match=state.keys.stakes_pattern(), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += await compact_stakes(state, batch, cut)
            batch.clear()
    if batch:
        removed += await compact_stakes(state, batch, cut)
    await state.scripts.raise_field(keys=[state.keys.retention()], args=["stakes_compacted", cut])
    return cut, removed


async def compact_stakes(state: RedisState, keys: list[Any], cut: int) -> int:
    """Remove the stake updates of ``keys`` stamped before ``cut`` that no query at or after it returns."""
    pipe = state.r.pipeline(transaction=False)
    for key in keys:
        pipe.zrevrangebyscore(key, f"({cut}", "-inf")
    gone = [(key, shadowed_stakes(members)) for key, members in zip(keys, await pipe.execute(), strict=True)]
    gone = [(key, members) for key, members in gone if members]
    if not gone:
        return 0
    pipe = state.r.pipeline(transaction=False)
    for key, members in gone:
        pipe.zrem(key, *members)
    return sum(await pipe.execute())
