"""The ``rounds`` topic: a round opens with its universe and closes at its event time.

``open`` stores the universe; opening it again (another record) is refused ``round_exists``.
``close`` freezes the round at its event time (a second, different close is refused
``round_already_closed``) and starts the close-time work in the background: the round's basis
(:mod:`streams.worker.basis_at_close`) and its close-stage alerts (:mod:`streams.worker.close_alerts`).
"""

from __future__ import annotations

from streams.messages.records import InputRecord, RoundClose, RoundOpen, refuse
from streams.worker.basis_at_close import BasisAtClose
from streams.worker.close_alerts import CloseAlerts
from streams.worker.context import WorkerContext
from streams.worker.round_reader import RoundReader


class RoundsHandler:
    """Applies ``open`` and ``close`` records."""

    def __init__(self, ctx: WorkerContext, rounds: RoundReader, basis: BasisAtClose, close_alerts: CloseAlerts) -> None:
        self.ctx = ctx
        self.rounds = rounds
        self.basis = basis
        self.close_alerts = close_alerts

    async def handle(self, record: InputRecord, event: RoundOpen | RoundClose, received_at: float) -> str:
        """Apply one record; ``"applied"``, ``"unchanged"`` (a redelivery), or raises the refusal."""
        if isinstance(event, RoundOpen):
            return await self._open(record, event)
        outcome = await self._close(record, event)
        if outcome == "applied":
            self.basis.start(event.round, received_at)
        self.close_alerts.start(event.round, received_at)  # also on a redelivery: a crash may have cut them short
        return outcome

    async def _open(self, record: InputRecord, event: RoundOpen) -> str:
        existing = await self.rounds.info(event.round)
        if existing is not None:
            if existing.open_offset == record.offset:
                return "unchanged"
            same = "the same" if existing.ids == event.ids else "a different"
            raise refuse("round_exists", f"round {event.round} is already open (this repeats it with {same} universe)")
        await self.ctx.state.open_round(event.round, event.ids, record.timestamp_ms, record.offset)
        return "applied"

    async def _close(self, record: InputRecord, event: RoundClose) -> str:
        s, state = self.ctx.settings, self.ctx.state
        info = await state.get_round(event.round)
        if info is None:
            raise refuse("unknown_round", f"round {event.round} was never opened")
        if info.closed:
            if info.close_offset == record.offset:
                return "unchanged"
            raise refuse("round_already_closed", f"round {event.round} closed already (offset {info.close_offset})")
        await state.close_round(event.round, record.timestamp_ms, record.offset)
        await state.prune_rounds(s.retention_rounds, s.retention_score_rounds, self.ctx.history_keep, s.partitions)
        return "applied"
