"""The report built from the topics (``mmc report``, ``mmc demo``), and its headline for the terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from scoring.crowding import METRIC_LABELS, CrowdingReport, crowding_report
from streams.settings import Settings
from streams.tools.report.headline import LABEL_2020, HeadlineRow, headline, headline_data
from streams.tools.report.inputs import MechanicalPart, alert_rates, mechanical_part, read_alerts, read_score_messages, score_table_from_messages
from streams.tools.report.leaderboard import leaderboard_rows
from streams.tools.report.page import ReportFiles, render_report


@dataclass(frozen=True)
class BuiltReport:
    """A report built from the topics: the files, the figures and the inputs' size."""

    files: ReportFiles
    headline: list[HeadlineRow]
    report: CrowdingReport
    messages_read: int
    mechanical: MechanicalPart = field(default_factory=MechanicalPart)
    #: Alerts per 100 model-rounds by kind and by kind.stage (:func:`alert_rates`).
    alert_rates: dict[str, float] = field(default_factory=dict)
    #: Every model's standing over its latest window, best first (:func:`leaderboard_rows`).
    leaderboard: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headline_data(self) -> dict[str, float | int | None]:
        """The numbers written to ``headline.json``."""
        return headline_data(self.report, self.mechanical, self.alert_rates)


async def build_report(settings: Settings, out_dir: str | Path) -> BuiltReport:
    """Read ``scores`` (and the ``crowding_tax`` alerts, for the mechanical part) up to their
    current ends, compute the report (today's MMC, 2020 beside it), render it to ``out_dir``."""
    latest = await read_score_messages(settings)
    table = score_table_from_messages(latest)
    report = crowding_report(table)
    alerts = await read_alerts(settings)
    mechanical = mechanical_part(alerts)
    rates = alert_rates(alerts, report.n_observations)
    files = render_report(report, table, out_dir, mechanical=mechanical, rates=rates)
    board = leaderboard_rows(settings, latest)
    return BuiltReport(files, headline(report, mechanical), report, latest.read, mechanical, rates, board)


def alert_rates_line(built: BuiltReport) -> str:
    """One line: alerts per 100 model-rounds by kind, each with its stages."""
    rates = built.alert_rates
    kinds = sorted(k for k in rates if "." not in k)
    if not kinds:
        return "alerts per 100 model-rounds: none fired"
    parts = []
    for kind in kinds:
        stages = ", ".join(f"{k.split('.', 1)[1]} {v:.2f}" for k, v in rates.items() if k.startswith(f"{kind}."))
        parts.append(f"{kind} {rates[kind]:.2f}" + (f" ({stages})" if stages else ""))
    return "alerts per 100 model-rounds: " + "; ".join(parts)


def headline_table(built: BuiltReport, title: str = "crowding headline") -> Table:
    """The headline figures beside the seed article's, as a rich table for the terminal."""
    table = Table(title=f"{title} ({built.report.n_observations:,} model-rounds)")
    table.add_column("figure")
    table.add_column(f"this stream: {METRIC_LABELS[built.report.metric]}", justify="right")
    table.add_column(LABEL_2020, justify="right")
    table.add_column("seed article", justify="right", style="dim")
    for row in built.headline:
        table.add_row(row.label, row.value, row.value_2020, row.reference)
    return table
