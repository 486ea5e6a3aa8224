"""The close-stage ``corr_w_mm_spike`` alerts: every model's CWMM at its round's close against its
own baseline and the population's deciles (CWMM needs no targets)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streams import failpoints
from streams.errors import InvalidMessage
from streams.messages.resolution import cwmm_decile_edges
from streams.transient import with_retry
from streams.worker import alerts as alert_rules
from streams.worker.basis_at_close import BasisAtClose
from streams.worker.context import RoundTasks, WorkerContext, close_alert_reach
from streams.worker.round_inputs import RoundInputs, ScoringInputs
from streams.worker.round_reader import RoundReader

log = logging.getLogger(__name__)


class CloseAlerts:
    """Raises each closed round's close-stage alerts once, in round order (a background task per close)."""

    def __init__(self, ctx: WorkerContext, rounds: RoundReader, inputs: RoundInputs, basis: BasisAtClose) -> None:
        self.ctx = ctx
        self.rounds = rounds
        self.inputs = inputs
        self.basis = basis
        self._tasks = RoundTasks()
        #: Serialises the close-stage alerts: each round's baseline reads the rounds before it.
        self._lock = asyncio.Lock()

    def start(self, r: int, received_at: float) -> None:
        """Raise the round's close-stage ``corr_w_mm_spike`` alerts in the background.

        The round's basis (its meta model, stakes frozen at close) gives every model's CWMM at
        close. The task waits for the basis task and for the ``targets`` topic to be applied up
        to the close (the population's MMC by decile comes from the rounds whose first final
        update was stamped before the close), then raises the alerts of every closed round not
        alerted yet, in round order (:meth:`raise_pending`). Should the worker stop first, the
        round's first targets update raises them (its updates come after the close), with the
        same bytes.
        """
        basis = self.basis.task(r)
        self._tasks.start(r, lambda: self._raise_at_close(r, received_at, basis))

    def pending(self) -> list[asyncio.Task[None]]:
        return self._tasks.pending()

    def cancel(self) -> None:
        """Cancel every task still running (the worker stopping)."""
        self._tasks.cancel()

    async def _raise_at_close(self, r: int, received_at: float, basis: asyncio.Task[None] | None) -> None:
        try:
            if basis is not None:
                await asyncio.wait([basis])
            await with_retry(lambda: self.ctx.barrier.wait_for("targets", received_at), f"waiting for the targets before round {r}'s close")
            await with_retry(lambda: self.raise_pending(r), f"raising round {r}'s close-stage alerts")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("round %d: raising the close-stage alerts failed; its first targets update raises them", r, exc_info=True)

    async def raise_pending(self, r: int) -> None:
        """Raise the close-stage alerts of round ``r`` and of the closed rounds before it (within
        the baseline's reach) not alerted yet, in round order, each once."""
        state = self.ctx.state
        async with self._lock:
            for rr in await state.closed_rounds_to_alert(range(max(0, r - close_alert_reach(self.ctx.settings)), r + 1)):
                info = await self.rounds.info(rr)
                if info is None or info.close_ts is None:
                    raise RuntimeError(f"round {rr} is to be alerted at close but is not stored as closed")
                await self._raise_for(rr, info.n_ids, info.close_ts)

    async def _raise_for(self, r: int, n_ids: int, close_ts: int) -> None:
        state = self.ctx.state
        try:
            inputs = await self.inputs.load(r, n_ids, close_ts)
        except InvalidMessage:  # no submissions, or retention pruned them: nothing to measure
            await state.put_close_cwmm(r, {})
            return
        # The basis task stored the basis at close: its CWMMs alone are read, not its MBs of draws.
        cwmm = await state.get_basis_field(r, inputs.fingerprint, "corr_w_mm", (inputs.prepared.n_models,))
        if cwmm is None:
            cwmm = (await self.inputs.basis(r, inputs)).corr_w_mm
        ok = np.isfinite(cwmm)
        found = await self._spikes(r, close_ts, inputs, cwmm, ok)
        await self.ctx.publish_alerts(found, close_ts)
        failpoints.reached("close.alerts_sent")
        await state.put_close_cwmm(r, {inputs.models[i]: float(cwmm[i]) for i in np.flatnonzero(ok)})
        if found:
            log.info("round %d: %d corr_w_mm_spike alerts at close", r, len(found))

    async def _spikes(self, r: int, close_ts: int, inputs: ScoringInputs, cwmm: NDArray[np.float64], ok: NDArray[np.bool_]) -> list[dict[str, Any]]:
        """The spikes of the models with a CWMM at close, against the earlier rounds' CWMMs at close."""
        s, state = self.ctx.settings, self.ctx.state
        reach = close_alert_reach(s)
        earlier = await state.get_close_cwmm(list(range(max(0, r - reach), r)))
        finals = await state.get_finals()
        resolved = {k: v for k, v in finals.items() if k < r and v["ts"] < close_ts}
        population = alert_rules.population_decile_mmc(resolved, r, s.alert_trend_rounds)
        edges = cwmm_decile_edges(cwmm)
        previous_edges = cwmm_decile_edges(np.fromiter(earlier[r - 1].values(), dtype=float)) if r - 1 in earlier else None
        found = []
        for i in np.flatnonzero(ok):
            model = inputs.models[i]
            history = {rr: {"corr_w_mm": values[model]} for rr, values in earlier.items() if model in values}
            spike = alert_rules.cwmm_spike(
                s,
                model,
                r,
                float(cwmm[i]),
                history,
                edges,
                previous_edges,
                stage="close",
                stake=float(inputs.stakes[i]),
                population=population,
            )
            if spike is not None:
                found.append(spike)
        return found
