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
#: A row with at most n/FIX_UP_FRACTION tied positions has its runs fixed up; more, it is re-sorted.
FIX_UP_FRACTION = 16


def sort_structure(x: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Per row: the stable argsort ``order`` and the ``new_group`` flags in sorted order.

    Arguments:
        x: float64 ``[n_models, n_ids]``, finite.

    Returns:
        ``order[i, r]`` — the id at sorted position r of row i (ties in id order, i.e. pandas
        ``method="first"``); ``new_group[i, r]`` — True where that position starts a new value.
    """
    # numpy's default (SIMD) sort is several times faster than its stable sort but orders
    # equal values arbitrarily; rows without ties get the same order either way, so only
    # the positions inside runs of equal values are put back in id order.
    order = np.argsort(x, axis=1)
    ordered = np.take_along_axis(x, order, axis=1)
    new_group = np.ones(x.shape, dtype=bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    # Rows with few tied positions are fixed up in place; rows with many are sorted again stably.
    tied_positions = x.shape[1] - new_group.sum(axis=1)
    few = np.flatnonzero((tied_positions > 0) & (tied_positions <= x.shape[1] // FIX_UP_FRACTION))
    many = np.flatnonzero(tied_positions > x.shape[1] // FIX_UP_FRACTION)
    if few.size:
        order[few] = _ids_ascending_within_runs(order[few], new_group[few])
    if many.size:
        order[many] = np.argsort(x[many], axis=1, kind="stable")
    return order, new_group


def _ids_ascending_within_runs(order: NDArray[np.intp], new_group: NDArray[np.bool_]) -> NDArray[np.intp]:
    """``order`` with the ids of every run of equal values sorted ascending (a stable order).

    Only the positions inside runs move: each gets the key ``(row, run, id)`` — unique, so
    the fast sort is exact — and the sorted keys fill the same positions, which are
    contiguous per run and row-major overall.
    """
    rows, n = new_group.shape
    in_run = ~new_group
    in_run[:, :-1] |= ~new_group[:, 1:]
    run = np.cumsum(new_group, axis=1)
    r, c = np.nonzero(in_run)
    ids = order[r, c].astype(np.int64)
    key = (r.astype(np.int64) * (n + 1) + run[r, c]) * n + ids
    out = order.copy()
    out[r, c] = ids[np.argsort(key)]
    return out


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
