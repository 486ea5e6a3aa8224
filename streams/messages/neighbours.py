"""Who crowds each model: the ``neighbours`` messages of a closed round and its crowding-tax figures (pure).

- :func:`neighbour_messages` — one message per model of the round from
  :func:`scoring.crowd_neighbours` (stakes frozen at close), published at close;
- :func:`tax_figures` — per staker, from :func:`scoring.crowd_tax` on the round's final targets:
  today's MMC (contribution), the same without its nearest stakers' stake, and the difference.

Deterministic bytes: the same inputs give the same message in every process. A correlation is
a float64 dot product whose last bits can change with the BLAS build and its thread count, so
correlations are published at :data:`CORRELATION_DECIMALS` decimals (the scoring core orders and
thresholds them at 12, so the order and the crowd never depend on those bits); shares, stakes and
the tax figures at :data:`SIGNIFICANT_DIGITS` significant digits. Undefined figures are ``null``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scoring.neighbours import CrowdNeighbours, CrowdTax

#: Decimals of a published correlation (a BLAS product's last bits never reach them).
CORRELATION_DECIMALS = 10
#: Significant digits of the other published figures.
SIGNIFICANT_DIGITS = 12


def correlation_value(x: float) -> float | None:
    """A correlation at :data:`CORRELATION_DECIMALS` decimals (None when undefined; never −0.0)."""
    if not math.isfinite(x):
        return None
    return round(float(x), CORRELATION_DECIMALS) + 0.0


def figure(x: float) -> float | None:
    """A figure at :data:`SIGNIFICANT_DIGITS` significant digits (None when undefined; never −0.0)."""
    if not math.isfinite(x):
        return None
    return float(f"{float(x):.{SIGNIFICANT_DIGITS}g}") + 0.0


def neighbour_messages(round_number: int, models: list[str], neighbours: CrowdNeighbours) -> list[dict[str, Any]]:
    """The ``neighbours`` message of every model of the round, in ``models`` order.

    Arguments:
        round_number: the round.
        models: the round's models, in the rows' order.
        neighbours: :func:`scoring.crowd_neighbours` of the round's rows and frozen stakes.
    """
    out = []
    for i, model in enumerate(models):
        listed = [
            {
                "model": models[n.index],
                "correlation": correlation_value(n.correlation),
                "stake": figure(n.stake),
                "stake_share": figure(n.stake_share),
            }
            for n in neighbours.of(i)
        ]
        out.append(
            {
                "round": round_number,
                "model": model,
                "k": neighbours.k,
                "threshold": neighbours.threshold,
                "stake": figure(float(neighbours.stakes[i])),
                "neighbours": listed,
                "crowd_share": figure(float(neighbours.crowd_share[i])),
                "crowd_size": int(neighbours.crowd_size[i]),
                "own_share": figure(float(neighbours.own_share[i])),
                "compared_share": figure(neighbours.compared_share),
            }
        )
    return out


def tax_figures(models: list[str], tax: CrowdTax) -> dict[str, dict[str, Any]]:
    """Per model scored by ``tax`` (the round's stakers by default): its contribution, the
    contribution without its crowd, the tax, the share of stake removed and why (``status``)."""
    out: dict[str, dict[str, Any]] = {}
    for j, row in enumerate(np.asarray(tax.models).tolist()):
        out[models[row]] = {
            "contribution": figure(float(tax.contribution[j])),
            "contribution_without_crowd": figure(float(tax.contribution_without_crowd[j])),
            "tax": figure(float(tax.tax[j])),
            "removed_share": figure(float(tax.removed_share[j])),
            "status": str(tax.status[j]),
        }
    return out
