"""What the worker published, kept for readers: scores, crowding, histories, the leaderboard, the trend, alerts.

``mmc web`` and ``mmc whatif`` read these; the targets handler writes them. Part of
:class:`~streams.state.store.RedisState` (keys from :mod:`streams.state.keys`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from streams.state.encoding import reply_bytes, reply_text
from streams.state.keys import SCORES_PRUNED, Keys
from streams.state.scripts import Scripts

if TYPE_CHECKING:
    from streams.state.client import StateClient

#: Alerts the state keeps (the latest by event time).
ALERTS_KEPT = 1000


class Results:
    """The published results' part of the store: each write idempotent, nothing kept for a pruned round."""

    r: StateClient
    keys: Keys
    scripts: Scripts

    async def put_round_scores(self, r: int, messages: Mapping[str, bytes], crowding: bytes) -> None:
        """The round's latest score messages and crowding message (nothing once retention pruned them)."""
        pipe = await self.r.pipeline(transaction=True)
        if messages:
            pipe.hset(self.keys.scores(r), mapping=dict(messages))  # type: ignore[arg-type]
        pipe.set(self.keys.crowding(r), crowding)
        await self.scripts.drop_if_pruned(keys=[self.keys.round(r), self.keys.scores(r), self.keys.crowding(r)], args=[SCORES_PRUNED], client=pipe)
        await pipe.execute()

    async def get_round_scores(self, r: int) -> dict[str, dict[str, Any]]:
        raw = await self.r.hgetall(self.keys.scores(r))
        return {reply_text(k): orjson.loads(v) for k, v in raw.items()}

    async def get_round_crowding(self, r: int) -> dict[str, Any] | None:
        data = await self.r.get(self.keys.crowding(r))
        return None if data is None else orjson.loads(data)

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
        return sorted(reply_text(m) for m in await self.r.smembers(self.keys.models()))

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
        position = {reply_text(member): i + 1 for i, member in enumerate(board)}
        return [position[m] for m in models], len(board)

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        models = [reply_text(m) for m in await self.r.zrevrange(self.keys.leaderboard(), 0, limit - 1)]
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
        pipe = await self.r.pipeline(transaction=True)
        if cwmm:
            pipe.hset(self.keys.close_cwmm(r), mapping={m: repr(float(v)) for m, v in cwmm.items()})
            await self.scripts.drop_if_pruned(keys=[self.keys.round(r), self.keys.close_cwmm(r)], args=[SCORES_PRUNED], client=pipe)
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
        return [orjson.loads(reply_bytes(a)) for a in await self.r.zrevrange(self.keys.alerts(), 0, limit - 1)]
