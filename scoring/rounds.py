"""Scoring a whole round from submissions prepared once at ingestion.

A stream sees each submission once but resolves its round up to 21 times (daily targets,
then final). So a submission is ranked when it arrives (:func:`prepare_submission`): its
stable argsort and tie runs — 2⅛ bytes per prediction for universes up to 65,535 ids —
are all any metric needs. At close, with the stakes frozen, everything that does not
depend on the targets is computed once (:func:`close_round` → :class:`RoundBasis`: the
meta model, the bootstrap meta models, every model's products with them). Each target
update then costs two gathers and three matrix-vector products (:func:`resolve_round`).

When targets are missing for some ids, every metric is taken over the ids that have one,
ranks included, so the basis is rebuilt on that subset (still without re-sorting a row).

:func:`score_round` on raw predictions runs exactly this path, so its results are
bit-identical to what the service publishes for the same inputs.
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

from scoring.bootstrap import (
    DEFAULT_DRAWS,
    DEFAULT_FRACTION,
    DEFAULT_SALT,
    bootstrap_samples,
    draw_weights,
    neutral_covariance,
    round_seed,
)
from scoring.errors import ScoringError, ShapeMismatch
from scoring.metrics import contribution_target_scale
from scoring.ranking import (
    doubled_tie_kept_rank,
    rank_uniform,
    scatter_rows,
    signed_power,
    sort_structure,
    tie_kept_rank__gaussianize,
    uniform_table,
)
from scoring.validation import DEFAULT_MAX_MISSING_RATIO, as_prediction_matrix, as_stakes, as_targets

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


@dataclass(frozen=True)
class RoundBasis:
    """What a round's scores need besides the targets, computed at close (stakes frozen).

    Arrays over models are in the prepared rows' order; over ids in universe order (of the
    ids scored, when built on a subset).

    Attributes:
        stakes: frozen stakes ``[n_models]``.
        meta_model: the SWMM ``[n_ids]`` (NaN when nobody has stake).
        meta_gauss: ``Φ⁻¹(tie_kept_rank(SWMM))`` — the meta model as contribution sees it.
        draws_centered: centered tie-broken uniform bootstrap meta models ``m̃_k``, ``[draws, n_ids]``.
        g_meta: ``G_i · meta_gauss`` per model; u_draws: ``ũ_i · m̃_k``, ``[n_models, draws]``.
        g15_centered_norm: ``‖G15_i − mean‖`` per model (CORR's denominator).
        corr_w_mm: CWMM per model.
    """

    stakes: NDArray[np.float64]
    meta_model: NDArray[np.float64]
    meta_gauss: NDArray[np.float64]
    draws_centered: NDArray[np.float64]
    g_meta: NDArray[np.float64]
    u_draws: NDArray[np.float64]
    g15_centered_norm: NDArray[np.float64]
    corr_w_mm: NDArray[np.float64]

    @property
    def has_meta_model(self) -> bool:
        return bool(np.isfinite(self.meta_model).all())


def close_round(prepared: PreparedRound, stakes: ArrayLike, samples: ArrayLike) -> RoundBasis:
    """Everything target-independent, once per round (or per subset of ids).

    1. id-space tie-broken uniforms ``U`` and gaussianized tie-kept ranks ``G`` (scatter by
       order), a block of rows at a time;
    2. SWMM ``= s·G / Σs`` over stakers; ``meta_gauss = Φ⁻¹(tie_kept_rank(SWMM))``;
    3. bootstrap meta models ``mm_k = w_k·U``, re-ranked tie-broken and centered;
    4. per model: ``G·meta_gauss``, ``ũ·m̃_k``, ``‖G15 − mean‖`` and CWMM.
    """
    n_models, n = prepared.n_models, prepared.n_ids
    s = as_stakes(stakes, n_models)
    sample_arr = np.asarray(samples, dtype=np.int64)
    tables = rank_tables(n)
    g15_centered_norm = centered_norms(prepared, tables, tables.g15)
    staked = s > 0
    draws = sample_arr.shape[0] if sample_arr.ndim == 2 else 0
    if not staked.any() or sample_arr.ndim != 2 or sample_arr.shape[1] == 0:
        nan_ids = np.full(n, np.nan)
        return RoundBasis(
            stakes=s,
            meta_model=nan_ids,
            meta_gauss=nan_ids,
            draws_centered=np.full((draws, n), np.nan),
            g_meta=np.full(n_models, np.nan),
            u_draws=np.full((n_models, draws), np.nan),
            g15_centered_norm=g15_centered_norm,
            corr_w_mm=np.full(n_models, np.nan),
        )
    # Pass 1, over the stakers in blocks: the SWMM's numerator Σ s·G and the bootstrap meta
    # models' numerators Σ w_k·U (weights already normalised per draw).
    weights = draw_weights(sample_arr, s)
    staker_rows = np.flatnonzero(staked)
    swmm_sum = np.zeros(n)
    draws_sum = np.zeros((weights.shape[0], n))
    step = block_rows(n)
    for start in range(0, staker_rows.size, step):
        rows = staker_rows[start : start + step]
        block = prepared.rows(rows)
        swmm_sum += s[rows] @ scatter_rows(block.order, sorted_values(block, tables, tables.g))
        draws_sum += weights[:, rows] @ scatter_rows(block.order, tables.u)
    swmm = swmm_sum / s[staked].sum()
    meta_gauss = tie_kept_rank__gaussianize(swmm)
    draws_u = rank_uniform(draws_sum, ties="break")
    draws_centered = draws_u - draws_u.mean(axis=1, keepdims=True)
    # Pass 2, over every model in blocks: ũ·m̃_k for the 2020 MMC.
    u_centered_draws = np.empty((n_models, draws_centered.shape[0]))
    centered_sums = draws_centered.sum(axis=1)
    for start in range(0, n_models, step):
        stop = min(start + step, n_models)
        u = scatter_rows(prepared.order[start:stop], tables.u)
        u_centered_draws[start:stop] = u @ draws_centered.T - u.mean(axis=1, keepdims=True) * centered_sums
    cwmm = g15_correlations(prepared, swmm, g15_centered_norm)
    return RoundBasis(
        stakes=s,
        meta_model=swmm,
        meta_gauss=meta_gauss,
        draws_centered=draws_centered,
        g_meta=sorted_dots(prepared, tables, meta_gauss, (tables.g,))[:, 0],
        u_draws=u_centered_draws,
        g15_centered_norm=g15_centered_norm,
        corr_w_mm=cwmm,
    )


@dataclass(frozen=True)
class RoundScores:
    """Every metric of one target update, arrays over models in the prepared rows' order.

    ``meta_model`` covers the whole universe, NaN at ids left out of this update.
    """

    corr: NDArray[np.float64]
    mmc: NDArray[np.float64]
    contribution: NDArray[np.float64]
    corr_w_mm: NDArray[np.float64]
    meta_model: NDArray[np.float64]
    n_ids_scored: int
    n_ids_missing: int


def resolve_round(prepared: PreparedRound, basis: RoundBasis, targets: ArrayLike) -> RoundScores:
    """Score one target update (all ids present) from the prepared rows and the round's basis.

    With ``t̃ = t − mean(t)`` and ``y = t̃^1.5 − mean``: CORR ``= G15·y / (‖G15 − mean‖ ‖y‖)``;
    contribution ``= scale·(G·t̃ − (m'·t̃)(G·m')/(m'·m')) / n``; MMC from ``ũ·t̃`` and the basis
    (:func:`scoring.bootstrap.neutral_covariance`). Two gathers of ``t̃``/``y`` by sort order,
    three row-dot products.
    """
    n = prepared.n_ids
    t = np.asarray(targets, dtype=np.float64)
    if t.shape != (n,) or not np.isfinite(t).all():
        raise ShapeMismatch(f"resolve_round needs {n} finite targets; use score_prepared for missing ones")
    tables = rank_tables(n)
    t_c = t - t.mean()
    y = signed_power(t_c, 1.5)
    y = y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        dots_y, dots_t = sorted_dots_many(prepared, tables, [(y, (tables.g15,)), (t_c, (tables.g, None))])
        corr = dots_y[:, 0] / (basis.g15_centered_norm * np.sqrt(y @ y))
    if basis.has_meta_model:
        g_t, u_t = dots_t.T
        m_g = basis.meta_gauss
        scale = contribution_target_scale(t)
        contrib = scale * (g_t - (m_g @ t_c) * basis.g_meta / (m_g @ m_g)) / n
        d = basis.draws_centered
        mmc2020 = neutral_covariance(u_t, basis.u_draws, d @ t_c, (d * d).sum(axis=1), n)
    else:
        contrib = np.full(prepared.n_models, np.nan)
        mmc2020 = np.full(prepared.n_models, np.nan)
    return RoundScores(
        corr=corr,
        mmc=mmc2020,
        contribution=contrib,
        corr_w_mm=basis.corr_w_mm,
        meta_model=basis.meta_model,
        n_ids_scored=n,
        n_ids_missing=0,
    )


def score_prepared(
    prepared: PreparedRound,
    stakes: ArrayLike,
    targets: ArrayLike,
    samples: ArrayLike,
    basis: RoundBasis | None = None,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> RoundScores:
    """Score one target update from prepared rows; reuse ``basis`` when every target is present.

    Missing targets (NaN, at most ``max_missing_ratio``): the rows are restricted to the ids
    that have one and the basis is rebuilt there, so every metric leaves those ids out.
    """
    t, present = as_targets(targets, prepared.n_ids, max_missing_ratio)
    if present.all():
        return resolve_round(prepared, basis if basis is not None else close_round(prepared, stakes, samples), t)
    sub = prepared.subset(present)
    scores = resolve_round(sub, close_round(sub, stakes, samples), t[present])
    meta = np.full(prepared.n_ids, np.nan)
    meta[present] = scores.meta_model
    return RoundScores(
        corr=scores.corr,
        mmc=scores.mmc,
        contribution=scores.contribution,
        corr_w_mm=scores.corr_w_mm,
        meta_model=meta,
        n_ids_scored=int(present.sum()),
        n_ids_missing=int((~present).sum()),
    )


def round_samples(
    stakes: ArrayLike,
    round: int,
    salt: str = DEFAULT_SALT,
    draws: int = DEFAULT_DRAWS,
    fraction: float = DEFAULT_FRACTION,
) -> NDArray[np.int64]:
    """The round's bootstrap draws over its stakers, seeded by round number and salt."""
    n_stakers = int((np.asarray(stakes, dtype=np.float64) > 0).sum())
    return bootstrap_samples(n_stakers, draws=draws, fraction=fraction, seed=round_seed(round, salt))


def score_round(
    preds: ArrayLike,
    stakes: ArrayLike,
    targets: ArrayLike,
    round: int | None = None,
    samples: ArrayLike | None = None,
    salt: str = DEFAULT_SALT,
    max_missing_ratio: float = DEFAULT_MAX_MISSING_RATIO,
) -> RoundScores:
    """Every metric for one round in one call: CORR, MMC (2020), contribution, CWMM and the meta model.

    Arguments:
        preds: ``[n_models, n_ids]`` finite predictions; stakes: ``[n_models]`` ≥ 0;
        targets: ``[n_ids]``, NaN for ids not resolved yet (≤ ``max_missing_ratio``).
        round: seeds the bootstrap draws (with ``salt``) when ``samples`` is not given.

    Returns:
        :class:`RoundScores`; ranks are shared across metrics (each row sorted once).
    """
    prepared = PreparedRound.from_predictions(preds)
    s = as_stakes(stakes, prepared.n_models)
    if samples is None:
        if round is None:
            raise ScoringError("score_round needs the round number (or explicit samples) for MMC's draws")
        samples = round_samples(s, round, salt)
    return score_prepared(prepared, s, targets, samples, max_missing_ratio=max_missing_ratio)
