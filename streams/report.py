"""The crowding report: the seed article's four charts and headline figures, from ``mmc.scores``.

1. Read the ``scores`` topic from the beginning until caught up with the end offsets it had
   at start (:func:`read_score_messages`);
2. keep each model's latest update per round — the ``final`` one, else the highest ``day``
   (:class:`LatestScores`) — and turn them into a :class:`scoring.crowding.ScoreTable`
   (:func:`score_table_from_messages`);
3. :func:`scoring.crowding.crowding_report` computes every DESIGN §2.2 figure;
4. :func:`render_report` draws the charts (matplotlib, Agg, no pyplot state) and writes
   ``report.html`` beside the PNGs; :func:`headline` lists the figures next to the article's.

Which MMC: the charts and the headline use the field ``mmc`` — the 2020 bootstrap MMC the seed
article measured (DESIGN §2.1). The same analysis on ``contribution`` (today's MMC, the one
payouts use) is computed beside it and shown as a second column of the headline table. The
``mmc.crowding`` topic is not read: its per-round figures come from the same scores, and the
report recomputes everything across rounds from the scores themselves.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray
from rich.table import Table

from scoring.crowding import CrowdingReport, ScoreTable, crowding_report, decile_of
from streams.settings import Settings

Metric = Literal["mmc", "contribution"]
#: The MMC the charts and headline use: the 2020 MMC, as in the seed article.
HEADLINE_METRIC: Metric = "mmc"

#: File names written by :func:`render_report` (inside ``out_dir``).
CHART_FILES: dict[str, str] = {
    "cwmm_by_stake": "cwmm_by_stake.png",
    "mmc_by_cwmm_decile": "mmc_by_cwmm_decile.png",
    "cwmm_trend": "cwmm_trend.png",
    "stake_jump_trajectory": "stake_jump_trajectory.png",
}
HTML_FILE = "report.html"

_DPI = 110
_SIZE = (7.0, 4.4)


# --------------------------------------------------------------------------- scores → table


@dataclass
class LatestScores:
    """Each model's latest score update per round, from a stream of ``mmc.scores`` values.

    An update replaces the kept one when it is ``final`` and the kept one is not, or when
    both agree on ``final`` and its ``day`` is at least as high (a redelivered or replayed
    update of the same day replaces its twin, so the last one read wins).
    """

    latest: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    read: int = 0

    def add(self, message: dict[str, Any]) -> None:
        """Take one score value into account.

        Raises:
            ValueError: the value is not a score message (no integer round and day, string
                model, boolean final).
        """
        try:
            round_number, model, day, final = (
                message["round"],
                message["model"],
                message["day"],
                message["final"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a score message (missing {exc}): {message!r:.200}") from None
        if not (isinstance(round_number, int) and isinstance(model, str) and isinstance(day, int)):
            raise ValueError(f"not a score message (round/model/day types): {message!r:.200}")
        self.read += 1
        key = (round_number, model)
        kept = self.latest.get(key)
        if kept is None or (bool(final), day) >= (bool(kept["final"]), kept["day"]):
            self.latest[key] = message

    def messages(self) -> list[dict[str, Any]]:
        """The kept updates, by round then model."""
        return [self.latest[key] for key in sorted(self.latest)]


def _number(value: Any) -> float:
    """A score field as float: ``None`` (an undefined metric) becomes NaN."""
    return math.nan if value is None else float(value)


def score_table_from_messages(
    messages: Iterable[dict[str, Any]] | LatestScores, metric: Metric = HEADLINE_METRIC
) -> ScoreTable:
    """A :class:`ScoreTable` of each model's latest update per round.

    Arguments:
        messages: ``mmc.scores`` values (dicts) in the order they were read, or a
            :class:`LatestScores` already holding them.
        metric: which field fills the table's MMC column: ``"mmc"`` (the 2020 MMC, default)
            or ``"contribution"`` (today's MMC).

    Returns:
        the table: round, model, stake, ``corr_w_mm`` and the chosen metric (NaN for null).
    """
    if metric not in ("mmc", "contribution"):
        raise ValueError(f"metric must be 'mmc' or 'contribution', got {metric!r}")
    latest = messages if isinstance(messages, LatestScores) else _collect(messages)
    rows = latest.messages()
    return ScoreTable.from_arrays(
        rounds=np.array([m["round"] for m in rows], dtype=np.int64),
        models=np.array([m["model"] for m in rows], dtype=object),
        stakes=np.array([_number(m.get("stake")) for m in rows], dtype=np.float64),
        corr_w_mm=np.array([_number(m.get("corr_w_mm")) for m in rows], dtype=np.float64),
        mmc=np.array([_number(m.get(metric)) for m in rows], dtype=np.float64),
    )


def _collect(messages: Iterable[dict[str, Any]]) -> LatestScores:
    latest = LatestScores()
    for message in messages:
        latest.add(message)
    return latest


async def read_score_messages(settings: Settings) -> LatestScores:
    """Every score update on ``settings.topic("scores")`` up to its end at call time, reduced
    to the latest per (round, model)."""
    from streams.tail import tail

    latest = LatestScores()
    async for message in tail(settings, "scores", from_beginning=True, until_end=True):
        if message.is_json and isinstance(message.value, dict):
            latest.add(message.value)
    return latest


# --------------------------------------------------------------------------- headline


@dataclass(frozen=True)
class HeadlineRow:
    """One figure: this stream's value (2020 MMC and contribution) beside the article's."""

    label: str
    value: str
    value_contribution: str
    reference: str


def _fmt(x: float, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:+.0f}%"


def _fitted_ends(
    rounds: NDArray[np.int64], values: NDArray[np.float64], slope: float
) -> tuple[float, float]:
    """The least-squares line through ``values`` at the first and last round (NaN if undefined)."""
    ok = np.isfinite(values)
    if ok.sum() < 2 or not math.isfinite(slope):
        return math.nan, math.nan
    r, y = rounds[ok].astype(np.float64), values[ok]
    centre, mean = r.mean(), y.mean()
    return mean + slope * (r[0] - centre), mean + slope * (r[-1] - centre)


def headline(
    report: CrowdingReport, contribution_report: CrowdingReport | None = None
) -> list[HeadlineRow]:
    """The headline figures of ``report`` beside the seed article's (DESIGN §2.2).

    Figures that involve MMC are given for ``report`` (built on the 2020 MMC) and, when
    given, ``contribution_report`` (the same table with ``contribution``); the others do not
    depend on the MMC column and are repeated. Trends are the least-squares line's values at
    the first and last round (the per-round series are noisy).
    """
    other = contribution_report or report

    def both(get: Callable[[CrowdingReport], str]) -> tuple[str, str]:
        """A figure that uses the MMC column: with the 2020 MMC and with contribution."""
        return get(report), (get(other) if contribution_report else "—")

    def same(text: str) -> tuple[str, str]:
        """A figure that does not use the MMC column."""
        return text, text

    def event_means(r: CrowdingReport) -> str:
        before, after = r.events.mmc_before, r.events.mmc_after
        if not (np.isfinite(before).any() and np.isfinite(after).any()):
            return "—"
        return f"{_fmt(float(np.nanmean(before)), 4)} → {_fmt(float(np.nanmean(after)), 4)}"

    def steepest(r: CrowdingReport) -> str:
        into = r.cwmm_deciles.steepest_drop_into
        return str(into + 1) if into >= 0 else "—"

    trend = report.trend
    w0, w1 = _fitted_ends(trend.round, trend.weighted_mean, trend.weighted_mean_slope)
    m0, m1 = _fitted_ends(trend.round, trend.median, trend.median_slope)
    conc = report.concentration
    effective = float(conc.effective_number[-1]) if conc.effective_number.size else math.nan
    rows = [
        ("observations (model-rounds)", *same(str(report.n_observations)), "≈ 30,000"),
        ("rounds · models", *same(f"{report.n_rounds} · {report.n_models}"), "≈ 600 rounds"),
        (
            "median corr_w_mm, top stake decile",
            *same(_fmt(report.stake_deciles.top_median)),
            "≈ 0.45",
        ),
        (
            "median corr_w_mm, bottom stake decile",
            *same(_fmt(report.stake_deciles.bottom_median)),
            "≈ 0.28",
        ),
        (
            "mean MMC, lowest corr_w_mm decile",
            *both(lambda r: _fmt(float(r.cwmm_deciles.mean_mmc[0]), 4)),
            "≈ 0.012",
        ),
        (
            "mean MMC, highest corr_w_mm decile",
            *both(lambda r: _fmt(float(r.cwmm_deciles.mean_mmc[-1]), 4)),
            "≈ −0.003",
        ),
        ("steepest MMC drop into corr_w_mm decile", *both(steepest), "7–10 (1–5 flat)"),
        (
            "stake-weighted mean corr_w_mm, first → last round",
            *same(f"{_fmt(w0)} → {_fmt(w1)}"),
            "0.32 → 0.46",
        ),
        (
            "unweighted median corr_w_mm, first → last round",
            *same(f"{_fmt(m0)} → {_fmt(m1)}"),
            "0.25 → 0.33",
        ),
        ("≥5× stake increases (events)", *same(str(report.events.n_events)), "—"),
        (
            "median MMC change after a ≥5× stake increase",
            *both(lambda r: _pct(r.events.median_relative_change)),
            "−35 … −40%",
        ),
        ("mean MMC before → after a ≥5× stake increase", *both(event_means), "0.010 → 0.006"),
        ("effective number of models (last round)", *same(_fmt(effective, 1)), "—"),
    ]
    return [HeadlineRow(*row) for row in rows]


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`render_report` wrote: the HTML page and the four charts by name."""

    html: Path
    charts: dict[str, Path]

    @property
    def paths(self) -> list[Path]:
        """Every file written, the HTML first."""
        return [self.html, *self.charts.values()]


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _no_data(axes: Axes) -> None:
    axes.text(
        0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="grey"
    )


def _chart_cwmm_by_stake(report: CrowdingReport, table: ScoreTable, path: Path) -> None:
    """(1) corr_w_mm vs stake (log x), stakers only, with the stake-decile medians overlaid."""
    figure, axes = _figure()
    keep = ~np.isnan(table.corr_w_mm) & (table.stakes > 0)
    stakes, cwmm = table.stakes[keep], table.corr_w_mm[keep]
    if stakes.size:
        axes.scatter(
            stakes, cwmm, s=4, alpha=0.2, color="tab:blue", linewidths=0, label="model-rounds"
        )
        deciles = decile_of(stakes)
        centres = [
            float(np.median(stakes[deciles == d])) if (deciles == d).any() else math.nan
            for d in range(10)
        ]
        medians = report.stake_deciles.median_corr_w_mm
        axes.plot(centres, medians, "o-", color="tab:red", label="median per stake decile")
        axes.set_xscale("log")
        axes.legend(loc="lower right", fontsize="small")
    else:
        _no_data(axes)
    axes.set_xlabel("stake (NMR, log scale)")
    axes.set_ylabel("corr_w_mm")
    axes.set_title(
        f"corr_w_mm vs stake — top stake decile {_fmt(report.stake_deciles.top_median)}, "
        f"bottom {_fmt(report.stake_deciles.bottom_median)}",
        fontsize="medium",
    )
    figure.savefig(path)


def _chart_mmc_by_cwmm_decile(report: CrowdingReport, path: Path) -> None:
    """(2) mean MMC per corr_w_mm decile, bars with their counts."""
    figure, axes = _figure()
    deciles = report.cwmm_deciles
    if deciles.count.sum():
        x = deciles.decile + 1
        heights = np.nan_to_num(deciles.mean_mmc)
        colors = ["tab:green" if h >= 0 else "tab:red" for h in heights]
        bars = axes.bar(x, heights, color=colors)
        axes.bar_label(
            bars, labels=[f"n={c}" for c in deciles.count], fontsize="x-small", padding=2
        )
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xticks(x)
    else:
        _no_data(axes)
    axes.set_xlabel("corr_w_mm decile (1 = least like the meta model)")
    axes.set_ylabel(f"mean {HEADLINE_METRIC.upper()} (2020)")
    axes.set_title("Mean MMC by correlation-with-meta-model decile", fontsize="medium")
    figure.savefig(path)


def _chart_cwmm_trend(report: CrowdingReport, path: Path) -> None:
    """(3) stake-weighted mean vs unweighted median corr_w_mm per round."""
    figure, axes = _figure()
    trend = report.trend
    if np.isfinite(trend.median).any():
        axes.plot(
            trend.round, trend.weighted_mean, "-", color="tab:red", label="stake-weighted mean"
        )
        axes.plot(trend.round, trend.median, "-", color="tab:blue", label="unweighted median")
        axes.legend(fontsize="small")
    else:
        _no_data(axes)
    axes.set_xlabel("round")
    axes.set_ylabel("corr_w_mm")
    axes.set_title(
        f"Crowding trend — slopes/round: weighted {_fmt(trend.weighted_mean_slope, 4)}, "
        f"median {_fmt(trend.median_slope, 4)}",
        fontsize="medium",
    )
    figure.savefig(path)


def _chart_stake_jump_trajectory(report: CrowdingReport, path: Path) -> None:
    """(4) mean MMC by round relative to a ≥5× stake increase, with the event counts."""
    figure, axes = _figure()
    events = report.events
    if events.n_events:
        counts = axes.twinx()
        counts.bar(events.trajectory_offset, events.trajectory_count, color="lightgrey", alpha=0.6)
        counts.set_ylabel("events with that round", color="grey")
        axes.set_zorder(counts.get_zorder() + 1)
        axes.patch.set_visible(False)
        axes.plot(
            events.trajectory_offset,
            events.trajectory_mean_mmc,
            "o-",
            color="tab:purple",
            markersize=3,
        )
        axes.axvline(0, color="black", linestyle="--", linewidth=0.8)
        axes.axhline(0, color="black", linewidth=0.5)
    else:
        _no_data(axes)
    axes.set_xlabel(
        f"rounds relative to a ≥{events.ratio:g}× stake increase (0 = first round at the new stake)"
    )
    axes.set_ylabel("mean MMC (2020)")
    axes.set_title(
        f"MMC around stake jumps — {events.n_events} events, median change "
        f"{_pct(events.median_relative_change)}",
        fontsize="medium",
    )
    figure.savefig(path)


def render_report(
    report: CrowdingReport,
    table: ScoreTable,
    out_dir: str | Path,
    contribution_report: CrowdingReport | None = None,
    title: str = "mmc-stream crowding report",
) -> ReportFiles:
    """Write the four charts (PNG) and ``report.html`` (headline table + charts) to ``out_dir``.

    Arguments:
        report: :func:`scoring.crowding.crowding_report` of ``table`` (2020 MMC).
        table: the score table the report was computed from (the scatter plots its rows).
        out_dir: directory to write to (created if missing; files of the same names replaced).
        contribution_report: the same report on ``contribution``, for the headline's second column.
        title: the page title.

    Returns:
        :class:`ReportFiles` with the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts = {name: out / filename for name, filename in CHART_FILES.items()}
    _chart_cwmm_by_stake(report, table, charts["cwmm_by_stake"])
    _chart_mmc_by_cwmm_decile(report, charts["mmc_by_cwmm_decile"])
    _chart_cwmm_trend(report, charts["cwmm_trend"])
    _chart_stake_jump_trajectory(report, charts["stake_jump_trajectory"])
    page = out / HTML_FILE
    page.write_text(_html(title, headline(report, contribution_report), charts), encoding="utf-8")
    return ReportFiles(html=page, charts=charts)


_CAPTIONS = {
    "cwmm_by_stake": "1. corr_w_mm vs stake (stakers; red: median per stake decile).",
    "mmc_by_cwmm_decile": "2. Mean MMC (2020) per decile of correlation with the meta model.",
    "cwmm_trend": "3. Stake-weighted mean vs unweighted median corr_w_mm, per round.",
    "stake_jump_trajectory": "4. Mean MMC (2020) by round relative to a ≥5× stake increase.",
}


def _html(title: str, rows: list[HeadlineRow], charts: dict[str, Path]) -> str:
    """The report page: headline table, then the charts by relative file name."""
    e = html.escape
    table_rows = "\n".join(
        f"<tr><td>{e(r.label)}</td><td>{e(r.value)}</td><td>{e(r.value_contribution)}</td>"
        f"<td>{e(r.reference)}</td></tr>"
        for r in rows
    )
    figures = "\n".join(
        f'<figure><img src="{e(path.name)}" alt="{e(_CAPTIONS[name])}">'
        f"<figcaption>{e(_CAPTIONS[name])}</figcaption></figure>"
        for name, path in charts.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
td:nth-child(n+2) {{ font-variant-numeric: tabular-nums; }}
figure {{ display: inline-block; margin: .5em; width: 48%; vertical-align: top; }}
figure img {{ width: 100%; }} figcaption {{ font-size: .85em; color: #555; }}
</style></head>
<body>
<h1>{e(title)}</h1>
<p>Each model's latest score per round (final when resolved) from the <code>scores</code> topic.
MMC is the 2020 bootstrap MMC (<code>mmc</code>), as in the seed article; the second column repeats
the MMC figures with today's MMC (<code>contribution</code>). Reference figures: the seed article,
real tournament, ~30,000 model-rounds over ~600 rounds.</p>
<table>
<tr><th>figure</th><th>this stream (MMC 2020)</th><th>with contribution</th><th>article</th></tr>
{table_rows}
</table>
{figures}
</body></html>
"""


# --------------------------------------------------------------------------- from the topics


@dataclass(frozen=True)
class BuiltReport:
    """A report built from the topics: the files, the figures and the inputs' size."""

    files: ReportFiles
    headline: list[HeadlineRow]
    report: CrowdingReport
    contribution_report: CrowdingReport
    messages_read: int


async def build_report(settings: Settings, out_dir: str | Path) -> BuiltReport:
    """Read ``scores`` up to its current end, compute both reports, render them to ``out_dir``."""
    latest = await read_score_messages(settings)
    table = score_table_from_messages(latest, metric="mmc")
    report = crowding_report(table)
    contribution = crowding_report(score_table_from_messages(latest, metric="contribution"))
    files = render_report(report, table, out_dir, contribution_report=contribution)
    return BuiltReport(files, headline(report, contribution), report, contribution, latest.read)


def headline_table(built: BuiltReport, title: str = "crowding headline") -> Table:
    """The headline figures beside the seed article's, as a rich table for the terminal."""
    table = Table(title=f"{title} ({built.report.n_observations:,} model-rounds)")
    table.add_column("figure")
    table.add_column("this stream (MMC 2020)", justify="right")
    table.add_column("with contribution", justify="right")
    table.add_column("seed article", justify="right", style="dim")
    for row in built.headline:
        table.add_row(row.label, row.value, row.value_contribution, row.reference)
    return table
