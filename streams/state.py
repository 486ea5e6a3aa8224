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
``ns:{r812}:closecwmm``            hash model → CWMM at close (what the close-stage alerts measured)
``ns:{m:NAME}:stakes``             sorted set of stake updates, scored by event time
``ns:{m:NAME}:history``            hash round → the model's latest scores in that round
``ns:rounds``                      sorted set of known rounds
``ns:stakes:version``              count of stored stake updates (cache validation)
``ns:models``                      set of models that have submitted
``ns:leaderboard``                 sorted set model → rolling mean payout score
``ns:leaderboard:rows``            hash model → latest leaderboard message
``ns:trend``                       hash round → that round's crowding figures
``ns:finals``                      hash round → time of its first final update and the MMC by CWMM decile then
``ns:alerts``                      sorted set of the latest alerts, scored by event time (capped)
``ns:{progress}:TOPIC``            hash partition → next offset processed (for barriers)
``ns:{progress}:watermark``        hash topic → highest event time processed
``ns:retention``                   hash: the retention policy in force and how far it has acted
=================================  =========================================================

Writes are idempotent: a redelivered message leaves the same state. Submissions replace an
earlier one only when newer in event time (then offset); stake updates are members keyed by
their own offset; progress and watermarks only move forward.

Retention (:meth:`RedisState.prune_rounds`, settings ``MMC_RETENTION_*``). A round's bulk — its
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

import dataclasses
import logging
import math
import re
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis.asyncio
import redis.exceptions
from numpy.typing import NDArray

from scoring import PreparedSubmission, RoundBasis
from streams.errors import RoundStateInvalid, StateLost

log = logging.getLogger(__name__)

