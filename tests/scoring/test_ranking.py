"""Ranks and transforms on hand-made series (numerai-tools' own test values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerai_tools import scoring as nt

from scoring import gaussianize, rank_uniform, signed_power
from scoring.errors import NonFiniteInput, ScoringError, ShapeMismatch
from scoring.ranking import sort_structure

UP = np.arange(5.0)
UP_DOWN = np.array([1.0, 0, 1, 0, 1])


def test_rank_uniform_keeps_ties_like_numerai_tools() -> None:
    """Tie-kept ranks of up and up_down match numerai-tools' test values."""
    np.testing.assert_allclose(rank_uniform(UP), [0.1, 0.3, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(rank_uniform(UP_DOWN), [0.7, 0.2, 0.7, 0.2, 0.7])


def test_rank_uniform_breaks_ties_by_position() -> None:
    """Tie-broken ranks of up_down match numerai-tools' test values."""
    np.testing.assert_allclose(rank_uniform(UP_DOWN, ties="break"), [0.5, 0.1, 0.7, 0.3, 0.9])


def test_rank_uniform_is_per_row() -> None:
    """A 2-D input is ranked row by row."""
    out = rank_uniform(np.stack([UP, UP[::-1]]))
    np.testing.assert_allclose(out, [[0.1, 0.3, 0.5, 0.7, 0.9], [0.9, 0.7, 0.5, 0.3, 0.1]])


def test_constant_row_ranks_to_the_middle() -> None:
    """All-equal predictions tie-keep to 0.5 and tie-break to position order."""
    np.testing.assert_allclose(rank_uniform(np.ones(4)), [0.5] * 4)
    np.testing.assert_allclose(rank_uniform(np.ones(4), ties="break"), [0.125, 0.375, 0.625, 0.875])


def test_signed_zero_ties_with_zero() -> None:
    """-0.0 and 0.0 are one value, as in pandas."""
    np.testing.assert_allclose(rank_uniform(np.array([0.0, -0.0, 1.0])), [1 / 3, 1 / 3, 5 / 6])


@pytest.mark.parametrize("method, ties", [("average", "keep"), ("first", "break")])
def test_rank_uniform_matches_pandas_on_random_ties(method: str, ties: str) -> None:
    """On random data with heavy ties both modes equal pandas' rank exactly."""
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=(20, 300)), 1)
    expected = np.stack([((pd.Series(r).rank(method=method) - 0.5) / r.size).to_numpy() for r in x])
    np.testing.assert_array_equal(rank_uniform(x, ties=ties), expected)  # type: ignore[arg-type]


def test_gaussianize_matches_numerai_tools() -> None:
    """Φ⁻¹ of uniform ranks equals numerai-tools' gaussian, including the ±inf ends."""
    u = UP / 4
    np.testing.assert_allclose(gaussianize(u), [-np.inf, -0.6744897501960817, 0, 0.6744897501960817, np.inf])
    np.testing.assert_allclose(gaussianize(u[1:4]), nt.gaussian(pd.DataFrame(u[1:4]))[0].to_numpy())


def test_signed_power_keeps_sign() -> None:
    """sign(x)·|x|^1.5 on a hand vector."""
    np.testing.assert_allclose(signed_power([-4.0, 0.0, 4.0]), [-8.0, 0.0, 8.0])


def test_rank_rejects_non_finite_with_a_typed_error() -> None:
    """NaN and inf raise NonFiniteInput (a ValueError), not an assert."""
    with pytest.raises(NonFiniteInput):
        rank_uniform(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(NonFiniteInput):
        rank_uniform(np.array([0.1, np.inf, 0.3]))
    assert issubclass(NonFiniteInput, ValueError)


def test_rank_rejects_bad_shapes_and_modes() -> None:
    """3-D input, a single id and an unknown ties mode raise typed errors."""
    with pytest.raises(ShapeMismatch):
        rank_uniform(np.zeros((2, 2, 2)))
    with pytest.raises(ShapeMismatch):
        rank_uniform(np.zeros(1))
    with pytest.raises(ScoringError):
        rank_uniform(UP, ties="dense")  # type: ignore[arg-type]


def _assert_stable_structure(x: np.ndarray) -> None:
    """sort_structure(x) is numpy's stable argsort, and its group starts mark value changes."""
    order, new_group = sort_structure(x)
    stable = np.argsort(x, axis=1, kind="stable")
    np.testing.assert_array_equal(order, stable)
    ordered = np.take_along_axis(x, stable, axis=1)
    np.testing.assert_array_equal(new_group[:, 1:], ordered[:, 1:] != ordered[:, :-1])
    assert new_group[:, 0].all()


@pytest.mark.parametrize("decimals", [1, 2, 3, 5, None])
def test_sort_structure_order_is_the_stable_argsort_at_every_tie_density(decimals: int | None) -> None:
    # Rows with few tied positions are fixed up in place, rows with many re-sorted stably;
    # a matrix mixing both (and tie-free rows) must give numpy's stable order everywhere.
    rng = np.random.default_rng(11)
    x = rng.random((40, 3000))
    if decimals is not None:
        x[::2] = x[::2].round(decimals)
    x[5, 100:140] = 0.5  # one long run in an otherwise tie-free row
    _assert_stable_structure(x)


@pytest.mark.parametrize("shape", ["scaled", "rounded", "last_bits", "zeros", "half_rounded", "neighbours"])
def test_sort_structure_matches_the_stable_argsort_where_values_differ_only_in_their_lowest_bits(shape: str) -> None:
    # The integer-key sort drops each value's lowest bits for its id: values differing only
    # there, ties, ±0.0 and every magnitude must still come out in exact (value, id) order.
    rng = np.random.default_rng(["scaled", "rounded", "last_bits", "zeros", "half_rounded", "neighbours"].index(shape))
    for _ in range(40):
        n, m = int(rng.integers(2, 3000)), int(rng.integers(1, 10))
        x = rng.normal(size=(m, n)) * 10.0 ** float(rng.integers(-300, 300))
        if shape == "rounded":
            x = rng.normal(size=(m, n)).round(int(rng.integers(0, 3)))
        elif shape == "last_bits":
            base = rng.normal(size=(m, 1))
            x = base + rng.integers(-3000, 3000, size=(m, n)) * np.spacing(np.abs(base))
        elif shape == "zeros":
            x[:, ::7] = 0.0
            x[:, ::11] = -0.0
        elif shape == "half_rounded":
            x[:, : n // 2] = x[:, : n // 2].round(1)
        elif shape == "neighbours":
            x = np.nextafter(np.full((m, n), rng.normal()), np.inf * rng.choice([-1.0, 1.0], size=(m, n)))
            x[:, ::3] = rng.normal()
        _assert_stable_structure(x)
