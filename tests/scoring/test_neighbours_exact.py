"""crowd_neighbours against a plain float64 reference: the same bits (==), with near-ties and pairs at the threshold.

The reference takes the same standardized rows and the same product calls (tiles of
``TILE_ROWS`` models against all stakers), then ranks every staker of every row by a full
sort and keys every pair against the threshold: no candidate prefilter, no buffer reuse, no
helper thread. Whatever crowd_neighbours skips must not change a bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import scoring.neighbours as neighbours_module
from scoring import CrowdNeighbours, PreparedRound, crowd_neighbours
from scoring.prepared import rank_tables

FIELDS = ("index", "correlation", "stake", "stake_share", "count", "crowd_share", "crowd_size", "own_share")


def reference(preds: np.ndarray, stakes: np.ndarray, k: int, threshold: float) -> dict[str, np.ndarray]:
    """Every pair's correlation from the same tiles, every row fully sorted by (key ↓, row ↑)."""
    prepared = PreparedRound.from_predictions(preds)
    m = prepared.n_models
    stakers = np.flatnonzero(stakes > 0)
    z, valid = neighbours_module.standardized_rows(prepared, rank_tables(prepared.n_ids))
    tile = neighbours_module.TILE_ROWS
    corr = np.concatenate([z[i : i + tile] @ z[stakers].T for i in range(0, m, tile)]) if stakers.size else np.empty((m, 0))
    defined = valid[:, np.newaxis] & valid[stakers][np.newaxis, :] & (np.arange(m)[:, np.newaxis] != stakers[np.newaxis, :])
    keys = np.rint(corr * 1e12).astype(np.int64)
    threshold_key = np.rint(threshold * 1e12).astype(np.int64)
    total = stakes[stakers].sum()
    width = min(k, stakers.size)
    out = {
        "index": np.full((m, width), -1),
        "correlation": np.full((m, width), np.nan),
        "count": np.zeros(m, dtype=np.int64),
        "crowd_share": np.full(m, np.nan),
        "crowd_size": np.zeros(m, dtype=np.int64),
    }
    for i in range(m):
        columns = np.flatnonzero(defined[i])
        ranked = columns[np.lexsort((columns, -keys[i, columns]))][:width]
        out["index"][i, : ranked.size] = stakers[ranked]
        out["correlation"][i, : ranked.size] = corr[i, ranked]
        out["count"][i] = ranked.size
        crowd = columns[keys[i, columns] >= threshold_key]
        out["crowd_size"][i] = crowd.size
        if stakers.size and valid[i]:  # summed in column order, as np.bincount does
            out["crowd_share"][i] = np.bincount(np.zeros(crowd.size, dtype=np.intp), weights=stakes[stakers][crowd], minlength=1)[0] / total
    listed = out["index"] >= 0
    out["stake"] = np.where(listed, stakes[np.where(listed, out["index"], 0)], np.nan)
    out["stake_share"] = out["stake"] / total if total > 0 else out["stake"].copy()
    out["own_share"] = stakes / total if total > 0 else np.full(m, np.nan)
    return out


def assert_same_bits(got: CrowdNeighbours, expected: dict[str, np.ndarray]) -> None:
    for name in FIELDS:
        a, b = np.asarray(getattr(got, name)), np.asarray(expected[name])
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert a.astype(np.float64).tobytes() == b.astype(np.float64).tobytes(), name  # NaN where NaN, same signs


