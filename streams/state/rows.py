"""What the store keeps per submission and per stake update, and how each is encoded."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scoring import PreparedSubmission

# Submission row header: event time and offset big-endian (so rows compare as bytes in
# event order), then partition, then the stake weight used in the live meta model.
_ROW_ORDER = struct.Struct(">QQ")
_ROW_REST = struct.Struct("<Id")
ROW_HEADER_BYTES = _ROW_ORDER.size + _ROW_REST.size


@dataclass(frozen=True)
class SubmissionRow:
    """One stored submission: when it was made, where it came from, its prepared ranks."""

    timestamp_ms: int
    offset: int
    partition: int
    live_weight: float
    prepared: bytes

    def encode(self) -> bytes:
        return _ROW_ORDER.pack(self.timestamp_ms, self.offset) + _ROW_REST.pack(self.partition, self.live_weight) + self.prepared

    @classmethod
    def decode(cls, data: bytes) -> SubmissionRow:
        ts, offset = _ROW_ORDER.unpack_from(data, 0)
        partition, weight = _ROW_REST.unpack_from(data, _ROW_ORDER.size)
        return cls(ts, offset, partition, weight, data[ROW_HEADER_BYTES:])

    @property
    def order_key(self) -> tuple[int, int]:
        return (self.timestamp_ms, self.offset)

    def submission(self, n_ids: int) -> PreparedSubmission:
        return PreparedSubmission.from_bytes(self.prepared, n_ids)


@dataclass(frozen=True)
class StakeEntry:
    timestamp_ms: int
    offset: int
    round: int | None
    stake: float

    @classmethod
    def parse(cls, member: bytes) -> StakeEntry:
        """A stake update from its sorted-set member (:meth:`member`)."""
        ts, offset, rnd, stake = member.decode().split(":")
        return cls(int(ts), int(offset), int(rnd) if rnd else None, float(stake))

    def member(self) -> str:
        """The sorted-set member: event time and offset zero-padded (members sort in event order), round, stake."""
        return f"{self.timestamp_ms:015d}:{self.offset:020d}:{'' if self.round is None else self.round}:{self.stake!r}"
