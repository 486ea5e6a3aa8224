"""Who crowds each model: a closed round's ``neighbours`` messages, and its crowding tax once final.

- At close, the basis task (:mod:`streams.worker.basis_at_close`) publishes one ``neighbours``
  message per model of the round (:func:`scoring.crowd_neighbours` on the round's rows and the
  stakes frozen at close) and keeps them per model in Redis for ``mmc web``. The message's
  timestamp is the close's event time, so a redelivery, a restart or a replay sends the same bytes.
- Every scored targets update checks (one Redis read) that the round's neighbours were published
  for the inputs it scores, and publishes them otherwise: a worker that stopped before its basis
  task finished, or a late input that changed the round's rows or stakes.
- A round's final targets update computes the crowding tax of its stakers
  (:func:`scoring.crowd_tax`: contribution with and without each one's nearest stakers' stake)
  and stores it per model in Redis (not published: it is served by ``mmc web`` beside the
  neighbours). Non-final updates compute nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict

import numpy as np
from numpy.typing import NDArray

import scoring
from streams.messages.neighbours import neighbour_messages, tax_figures
from streams.messages.outputs import json_output
from streams.worker.context import WorkerContext
from streams.worker.round_inputs import ScoringInputs

log = logging.getLogger(__name__)

#: Rounds whose neighbours a worker keeps in memory (the close-time result reused by the final update).
_CACHED_ROUNDS = 4


class RoundNeighbours:
    """Computes, publishes and stores closed rounds' neighbours and final rounds' crowding tax."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._cache: OrderedDict[tuple[int, str], scoring.CrowdNeighbours] = OrderedDict()

    def _mark(self, inputs: ScoringInputs) -> str:
        """What the round's published neighbours depend on — its submissions, frozen stakes and
        the two settings — named the same way in a live run and in a replay (stored in Redis)."""
        s = self.ctx.settings
        h = hashlib.sha256(f"{inputs.rows_id}:{s.neighbours_k}:{s.crowd_threshold!r}:{s.neighbours_max_stakers}".encode())
        h.update(np.ascontiguousarray(inputs.stakes, dtype="<f8").tobytes())
        return h.hexdigest()

    async def compute(self, r: int, inputs: ScoringInputs) -> scoring.CrowdNeighbours:
        """The round's neighbours (cached per inputs; computed on a thread otherwise)."""
        mark = self._mark(inputs)
        cached = self._cache.get((r, mark))
        if cached is not None:
            self._cache.move_to_end((r, mark))
            return cached
        s = self.ctx.settings
        found = await asyncio.to_thread(
            scoring.crowd_neighbours, inputs.prepared, inputs.stakes, s.neighbours_k, s.crowd_threshold, max_stakers=s.neighbours_max_stakers
        )
        self._cache[(r, mark)] = found
        while len(self._cache) > _CACHED_ROUNDS:
            self._cache.popitem(last=False)
        return found

    async def publish(self, r: int, inputs: ScoringInputs, close_ts: int) -> None:
        """Send and store the round's neighbours messages unless they were for these inputs already."""
        state = self.ctx.state
        mark = self._mark(inputs)
        if await state.neighbours_fingerprint(r) == mark:
            return
        found = await self.compute(r, inputs)
        messages = neighbour_messages(r, inputs.models, found)
        outputs = [json_output("neighbours", m, msg, close_ts) for m, msg in zip(inputs.models, messages, strict=True)]
        await self.ctx.send(outputs)
        await state.put_neighbours(r, mark, {m: o.value for m, o in zip(inputs.models, outputs, strict=True)})
        log.info("round %d: neighbours of %d models published", r, len(inputs.models))

    async def store_tax(self, r: int, inputs: ScoringInputs, targets: NDArray[np.float64]) -> None:
        """Store the crowding tax of the round's stakers on its final targets."""
        found = await self.compute(r, inputs)
        s = self.ctx.settings
        tax = await asyncio.to_thread(scoring.crowd_tax, inputs.prepared, targets, found, None, s.max_missing_ratio)
        await self.ctx.state.put_crowd_tax(r, tax_figures(inputs.models, tax))
