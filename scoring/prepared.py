"""Submissions ranked once at ingestion, and the round they make at close.

A submission is ranked when it arrives (:func:`prepare_submission`): its stable argsort and tie
runs — 2⅛ bytes per prediction for universes up to 65,535 ids — are all any metric needs.
:class:`PreparedRound` stacks a round's prepared rows; the helpers here turn them into
id-space values a block of rows at a time (:func:`gaussian_ranks`, :func:`sorted_dots_many`)
without re-sorting a row. :mod:`scoring.rounds` scores a round from them.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtri

from scoring.errors import ShapeMismatch
from scoring.ranking import (
    doubled_tie_kept_rank,
    scatter_rows,
    signed_power,
    sort_structure,
    uniform_table,
)
from scoring.validation import as_prediction_matrix

# Bytes of float64 temporaries per block of rows. Whole-round temporaries (10,000 × 6,720 ×
# 8 bytes = 538 MB each) are fresh memory on every call and cost more in page faults than in
# arithmetic; blocks this size are reused by the allocator, and peak memory stays small.
BLOCK_BYTES = 16 << 20
#: Gathers walk the rows in blocks of about this many bytes of gathered values, so that a
#: block's indices and values stay in the CPU cache.
GATHER_BLOCK_BYTES = 2 << 20
#: Threads the gathers are spread over. Results do not depend on it (fixed block boundaries).
GATHER_THREADS = 2


def block_rows(n_ids: int) -> int:
    """Rows per block so that one float64 block holds about :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES // (8 * max(n_ids, 1)))


def order_dtype(n_ids: int) -> np.dtype[np.unsignedinteger]:
    """uint16 up to 65,535 ids (Numerai's ~5,000 fit), uint32 beyond."""
    return np.dtype(np.uint16) if n_ids <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


@dataclass(frozen=True)
class PreparedSubmission:
    """One submission ranked once: its stable sort order and where its tie runs start.

    Attributes:
        order: ``order[r]`` is the id at sorted position r (ties in id order); uint16/uint32.
        new_group: True where sorted position r holds a new value (False = tied with r − 1).
    """

    order: NDArray[np.unsignedinteger]
    new_group: NDArray[np.bool_]

    @property
    def n_ids(self) -> int:
        return int(self.order.size)

    @property
    def has_ties(self) -> bool:
        return not bool(self.new_group.all())

    def to_bytes(self) -> bytes:
        """Little-endian ``order`` followed by ``new_group`` packed 8 per byte."""
        return self.order.astype(self.order.dtype.newbyteorder("<"), copy=False).tobytes() + np.packbits(self.new_group).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, n_ids: int) -> PreparedSubmission:
        """Inverse of :meth:`to_bytes` for a universe of ``n_ids``."""
        dtype = order_dtype(n_ids).newbyteorder("<")
        n_order = n_ids * dtype.itemsize
        expected = n_order + (n_ids + 7) // 8
        if len(data) != expected:
            raise ShapeMismatch(f"prepared submission of {n_ids} ids must be {expected} bytes, got {len(data)}")
        order = np.frombuffer(data, dtype=dtype, count=n_ids).astype(order_dtype(n_ids))
        new_group = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=n_order), count=n_ids).astype(bool)
        return cls(order=order, new_group=new_group)


def prepare_submission(predictions: ArrayLike) -> PreparedSubmission:
    """Rank one submission once, at ingestion (finite values required)."""
    x = as_prediction_matrix(np.asarray(predictions, dtype=np.float64).reshape(1, -1))
    order, new_group = sort_structure(x)
    return PreparedSubmission(order=order[0].astype(order_dtype(x.shape[1])), new_group=new_group[0])


