"""The report written out: the four charts, ``report.html`` around them, and ``headline.json``."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import orjson

from scoring.crowding import METRIC_LABELS, CrowdingReport, ScoreTable
from streams.tools.report.charts import chart_cwmm_by_stake, chart_cwmm_trend, chart_mmc_by_cwmm_decile, chart_stake_jump_trajectory
from streams.tools.report.headline import LABEL_2020, LABEL_TODAY, HeadlineRow, headline, headline_data
from streams.tools.report.inputs import MechanicalPart

#: File names written by :func:`render_report` (inside ``out_dir``).
CHART_FILES: dict[str, str] = {
    "cwmm_by_stake": "cwmm_by_stake.png",
    "mmc_by_cwmm_decile": "mmc_by_cwmm_decile.png",
    "cwmm_trend": "cwmm_trend.png",
    "stake_jump_trajectory": "stake_jump_trajectory.png",
}
HTML_FILE = "report.html"
HEADLINE_FILE = "headline.json"


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`render_report` wrote: the HTML page, the four charts by name, headline.json."""

    html: Path
    charts: dict[str, Path]
    headline_json: Path

    @property
    def paths(self) -> list[Path]:
        """Every file written, the HTML first."""
        return [self.html, self.headline_json, *self.charts.values()]


def render_report(
    report: CrowdingReport,
    table: ScoreTable,
    out_dir: str | Path,
    title: str = "mmc-stream crowding report",
    mechanical: MechanicalPart | None = None,
    rates: dict[str, float] | None = None,
) -> ReportFiles:
    """Write the four charts (PNG), ``report.html`` and ``headline.json`` to ``out_dir``.

    Arguments:
        report: :func:`scoring.crowding.crowding_report` of ``table``.
        table: the score table the report was computed from (the scatter plots its rows).
        out_dir: directory to write to (created if missing; files of the same names replaced).
        title: the page title.
        mechanical: the events' mechanical part (:func:`mechanical_part` of the alerts), if read.
        rates: alerts per 100 model-rounds (:func:`alert_rates`), if read; into headline.json.

    Returns:
        :class:`ReportFiles` with the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts = {name: out / filename for name, filename in CHART_FILES.items()}
    chart_cwmm_by_stake(report, table, charts["cwmm_by_stake"])
    chart_mmc_by_cwmm_decile(report, charts["mmc_by_cwmm_decile"])
    chart_cwmm_trend(report, charts["cwmm_trend"])
    chart_stake_jump_trajectory(report, charts["stake_jump_trajectory"])
    numbers = out / HEADLINE_FILE
    numbers.write_bytes(orjson.dumps(headline_data(report, mechanical, rates), option=orjson.OPT_INDENT_2) + b"\n")
    page = out / HTML_FILE
    page.write_text(_html(title, report.metric, headline(report, mechanical), charts), encoding="utf-8")
    return ReportFiles(html=page, charts=charts, headline_json=numbers)


_CAPTIONS = {
    "cwmm_by_stake": "1. corr_w_mm vs stake (stakers; red: median per stake decile).",
    "mmc_by_cwmm_decile": (f"2. Mean MMC per decile of correlation with the meta model: {LABEL_TODAY}, {LABEL_2020} beside it (grey)."),
    "cwmm_trend": "3. Stake-weighted mean vs unweighted median corr_w_mm, per round.",
    "stake_jump_trajectory": (
        f"4. Mean MMC by round relative to a ≥5× stake increase: {LABEL_TODAY} with its rolling "
        f"mean and settling point, {LABEL_2020} (grey), CORR ÷ 10 as the control (orange)."
    ),
}


def _html(title: str, metric: str, rows: list[HeadlineRow], charts: dict[str, Path]) -> str:
    """The report page: headline table, then the charts by relative file name."""
    e = html.escape
    table_rows = "\n".join(f"<tr><td>{e(r.label)}</td><td>{e(r.value)}</td><td>{e(r.value_2020)}</td><td>{e(r.reference)}</td></tr>" for r in rows)
    figures = "\n".join(
        f'<figure><img src="{e(path.name)}" alt="{e(_CAPTIONS[name])}"><figcaption>{e(_CAPTIONS[name])}</figcaption></figure>' for name, path in charts.items()
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
MMC is {e(METRIC_LABELS[metric])}, the MMC the seed article measured and payouts use; the second
column gives the MMC figures with the {e(LABEL_2020)} MMC (<code>mmc</code>), beside it. "First"
and "last" are the means over the first and last fifth of the rounds. The event study: ≥5× stake
increases between adjacent rounds, 20 rounds before vs the 20 from the jump round on, compared
when at least 10 rounds are scored on each side (a jump in the last rounds waits for its); the
settling point is the first round after the jump from which the rolling mean of MMC never falls
lower. The population's control compares each event's change with what the models without a
≥5× increase earned over the same rounds: when the whole population's MMC drifts (it rises as
the stake concentrates, since a meta model held by fewer stakers leaves more to contribute),
the change beyond the population's is the event's own. The events' mechanical part (the MMC
at the old stake) needs the rounds' predictions, which the scores topic does not carry: <code>mmc whatif MODEL --stake OLD_STAKE</code> computes it from the
service's state. The same figures are in <code>{HEADLINE_FILE}</code>. Reference figures: the seed
article, real tournament, ~30,000 model-rounds over ~600 rounds.</p>
<table>
<tr><th>figure</th><th>this stream: {e(METRIC_LABELS[metric])}</th><th>{e(LABEL_2020)}</th><th>article</th></tr>
{table_rows}
</table>
{figures}
</body></html>
"""
