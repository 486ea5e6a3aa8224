"""A round's lifecycle as the store keeps it, read back with every field checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import RoundStateInvalid
from streams.state.encoding import reply_text


@dataclass(frozen=True)
class RoundInfo:
    """A round's lifecycle as stored (read from its ``round`` hash and ``ids`` by :meth:`parse`)."""

    round: int
    #: The universe; None once retention pruned it (read it back from the open record, ``open_offset``).
    ids: tuple[str, ...] | None
    open_ts: int
    open_offset: int
    close_ts: int | None
    close_offset: int | None
    alerted: bool
    #: The close-stage alerts were raised (or the round needed none): its CWMMs at close are stored.
    close_alerted: bool = False

    #: Size of the universe (also when ``ids`` is None).
    universe_size: int = 0

    @property
    def n_ids(self) -> int:
        return len(self.ids) if self.ids is not None else self.universe_size

    @property
    def closed(self) -> bool:
        return self.close_ts is not None

    def with_universe(self, ids: tuple[str, ...]) -> RoundInfo:
        """The same round with its universe at hand (read back from its open record)."""
        return dataclasses.replace(self, ids=ids)

    @classmethod
    def parse(cls, r: int, fields: Mapping[Any, Any], universe: bytes | None = None, known_ids: tuple[str, ...] | None = None) -> RoundInfo:
        """Round ``r`` from its stored hash ``fields`` (bytes or text) and the JSON of its universe
        (``universe``; ``known_ids`` instead when the caller has it, None once pruned).

        Raises :class:`~streams.errors.RoundStateInvalid` when a field is missing or holds a
        value the service never writes. Fields this record does not read are ignored.
        """
        try:
            m = {reply_text(k): reply_text(v) for k, v in fields.items()}
        except (TypeError, UnicodeDecodeError) as exc:
            raise RoundStateInvalid(r, f"a field is not text ({exc})") from exc
        close_ts, close_offset = _int_field(r, m, "close_ts"), _int_field(r, m, "close_offset", minimum=0)
        if (close_ts is None) != (close_offset is None):
            raise RoundStateInvalid(r, "close_ts and close_offset must be stored together")
        ids = known_ids if known_ids is not None else (_parse_universe(r, universe) if universe is not None else None)
        size = _int_field(r, m, "n_ids", minimum=0)
        if ids is not None and size is not None and size != len(ids):
            raise RoundStateInvalid(r, f"n_ids is {size} but the universe holds {len(ids)} ids")
        return cls(
            round=r,
            ids=ids,
            open_ts=_required(r, "open_ts", _int_field(r, m, "open_ts")),
            open_offset=_required(r, "open_offset", _int_field(r, m, "open_offset", minimum=0)),
            close_ts=close_ts,
            close_offset=close_offset,
            alerted=_flag(r, m, "alerted"),
            close_alerted=_flag(r, m, "close_alerted"),
            universe_size=size if size is not None else 0,
        )


def _int_field(r: int, fields: Mapping[str, str], name: str, minimum: int | None = None) -> int | None:
    """An integer field of a round's hash (None when absent)."""
    if name not in fields:
        return None
    try:
        value = int(fields[name])
    except ValueError:
        raise RoundStateInvalid(r, f"{name} is not an integer: {fields[name][:40]!r}") from None
    if minimum is not None and value < minimum:
        raise RoundStateInvalid(r, f"{name} is {value}, below {minimum}")
    return value


def _required(r: int, name: str, value: int | None) -> int:
    if value is None:
        raise RoundStateInvalid(r, f"{name} is missing")
    return value


def _flag(r: int, fields: Mapping[str, str], name: str) -> bool:
    """A flag of a round's hash: ``"1"`` set, absent (or ``"0"``) not."""
    value = fields.get(name, "0")
    if value not in ("0", "1"):
        raise RoundStateInvalid(r, f"{name} is {value[:40]!r}, not 0 or 1")
    return value == "1"


def _parse_universe(r: int, data: bytes) -> tuple[str, ...]:
    """A round's universe from its stored JSON list of ids."""
    try:
        ids = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RoundStateInvalid(r, f"the universe is not JSON ({exc})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RoundStateInvalid(r, "the universe is not a list of ids")
    return tuple(ids)
