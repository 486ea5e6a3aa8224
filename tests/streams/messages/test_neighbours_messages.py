"""The ``neighbours`` messages and crowding-tax figures: schema-valid, deterministic bytes, the scoring core's values."""

from __future__ import annotations

import numpy as np

import scoring
from streams.messages.neighbours import CORRELATION_DECIMALS, correlation_value, figure, neighbour_messages, tax_figures
from streams.messages.outputs import encode, json_output
from streams.messages.schemas import validate_output

MODELS = ["a", "b", "c", "d", "e"]


def _round(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=60)
    preds = np.stack([base + rng.normal(scale=s, size=60) for s in (0.1, 0.2, 1.0, 3.0, 0.15)])
    stakes = np.array([10.0, 5.0, 0.0, 2.5, 1.0])
    return preds, stakes


def test_messages_match_crowd_neighbours_and_validate() -> None:
    """One schema-valid message per model, in row order, carrying crowd_neighbours' figures (correlations at 10 decimals)."""
    preds, stakes = _round()
    found = scoring.crowd_neighbours(preds, stakes, k=2, threshold=0.8)
    messages = neighbour_messages(7, MODELS, found)
    assert [m["model"] for m in messages] == MODELS
    for i, msg in enumerate(messages):
        validate_output("neighbours", msg)
        assert msg["round"] == 7 and msg["k"] == 2 and msg["threshold"] == 0.8
        listed = found.of(i, MODELS)
        assert [n["model"] for n in msg["neighbours"]] == [n.model for n in listed]
        assert [n["correlation"] for n in msg["neighbours"]] == [round(n.correlation, CORRELATION_DECIMALS) for n in listed]
        assert msg["crowd_size"] == int(found.crowd_size[i])
        assert np.isclose(msg["crowd_share"], found.crowd_share[i], rtol=1e-11, atol=0)
        assert msg["model"] not in [n["model"] for n in msg["neighbours"]]
    assert messages[2]["stake"] == 0.0 and messages[2]["own_share"] == 0.0  # a model without stake is listed too


def test_same_inputs_give_the_same_bytes() -> None:
    """Two computations (another block size, a copy of the inputs) give byte-identical records."""
    preds, stakes = _round(1)
    first = [json_output("neighbours", m["model"], m, 123) for m in neighbour_messages(3, MODELS, scoring.crowd_neighbours(preds, stakes))]
    again = [
        json_output("neighbours", m["model"], m, 123)
        for m in neighbour_messages(3, MODELS, scoring.crowd_neighbours(preds.copy(), stakes.copy(), block_rows=1))
    ]
    assert first == again
    assert first[0].key == b"a" and first[0].value == encode(neighbour_messages(3, MODELS, scoring.crowd_neighbours(preds, stakes))[0])


def test_undefined_figures_are_null_and_rounding_is_stable() -> None:
    """NaN is null; rounding never writes −0.0; a correlation's last bits do not reach its 10 decimals."""
    assert correlation_value(float("nan")) is None and figure(float("inf")) is None
    assert str(correlation_value(-1e-13)) == "0.0" and str(figure(-0.0)) == "0.0"
    x = 0.123456789012345
    assert correlation_value(x) == correlation_value(np.nextafter(x, 1.0)) == 0.123456789
    assert figure(1 / 3) == 0.333333333333
    preds = np.ones((3, 10))  # nobody has stake and every row is constant
    msg = neighbour_messages(1, ["a", "b", "c"], scoring.crowd_neighbours(preds, np.zeros(3)))[0]
    validate_output("neighbours", msg)
    assert msg["crowd_share"] is None and msg["own_share"] is None and msg["neighbours"] == []


def test_tax_figures_are_crowd_tax_per_staker() -> None:
    """The tax figures name each staker with crowd_tax's contribution, counterfactual and tax."""
    preds, stakes = _round(2)
    targets = np.random.default_rng(5).choice([0, 0.25, 0.5, 0.75, 1.0], size=60)
    found = scoring.crowd_neighbours(preds, stakes, k=1)
    tax = scoring.crowd_tax(preds, targets, found)
    figures = tax_figures(MODELS, tax)
    assert list(figures) == ["a", "b", "d", "e"]  # the stakers, in row order
    for j, model in enumerate(figures):
        f = figures[model]
        assert np.isclose(f["tax"], tax.tax[j], rtol=1e-11) and f["status"] == str(tax.status[j])
        assert np.isclose(f["contribution"] - f["contribution_without_crowd"], f["tax"], rtol=1e-9, atol=1e-15)