# Lua: move a progress field (KEYS[1] / ARGV[1] → ARGV[2]) and a watermark field
# (KEYS[2] / ARGV[3] → ARGV[4]) forward, never back.
_ADVANCE = """
local function advance(key, field, value)
  local cur = redis.call('HGET', key, field)
  if (not cur) or tonumber(value) > tonumber(cur) then
    redis.call('HSET', key, field, value)
  end
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[5] then
  return redis.error_reply('STATE_LOST the state epoch changed: Redis lost or replaced the state')
end
advance(KEYS[1], ARGV[1], ARGV[2])
advance(KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# Lua, run last in the transaction that writes a round's bulk: when the round hash (KEYS[1]) has
# field ARGV[1] (retention pruned that part of the round), delete KEYS[2..] again and take back
# the increment of field ARGV[2] if given, so the write leaves the state as it was. (Writing
# through a script instead would copy every row into Lua strings: several times the server
# time of the plain HSET for a batch of rows.)
_DROP_IF_PRUNED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('UNLINK', unpack(KEYS, 2))
  if ARGV[2] then redis.call('HINCRBY', KEYS[1], ARGV[2], -1) end
  return 1
end
return 0
"""
# Lua: keep the round's latest scored targets (final wins, then the later day) unless its rows
# were pruned. KEYS[1] round hash, KEYS[2] targets; ARGV: day, final (0/1), values.
_PUT_TARGETS = """
if redis.call('HEXISTS', KEYS[1], 'rows_pruned') == 1 then return 0 end
local cur = redis.call('HMGET', KEYS[2], 'day', 'final')
if cur[1] then
  local cur_final = (cur[2] == '1') and 1 or 0
  local new_final = tonumber(ARGV[2])
  if cur_final > new_final or (cur_final == new_final and tonumber(cur[1]) > tonumber(ARGV[1])) then
    return 0
  end
end
redis.call('HSET', KEYS[2], 'day', ARGV[1], 'final', ARGV[2], 'values', ARGV[3])
return 1
"""
# Lua: trim a model's history (KEYS[1]) to its ARGV[1] highest rounds; returns how many went.
_TRIM_HISTORY = """
local keep = tonumber(ARGV[1])
local n = redis.call('HLEN', KEYS[1])
if n <= keep then return 0 end
local rounds = {}
for i, field in ipairs(redis.call('HKEYS', KEYS[1])) do rounds[i] = {tonumber(field), field} end
table.sort(rounds, function(a, b) return a[1] < b[1] end)
for i = 1, n - keep do redis.call('HDEL', KEYS[1], rounds[i][2]) end
return n - keep
"""
# Lua: mark a round pruned (field ARGV[1] of KEYS[1], its hash) and delete KEYS[2..], at once.
_PRUNE = """
redis.call('HSET', KEYS[1], ARGV[1], '1')
if #KEYS > 1 then redis.call('UNLINK', unpack(KEYS, 2)) end
return 1
"""
# Lua: raise field ARGV[1] of KEYS[1] to ARGV[2], never lower it; returns the value in force.
_RAISE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(ARGV[2]) > tonumber(cur) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return cur
"""

#: Fields of a round's hash that mark its bulk (rows, live sums, basis, targets) and its scores
#: and crowding as deleted by retention.
ROWS_PRUNED = "rows_pruned"
SCORES_PRUNED = "scores_pruned"

ALERTS_KEPT = 1000
# Submission row header: event time and offset big-endian (so rows compare as bytes in
# event order), then partition, then the stake weight used in the live meta model.
_ROW_ORDER = struct.Struct(">QQ")
_ROW_REST = struct.Struct("<Id")
ROW_HEADER_BYTES = _ROW_ORDER.size + _ROW_REST.size


@dataclass(frozen=True)
class RoundInfo:
    """A round's lifecycle as stored (read from its ``round`` hash and ``ids`` by :meth:`parse`)."""

    round: int
    #: The universe; None once retention pruned it (read it back from the open record, ``open_offset``).
    ids: tuple[str, ...] | None
    open_ts: int
    open_offset: int
    close_ts: int | None
    close_offset: int | None
    alerted: bool
    #: The close-stage alerts were raised (or the round needed none): its CWMMs at close are stored.
    close_alerted: bool = False

    #: Size of the universe (also when ``ids`` is None).
    universe_size: int = 0

    @property
    def n_ids(self) -> int:
        return len(self.ids) if self.ids is not None else self.universe_size

    @property
    def closed(self) -> bool:
        return self.close_ts is not None

    def with_universe(self, ids: tuple[str, ...]) -> RoundInfo:
        """The same round with its universe at hand (read back from its open record)."""
        return dataclasses.replace(self, ids=ids)

    @classmethod
    def parse(cls, r: int, fields: Mapping[Any, Any], universe: bytes | None = None, known_ids: tuple[str, ...] | None = None) -> RoundInfo:
        """Round ``r`` from its stored hash ``fields`` (bytes or text) and the JSON of its universe
        (``universe``; ``known_ids`` instead when the caller has it, None once pruned).

        Raises :class:`~streams.errors.RoundStateInvalid` when a field is missing or holds a
        value the service never writes. Fields this record does not read are ignored.
        """
        try:
            m = {_text(k): _text(v) for k, v in fields.items()}
        except (TypeError, UnicodeDecodeError) as exc:
            raise RoundStateInvalid(r, f"a field is not text ({exc})") from exc
        close_ts, close_offset = _int_field(r, m, "close_ts"), _int_field(r, m, "close_offset", minimum=0)
        if (close_ts is None) != (close_offset is None):
            raise RoundStateInvalid(r, "close_ts and close_offset must be stored together")
        ids = known_ids if known_ids is not None else (_parse_universe(r, universe) if universe is not None else None)
        size = _int_field(r, m, "n_ids", minimum=0)
        if ids is not None and size is not None and size != len(ids):
            raise RoundStateInvalid(r, f"n_ids is {size} but the universe holds {len(ids)} ids")
        return cls(
            round=r,
            ids=ids,
            open_ts=_required(r, "open_ts", _int_field(r, m, "open_ts")),
            open_offset=_required(r, "open_offset", _int_field(r, m, "open_offset", minimum=0)),
            close_ts=close_ts,
            close_offset=close_offset,
            alerted=_flag(r, m, "alerted"),
            close_alerted=_flag(r, m, "close_alerted"),
            universe_size=size if size is not None else 0,
        )


def _int_field(r: int, fields: Mapping[str, str], name: str, minimum: int | None = None) -> int | None:
    """An integer field of a round's hash (None when absent)."""
    if name not in fields:
        return None
    try:
        value = int(fields[name])
    except ValueError:
        raise RoundStateInvalid(r, f"{name} is not an integer: {fields[name][:40]!r}") from None
    if minimum is not None and value < minimum:
        raise RoundStateInvalid(r, f"{name} is {value}, below {minimum}")
    return value