@dataclass(frozen=True, eq=False)
class PreparedRound:
    """The prepared rows of one round, stacked in model order (``[n_models, n_ids]``)."""

    order: NDArray[np.unsignedinteger]
    new_group: NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.order.ndim != 2 or self.order.shape != self.new_group.shape:
            raise ShapeMismatch(f"order {self.order.shape} and new_group {self.new_group.shape} must be equal 2-d shapes")
        if self.order.dtype.kind != "u":
            raise ShapeMismatch(f"orders are unsigned integers, got {self.order.dtype}")
        # Gathers by these orders skip numpy's per-index bounds check (sorted_dots_many).
        if self.order.size and int(self.order.max()) >= self.order.shape[1]:
            raise ShapeMismatch(f"an order names an id beyond the universe of {self.order.shape[1]}")

    @classmethod
    def stack(cls, rows: list[PreparedSubmission]) -> PreparedRound:
        if not rows:
            raise ShapeMismatch("a round needs at least one submission to score")
        n = rows[0].n_ids
        if any(r.n_ids != n for r in rows):
            raise ShapeMismatch("prepared submissions of one round must share the universe")
        return cls(order=np.stack([r.order for r in rows]), new_group=np.stack([r.new_group for r in rows]))

    @classmethod
    def from_predictions(cls, preds: ArrayLike) -> PreparedRound:
        x = as_prediction_matrix(preds)
        order, new_group = sort_structure(x)
        return cls(order=order.astype(order_dtype(x.shape[1])), new_group=new_group)

    @property
    def n_models(self) -> int:
        return int(self.order.shape[0])

    @property
    def n_ids(self) -> int:
        return int(self.order.shape[1])

    @cached_property
    def tie_rows(self) -> NDArray[np.intp]:
        """Rows with at least one tie (their tie-kept ranks differ from the tie-broken ones)."""
        return np.flatnonzero(~self.new_group.all(axis=1))

    @cached_property
    def tie_ranks(self) -> NDArray[np.int64]:
        """Doubled tie-kept ranks in sorted space, for :attr:`tie_rows` only."""
        return doubled_tie_kept_rank(self.new_group[self.tie_rows])

    def rows(self, index: NDArray[np.intp]) -> PreparedRound:
        """The prepared rows at ``index`` (e.g. the stakers)."""
        return PreparedRound(order=self.order[index], new_group=self.new_group[index])

    def subset(self, present: NDArray[np.bool_]) -> PreparedRound:
        """The same rows restricted to the ids where ``present`` is True (ranks re-derived, no re-sort).

        Keeping the sorted positions whose id is present preserves each row's order; two kept
        positions are tied iff no new run started between them in the full row.
        """
        if present.shape != (self.n_ids,):
            raise ShapeMismatch(f"mask must cover the {self.n_ids} ids, got shape {present.shape}")
        n_kept = int(present.sum())
        keep = present[self.order]
        new_index = (np.cumsum(present) - 1).astype(order_dtype(n_kept))
        order = new_index[self.order[keep].reshape(self.n_models, n_kept)]
        run = np.cumsum(self.new_group, axis=1)[keep].reshape(self.n_models, n_kept)
        new_group = np.ones((self.n_models, n_kept), dtype=bool)
        new_group[:, 1:] = run[:, 1:] != run[:, :-1]
        return PreparedRound(order=order, new_group=new_group)


@functools.lru_cache(maxsize=16)
def rank_tables(n: int) -> RankTables:
    """The :class:`RankTables` of a universe of n ids, computed once per n and reused."""
    return RankTables(n)


@dataclass(frozen=True)
class RankTables:
    """Values of every rank for a universe of n ids, computed once per n.

    ``u``: tie-broken uniform ``(r + 0.5)/n`` by sorted position; ``g``/``g15``: gaussianized
    (and signed-power-1.5) uniform of every doubled tie-kept rank ``k`` (``Φ⁻¹(k/2n)``).
    """

    n: int
    u: NDArray[np.float64] = field(init=False)
    g: NDArray[np.float64] = field(init=False)
    g15: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "u", (np.arange(self.n, dtype=np.float64) + 0.5) / self.n)
        g = ndtri(uniform_table(self.n))
        object.__setattr__(self, "g", g)
        object.__setattr__(self, "g15", signed_power(g, 1.5))

    def sorted_without_ties(self, table: NDArray[np.float64]) -> NDArray[np.float64]:
        """A row with no ties has doubled rank ``2r + 1`` at sorted position r."""
        return table[1::2]


def sorted_values(prepared: PreparedRound, tables: RankTables, table: NDArray[np.float64]) -> NDArray[np.float64]:
    """Every row's tie-kept transformed values in sorted space, ``[n_models, n_ids]``."""
    out = np.broadcast_to(tables.sorted_without_ties(table), prepared.order.shape).copy()
    out[prepared.tie_rows] = table[prepared.tie_ranks]
    return out


