"""The Redis state store: the only module that knows Redis keys.

Layout (``ns`` = ``MMC_STATE_NAMESPACE``; every key of one round shares the hash tag ``{rN}``
and every key of one model ``{m:NAME}``, so the layout works on Redis Cluster):

=================================  =========================================================
``ns:{r812}:round``                hash: n_ids, open/close timestamps and offsets, alerted flag
``ns:{r812}:ids``                  the universe, as a JSON list
``ns:{r812}:subs``                 hash model → submission row (event time, offset, prepared ranks)
``ns:{r812}:live:P``               running stake-weighted meta model of partition P's submissions
``ns:{r812}:basis``                hash: the round's :class:`scoring.RoundBasis` + its fingerprint
``ns:{r812}:targets``              hash: the latest scored targets (float64, NaN = missing), day, final
``ns:{r812}:scores``               hash model → latest published score message
``ns:{r812}:crowding``             latest crowding message of the round
``ns:{m:NAME}:stakes``             sorted set of stake updates, scored by event time
``ns:{m:NAME}:history``            hash round → the model's latest scores in that round
``ns:rounds``                      sorted set of known rounds
``ns:stakes:version``              count of stored stake updates (cache validation)
``ns:models``                      set of models that have submitted
``ns:leaderboard``                 sorted set model → rolling mean payout score
``ns:leaderboard:rows``            hash model → latest leaderboard message
``ns:trend``                       hash round → that round's crowding figures
``ns:alerts``                      list of recent alerts (newest first, capped)
``ns:{progress}:TOPIC``            hash partition → next offset processed (for barriers)
``ns:{progress}:watermark``        hash topic → highest event time processed
=================================  =========================================================

Writes are idempotent: a redelivered message leaves the same state. Submissions replace an
earlier one only when newer in event time (then offset); stake updates are members keyed by
their own offset; progress and watermarks only move forward.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis.asyncio
from numpy.typing import NDArray

from scoring import PreparedSubmission, RoundBasis

# Lua: move a progress field (KEYS[1] / ARGV[1] → ARGV[2]) and a watermark field
# (KEYS[2] / ARGV[3] → ARGV[4]) forward, never back.
_ADVANCE = """
local function advance(key, field, value)
  local cur = redis.call('HGET', key, field)
  if (not cur) or tonumber(value) > tonumber(cur) then
    redis.call('HSET', key, field, value)
  end
end
advance(KEYS[1], ARGV[1], ARGV[2])
advance(KEYS[2], ARGV[3], ARGV[4])
return 1
"""

ALERTS_KEPT = 1000
# Submission row header: event time and offset big-endian (so rows compare as bytes in
# event order), then partition, then the stake weight used in the live meta model.
_ROW_ORDER = struct.Struct(">QQ")
_ROW_REST = struct.Struct("<Id")
ROW_HEADER_BYTES = _ROW_ORDER.size + _ROW_REST.size


@dataclass(frozen=True)
class RoundInfo:
    """A round's lifecycle as stored."""

    round: int
    ids: tuple[str, ...]
    open_ts: int
    open_offset: int
    close_ts: int | None
    close_offset: int | None
    alerted: bool

    @property
    def n_ids(self) -> int:
        return len(self.ids)

    @property
    def closed(self) -> bool:
        return self.close_ts is not None


@dataclass(frozen=True)
class SubmissionRow:
    """One stored submission: when it was made, where it came from, its prepared ranks."""

    timestamp_ms: int
    offset: int
    partition: int
    live_weight: float
    prepared: bytes

    def encode(self) -> bytes:
        return (
            _ROW_ORDER.pack(self.timestamp_ms, self.offset)
            + _ROW_REST.pack(self.partition, self.live_weight)
            + self.prepared
        )

    @classmethod
    def decode(cls, data: bytes) -> SubmissionRow:
        ts, offset = _ROW_ORDER.unpack_from(data, 0)
        partition, weight = _ROW_REST.unpack_from(data, _ROW_ORDER.size)
        return cls(ts, offset, partition, weight, data[ROW_HEADER_BYTES:])

    @property
    def order_key(self) -> tuple[int, int]:
        return (self.timestamp_ms, self.offset)

    def submission(self, n_ids: int) -> PreparedSubmission:
        return PreparedSubmission.from_bytes(self.prepared, n_ids)