def near_tie_round(seed: int, n_models: int = 90, n_ids: int = 601) -> tuple[np.ndarray, np.ndarray]:
    """Correlations spread over [0, 0.95] with families of near-copies: a staker's row with one
    or two pairs of neighbouring ranks swapped in the middle, correlated with it and with each
    other within ~1e-7 (below float32's resolution at 1), exact copies (ties at key 1e12),
    rounded rows (ties within a row), a constant row and zero stakes."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n_ids)
    loading = rng.uniform(0, 0.95, size=n_models)[:, np.newaxis]
    preds = loading * signal + np.sqrt(1 - loading**2) * rng.normal(size=(n_models, n_ids))
    for family in range(3):
        source = 10 * family
        middle = np.argsort(preds[source])[n_ids // 2 - 4 : n_ids // 2 + 4]
        for member in range(1, 6):
            row = preds[source].copy()
            a, b = middle[member - 1], middle[member]
            row[[a, b]] = row[[b, a]]
            if member % 2 == 0:
                c, d = middle[(member + 2) % 8], middle[(member + 3) % 8]
                row[[c, d]] = row[[d, c]]
            preds[source + member] = row
        preds[source + 6] = preds[source]  # an exact copy
    preds[-20:-12] = np.round(preds[-20:-12], 1)
    preds[-3] = 1.0
    stakes = rng.lognormal(3.0, 1.5, size=n_models)
    stakes[rng.random(n_models) < 0.3] = 0.0
    stakes[[0, 1, 2, 6, 10, 12, 13, 16]] = [5.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0]  # families staked
    return preds, stakes


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_same_bits_as_the_reference_with_near_ties(seed: int, k: int) -> None:
    """Near-copies a float32 product could not tell apart, exact copies and ties: the same bits."""
    preds, stakes = near_tie_round(seed)
    assert_same_bits(crowd_neighbours(preds, stakes, k=k, threshold=0.5), reference(preds, stakes, k, 0.5))


@pytest.mark.parametrize("seed", range(3))
def test_same_bits_with_the_threshold_on_a_correlation(seed: int) -> None:
    """Thresholds at a near-copy's correlation and 1e-12 either side: pairs sit on the crowd's edge."""
    preds, stakes = near_tie_round(seed)
    expected = reference(preds, stakes, 5, 0.5)
    near = expected["correlation"][1, 1]  # a near-copy's second nearest: correlated ~1 − 1e-6
    assert 0.99 < near < 1.0
    for threshold in (near, near - 1e-12, near + 1e-12, np.round(near, 12), 1.0):
        threshold = float(min(threshold, 1.0))
        got = crowd_neighbours(preds, stakes, k=5, threshold=threshold)
        assert_same_bits(got, reference(preds, stakes, 5, threshold))
    assert len({int(crowd_neighbours(preds, stakes, k=5, threshold=t).crowd_size[1]) for t in (near - 1e-12, near + 1e-12)}) == 2


@pytest.mark.parametrize("block_rows", [1, 16, 40, 10_000])
def test_same_bits_across_block_sizes(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    """Tiles of 16 models, blocks of 1 to all tiles (the helper thread and buffers in turn): the reference's bits."""
    monkeypatch.setattr(neighbours_module, "TILE_ROWS", 16)
    preds, stakes = near_tie_round(4)
    expected = reference(preds, stakes, 4, 0.3)
    assert_same_bits(crowd_neighbours(preds, stakes, k=4, threshold=0.3, block_rows=block_rows), expected)


@pytest.mark.parametrize("n_stakers", [1, 2, 3, 7, 41])
def test_same_bits_with_few_stakers(n_stakers: int) -> None:
    """Fewer stakers than k, or than the runs the k-th value is bounded with: the reference's bits."""
    preds, _ = near_tie_round(5, n_models=50, n_ids=203)
    stakes = np.zeros(len(preds))
    stakes[np.random.default_rng(n_stakers).choice(len(preds), n_stakers, replace=False)] = 1.0 + np.arange(n_stakers)
    for k in (1, 3, 10):
        assert_same_bits(crowd_neighbours(preds, stakes, k=k, threshold=0.2), reference(preds, stakes, k, 0.2))


@pytest.mark.parametrize("seed", range(20))
def test_kth_floor_is_below_the_kth_value(seed: int) -> None:
    """The floor is at most every row's k-th largest value minus the key margin, above −inf, and
    −max float where fewer than k values are defined: ties, −inf columns, any width."""
    rng = np.random.default_rng(seed)
    n_rows, n_columns = 30, int(rng.integers(1, 300))
    corr = np.round(rng.uniform(-1, 1, size=(n_rows, n_columns)), int(rng.integers(1, 4)))
    corr[rng.random((n_rows, n_columns)) < rng.uniform(0, 0.9)] = -np.inf
    for width in sorted({1, 2, int(rng.integers(1, n_columns + 1)), n_columns}):
        floor = neighbours_module._kth_floor(corr, width)
        kth = np.sort(corr, axis=1)[:, n_columns - width]
        assert (floor > -np.inf).all()
        defined = kth > -np.inf
        assert (floor[defined] <= kth[defined] - neighbours_module._KEY_MARGIN).all()
        assert (floor[~defined] == -np.finfo(np.float64).max).all()
