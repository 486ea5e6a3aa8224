"""Reads a round's stored record for the handlers, its universe cached once per worker."""

from __future__ import annotations

from collections import OrderedDict

from streams.kafka.topics import read_record
from streams.messages.records import InputRecord, RoundOpen, decode_input, refuse
from streams.state import RoundInfo
from streams.worker.context import WorkerContext

#: Rounds whose universe (and id → position index) a worker keeps.
UNIVERSES_CACHED = 32


class RoundReader:
    """The rounds as stored, each with its universe (a round's universe never changes once open)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._universes: OrderedDict[int, tuple[tuple[str, ...], dict[str, int]]] = OrderedDict()

    async def info(self, round_number: int) -> RoundInfo | None:
        """The stored round (None if never opened); its universe is read once per worker — from
        the round's open record on the rounds topic once retention pruned it from the state."""
        settings = self.ctx.settings
        cached = self._universes.get(round_number)
        info = await self.ctx.state.get_round(round_number, known_ids=cached[0] if cached else None)
        if info is not None and info.ids is None:
            logged = InputRecord.fetched("rounds", await read_record(settings, "rounds", 0, info.open_offset))
            opened = decode_input(logged, settings.max_message_bytes, settings.max_ids)
            if not isinstance(opened, RoundOpen) or opened.round != round_number:
                raise RuntimeError(f"rounds@{info.open_offset} is not round {round_number}'s open record")
            info = info.with_universe(tuple(opened.ids))
            self.universe(info)  # cached: late records of a pruned round read the log once
        return info

    async def opened(self, round_number: int, record: InputRecord, received_at: float) -> RoundInfo:
        """The round a record names, once the rounds topic is applied up to the record; a round
        never opened is refused ``unknown_round``."""
        await self.ctx.barrier.wait_for("rounds", received_at, record.timestamp_ms)
        info = await self.info(round_number)
        if info is None:
            raise refuse("unknown_round", f"round {round_number} was never opened")
        return info

    def universe(self, info: RoundInfo) -> dict[str, int]:
        """id → position in the round's universe (``info`` as :meth:`info` returns it: universe at hand)."""
        cached = self._universes.get(info.round)
        if cached is None:
            if info.ids is None:
                raise RuntimeError(f"round {info.round}'s universe is not at hand")
            cached = (info.ids, {id_: i for i, id_ in enumerate(info.ids)})
            self._universes[info.round] = cached
            while len(self._universes) > UNIVERSES_CACHED:
                self._universes.popitem(last=False)
        return cached[1]
