"""Ranking and the transforms built on it: uniform ranks, gaussianization, signed powers.

The tie structure of a row is kept in *sorted space*: ``order`` (a stable argsort of the
row) and ``new_group`` (True where a sorted position starts a new run of equal values).
Everything else — tie-broken ranks, tie-kept ranks, gaussianized ranks, and the same over
any subset of ids — is derived from those two arrays, so a submission is ranked once at
ingestion (see :mod:`scoring.rounds`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtri

from scoring.errors import ScoringError
from scoring.validation import as_prediction_matrix

Ties = Literal["keep", "break"]
#: A row needing exact order with at most n/FIX_UP_FRACTION unsure positions has its runs fixed up; more, it is re-sorted.
FIX_UP_FRACTION = 16


def sort_structure(x: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Per row: the stable argsort ``order`` and the ``new_group`` flags in sorted order.

    Arguments:
        x: float64 ``[n_models, n_ids]``, finite.

    Returns:
        ``order[i, r]`` — the id at sorted position r of row i (ties in id order, i.e. pandas
        ``method="first"``); ``new_group[i, r]`` — True where that position starts a new value.

    How (the same result as ``np.argsort(x, axis=1, kind="stable")``, ~2× faster on
    submissions — ``make bench`` prints both): every value becomes an order-preserving 64-bit
    key whose lowest ``b = bits(n_ids − 1)`` bits are replaced by its id, and the keys are
    sorted as plain integers (numpy's SIMD sort; no index array to carry). Positions whose
    truncated keys differ hold different values, in value order. Where two neighbours' truncated
    keys are equal the values are equal (a tie, already in id order) or differ only in the
    dropped bits; rows with such a pair are put in exact (value, id) order — their runs in place
    when they are few, by a stable argsort of the row otherwise.
    """
    n = x.shape[1]
    bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = sortable_keys(x)
    packed &= ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort(axis=1)
    order = (packed & low).astype(np.intp)
    packed >>= np.uint64(bits)
    new_group = np.ones(x.shape, dtype=bool)
    np.not_equal(packed[:, 1:], packed[:, :-1], out=new_group[:, 1:])
    unsure = ~new_group  # same truncated key as the position before: a tie, or not quite
    r, c = np.nonzero(unsure)
    if r.size:
        # Ties are already in id order; only rows where such neighbours differ need more.
        differ = x[r, order[r, c]] != x[r, order[r, c - 1]]
        rows = np.unique(r[differ])
        if rows.size:
            counts = unsure[rows].sum(axis=1)
            few, many = rows[counts <= n // FIX_UP_FRACTION], rows[counts > n // FIX_UP_FRACTION]
            if few.size:
                order[few], new_group[few] = _exact_within_runs(x[few], order[few], unsure[few])
            if many.size:
                stable = np.argsort(x[many], axis=1, kind="stable")
                order[many] = stable
                new_group[many] = _new_groups(np.take_along_axis(x[many], stable, axis=1))
    return order, new_group


def sortable_keys(x: NDArray[np.float64]) -> NDArray[np.uint64]:
    """Order-preserving unsigned keys of finite float64 values (``-0.0`` and ``0.0`` share one).

    Positive values get the sign bit set, negative ones have every bit flipped, so unsigned
    integer order is numeric order.
    """
    keys = (x + 0.0).view(np.uint64)  # a new array; + 0.0 turns -0.0 into 0.0
    flip = (keys.view(np.int64) >> 63).view(np.uint64)  # all ones for negatives, zero otherwise
    flip |= np.uint64(1 << 63)
    keys ^= flip
    return keys


def _new_groups(ordered: NDArray[np.float64]) -> NDArray[np.bool_]:
    new_group = np.ones(ordered.shape, dtype=bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return new_group


def _exact_within_runs(x: NDArray[np.float64], order: NDArray[np.intp], unsure: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """``order`` and ``new_group`` made exact inside the runs of equal truncated keys.

    A run is a position and the ``unsure`` positions right after it; only its positions move.
    Each gets the key ``(row, run, value, id)`` and the sorted keys fill the same positions,
    which are contiguous per run and row-major overall. Inside a run a position starts a new
    group iff its value differs from the one before; a run's first position always does (its
    truncated key differs from the position before it).
    """
    in_run = unsure.copy()
    in_run[:, :-1] |= unsure[:, 1:]
    run = np.cumsum(~unsure, axis=1)
    r, c = np.nonzero(in_run)
    ids = order[r, c]
    values = sortable_keys(x[r, ids])
    runs = run[r, c]
    moved = np.lexsort((ids, values, runs, r))
    order = order.copy()
    order[r, c] = ids[moved]
    values = values[moved]
    new_group = ~unsure
    follows = (r[1:] == r[:-1]) & (runs[1:] == runs[:-1])
    new_group[r[1:][follows], c[1:][follows]] = values[1:][follows] != values[:-1][follows]
    return order, new_group


def doubled_tie_kept_rank(new_group: NDArray[np.bool_]) -> NDArray[np.int64]:
    """In sorted space, ``2·average_rank − 1`` of every position (an exact integer).

    A run of equal values at sorted positions ``s..e−1`` has average rank ``(s+1+e)/2``
    (pandas ``method="average"``), so ``2·avg − 1 = s + e``; the uniform rank is then
    ``(avg − 0.5)/n = (s + e)/(2n)``.
    """
    n_rows, n = new_group.shape
    positions = np.arange(n)
    start = np.maximum.accumulate(np.where(new_group, positions, 0), axis=1)
    next_start = np.full((n_rows, n), n, dtype=np.int64)
    next_start[:, :-1] = np.where(new_group[:, 1:], positions[1:], n)
    end = np.minimum.accumulate(next_start[:, ::-1], axis=1)[:, ::-1]
    return start + end


def uniform_table(n: int) -> NDArray[np.float64]:
    """``k / (2n)`` for k = 0..2n−1: the uniform value of every doubled rank."""
    return np.arange(2 * n, dtype=np.float64) / (2 * n)


def scatter_rows(order: NDArray[np.integer], sorted_values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Put sorted-space values back in id order: ``out[i, order[i, r]] = sorted_values[i, r]``."""
    out = np.empty(order.shape, dtype=np.float64)
    flat = order.astype(np.intp) + (np.arange(order.shape[0], dtype=np.intp) * order.shape[1])[:, np.newaxis]
    out.ravel()[flat] = np.broadcast_to(sorted_values, order.shape)
    return out


def rank_uniform(x: ArrayLike, ties: Ties = "keep") -> NDArray[np.float64]:
    """Uniform ranks per row: ``(rank − 0.5) / n``.

    Arguments:
        x: predictions, 1-D (one row) or 2-D ``[n_models, n_ids]``; finite.
        ties: ``"keep"`` averages the ranks of equal values (pandas ``rank(method="average")``,
            numerai-tools ``tie_kept_rank``); ``"break"`` ranks them by position
            (``method="first"``, numerai-tools ``tie_broken_rank``).

    Returns:
        float64 of the same shape, values in (0, 1).
    """
    arr = np.asarray(x, dtype=np.float64)
    matrix = as_prediction_matrix(arr)
    n = matrix.shape[1]
    order, new_group = sort_structure(matrix)
    if ties == "break":
        sorted_u = (np.arange(n, dtype=np.float64) + 0.5) / n
    elif ties == "keep":
        sorted_u = uniform_table(n)[doubled_tie_kept_rank(new_group)]
    else:
        raise ScoringError(f"ties must be 'keep' or 'break', got {ties!r}")
    u = scatter_rows(order, sorted_u)
    return u.reshape(arr.shape)


def gaussianize(u: ArrayLike) -> NDArray[np.float64]:
    """Normal percent-point function of uniform ranks: ``Φ⁻¹(u)`` (numerai-tools ``gaussian``)."""
    return np.asarray(ndtri(np.asarray(u, dtype=np.float64)), dtype=np.float64)


def signed_power(x: ArrayLike, p: float = 1.5) -> NDArray[np.float64]:
    """``sign(x)·|x|^p`` (numerai-tools ``power``; p = 1.5 emphasises the tails)."""
    a = np.asarray(x, dtype=np.float64)
    return np.sign(a) * np.abs(a) ** p


def tie_kept_rank__gaussianize(x: ArrayLike) -> NDArray[np.float64]:
    """Tie-kept uniform rank, then gaussianize."""
    return gaussianize(rank_uniform(x, ties="keep"))


def tie_kept_rank__gaussianize__pow_1_5(x: ArrayLike) -> NDArray[np.float64]:
    """Tie-kept uniform rank, gaussianize, then signed power 1.5 (numerai-tools' CORR transform)."""
    return signed_power(tie_kept_rank__gaussianize(x), 1.5)
