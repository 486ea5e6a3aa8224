"""A closed round's scoring inputs — its rows, frozen stakes, draws and basis — loaded for the
targets handler and the close-time work, cached per round while they do not change."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

import scoring
from scoring.prepared import PreparedRound
from streams.messages.records import refuse
from streams.worker.context import WorkerContext


class ScoringInputs(NamedTuple):
    """A closed round's models (sorted), prepared rows, frozen stakes, basis fingerprint and bootstrap draws.

    ``rows_id`` names the submissions the rows are (each model's event time, partition and
    offset): unlike the fingerprint's submissions version, it is the same in a live run and a replay.
    """

    models: list[str]
    prepared: PreparedRound
    stakes: NDArray[np.float64]
    fingerprint: str
    samples: NDArray[np.int64]
    rows_id: str


class RoundInputs:
    """Loads closed rounds' scoring inputs and bases; keeps the latest rounds' rows and stakes."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._prepared: OrderedDict[int, tuple[int, list[str], PreparedRound, str]] = OrderedDict()
        self._stakes: dict[int, tuple[tuple[int, int], NDArray[np.float64]]] = {}

    def forget(self) -> None:
        """Drop the cached rows and stakes (another worker may change them)."""
        self._prepared.clear()
        self._stakes.clear()

    async def load(self, r: int, n_ids: int, close_ts: int) -> ScoringInputs:
        """Round ``r``'s inputs as of its close (refused ``no_submissions`` when it has none)."""
        s = self.ctx.settings
        version, models, prepared, rows_id = await self._round_rows(r, n_ids, close_ts)
        stakes = await self._frozen_stakes(r, version, models, close_ts)
        samples = scoring.round_samples(stakes, r, s.seed_salt, s.mmc_draws, s.mmc_fraction)
        return ScoringInputs(models, prepared, stakes, self._fingerprint(r, version, models, stakes), samples, rows_id)

    async def basis(self, r: int, inputs: ScoringInputs) -> scoring.RoundBasis:
        """The round's basis: the one stored under the inputs' fingerprint, else computed and stored."""
        prepared = inputs.prepared
        basis = await self.ctx.state.get_basis(r, inputs.fingerprint, prepared.n_models, prepared.n_ids, inputs.samples.shape[0])
        if basis is None:
            # on a thread: ~1.3 s at 10,000 models (numpy releases the GIL) that the event loop keeps serving
            basis = await asyncio.to_thread(scoring.close_round, prepared, inputs.stakes, inputs.samples)
            await self.ctx.state.put_basis(r, inputs.fingerprint, basis)
        return basis

    def _fingerprint(self, r: int, version: int, models: list[str], stakes: NDArray[np.float64]) -> str:
        """Identifies the basis inputs: the round's submission set (by version), stakes, draw settings."""
        s = self.ctx.settings
        h = hashlib.sha256(f"{r}:{version}:{len(models)}".encode())
        h.update("\0".join(models).encode())
        h.update(np.ascontiguousarray(stakes, dtype="<f8").tobytes())
        h.update(f"{s.seed_salt}:{s.mmc_draws}:{s.mmc_fraction}".encode())
        return h.hexdigest()

    async def _round_rows(self, r: int, n_ids: int, close_ts: int) -> tuple[int, list[str], PreparedRound, str]:
        """The round's submissions version, models (sorted), prepared rows and their ``rows_id``,
        reloaded only when its submissions changed.

        Only submissions made at or before the close count: one stamped later can only be stored
        when its round's close record came later in the log than it (a producer out of order).
        The caller keeps what this returns: the cache may evict the round while the caller
        awaits (another round's update or basis task loading its rows), and nothing read after
        an await may come from the cache.
        """
        state = self.ctx.state
        version = await state.submissions_version(r)
        cached = self._prepared.get(r)
        if cached is not None and cached[0] == version:
            self._prepared.move_to_end(r)
            return cached
        rows = {m: row for m, row in (await state.get_submissions(r)).items() if row.timestamp_ms <= close_ts}
        if not rows:
            raise refuse("no_submissions", f"round {r} has no accepted submission to score")
        models = sorted(rows)
        # on a thread, as the basis: ~0.6 s at 10,000 models that the event loop keeps serving
        prepared = await asyncio.to_thread(lambda: PreparedRound.stack([rows[m].submission(n_ids) for m in models]))
        rows_id = hashlib.sha256("\n".join(f"{m}\0{rows[m].timestamp_ms}\0{rows[m].partition}\0{rows[m].offset}" for m in models).encode()).hexdigest()
        self._prepared[r] = (version, models, prepared, rows_id)
        while len(self._prepared) > max(1, self.ctx.settings.round_cache_rounds):
            self._prepared.popitem(last=False)
        return version, models, prepared, rows_id

    async def _frozen_stakes(self, r: int, rows_version: int, models: list[str], close_ts: int) -> NDArray[np.float64]:
        """Stakes in force at the round's close, re-read only when a stake update was stored since
        (``rows_version``: the submissions version the models were read at)."""
        state = self.ctx.state
        version = (await state.stakes_version(), rows_version)
        cached = self._stakes.get(r)
        if cached is not None and cached[0] == version:
            return cached[1]
        stakes = await state.stakes_at(models, close_ts, r)
        self._stakes[r] = (version, stakes)
        while len(self._stakes) > max(1, self.ctx.settings.round_cache_rounds):
            self._stakes.pop(next(iter(self._stakes)))
        return stakes
