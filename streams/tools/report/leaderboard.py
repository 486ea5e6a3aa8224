"""The leaderboard table of ``mmc report``: each model's standing over its latest window, from the scores read.

The rows are the worker's own (:func:`streams.messages.resolution.standing` over each model's
latest update per round), so they equal the ``mmc.leaderboard`` rows for the same scores; their
``as_of`` is the model's latest round's update. Order: mean payout score descending (models
without one last), then model id ascending.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from streams.messages.resolution import history_entry, standing, standing_score
from streams.settings import Settings
from streams.tools.report.inputs import LatestScores


def leaderboard_rows(settings: Settings, latest: LatestScores) -> list[dict[str, Any]]:
    """Every model's standing with its ``rank`` (1 = best mean payout score)."""
    histories: dict[str, dict[int, dict[str, Any]]] = {}
    for (round_number, model), message in sorted(latest.latest.items()):
        histories.setdefault(model, {})[round_number] = history_entry(message)
    rows = []
    for model, history in histories.items():
        last = history[max(history)]
        as_of = {"round": last["round"], "day": last["day"], "final": last["final"]}
        rows.append(standing(settings, model, history, as_of))
    rows.sort(key=lambda row: (-standing_score(row), row["model"]))
    return [{**row, "rank": rank} for rank, row in enumerate(rows, start=1)]


def _fixed(value: float | None, digits: int, sign: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def leaderboard_table(rows: list[dict[str, Any]], top: int = 20) -> Table:
    """The first ``top`` rows as a rich table: the payout score's mean, spread, Sharpe, drawdown,
    positive rounds and what the stake earned (Σ stake × payout, NMR), then the metric means."""
    window = rows[0]["window"] if rows else "–"
    table = Table(title=f"leaderboard: latest {window} rounds per model ({len(rows)} models, top {min(top, len(rows))})")
    for name in ("#", "model", "payout", "std", "Sharpe", "max DD", "positive", "paid NMR", "CORR", "MMC", "CWMM", "stake"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in rows[:top]:
        table.add_row(
            str(row["rank"]),
            row["model"],
            _fixed(row["payout_mean"], 4),
            _fixed(row["payout_std"], 4, sign=False),
            _fixed(row["payout_sharpe"], 2),
            _fixed(row["payout_max_drawdown"], 4, sign=False),
            f"{row['positive_rounds']}/{row['rounds']}",
            _fixed(row["stake_payout"], 2),
            _fixed(row["corr_mean"], 4),
            _fixed(row["contribution_mean"], 4),
            _fixed(row["corr_w_mm_mean"], 3, sign=False),
            f"{row['stake']:,.2f}",
        )
    return table
