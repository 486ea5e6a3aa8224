"""``mmc whatif``: a model's recent scores had its stake been k× or X — the crowding tax as a number.

For each of the model's latest scored rounds, the round's prepared rows, frozen stakes and
latest targets are read from Redis and :func:`scoring.stake_counterfactual` re-scores the
round with only that model's stake changed — multiplied by k, or set to X (``--stake``, the
only question a model without stake can ask) — everything else equal. Both sides use the
deployment's bootstrap settings (``MMC_MMC_DRAWS``, ``MMC_MMC_FRACTION``, the seed salt), so
the "actual" side is the MMC the service published.

The event study's mechanical part. The crowding report reads only the ``scores`` topic,
which holds no predictions, so it cannot re-score a round; the per-event mechanical part
(the MMC a model would have had at its old stake) is computed here, where the rounds'
predictions are at hand: after a jump from stake S, ``mmc whatif MODEL --stake S`` re-scores
the model's latest rounds at S, and :func:`mechanical` gives the mean ``actual − at S``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich import box
from rich.table import Table

import scoring
from scoring.counterfactual import MechanicalPart, mechanical_part
from streams.errors import MmcStreamError, UnknownModel
from streams.messages.records import MODEL_ID
from streams.settings import Settings
from streams.state import RedisState
from streams.state.client import redis_client


@dataclass(frozen=True)
class WhatIfRow:
    round: int
    counterfactual: scoring.StakeCounterfactual


async def stake_whatif(settings: Settings, model: str, multiplier: float | None, rounds: int = 5, stake: float | None = None) -> list[WhatIfRow]:
    """The counterfactual for ``model`` over its latest ``rounds`` scored rounds (oldest first).

    Give exactly one of ``multiplier`` (stake × k) and ``stake`` (stake set to X).
    """
    if (multiplier is None) == (stake is None):
        raise MmcStreamError("give exactly one of a stake multiplier and a stake")
    if not MODEL_ID.fullmatch(model):
        raise UnknownModel(f"{model[:80]!r} is not a valid model id")
    state = RedisState(redis_client(settings), settings.state_namespace)
    try:
        history = (await state.get_histories([model]))[model]
        if not history:
            raise UnknownModel(f"model {model!r} has no scored round")
        out = []
        for r in sorted(history)[-rounds:]:
            info = await state.get_round(r)
            targets = await state.get_targets(r, info.n_ids) if info is not None else None
            if info is None or targets is None or info.close_ts is None:
                continue
            rows = await state.get_submissions(r)
            models = sorted(rows)
            if model not in rows:
                continue
            prepared = scoring.PreparedRound.stack([rows[m].submission(info.n_ids) for m in models])
            stakes = await state.stakes_at(models, info.close_ts, r)
            try:
                cf = scoring.stake_counterfactual(
                    prepared,
                    stakes,
                    targets,
                    models.index(model),
                    multiplier,
                    round=r,
                    salt=settings.seed_salt,
                    max_missing_ratio=settings.max_missing_ratio,
                    stake=stake,
                    draws=settings.mmc_draws,
                    fraction=settings.mmc_fraction,
                )
            except scoring.ScoringError as exc:
                raise MmcStreamError(f"round {r}: {exc}") from None
            out.append(WhatIfRow(r, cf))
        return out
    finally:
        await state.close()


def mean_change(rows: list[WhatIfRow]) -> tuple[float, float]:
    """Mean change of MMC and of contribution over the rounds (NaN-aware)."""
    mmc = np.array([r.counterfactual.mmc_change for r in rows], dtype=float)
    contribution = np.array([r.counterfactual.contribution_change for r in rows], dtype=float)
    return float(np.nanmean(mmc)) if mmc.size else float("nan"), float(np.nanmean(contribution)) if contribution.size else float("nan")


def mechanical(rows: list[WhatIfRow]) -> MechanicalPart:
    """Mean ``actual − what-if`` over the rounds: at the stake before a jump, its mechanical part."""
    return mechanical_part(r.counterfactual for r in rows)


def whatif_table(model: str, rows: list[WhatIfRow], change: str) -> Table:
    """The rounds as a table that fits 80 columns: per round the actual stake, then each score
    actual and at the what-if stake (``change`` names it, in the title: ``stake × 5``)."""
    table = Table(
        title=f"{model}: {change}, everything else equal",
        caption="MMC: today's (contribution); MMC 2020: the bootstrap definition; CWMM: correlation with the meta model",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 1),
        collapse_padding=True,
    )
    table.add_column("round", justify="right", no_wrap=True)
    table.add_column("stake", justify="right", no_wrap=True)
    for name in ("MMC", "MMC 2020", "CWMM"):
        table.add_column(f"{name}\nactual", justify="right", no_wrap=True)
        table.add_column(f"{name}\nwhat-if", justify="right", no_wrap=True)
    for row in rows:
        cf = row.counterfactual
        table.add_row(
            str(row.round),
            f"{cf.stake:,.2f}",
            f"{cf.contribution:+.4f}",
            f"{cf.contribution_whatif:+.4f}",
            f"{cf.mmc:+.4f}",
            f"{cf.mmc_whatif:+.4f}",
            f"{cf.corr_w_mm:.3f}",
            f"{cf.corr_w_mm_whatif:.3f}",
        )
    return table
