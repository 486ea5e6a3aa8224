"""Who crowds each model, kept for readers: its neighbours messages and crowding tax per round.

The worker writes them (the close-time work and a round's final targets update); ``mmc web``
reads them. Each model keeps its latest ``history`` rounds of each (the retention policy's
history length, like its score history), under its own hash tag. Part of
:class:`~streams.state.store.RedisState` (keys from :mod:`streams.state.keys`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from streams.state.encoding import reply_text
from streams.state.keys import Keys
from streams.state.scripts import Scripts

if TYPE_CHECKING:
    from streams.state.client import StateClient
    from streams.state.retention import RetentionPolicy

#: Field of a round's hash: the fingerprint of the inputs its neighbours were published for.
NEIGHBOURS_FIELD = "neighbours"


class NeighbourResults:
    """The neighbours' part of the store: idempotent writes, each model's latest rounds kept."""

    r: StateClient
    keys: Keys
    scripts: Scripts

    #: The store's retention policy reader (:meth:`RedisState.retention_policy`).
    retention_policy: Callable[[], Awaitable[RetentionPolicy | None]]

    async def neighbours_fingerprint(self, r: int) -> str | None:
        """The fingerprint of the inputs round ``r``'s neighbours were last published for (None: never)."""
        value = await self.r.hget(self.keys.round(r), NEIGHBOURS_FIELD)
        return None if value is None else reply_text(value)

    async def put_neighbours(self, r: int, fingerprint: str, messages: Mapping[str, bytes]) -> None:
        """Each model's neighbours message of round ``r``, then the round marked published for
        ``fingerprint`` (after the messages were sent: a crash in between publishes them again)."""
        await self._put_per_model(r, self.keys.neighbours, messages)
        await self.r.hset(self.keys.round(r), NEIGHBOURS_FIELD, fingerprint)

    async def put_crowd_tax(self, r: int, figures: Mapping[str, dict[str, Any]]) -> None:
        """Each staker's crowding tax in final round ``r`` (:func:`streams.messages.neighbours.tax_figures`)."""
        await self._put_per_model(r, self.keys.crowd_tax, {m: orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for m, v in figures.items()})

    async def get_neighbours(self, model: str) -> dict[int, dict[str, Any]]:
        """The model's stored neighbours messages by round, ascending."""
        return await self._get_per_model(self.keys.neighbours(model))

    async def get_crowd_tax(self, model: str) -> dict[int, dict[str, Any]]:
        """The model's stored crowding tax figures by round, ascending."""
        return await self._get_per_model(self.keys.crowd_tax(model))

    async def _put_per_model(self, r: int, key: Any, values: Mapping[str, bytes]) -> None:
        """Each model's value for round ``r`` in its hash ``key(model)``; a hash that grew (the
        round was new to it: HSET answers 1) then keeps its highest ``history`` rounds of the
        retention policy (all of them while no policy is stored). Score histories, neighbours
        messages and crowding tax figures are kept this way."""
        if not values:
            return
        models = list(values)
        pipe = self.r.pipeline(transaction=False)
        for model in models:
            pipe.hset(key(model), str(r), values[model])
        grown = [m for m, added in zip(models, await pipe.execute(), strict=True) if added]
        policy = await self.retention_policy() if grown else None
        if policy is None:
            return
        pipe = self.r.pipeline(transaction=False)
        for model in grown:
            await self.scripts.trim_history(keys=[key(model)], args=[policy.history], client=pipe)
        await pipe.execute()

    async def _get_per_model(self, key: str) -> dict[int, dict[str, Any]]:
        raw = await self.r.hgetall(key)
        return {int(k): orjson.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}
