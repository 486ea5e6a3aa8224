"""The basis of a round prepared in the background once it closes, for its first targets update,
and its ``neighbours`` messages published (:mod:`streams.worker.neighbours`)."""

from __future__ import annotations

import asyncio
import logging
import time

from streams.errors import InvalidMessage
from streams.worker.context import RoundTasks, WorkerContext
from streams.worker.neighbours import RoundNeighbours
from streams.worker.round_inputs import RoundInputs

log = logging.getLogger(__name__)


class BasisAtClose:
    """Computes closed rounds' bases (meta model, bootstrap meta models, per-model products) in
    the background, one task per round."""

    def __init__(self, ctx: WorkerContext, inputs: RoundInputs, neighbours: RoundNeighbours | None = None) -> None:
        self.ctx = ctx
        self.inputs = inputs
        self.neighbours = neighbours
        self._tasks = RoundTasks()

    def start(self, r: int, received_at: float) -> None:
        """Start computing round ``r``'s basis now that it is closed, so that its first targets
        update finds it ready — in the tournament that update comes a day or more after the close.

        The task waits until every submission and stake received before the close is applied
        (the barriers; it holds up nothing while it waits), then loads the round's rows and
        frozen stakes and stores the basis under its fingerprint (:meth:`RoundInputs.basis`). A
        targets update that arrives while it runs waits for it instead of computing the same
        basis again. Should anything change the inputs afterwards (a submission stamped before
        the close but appended after it, a late stake update), the fingerprint no longer matches
        and the targets update computes the basis itself, as it does when no task ran (a worker
        started after the close). It is advisory: a failure is logged and changes no output.

        Then it publishes the round's ``neighbours`` messages; should it fail or the worker stop
        first, the round's next scored targets update publishes them, with the same bytes.
        """
        self._tasks.start(r, lambda: self._prepare(r, received_at), unless_running=True)

    def task(self, r: int) -> asyncio.Task[None] | None:
        """Round ``r``'s basis task, if this worker started one and no targets update took it."""
        return self._tasks.get(r)

    async def done(self, r: int) -> None:
        """Wait for the round's basis task, if one is running (its outcome is its own business)."""
        task = self._tasks.pop(r)
        if task is not None:
            await asyncio.wait([task])

    def pending(self) -> list[asyncio.Task[None]]:
        return self._tasks.pending()

    def cancel(self) -> None:
        """Cancel every task still running (the worker stopping)."""
        self._tasks.cancel()

    async def _prepare(self, r: int, received_at: float) -> None:
        started = time.perf_counter()
        try:
            await self.ctx.round_inputs_applied(received_at)
            info = await self.ctx.state.get_round(r)
            if info is None or info.close_ts is None:
                return
            inputs = await self.inputs.load(r, info.n_ids, info.close_ts)
            await self.inputs.basis(r, inputs)
            log.info("round %d: basis prepared at close for %d models in %.0f ms", r, len(inputs.models), (time.perf_counter() - started) * 1e3)
            if self.neighbours is not None:
                await self.neighbours.publish(r, inputs, info.close_ts)
        except InvalidMessage as exc:  # no submissions: nothing to prepare
            log.info("round %d: no basis prepared at close (%s)", r, exc)
        except Exception:
            log.warning("round %d: preparing the basis at close failed; its first targets update computes it", r, exc_info=True)
