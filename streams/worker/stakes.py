"""The ``stakes`` topic: a model's stake updates, each in force from its event time.

A stake update applies to every round whose close comes after it (with ``"round": r``: to round
r and later ones only). Stakes for models that never submitted are kept (they may submit later).
A stake naming a closed round, made after that close, is refused ``round_closed``.
"""

from __future__ import annotations

from streams import failpoints
from streams.messages.records import InputRecord, StakeUpdate, refuse
from streams.state import StakeEntry
from streams.worker.context import WorkerContext


class StakesHandler:
    """Stores stake updates."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def handle(self, record: InputRecord, event: StakeUpdate, received_at: float) -> str:
        """Apply one stake update; ``"applied"``, or raises the refusal."""
        state = self.ctx.state
        if event.round is not None:
            await self.ctx.barrier.wait_for("rounds", received_at, record.timestamp_ms)
            info = await state.get_round(event.round)
            if info is not None and info.close_ts is not None and record.timestamp_ms > info.close_ts:
                raise refuse("round_closed", f"round {event.round} closed before this stake update")
        await state.add_stake(event.model, StakeEntry(record.timestamp_ms, record.offset, event.round, event.stake))
        failpoints.reached("stakes.stored")
        return "applied"
