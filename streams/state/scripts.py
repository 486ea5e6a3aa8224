"""The Lua scripts the store runs on the server, each registered once per client.

A script is one atomic step: progress that only moves forward, a write undone when retention
pruned its round, the latest targets kept, a history trimmed, a round pruned. Every call passes
keys of one hash tag (one Redis Cluster slot); ``tests/streams/state/test_cluster_slots.py``
checks each call site.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio.cluster

if TYPE_CHECKING:
    from streams.state.client import StateClient

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


#: The only Lua sources a :class:`Script` runs (Redis ``EVAL``/``EVALSHA``): this module's constants.
SOURCES = frozenset({_ADVANCE, _DROP_IF_PRUNED, _PUT_TARGETS, _TRIM_HISTORY, _PRUNE, _RAISE})


class Script:
    """One script registered on a client: ``EVALSHA``, loading it on a ``NOSCRIPT`` reply.

    Queued on a Redis Cluster pipeline it is sent as ``EVAL`` (the script's text, a few hundred
    bytes): a cluster pipeline does not load scripts before it runs, as a single-node pipeline
    does, and a node that never saw the script would fail the transaction's ``EVALSHA``.
    Either way the script's text is one of this module's constants (:data:`SOURCES`, checked when
    a Script is built); keys and arguments travel
    as Redis arguments, never inside the script.
    """

    def __init__(self, client: StateClient, source: str) -> None:
        if source not in SOURCES:
            raise ValueError("a Script runs only one of streams.state.scripts' own Lua sources")
        self.source = source
        self._registered = client.register_script(source)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any] = (), client: Any = None) -> Any:
        if isinstance(client, redis.asyncio.cluster.ClusterPipeline):
            return client.eval(self.source, len(keys), *keys, *args)
        return await self._registered(keys=list(keys), args=list(args), client=client)


class Scripts:
    """The store's scripts, registered on ``client`` (each call runs ``EVALSHA``)."""

    def __init__(self, client: StateClient) -> None:
        self.advance = Script(client, _ADVANCE)
        self.drop_if_pruned = Script(client, _DROP_IF_PRUNED)
        self.put_targets = Script(client, _PUT_TARGETS)
        self.trim_history = Script(client, _TRIM_HISTORY)
        self.prune = Script(client, _PRUNE)
        self.raise_field = Script(client, _RAISE)