def centered_norms(prepared: PreparedRound, tables: RankTables, table: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per row, ``‖values − mean(values)‖`` of its tie-kept transformed ranks (shared by tie-free rows)."""
    base = tables.sorted_without_ties(table)
    out = np.full(prepared.n_models, np.sqrt(((base - base.mean()) ** 2).sum()))
    if prepared.tie_rows.size:
        tied = table[prepared.tie_ranks]
        out[prepared.tie_rows] = np.sqrt(((tied - tied.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
    return out


def gaussian_ranks(prepared: PreparedRound, pow_1_5: bool = False) -> NDArray[np.float64]:
    """Id-space ``Φ⁻¹(tie_kept_rank)`` of every row (``[n_models, n_ids]``), optionally ^1.5 signed.

    Equals ``tie_kept_rank__gaussianize(preds)`` (or ``…__pow_1_5``) on the raw predictions.
    """
    tables = rank_tables(prepared.n_ids)
    return scatter_rows(prepared.order, sorted_values(prepared, tables, tables.g15 if pow_1_5 else tables.g))


def g15_correlations(prepared: PreparedRound, vector: NDArray[np.float64], g15_centered_norm: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """Pearson correlation of every row's ``G^1.5`` (tie-kept) with ``vector`` — the CWMM when
    ``vector`` is the meta model; NaN where either is constant.

    Computed in sorted space (one gather of the centered vector by each row's order and a dot
    with the rank table), never materialising a row in id space. ``g15_centered_norm``: the
    rows' :func:`centered_norms` of ``tables.g15``, when already at hand.
    """
    tables = rank_tables(prepared.n_ids)
    if g15_centered_norm is None:
        g15_centered_norm = centered_norms(prepared, tables, tables.g15)
    centered = vector - vector.mean()
    dots = sorted_dots(prepared, tables, centered, (tables.g15,))[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(dots / (g15_centered_norm * np.sqrt(centered @ centered)), dtype=np.float64)


def sorted_dots(
    prepared: PreparedRound,
    tables: RankTables,
    vector: NDArray[np.float64],
    kinds: tuple[NDArray[np.float64] | None, ...],
) -> NDArray[np.float64]:
    """Per row and kind, ``Σ_j value_ij · vector_j`` where the row's values come from its ranks.

    A kind ``None`` means the tie-broken uniform ranks; otherwise a tie-kept table
    (``tables.g`` or ``tables.g15``). Computed in sorted space with one gather of ``vector``
    by each row's order shared by all kinds: ``vector[order_i] @ [values_kind]``.

    Returns:
        float64 ``[n_models, len(kinds)]``.
    """
    return sorted_dots_many(prepared, tables, [(vector, kinds)])[0]


def sorted_dots_many(
    prepared: PreparedRound,
    tables: RankTables,
    requests: list[tuple[NDArray[np.float64], tuple[NDArray[np.float64] | None, ...]]],
) -> list[NDArray[np.float64]]:
    """:func:`sorted_dots` for several (vector, kinds) in one pass over the orders.

    How the 67 million gathers of a 10,000 × 6,720 round are kept cheap (docs/performance.md
    has the measured effect of each; `make bench` prints the one-thread ratio):

    - two vectors are gathered together as the real and imaginary parts of one complex vector
      (one 16-byte gather instead of two 8-byte ones); each kind is then one matrix-vector
      product of the block with the kind's weights interleaved with zeros;
    - gathers use ``mode="clip"``: every order is a permutation of ``range(n_ids)``
      (every :class:`PreparedRound` checks its orders are in range when built), so no index
      can be out of range and numpy's per-index bounds check is pure cost;
    - the rows are walked in fixed blocks of :data:`GATHER_BLOCK_BYTES` of gathered values (the
      block's indices and values stay in the CPU cache), spread over :data:`GATHER_THREADS`
      threads (numpy and BLAS release the GIL). Block boundaries do not depend on the thread
      count, so neither does any row's result.
    """
    m, n = prepared.n_models, prepared.n_ids
    outs = [np.empty((m, len(kinds)), dtype=np.float64) for _, kinds in requests]
    packed: list[tuple[NDArray[Any], list[tuple[NDArray[np.float64], NDArray[np.float64], tuple[int, int]]]]] = []
    for first in range(0, len(requests), 2):
        group = requests[first : first + 2]
        width = len(group)
        vector = np.empty(n, dtype=np.complex128 if width == 2 else np.float64)
        if width == 2:
            vector.real, vector.imag = group[0][0], group[1][0]
        else:
            vector[:] = group[0][0]
        dots = []
        for part, (_, kinds) in enumerate(group):
            for c, kind in enumerate(kinds):
                weights = np.zeros(width * n)
                weights[part::width] = tables.u if kind is None else tables.sorted_without_ties(kind)
                dots.append((weights, np.empty(m), (first + part, c)))
        packed.append((vector, dots))
    step = max(1, GATHER_BLOCK_BYTES // (16 * max(n, 1)))
    starts = list(range(0, m, step))

    def walk(lane: int) -> None:
        index = np.empty((min(step, m), n), dtype=np.intp)
        gathered = {v.dtype: np.empty((min(step, m), n), dtype=v.dtype) for v, _ in packed}
        for start in starts[lane::GATHER_THREADS]:
            stop = min(start + step, m)
            k = stop - start
            np.copyto(index[:k], prepared.order[start:stop], casting="unsafe")
            for vector, dots in packed:
                block = gathered[vector.dtype][:k]
                np.take(vector, index[:k], out=block, mode="clip")
                flat = block.view(np.float64)
                for weights, out, _ in dots:
                    np.dot(flat, weights, out=out[start:stop])

    lanes = min(GATHER_THREADS, len(starts))
    if lanes > 1:
        list(_gather_pool().map(walk, range(lanes)))
    else:
        walk(0)
    for _, dots in packed:
        for _, out, (j, c) in dots:
            outs[j][:, c] = out
    if prepared.tie_rows.size:
        tie_index = prepared.order[prepared.tie_rows]
        for (vector, kinds), result in zip(requests, outs, strict=True):
            tied = vector[tie_index]
            for c, kind in enumerate(kinds):
                if kind is not None:
                    result[prepared.tie_rows, c] = (tied * kind[prepared.tie_ranks]).sum(axis=1)
    return outs


@functools.lru_cache(maxsize=1)
def _gather_pool() -> ThreadPoolExecutor:
    """The threads :func:`sorted_dots_many` spreads its blocks over (created on first use)."""
    return ThreadPoolExecutor(max_workers=GATHER_THREADS, thread_name_prefix="scoring-gather")
