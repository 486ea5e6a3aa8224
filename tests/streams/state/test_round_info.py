"""A round's stored record read back as a :class:`RoundInfo`: every field the worker reads, and a
typed error (never a crash with a bare KeyError or ValueError) when the record is damaged."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streams.errors import MmcStreamError, RoundStateInvalid
from streams.settings import Settings
from streams.state import RedisState, RoundInfo
from streams.state.client import redis_client
from tests.conftest import run_sync

IDS = ("a", "b", "c")
OPEN = {b"open_ts": b"1000", b"open_offset": b"7", b"n_ids": b"3"}
CLOSED = {**OPEN, b"close_ts": b"2000", b"close_offset": b"9", b"alerted": b"1", b"close_alerted": b"1"}


def test_an_open_round_reads_its_fields_and_universe() -> None:
    """Open timestamps and offset, the universe from its JSON, no close, no alert flags."""
    info = RoundInfo.parse(812, OPEN, universe=orjson.dumps(list(IDS)))
    assert info == RoundInfo(812, IDS, 1000, 7, None, None, alerted=False, close_alerted=False, universe_size=3)
    assert not info.closed and info.n_ids == 3


def test_a_closed_round_reads_its_close_and_flags() -> None:
    """Close timestamp and offset and both alert flags; text values read as bytes do."""
    info = RoundInfo.parse(812, {k.decode(): v.decode() for k, v in CLOSED.items()}, universe=orjson.dumps(list(IDS)))
    assert (info.close_ts, info.close_offset, info.alerted, info.close_alerted) == (2000, 9, True, True)
    assert info.closed


def test_a_pruned_universe_keeps_its_size_and_known_ids_win() -> None:
    """Without the universe the size comes from ``n_ids``; ids the caller has are used as they are."""
    pruned = RoundInfo.parse(812, {**CLOSED, b"rows_pruned": b"1"})
    assert pruned.ids is None and pruned.n_ids == 3
    assert pruned.with_universe(IDS) == RoundInfo.parse(812, CLOSED, known_ids=IDS)
    assert RoundInfo.parse(812, CLOSED, universe=b"not read", known_ids=IDS).ids == IDS


def test_a_record_without_n_ids_has_the_size_of_its_universe() -> None:
    """``n_ids`` is optional: the universe, when stored, gives the size."""
    info = RoundInfo.parse(1, {b"open_ts": b"5", b"open_offset": b"0"}, universe=b'["x","y"]')
    assert info.n_ids == 2 and info.universe_size == 0


@pytest.mark.parametrize("missing", [b"open_ts", b"open_offset"])
def test_a_missing_open_field_is_a_typed_error(missing: bytes) -> None:
    """The open time and offset are always written together; one missing names itself."""
    fields = {k: v for k, v in OPEN.items() if k != missing}
    with pytest.raises(RoundStateInvalid, match=f"{missing.decode()} is missing") as caught:
        RoundInfo.parse(812, fields)
    assert caught.value.round == 812 and isinstance(caught.value, MmcStreamError)


@pytest.mark.parametrize(
    ("fields", "universe", "problem"),
    [
        ({**OPEN, b"open_ts": b"soon"}, None, "open_ts is not an integer"),
        ({**OPEN, b"open_offset": b"-1"}, None, "open_offset is -1, below 0"),
        ({**OPEN, b"n_ids": b"3.5"}, None, "n_ids is not an integer"),
        ({**OPEN, b"close_ts": b"2000"}, None, "close_ts and close_offset must be stored together"),
        ({**OPEN, b"close_offset": b"9"}, None, "close_ts and close_offset must be stored together"),
        ({**OPEN, b"close_ts": b"", b"close_offset": b"9"}, None, "close_ts is not an integer"),
        ({**OPEN, b"alerted": b"yes"}, None, "alerted is 'yes', not 0 or 1"),
        ({**OPEN, b"close_alerted": b"2"}, None, "close_alerted is '2', not 0 or 1"),
        ({**OPEN, b"open_ts": b"\xff"}, None, "a field is not text"),
        (OPEN, b"[1, 2, 3]", "the universe is not a list of ids"),
        (OPEN, b'{"ids": []}', "the universe is not a list of ids"),
        (OPEN, b"[", "the universe is not JSON"),
        (OPEN, b'["a", "b"]', "n_ids is 3 but the universe holds 2 ids"),
    ],
)
def test_a_bad_value_is_a_typed_error(fields: dict[bytes, bytes], universe: bytes | None, problem: str) -> None:
    """Each value the service never writes is refused with what is wrong, not a bare ValueError."""
    with pytest.raises(RoundStateInvalid) as caught:
        RoundInfo.parse(812, fields, universe=universe)
    assert caught.value.problem.startswith(problem)
    assert str(caught.value).startswith("round 812's stored record is invalid: ")


def test_the_store_round_trips_a_round_and_refuses_a_damaged_one(make_settings: Callable[..., Settings]) -> None:
    """Against the real Redis: what ``open_round``/``close_round`` write reads back as written, a
    never-opened round is None, and a damaged hash raises the typed error from ``get_round``."""
    settings = make_settings(create=False)

    async def scenario() -> None:
        state = RedisState(redis_client(settings), settings.state_namespace)
        try:
            assert await state.get_round(5) is None
            await state.open_round(5, IDS, 1000, 7)
            await state.close_round(5, 2000, 9)
            info = await state.get_round(5)
            assert info == RoundInfo(5, IDS, 1000, 7, 2000, 9, alerted=False, close_alerted=False, universe_size=3)
            assert await state.get_round(5, known_ids=IDS) == info
            await state.r.hset(state.keys.round(5), "close_offset", "later")
            with pytest.raises(RoundStateInvalid, match="close_offset is not an integer"):
                await state.get_round(5)
        finally:
            await state.r.delete(state.keys.round(5), state.keys.ids(5), state.keys.rounds())
            await state.close()

    run_sync(scenario())
