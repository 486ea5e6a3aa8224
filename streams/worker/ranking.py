"""Submissions decoded and ranked off the event loop, on the rank threads (pure: no state, no I/O)."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from scoring.prepared import PreparedRound, PreparedSubmission, gaussian_ranks
from streams.errors import InvalidMessage
from streams.messages.records import InputRecord, Submission, decode_input

#: Threads a batch of submissions is decoded and ranked on, a piece each. Decoding holds the GIL
#: (simdjson), sorting does not (numpy): one thread is busy all the time while the event loop
#: idles half of it; two give 1,471–1,670/s against 1,372–1,534/s for one (three alternating
#: runs of 10,000 submissions).
RANK_THREADS = 2
#: A submission record's place in its topic: (partition, offset).
RecordKey = tuple[int, int]
#: A ranked row: its prepared row, its G (id space) and the bytes stored for it.
Ranked = tuple[PreparedRound, NDArray[np.float64], bytes]


@dataclass(frozen=True)
class Digest:
    """A batch of submission records decoded and ranked (by :func:`digest_submissions`).

    ``decoded``: each record's submission or the refusal its bytes earned; ``ranks``: the
    prepared row and G of each submission that came in universe order (no ids list).
    """

    decoded: dict[RecordKey, Submission | InvalidMessage]
    ranks: dict[RecordKey, Ranked]


def rank_rows(rows: list[NDArray[np.float64]]) -> list[Ranked]:
    """Rank finite prediction rows at once (per universe size): each row's prepared row, its G and its stored bytes, in order.

    Each row's result is the same whatever rows it is ranked with (rows are sorted one by one).
    """
    out: list[Ranked] = [None] * len(rows)  # type: ignore[list-item]
    by_size: dict[int, list[int]] = {}
    for j, values in enumerate(rows):
        by_size.setdefault(values.size, []).append(j)
    for group in by_size.values():
        prepared = PreparedRound.from_predictions(np.stack([rows[j] for j in group]))
        g = gaussian_ranks(prepared)
        for row, j in enumerate(group):
            one = prepared.rows(np.array([row]))
            out[j] = (one, g[row], PreparedSubmission(order=one.order[0], new_group=one.new_group[0]).to_bytes())
    return out


def digest_submissions(records: list[InputRecord], max_bytes: int, max_ids: int) -> Digest:
    """Decode every submission record and rank those in universe order — pure, run on the rank threads."""
    decoded: dict[RecordKey, Submission | InvalidMessage] = {}
    for record in records:
        try:
            decoded[(record.partition, record.offset)] = decode_input(record, max_bytes, max_ids)  # type: ignore[assignment]
        except InvalidMessage as exc:
            decoded[(record.partition, record.offset)] = exc
    aligned = [(key, event) for key, event in decoded.items() if isinstance(event, Submission) and event.ids is None]
    return Digest(decoded, dict(zip([key for key, _ in aligned], rank_rows([event.predictions for _, event in aligned]), strict=True)))


def digest_in_pieces(records: list[InputRecord], max_bytes: int, max_ids: int) -> asyncio.Future[Digest]:
    """Start digesting ``records`` on the rank threads, a piece per thread; the future gives one digest."""
    loop = asyncio.get_running_loop()
    size = max(1, -(-len(records) // RANK_THREADS))  # ceil: one piece per rank thread
    pieces = [loop.run_in_executor(_rank_threads(), digest_submissions, records[i : i + size], max_bytes, max_ids) for i in range(0, len(records), size)]
    return asyncio.ensure_future(_joined(pieces))


@functools.cache
def _rank_threads() -> ThreadPoolExecutor:
    """The threads that decode and rank submissions while the event loop waits on Redis and Kafka."""
    return ThreadPoolExecutor(max_workers=RANK_THREADS, thread_name_prefix="mmc-rank")


async def _joined(pieces: list[asyncio.Future[Digest]]) -> Digest:
    """One digest of a batch digested in pieces (every record is decoded and ranked on its own,
    so the pieces give the same values as one digest of the whole batch)."""
    done = await asyncio.gather(*pieces)
    return Digest({k: v for d in done for k, v in d.decoded.items()}, {k: v for d in done for k, v in d.ranks.items()})