def _required(r: int, name: str, value: int | None) -> int:
    if value is None:
        raise RoundStateInvalid(r, f"{name} is missing")
    return value


def _flag(r: int, fields: Mapping[str, str], name: str) -> bool:
    """A flag of a round's hash: ``"1"`` set, absent (or ``"0"``) not."""
    value = fields.get(name, "0")
    if value not in ("0", "1"):
        raise RoundStateInvalid(r, f"{name} is {value[:40]!r}, not 0 or 1")
    return value == "1"


def _parse_universe(r: int, data: bytes) -> tuple[str, ...]:
    """A round's universe from its stored JSON list of ids."""
    try:
        ids = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RoundStateInvalid(r, f"the universe is not JSON ({exc})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RoundStateInvalid(r, "the universe is not a list of ids")
    return tuple(ids)


@dataclass(frozen=True)
class SubmissionRow:
    """One stored submission: when it was made, where it came from, its prepared ranks."""

    timestamp_ms: int
    offset: int
    partition: int
    live_weight: float
    prepared: bytes

    def encode(self) -> bytes:
        return _ROW_ORDER.pack(self.timestamp_ms, self.offset) + _ROW_REST.pack(self.partition, self.live_weight) + self.prepared

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


@dataclass(frozen=True)
class RetentionPolicy:
    """How much of the past the state keeps (module docstring, "Retention").

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
    all of them, and :meth:`RedisState._stake_in_force` returns the newest that applies.
    """
    out: list[bytes] = []
    lowest = math.inf  # the earliest round a newer member applies from (-inf: every round)
    for member in members:
        entry = RedisState._parse_stake(member)
        start = -math.inf if entry.round is None else entry.round
        if lowest <= start:
            out.append(member)
        else:
            lowest = start
    return out


def _array_bytes(a: NDArray[np.float64]) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _text(value: object) -> str:
    """A Redis reply as text (the client answers bytes; its type hints allow str and more)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string reply, got {type(value).__name__}")


def _raw(value: object) -> bytes:
    """A Redis reply as bytes (see :func:`_text`)."""
    return value if isinstance(value, bytes) else _text(value).encode()


def _array(data: bytes, shape: tuple[int, ...]) -> NDArray[np.float64]:
    return np.frombuffer(data, dtype="<f8").astype(np.float64).reshape(shape)


_ROUND_TAG = re.compile(r"\{r\d+\}")
_MODEL_TAG = re.compile(r"\{m:[^}]*\}")
_PARTITION = re.compile(r":live:\d+$")


def key_family(namespace: str, key: str) -> str:
    """A key's family: the key without the namespace, its round (``{rN}``), model
    (``{m:NAME}``) and partition numbers (``:live:P``) — one line per kind of key."""
    name = key[len(namespace) + 1 :] if key.startswith(f"{namespace}:") else key
    return _PARTITION.sub(":live:P", _MODEL_TAG.sub("{m:NAME}", _ROUND_TAG.sub("{rN}", name)))


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

    def close_cwmm(self, r: int) -> str:
        return f"{self.ns}:{{r{r}}}:closecwmm"

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

    def finals(self) -> str:
        return f"{self.ns}:finals"

    def alerts(self) -> str:
        return f"{self.ns}:alerts"

    def retention(self) -> str:
        return f"{self.ns}:retention"

    def stakes_pattern(self) -> str:
        """SCAN pattern of every model's stake updates."""
        return f"{self.ns}:{{m:*}}:stakes"

    # Progress and watermarks share one hash tag: the script that advances both stays in one slot.
    def progress(self, topic: str) -> str:
        return f"{self.ns}:{{progress}}:{topic}"

    def watermark(self) -> str:
        return f"{self.ns}:{{progress}}:watermark"

    def epoch(self) -> str:
        """A random token written when the state is created or rebuilt: if it changes or
        vanishes under a running worker, Redis lost the state (flushed, restarted empty)."""
        return f"{self.ns}:{{progress}}:epoch"

    def recovery_lock(self) -> str:
        return f"{self.ns}:{{progress}}:recovery"


class RedisState:
    """Async access to the service's state; one instance per worker process."""

    def __init__(self, client: redis.asyncio.Redis, namespace: str) -> None:
        self.r = client
        self.keys = Keys(namespace)
        self._advance = client.register_script(_ADVANCE)
        self._drop_if_pruned = client.register_script(_DROP_IF_PRUNED)
        self._put_targets = client.register_script(_PUT_TARGETS)
        self._trim_history = client.register_script(_TRIM_HISTORY)
        self._prune = client.register_script(_PRUNE)
        self._raise = client.register_script(_RAISE)
        #: The retention policy as last stored or read (:meth:`retention_policy`).
        self._policy: RetentionPolicy | None = None
        #: The epoch this process works in (:meth:`claim_epoch`); progress marks are refused
        #: once the stored one differs (see :class:`streams.errors.StateLost`).
        self.epoch_token = ""

    # --- the state's epoch -------------------------------------------------------------------
    async def claim_epoch(self) -> str:
        """Adopt the stored epoch, creating one when there is none (a new namespace)."""
        await self.r.set(self.keys.epoch(), secrets.token_hex(8), nx=True)
        self.epoch_token = _text(await self.r.get(self.keys.epoch()) or b"")
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
        if self.epoch_token and _text(await self.r.get(self.keys.epoch()) or b"") != self.epoch_token:
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
        return RoundInfo.parse(r, meta, universe=None if ids is None else _raw(ids), known_ids=known_ids)

    async def open_round(self, r: int, ids: tuple[str, ...], ts: int, offset: int) -> None:
        pipe = self.r.pipeline(transaction=True)
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
        return [int(_text(x)) for x in await self.r.zrange(self.keys.rounds(), 0, -1)]

    # --- submissions ---------------------------------------------------------------------
    async def put_submissions(self, rows: Mapping[tuple[int, str], SubmissionRow], lives: Mapping[tuple[int, int], NDArray[np.float64]]) -> None:
        """Store submissions with their partitions' new live meta-model sums.

        One transaction per round (a round's keys share a hash slot): a round's rows and its live
        sums change together or not at all, and not at all once retention pruned the round's rows.
        ``rows``: (round, model) → row; ``lives``: (round, partition) → ``[Σw, Σw·G]``.
        """
        rounds = sorted({r for r, _ in rows} | {r for r, _ in lives})
        for r in rounds:
            pipe = self.r.pipeline(transaction=True)
            mapping = {model: row.encode() for (rr, model), row in rows.items() if rr == r}
            if mapping:
                pipe.hset(self.keys.subs(r), mapping=mapping)  # type: ignore[arg-type]
                pipe.hincrby(self.keys.round(r), "subs_version", 1)
            written = [self.keys.subs(r)] if mapping else []
            for (rr, partition), live in lives.items():
                if rr == r:
                    pipe.set(self.keys.live(r, partition), _array_bytes(live))
                    written.append(self.keys.live(r, partition))
            if written:
                undo = [ROWS_PRUNED, "subs_version"] if mapping else [ROWS_PRUNED]
                await self._drop_if_pruned(keys=[self.keys.round(r), *written], args=undo, client=pipe)
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
        """Counts the round's stored submission changes: equal versions mean the same submissions.

        -1 once retention pruned the round's rows (no cached copy of them matches any more).
        """
        value, pruned = await self.r.hmget(self.keys.round(r), ["subs_version", ROWS_PRUNED])
        if pruned is not None:
            return -1
        return 0 if value is None else int(value)

    async def get_submissions(self, r: int) -> dict[str, SubmissionRow]:
        raw = await self.r.hgetall(self.keys.subs(r))
        return {_text(k): SubmissionRow.decode(_raw(v)) for k, v in raw.items()}

    async def get_live_total(self, r: int, n_ids: int, partitions: int) -> NDArray[np.float64]:
        """Sum of every partition's live sums, partitions added in index order."""
        total = np.zeros(n_ids + 1)
        for data in await self.r.mget([self.keys.live(r, p) for p in range(partitions)]):
            if data is not None:
                total += _array(_raw(data), (n_ids + 1,))
        return total

    # --- stakes --------------------------------------------------------------------------
    async def add_stake(self, model: str, entry: StakeEntry) -> None:
        """Store a stake update; one stamped before the stake cut is compacted with the model's others."""
        member = f"{entry.timestamp_ms:015d}:{entry.offset:020d}:{'' if entry.round is None else entry.round}:{entry.stake!r}"
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.stakes(model), {member: entry.timestamp_ms})
        pipe.hget(self.keys.retention(), "stake_cut")  # read after the write: see _compact_all_stakes
        added, cut = await pipe.execute()
        if added:
            await self.r.incr(self.keys.stakes_version())
        if cut is not None and entry.timestamp_ms < int(cut):
            await self._compact_stakes([self.keys.stakes(model)], int(cut))

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
        if not raw or _text(raw.get(b"fingerprint", b"")) != fingerprint:
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
        return RoundBasis(**{name: _array(_raw(raw[name.encode()]), shape) for name, shape in shapes.items()})

    async def get_basis_field(self, r: int, fingerprint: str, name: str, shape: tuple[int, ...]) -> NDArray[np.float64] | None:
        """One array of the stored basis (``corr_w_mm``, …) when it was stored under ``fingerprint``."""
        stored, data = await self.r.hmget(self.keys.basis(r), ["fingerprint", name])
        if stored is None or _text(stored) != fingerprint or data is None:
            return None
        return _array(_raw(data), shape)

    async def put_basis(self, r: int, fingerprint: str, basis: RoundBasis) -> None:
        mapping: dict[str, bytes] = {
            name: _array_bytes(getattr(basis, name))
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
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.basis(r))
        pipe.hset(self.keys.basis(r), mapping=mapping)  # type: ignore[arg-type]
        await self._drop_if_pruned(keys=[self.keys.round(r), self.keys.basis(r)], args=[ROWS_PRUNED], client=pipe)
        await pipe.execute()

    # --- scores, history, leaderboard, trend, alerts ---------------------------------------
    async def put_round_scores(self, r: int, messages: Mapping[str, bytes], crowding: bytes) -> None:
        """The round's latest score messages and crowding message (nothing once retention pruned them)."""
        pipe = self.r.pipeline(transaction=True)
        if messages:
            pipe.hset(self.keys.scores(r), mapping=dict(messages))  # type: ignore[arg-type]
        pipe.set(self.keys.crowding(r), crowding)
        await self._drop_if_pruned(keys=[self.keys.round(r), self.keys.scores(r), self.keys.crowding(r)], args=[SCORES_PRUNED], client=pipe)
        await pipe.execute()

    async def put_targets(self, r: int, day: int, final: bool, targets: NDArray[np.float64]) -> None:
        """Keep the round's latest scored targets (final wins, then the later day), then enforce
        the retention policy with this round's close as the reference (module docstring).

        The last write of a scored targets update: the round is final for retention from here on.
        """
        await self._put_targets(keys=[self.keys.round(r), self.keys.targets(r)], args=[day, int(final), _array_bytes(targets)])
        policy = await self.retention_policy()
        if policy is not None:
            close_ts = await self.r.hget(self.keys.round(r), "close_ts")
            await self._enforce(policy, None if close_ts is None else int(close_ts))

    async def get_targets(self, r: int, n_ids: int) -> NDArray[np.float64] | None:
        data = await self.r.hget(self.keys.targets(r), "values")
        return None if data is None else _array(_raw(data), (n_ids,))

    async def get_round_scores(self, r: int) -> dict[str, dict[str, Any]]:
        raw = await self.r.hgetall(self.keys.scores(r))
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    async def get_round_crowding(self, r: int) -> dict[str, Any] | None:
        data = await self.r.get(self.keys.crowding(r))
        return None if data is None else orjson.loads(data)

    async def put_history(self, r: int, entries: Mapping[str, dict[str, Any]]) -> None:
        """Each model's entry for round ``r``; its history then keeps its highest ``history``
        rounds of the retention policy (all of them while no policy is stored) — the view
        :func:`streams.worker.context.latest_rounds` gives, so a cold read equals a worker's cache.

        Only the targets worker writes histories (one partition), one update after another.
        """
        if not entries:
            return
        models = list(entries)
        pipe = self.r.pipeline(transaction=False)
        for model in models:
            pipe.hset(self.keys.history(model), str(r), orjson.dumps(entries[model]))
        # A history only grows when a round is new to it (HSET then answers 1): only those are trimmed.
        grown = [m for m, added in zip(models, await pipe.execute(), strict=True) if added]
        policy = await self.retention_policy() if grown else None
        if policy is None:
            return
        pipe = self.r.pipeline(transaction=False)
        for model in grown:
            await self._trim_history(keys=[self.keys.history(model)], args=[policy.history], client=pipe)
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
        return sorted(_text(m) for m in await self.r.smembers(self.keys.models()))

    async def put_standings(self, rows: Mapping[str, tuple[float, bytes]]) -> None:
        """Leaderboard scores (sorted set) and the rows behind them."""
        if not rows:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.leaderboard(), {m: score for m, (score, _) in rows.items()})
        pipe.hset(self.keys.leaderboard_rows(), mapping={m: row for m, (_, row) in rows.items()})
        await pipe.execute()

    async def ranks(self, models: list[str]) -> tuple[list[int], int]:
        """1-based rank of each model by rolling payout (ties: Redis' reverse member order), and the board size."""
        board = await self.r.zrevrange(self.keys.leaderboard(), 0, -1)
        position = {_text(member): i + 1 for i, member in enumerate(board)}
        return [position[m] for m in models], len(board)

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        models = [_text(m) for m in await self.r.zrevrange(self.keys.leaderboard(), 0, limit - 1)]
        if not models:
            return []
        rows = await self.r.hmget(self.keys.leaderboard_rows(), models)
        return [orjson.loads(row) for row in rows if row is not None]

    async def put_trend(self, r: int, figures: dict[str, Any]) -> None:
        await self.r.hset(self.keys.trend(), str(r), orjson.dumps(figures))

    async def get_trend(self) -> dict[int, dict[str, Any]]:
        raw = await self.r.hgetall(self.keys.trend())
        return {int(k): orjson.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    async def put_final(self, r: int, ts: int, mmc_by_cwmm_decile: list[float | None]) -> None:
        """Record the round's first final update: its record time and today's MMC by CWMM decile
        then (a repeated or corrected final update later leaves it as it was)."""
        await self.r.hsetnx(self.keys.finals(), str(r), orjson.dumps({"ts": ts, "mmc_mean_by_cwmm_decile": mmc_by_cwmm_decile}))

    async def get_finals(self) -> dict[int, dict[str, Any]]:
        raw = await self.r.hgetall(self.keys.finals())
        return {int(k): orjson.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    async def put_close_cwmm(self, r: int, cwmm: Mapping[str, float]) -> None:
        """Store the round's CWMMs at close and mark its close-stage alerts raised, at once
        (nothing but the mark once retention pruned the round's scores)."""
        pipe = self.r.pipeline(transaction=True)
        if cwmm:
            pipe.hset(self.keys.close_cwmm(r), mapping={m: repr(float(v)) for m, v in cwmm.items()})
            await self._drop_if_pruned(keys=[self.keys.round(r), self.keys.close_cwmm(r)], args=[SCORES_PRUNED], client=pipe)
        pipe.hset(self.keys.round(r), "close_alerted", "1")
        await pipe.execute()

    async def get_close_cwmm(self, rounds: list[int]) -> dict[int, dict[str, float]]:
        """CWMMs at close of ``rounds`` that have them stored."""
        if not rounds:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for r in rounds:
            pipe.hgetall(self.keys.close_cwmm(r))
        out = {}
        for r, raw in zip(rounds, await pipe.execute(), strict=True):
            if raw:
                out[r] = {k.decode(): float(v) for k, v in raw.items()}
        return out

    async def push_alerts(self, alerts: list[tuple[int, bytes]]) -> None:
        """Keep ``(event time, alert)`` pairs among the latest ALERTS_KEPT alerts by event time
        (ties by their bytes): the same set whatever order they were raised in."""
        if not alerts:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.alerts(), {value: ts for ts, value in alerts})
        pipe.zremrangebyrank(self.keys.alerts(), 0, -ALERTS_KEPT - 1)
        await pipe.execute()

    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` alerts, newest (by event time) first."""
        return [orjson.loads(_raw(a)) for a in await self.r.zrevrange(self.keys.alerts(), 0, limit - 1)]

    # --- retention -----------------------------------------------------------------------------
    async def retention_policy(self) -> RetentionPolicy | None:
        """The policy the last :meth:`prune_rounds` stored (None before any), read once per instance."""
        if self._policy is None:
            self._policy = RetentionPolicy.from_fields({_raw(k): _raw(v) for k, v in (await self.r.hgetall(self.keys.retention())).items()})
        return self._policy

    async def prune_rounds(self, rows: int, scores: int, history: int, partitions: int) -> RetentionReport:
        """Store the retention policy and enforce it (at every close; module docstring, "Retention").

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
        return await self._enforce(policy, None)

    async def _enforce(self, policy: RetentionPolicy, reference: int | None) -> RetentionReport:
        """Prune every round final and expired as of the reference (raised to ``reference`` first,
        a close time), then compact the stake updates behind the new stake cut."""
        if reference is not None:
            ref: int | None = int(await self._raise(keys=[self.keys.retention()], args=["reference", reference]))
        else:
            stored = await self.r.hget(self.keys.retention(), "reference")
            ref = None if stored is None else int(stored)
        rounds = await self.known_rounds()
        if not rounds:
            return RetentionReport()
        pipe = self.r.pipeline(transaction=False)
        for r in rounds:
            pipe.hmget(self.keys.round(r), ["open_ts", "close_ts", ROWS_PRUNED, SCORES_PRUNED])
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
            pipe = self.r.pipeline(transaction=False)
            for r in ask:
                pipe.hget(self.keys.targets(r), "final")
            final.update({r: flag == b"1" for r, flag in zip(ask, await pipe.execute(), strict=True)})
        rows_now = tuple(r for r in rows_due if final[r])
        scores_now = tuple(r for r in scores_due if final[r])
        if rows_now or scores_now:
            pipe = self.r.pipeline(transaction=False)
            for r in rows_now:
                bulk = [self.keys.subs(r), self.keys.basis(r), self.keys.targets(r), self.keys.ids(r)]
                bulk += [self.keys.live(r, p) for p in range(policy.partitions)]
                await self._prune(keys=[self.keys.round(r), *bulk], args=[ROWS_PRUNED], client=pipe)
            for r in scores_now:
                scored = [self.keys.scores(r), self.keys.crowding(r), self.keys.close_cwmm(r)]
                await self._prune(keys=[self.keys.round(r), *scored], args=[SCORES_PRUNED], client=pipe)
            await pipe.execute()
        kept = [int(meta[r][0]) for r in rounds if meta[r][2] is None and r not in rows_now and meta[r][0] is not None]
        cut, removed = (await self._compact_all_stakes(min(kept))) if kept else (None, 0)
        if rows_now or scores_now or removed:
            log.info(
                "retention: rows of rounds %s and scores of rounds %s pruned; %d stake updates before %s compacted",
                list(rows_now),
                list(scores_now),
                removed,
                cut,
            )
        return RetentionReport(rows_now, scores_now, cut, removed)

    async def _compact_all_stakes(self, cut: int) -> tuple[int, int]:
        """Raise the stake cut to ``cut`` and compact every model's stake updates behind it (once
        per cut); returns the cut in force and how many updates went.

        The cut is stored before the stake sets are read, and :meth:`add_stake` reads it after its
        write: an update stored meanwhile is compacted by one of the two.
        """
        cut = int(await self._raise(keys=[self.keys.retention()], args=["stake_cut", cut]))
        done = await self.r.hget(self.keys.retention(), "stakes_compacted")
        if done is not None and int(done) >= cut:
            return cut, 0
        removed = 0
        batch: list[bytes] = []
        async for key in self.r.scan_iter(match=self.keys.stakes_pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += await self._compact_stakes(batch, cut)
                batch.clear()
        if batch:
            removed += await self._compact_stakes(batch, cut)
        await self._raise(keys=[self.keys.retention()], args=["stakes_compacted", cut])
        return cut, removed

    async def _compact_stakes(self, keys: list[Any], cut: int) -> int:
        """Remove the stake updates of ``keys`` stamped before ``cut`` that no query at or after it returns."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.zrevrangebyscore(key, f"({cut}", "-inf")
        gone = [(key, shadowed_stakes(members)) for key, members in zip(keys, await pipe.execute(), strict=True)]
        gone = [(key, members) for key, members in gone if members]
        if not gone:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for key, members in gone:
            pipe.zrem(key, *members)
        return sum(await pipe.execute())

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
