"""The worker's entry point for input records: decodes each one and routes it to its topic's handler.

:class:`Processor` is what :mod:`streams.worker.runtime` and :mod:`streams.worker.ingest` call; the agents in
:mod:`streams.worker.agents` only move records between Kafka and it. A refused record goes to the
dead-letter topic with its reason (see :mod:`streams.worker` for the rules of each topic).
"""

from __future__ import annotations

import asyncio

from scoring.errors import ScoringError
from streams.errors import InvalidMessage
from streams.messages.outputs import Output
from streams.messages.records import InputRecord, Record, RoundClose, RoundOpen, StakeUpdate, TargetsUpdate, decode_input
from streams.settings import Settings
from streams.state import RedisState
from streams.state.progress import Barrier
from streams.transient import is_transient
from streams.worker.basis_at_close import BasisAtClose
from streams.worker.close_alerts import CloseAlerts
from streams.worker.context import Sender, WorkerContext, as_refusal, internal_error
from streams.worker.neighbours import RoundNeighbours
from streams.worker.round_inputs import RoundInputs
from streams.worker.round_reader import RoundReader
from streams.worker.rounds import RoundsHandler
from streams.worker.stakes import StakesHandler
from streams.worker.submissions import Batch, SubmissionBatch, SubmissionsHandler
from streams.worker.targets import TargetsHandler


class Processor:
    """Applies input records to the state and publishes what follows from them, a handler per topic."""

    def __init__(self, settings: Settings, state: RedisState, barrier: Barrier, send: Sender) -> None:
        self.ctx = WorkerContext(settings, state, barrier, send)
        reader = RoundReader(self.ctx)
        inputs = RoundInputs(self.ctx)
        neighbours = RoundNeighbours(self.ctx)
        self.basis_at_close = BasisAtClose(self.ctx, inputs, neighbours)
        self.close_alerts = CloseAlerts(self.ctx, reader, inputs, self.basis_at_close)
        self._inputs = inputs
        self.rounds = RoundsHandler(self.ctx, reader, self.basis_at_close, self.close_alerts)
        self.submissions = SubmissionsHandler(self.ctx, reader)
        self.stakes = StakesHandler(self.ctx)
        self.targets = TargetsHandler(self.ctx, reader, inputs, self.basis_at_close, self.close_alerts, neighbours)

    async def handle(self, record: InputRecord, received_at: float, decoded: Record | None = None) -> str:
        """Apply one record; returns ``"applied"``, ``"unchanged"`` (a redelivery) or the refusal reason.

        ``decoded``: the record's event when :meth:`triage` decoded it already. Transient
        infrastructure errors (Redis, Kafka) propagate: the caller retries the record. Any other
        failure refuses the record ``internal_error`` (the traceback is logged).
        """
        if record.topic == "submissions":  # the batch path decodes and refuses on its own
            return (await self.handle_submissions([(record, received_at)]))[0]
        try:
            if decoded is None:
                decoded = self.decode(record)
            if isinstance(decoded, RoundOpen | RoundClose):
                return await self.rounds.handle(record, decoded, received_at)
            if isinstance(decoded, StakeUpdate):
                return await self.stakes.handle(record, decoded, received_at)
            if isinstance(decoded, TargetsUpdate):
                return await self.targets.handle(record, decoded, received_at)
            # a submission: the topic check above sends those to the batch path
            raise ValueError(f"{record.topic} decoded to {type(decoded).__name__}")
        except InvalidMessage as exc:
            await self.ctx.refuse(record, exc)
            return exc.reason
        except ScoringError as exc:
            error = as_refusal(exc)
            await self.ctx.refuse(record, error)
            return error.reason
        except Exception as exc:
            if is_transient(exc):
                raise
            error = internal_error(record, exc)
            await self.ctx.refuse(record, error)
            return error.reason

    def decode(self, record: InputRecord) -> Record:
        """The record's typed event, or the :class:`InvalidMessage` its bytes or timestamp earn
        (raised): what can be decided without the state or the other topics."""
        self.ctx.check_clock(record)
        settings = self.ctx.settings
        return decode_input(record, settings.max_message_bytes, settings.max_ids)

    async def triage(self, records: list[InputRecord]) -> tuple[list[str | None], list[Record | None]]:
        """Decode records of ``rounds``, ``stakes`` or ``targets`` and refuse at once those that
        fail: their dead letters leave in one send, with no barrier wait (a refusal for the bytes
        alone depends on nothing else). Returns each record's outcome (``None``: decoded, still
        to apply) and its decoded event (``None`` when refused)."""
        outcomes: list[str | None] = []
        events: list[Record | None] = []
        letters: list[Output] = []
        for record in records:
            try:
                events.append(self.decode(record))
                outcomes.append(None)
            except InvalidMessage as exc:
                events.append(None)
                outcomes.append(self.ctx.refusal(record, exc, letters))
        if letters:
            await self.ctx.send(letters)
        return outcomes, events

    def prepare_submissions(self, batch: Batch, head_start: bool = True) -> SubmissionBatch:
        """Start decoding and ranking a batch of submissions ahead of applying it (:meth:`SubmissionsHandler.prepare`)."""
        return self.submissions.prepare(batch, head_start)

    async def handle_submissions(self, batch: Batch, prepared: SubmissionBatch | None = None) -> list[str]:
        """Apply a batch of ``submissions`` records; one outcome each (:meth:`SubmissionsHandler.handle`)."""
        return await self.submissions.handle(batch, prepared)

    async def settle(self) -> None:
        """Wait until the basis and close-alert tasks started so far are done (tests, tools)."""
        pending = [*self.basis_at_close.pending(), *self.close_alerts.pending()]
        if pending:
            await asyncio.wait(pending)

    def stop_background(self) -> None:
        """Cancel the basis and close-alert tasks still running (the worker stopping)."""
        self.basis_at_close.cancel()
        self.close_alerts.cancel()

    def forget_cached_state(self) -> None:
        """Drop every cache of state another worker may change (after a rebalance)."""
        self._inputs.forget()
        self.targets.forget()
        self.submissions.forget()