@dataclass(frozen=True)
class StakeEntry:
    timestamp_ms: int
    offset: int
    round: int | None
    stake: float


def _array_bytes(a: NDArray[np.float64]) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _array(data: bytes, shape: tuple[int, ...]) -> NDArray[np.float64]:
    return np.frombuffer(data, dtype="<f8").astype(np.float64).reshape(shape)


class Keys:
    """Builds every Redis key (no f-string keys anywhere else)."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def everything(self) -> str:
        """SCAN pattern of every key of the namespace."""
        return f"{self.ns}:*"

    def round(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:round"

    def ids(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:ids"

    def subs(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:subs"

    def live(self, r: int, partition: int) -> str:
        return f"{self.ns}:{{r{r}}}:live:{partition}"

    def basis(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:basis"

    def targets(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:targets"

    def scores(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:scores"

    def crowding(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:crowding"

    def stakes(self, model: str) -> str:
        return f"{self.ns}:{{m:{model}}}:stakes"

    def history(self, model: str) -> str:
        return f"{self.ns}:{{m:{model}}}:history"

    def rounds(self) -> str:
        return f"{self.ns}:rounds"

    def stakes_version(self) -> str:
        return f"{self.ns}:stakes:version"

    def models(self) -> str:
        return f"{self.ns}:models"

    def leaderboard(self) -> str:
        return f"{self.ns}:leaderboard"

    def leaderboard_rows(self) -> str:
        return f"{self.ns}:leaderboard:rows"

    def trend(self) -> str:
        return f"{self.ns}:trend"

    def alerts(self) -> str:
        return f"{self.ns}:alerts"

    # Progress and watermarks share one hash tag: the script that advances both stays in one slot.
    def progress(self, topic: str) -> str:
        return f"{self.ns}:{{progress}}:{topic}"

    def watermark(self) -> str:
        return f"{self.ns}:{{progress}}:watermark"


class RedisState:
    """Async access to the service's state; one instance per worker process."""

    def __init__(self, client: redis.asyncio.Redis, namespace: str) -> None:
        self.r = client
        self.keys = Keys(namespace)
        self._advance = client.register_script(_ADVANCE)

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
            if ids is None:
                return None
        if not meta:
            return None
        m = {k.decode(): v.decode() for k, v in meta.items()}
        return RoundInfo(
            round=r,
            ids=known_ids if known_ids is not None else tuple(orjson.loads(ids)),
            open_ts=int(m["open_ts"]),
            open_offset=int(m["open_offset"]),
            close_ts=int(m["close_ts"]) if "close_ts" in m else None,
            close_offset=int(m["close_offset"]) if "close_offset" in m else None,
            alerted=m.get("alerted") == "1",
        )

    async def open_round(self, r: int, ids: tuple[str, ...], ts: int, offset: int) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.ids(r), orjson.dumps(list(ids)))
        pipe.hset(self.keys.round(r), mapping={"open_ts": ts, "open_offset": offset, "n_ids": len(ids)})
        await pipe.execute()
        await self.r.zadd(self.keys.rounds(), {str(r): r})

    async def close_round(self, r: int, ts: int, offset: int) -> None:
        await self.r.hset(self.keys.round(r), mapping={"close_ts": ts, "close_offset": offset})

    async def mark_round_alerted(self, r: int) -> None:
        await self.r.hset(self.keys.round(r), "alerted", "1")

    async def known_rounds(self) -> list[int]:
        return [int(x) for x in await self.r.zrange(self.keys.rounds(), 0, -1)]

    # --- submissions ---------------------------------------------------------------------
    async def put_submissions(
        self, rows: Mapping[tuple[int, str], SubmissionRow], lives: Mapping[tuple[int, int], NDArray[np.float64]]
    ) -> None:
        """Store submissions with their partitions' new live meta-model sums.

        One transaction per round (a round's keys share a hash slot): a round's rows and its live
        sums change together or not at all. ``rows``: (round, model) → row; ``lives``:
        (round, partition) → ``[Σw, Σw·G]``.
        """
        rounds = sorted({r for r, _ in rows} | {r for r, _ in lives})
        for r in rounds:
            pipe = self.r.pipeline(transaction=True)
            mapping = {model: row.encode() for (rr, model), row in rows.items() if rr == r}
            if mapping:
                pipe.hset(self.keys.subs(r), mapping=mapping)  # type: ignore[arg-type]
                pipe.hincrby(self.keys.round(r), "subs_version", 1)
            for (rr, partition), live in lives.items():
                if rr == r:
                    pipe.set(self.keys.live(r, partition), _array_bytes(live))
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
            np.zeros(n_ids + 1) if data is None else _array(data, (n_ids + 1,))
            for data, (_, _, n_ids) in zip(raw[len(by_round) + len(wanted) :], lives, strict=True)
        ]
        return rows, stakes, sums

    async def submissions_version(self, r: int) -> int:
        """Counts the round's stored submission changes: equal versions mean the same submissions."""
        value = await self.r.hget(self.keys.round(r), "subs_version")
        return 0 if value is None else int(value)

    async def get_submissions(self, r: int) -> dict[str, SubmissionRow]:
        raw = await self.r.hgetall(self.keys.subs(r))
        return {k.decode(): SubmissionRow.decode(v) for k, v in raw.items()}

    async def get_live_total(self, r: int, n_ids: int, partitions: int) -> NDArray[np.float64]:
        """Sum of every partition's live sums, partitions added in index order."""
        total = np.zeros(n_ids + 1)
        for data in await self.r.mget([self.keys.live(r, p) for p in range(partitions)]):
            if data is not None:
                total += _array(data, (n_ids + 1,))
        return total

    # --- stakes --------------------------------------------------------------------------
    async def add_stake(self, model: str, entry: StakeEntry) -> None:
        member = f"{entry.timestamp_ms:015d}:{entry.offset:020d}:{'' if entry.round is None else entry.round}:{entry.stake!r}"
        if await self.r.zadd(self.keys.stakes(model), {member: entry.timestamp_ms}):
            await self.r.incr(self.keys.stakes_version())

    async def stakes_version(self) -> int:
        """Counts stored stake updates: an unchanged count means unchanged stakes everywhere."""
        value = await self.r.get(self.keys.stakes_version())
        return 0 if value is None else int(value)

    @staticmethod
    def _parse_stake(member: bytes) -> StakeEntry:
        ts, offset, rnd, stake = member.decode().split(":")
        return StakeEntry(int(ts), int(offset), int(rnd) if rnd else None, float(stake))

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
            entry = cls._parse_stake(member)
            if entry.round is None or round_number is None or entry.round <= round_number:
                return entry.stake
        return 0.0

    # --- basis ---------------------------------------------------------------------------
    async def get_basis(self, r: int, fingerprint: str, n_models: int, n_ids: int, draws: int) -> RoundBasis | None:
        raw = await self.r.hgetall(self.keys.basis(r))
        if not raw or raw.get(b"fingerprint", b"").decode() != fingerprint:
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
        return RoundBasis(**{name: _array(raw[name.encode()], shape) for name, shape in shapes.items()})

    async def put_basis(self, r: int, fingerprint: str, basis: RoundBasis) -> None:
        mapping: dict[str, bytes] = {
            name: _array_bytes(getattr(basis, name))
            for name in (
                "stakes", "meta_model", "meta_gauss", "draws_centered",
                "g_meta", "u_draws", "g15_centered_norm", "corr_w_mm",
            )
        }
        mapping["fingerprint"] = fingerprint.encode()
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.basis(r))
        pipe.hset(self.keys.basis(r), mapping=mapping)  # type: ignore[arg-type]
        await pipe.execute()

    # --- scores, history, leaderboard, trend, alerts ---------------------------------------
    async def put_round_scores(self, r: int, messages: Mapping[str, bytes], crowding: bytes) -> None:
        pipe = self.r.pipeline(transaction=False)
        if messages:
            pipe.hset(self.keys.scores(r), mapping=dict(messages))  # type: ignore[arg-type]
        pipe.set(self.keys.crowding(r), crowding)
        await pipe.execute()

    async def put_targets(self, r: int, day: int, final: bool, targets: NDArray[np.float64]) -> None:
        """Keep the round's latest scored targets (final wins, then the later day)."""
        current = await self.r.hmget(self.keys.targets(r), ["day", "final"])
        if current[0] is not None and (current[1] == b"1", int(current[0])) > (final, day):
            return
        await self.r.hset(
            self.keys.targets(r), mapping={"day": day, "final": int(final), "values": _array_bytes(targets)}
        )

    async def get_targets(self, r: int, n_ids: int) -> NDArray[np.float64] | None:
        data = await self.r.hget(self.keys.targets(r), "values")
        return None if data is None else _array(data, (n_ids,))

    async def get_round_scores(self, r: int) -> dict[str, dict[str, Any]]:
        raw = await self.r.hgetall(self.keys.scores(r))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def get_round_crowding(self, r: int) -> dict[str, Any] | None:
        data = await self.r.get(self.keys.crowding(r))
        return None if data is None else orjson.loads(data)

    async def put_history(self, r: int, entries: Mapping[str, dict[str, Any]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for model, entry in entries.items():
            pipe.hset(self.keys.history(model), str(r), orjson.dumps(entry))
        await pipe.execute()

    async def get_histories(self, models: Iterable[str]) -> dict[str, dict[int, dict[str, Any]]]:
        models = list(models)
        pipe = self.r.pipeline(transaction=False)
        for model in models:
            pipe.hgetall(self.keys.history(model))
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for model, raw in zip(models, await pipe.execute(), strict=True):
            out[model] = {int(k): orjson.loads(v) for k, v in raw.items()}
        return out

    async def all_models(self) -> list[str]:
        return sorted(m.decode() for m in await self.r.smembers(self.keys.models()))

    async def put_standings(self, rows: Mapping[str, tuple[float, bytes]]) -> None:
        """Leaderboard scores (sorted set) and the rows behind them."""
        if not rows:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.leaderboard(), {m: score for m, (score, _) in rows.items()})
        pipe.hset(self.keys.leaderboard_rows(), mapping={m: row for m, (_, row) in rows.items()})  # type: ignore[arg-type]
        await pipe.execute()

    async def ranks(self, models: list[str]) -> tuple[list[int], int]:
        """1-based rank of each model by rolling payout (ties: Redis' reverse member order), and the board size."""
        board = await self.r.zrevrange(self.keys.leaderboard(), 0, -1)
        position = {member.decode(): i + 1 for i, member in enumerate(board)}
        return [position[m] for m in models], len(board)

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        models = [m.decode() for m in await self.r.zrevrange(self.keys.leaderboard(), 0, limit - 1)]
        if not models:
            return []
        rows = await self.r.hmget(self.keys.leaderboard_rows(), models)
        return [orjson.loads(row) for row in rows if row is not None]

    async def put_trend(self, r: int, figures: dict[str, Any]) -> None:
        await self.r.hset(self.keys.trend(), str(r), orjson.dumps(figures))

    async def get_trend(self) -> dict[int, dict[str, Any]]:
        raw = await self.r.hgetall(self.keys.trend())
        return {int(k): orjson.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    async def push_alerts(self, alerts: list[bytes]) -> None:
        if not alerts:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(self.keys.alerts(), *alerts)
        pipe.ltrim(self.keys.alerts(), 0, ALERTS_KEPT - 1)
        await pipe.execute()

    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        return [orjson.loads(a) for a in await self.r.lrange(self.keys.alerts(), 0, limit - 1)]

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
            await self._advance(
                keys=[self.keys.progress(topic), self.keys.watermark()], args=[partition, offset + 1, topic, ts], client=pipe
            )
        await pipe.execute()

    async def progress(self, topic: str) -> dict[int, int]:
        raw = await self.r.hgetall(self.keys.progress(topic))
        return {int(k): int(v) for k, v in raw.items()}

    async def watermark(self, topic: str) -> int:
        value = await self.r.hget(self.keys.watermark(), topic)
        return -1 if value is None else int(value)
