"""The crowding report: the seed article's four charts and headline figures, from ``mmc.scores``.

1. Read the ``scores`` topic from the beginning until caught up with the end offsets it had
   at start (:func:`read_score_messages`);
2. keep each model's latest update per round — the ``final`` one, else the highest ``day``
   (:class:`LatestScores`) — and turn them into a :class:`scoring.crowding.ScoreTable`
   (:func:`score_table_from_messages`);
3. :func:`scoring.crowding.crowding_report` computes every DESIGN §2.2 figure;
4. :func:`render_report` draws the charts (matplotlib, Agg, no pyplot state) and writes
   ``report.html`` beside the PNGs, and ``headline.json`` (:func:`headline_data`): the
   headline figures as numbers (null when undefined); :func:`headline` lists them next to
   the article's.

Which MMC: today's MMC — the scores' ``contribution`` field, the MMC payouts use and the one
the seed article measured (rounds 400 to ~1,000+, the 2× payout multiplier) — drives every
chart, decile table and the event study; the 2020 bootstrap MMC (the ``mmc`` field) is
computed beside it and shown as a second column / series, labelled "MMC 2020 (bootstrap)".
The ``mmc.crowding`` topic is not read: its per-round figures come from the same scores, and
the report recomputes everything across rounds from the scores themselves.

"First" and "last" of a trend are the mean of its first and last fifth of the rounds
(:func:`scoring.crowding.series_ends`), not single rounds.

The event study's mechanical part (the MMC a model would have had at its old stake, from
:func:`scoring.stake_counterfactual`) needs each round's predictions, which the ``scores``
topic does not carry. The worker computes it when the jump happens and attaches it to the
``crowding_tax`` alert as ``own_forecast`` (the model's MMC in the jump's round at the new
stake and re-scored at the old one): the report reads those from ``mmc.alerts``
(:func:`read_alerts`) and gives their median relative change beside the measured one
(:class:`MechanicalPart`). ``mmc whatif MODEL --stake S`` computes the same for any round whose
rows Redis still keeps.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray
from rich.table import Table

from scoring.crowding import (
    METRIC_LABELS,
    CrowdingReport,
    ScoreTable,
    crowding_report,
    decile_of,
    percent_change,
)
from streams.settings import Settings

#: How the report names today's MMC and the 2020 one.
LABEL_TODAY = METRIC_LABELS["contribution"]
LABEL_2020 = METRIC_LABELS["mmc"]

#: File names written by :func:`render_report` (inside ``out_dir``).
CHART_FILES: dict[str, str] = {
    "cwmm_by_stake": "cwmm_by_stake.png",
    "mmc_by_cwmm_decile": "mmc_by_cwmm_decile.png",
    "cwmm_trend": "cwmm_trend.png",
    "stake_jump_trajectory": "stake_jump_trajectory.png",
}
HTML_FILE = "report.html"
HEADLINE_FILE = "headline.json"

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


def score_table_from_messages(messages: Iterable[dict[str, Any]] | LatestScores) -> ScoreTable:
    """A :class:`ScoreTable` of each model's latest update per round.

    Arguments:
        messages: ``mmc.scores`` values (dicts) in the order they were read, or a
            :class:`LatestScores` already holding them.

    Returns:
        the table: round, model, stake, ``corr_w_mm``, ``mmc`` (2020), ``contribution``
        (today's MMC, the table's default metric) and ``corr`` (NaN for null).
    """
    latest = messages if isinstance(messages, LatestScores) else _collect(messages)
    rows = latest.messages()

    def column(name: str) -> NDArray[np.float64]:
        return np.array([_number(m.get(name)) for m in rows], dtype=np.float64)

    return ScoreTable.from_arrays(
        rounds=np.array([m["round"] for m in rows], dtype=np.int64),
        models=np.array([m["model"] for m in rows], dtype=object),
        stakes=column("stake"),
        corr_w_mm=column("corr_w_mm"),
        mmc=column("mmc"),
        contribution=column("contribution"),
        corr=column("corr"),
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


@dataclass(frozen=True)
class MechanicalPart:
    """The mechanical part of the MMC change at ≥5× stake jumps, from the worker's own forecasts.

    Each ``crowding_tax`` alert carrying ``own_forecast`` gives the model's today's MMC in the
    jump's round at the new stake and re-scored at the old one (every other input unchanged);
    their difference is what the stake alone did to the model's MMC that round.

    Attributes:
        events: jumps with a forecast (one per model and round).
        median_relative_change: median of ``tax / |MMC at the old stake|`` over the events
            whose MMC at the old stake is not 0 (None without any).
        mean_tax: mean of ``MMC at the new stake − MMC at the old stake`` (None without events).
    """

    events: int = 0
    median_relative_change: float | None = None
    mean_tax: float | None = None


def mechanical_part(alerts: Iterable[dict[str, Any]]) -> MechanicalPart:
    """:class:`MechanicalPart` of the ``crowding_tax`` alerts among ``alerts`` (the latest per
    model and round counts; alerts without a forecast are skipped)."""
    forecasts: dict[tuple[str, int], dict[str, Any]] = {}
    for a in alerts:
        forecast = a.get("own_forecast")
        if a.get("kind") != "crowding_tax" or not isinstance(forecast, dict):
            continue
        old, tax = forecast.get("contribution_at_old_stake"), forecast.get("tax")
        if isinstance(old, int | float) and isinstance(tax, int | float) and math.isfinite(old) and math.isfinite(tax):
            forecasts[(str(a.get("model")), int(a.get("round", -1)))] = {"old": float(old), "tax": float(tax)}
    if not forecasts:
        return MechanicalPart()
    taxes = [f["tax"] for f in forecasts.values()]
    relative = [f["tax"] / abs(f["old"]) for f in forecasts.values() if f["old"] != 0]
    return MechanicalPart(
        events=len(forecasts),
        median_relative_change=float(np.median(relative)) if relative else None,
        mean_tax=float(np.mean(taxes)),
    )


async def read_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every alert on ``settings.topic("alerts")`` up to its end at call time, each once (a
    message delivered twice has the same bytes)."""
    from streams.tail import tail

    seen: set[bytes] = set()
    found: list[dict[str, Any]] = []
    async for message in tail(settings, "alerts", from_beginning=True, until_end=True):
        if message.is_json and isinstance(message.value, dict):
            raw = orjson.dumps(message.value, option=orjson.OPT_SORT_KEYS)
            if raw not in seen:
                seen.add(raw)
                found.append(message.value)
    return found


def alert_rates(alerts: Iterable[dict[str, Any]], model_rounds: int) -> dict[str, float]:
    """Alerts per 100 model-rounds by ``kind`` and ``stage`` (keys ``<kind>`` and
    ``<kind>.<stage>``); empty when there are no model-rounds."""
    if model_rounds <= 0:
        return {}
    counts: dict[str, int] = {}
    for a in alerts:
        kind = str(a.get("kind"))
        for key in (kind, f"{kind}.{a.get('stage')}"):
            counts[key] = counts.get(key, 0) + 1
    return {key: 100.0 * n / model_rounds for key, n in sorted(counts.items())}


# --------------------------------------------------------------------------- headline


#: The article's figures (DESIGN §2.2), by headline key; what the HTML shows beside ours.
REFERENCE: dict[str, str] = {
    "observations": "≈ 30,000",
    "rounds": "≈ 600",
    "cwmm_top_stake_decile": "≈ 0.45",
    "cwmm_bottom_stake_decile": "≈ 0.28",
    "mmc_lowest_cwmm_decile": "≈ 0.012",
    "mmc_highest_cwmm_decile": "≈ −0.003",
    "steepest_drop_into_decile": "7–10 (1–5 flat)",
    "swmm_cwmm": "0.32 → 0.46",
    "median_cwmm": "0.25 → 0.33",
    "stake_jump_median_mmc_change": "−35 … −40%",
    "stake_jump_mean_mmc": "0.010 → 0.006",
    "stake_jump_corr_change": "≈ 0 (crowding, not decay)",
    "stake_jump_settling_round": "10–12 rounds",
}


def _num(x: float | int | None) -> float | int | None:
    """A headline number: finite float or int, else None."""
    if x is None:
        return None
    if isinstance(x, int | np.integer) and not isinstance(x, bool):
        return int(x)
    value = float(x)
    return value if math.isfinite(value) else None


def _dose_key(low: float, high: float) -> str:
    hi = "inf" if not math.isfinite(high) else f"{high:g}"
    return f"{low:g}_{hi}x"


def headline_data(report: CrowdingReport, mechanical: MechanicalPart | None = None, rates: dict[str, float] | None = None) -> dict[str, float | int | None]:
    """The headline figures as numbers (None when undefined) — the content of ``headline.json``.

    MMC figures use ``report.metric`` (today's MMC when the scores carry ``contribution``);
    the keys with ``_2020`` use the 2020 bootstrap MMC.

    - ``mean_corr``, ``mean_mmc``, ``mean_mmc_2020``: means over every model-round;
    - ``cwmm_top_stake_decile`` / ``cwmm_bottom_stake_decile``: median ``corr_w_mm`` in the
      top / bottom stake decile (stakers only);
    - ``mmc_lowest_cwmm_decile`` / ``mmc_highest_cwmm_decile``: mean MMC in corr_w_mm
      deciles 1 and 10; ``steepest_drop_into_decile``: the decile (1–10) entered by the
      most negative step of those means (None when no step is negative);
    - ``swmm_cwmm_first`` / ``_last``, ``median_cwmm_first`` / ``_last``, ``gap_cwmm_*``:
      the stake-weighted mean, unweighted median and their gap, averaged over the first /
      last fifth of the rounds; ``*_change``: ``(last − first) / |first|``;
    - ``stake_jump_events``: ≥5× stake increases between adjacent rounds;
      ``stake_jump_median_mmc_change``: median relative MMC change (20 rounds after vs
      before); ``stake_jump_mean_mmc_before`` / ``_after``; ``stake_jump_corr_change``:
      median relative CORR change (the control); ``stake_jump_settling_round``: rounds after
      the jump until the rolling mean of MMC stops falling
      (:func:`scoring.crowding.settling_point`); ``stake_jump_dose_<low>_<high>x_*``: the
      same per bucket of stake multiple;
    - ``stake_jump_mechanical_events``, ``stake_jump_mechanical_median_change``,
      ``stake_jump_mechanical_mean_tax``: :class:`MechanicalPart` (0 / null when not given);
    - ``top10_turnover``: mean share per round of the 10 largest stakers that are new since
      the previous round; ``effective_models_last``: 1/HHI in the last round;
    - ``alerts_per_100_model_rounds_<kind>``: :func:`alert_rates` by kind, when given.
    """
    mech = mechanical or MechanicalPart()
    events, events_2020 = report.events, report.events_2020
    deciles, deciles_2020 = report.cwmm_deciles, report.cwmm_deciles_2020
    conc = report.concentration

    def steepest(into: int) -> int | None:
        return into + 1 if into >= 0 else None

    data: dict[str, float | int | None] = {
        "observations": report.n_observations,
        "rounds": report.n_rounds,
        "models": report.n_models,
        "mean_corr": report.mean_corr,
        "mean_mmc": report.mean_mmc,
        "mean_mmc_2020": report.mean_mmc_2020,
        "cwmm_top_stake_decile": report.stake_deciles.top_median,
        "cwmm_bottom_stake_decile": report.stake_deciles.bottom_median,
        "mmc_lowest_cwmm_decile": float(deciles.mean_mmc[0]),
        "mmc_highest_cwmm_decile": float(deciles.mean_mmc[-1]),
        "mmc_2020_lowest_cwmm_decile": float(deciles_2020.mean_mmc[0]),
        "mmc_2020_highest_cwmm_decile": float(deciles_2020.mean_mmc[-1]),
        "steepest_drop_into_decile": steepest(deciles.steepest_drop_into),
        "steepest_drop_into_decile_2020": steepest(deciles_2020.steepest_drop_into),
        "swmm_cwmm_first": report.weighted_first,
        "swmm_cwmm_last": report.weighted_last,
        "swmm_cwmm_change": percent_change(report.weighted_first, report.weighted_last),
        "median_cwmm_first": report.median_first,
        "median_cwmm_last": report.median_last,
        "median_cwmm_change": percent_change(report.median_first, report.median_last),
        "gap_cwmm_first": report.gap_first,
        "gap_cwmm_last": report.gap_last,
        "stake_jump_events": events.n_events,
        "stake_jump_compared": events.n_compared,
        "stake_jump_median_mmc_change": events.median_relative_change,
        "stake_jump_mean_mmc_before": events.mean_mmc_before,
        "stake_jump_mean_mmc_after": events.mean_mmc_after,
        "stake_jump_median_mmc_2020_change": events_2020.median_relative_change,
        "stake_jump_mean_mmc_2020_before": events_2020.mean_mmc_before,
        "stake_jump_mean_mmc_2020_after": events_2020.mean_mmc_after,
        "stake_jump_corr_change": events.median_corr_relative_change,
        "stake_jump_mean_corr_before": events.mean_corr_before,
        "stake_jump_mean_corr_after": events.mean_corr_after,
        "stake_jump_settling_round": events.settling_round if events.settling_round >= 0 else None,
        "stake_jump_mechanical_events": mech.events,
        "stake_jump_mechanical_median_change": mech.median_relative_change,
        "stake_jump_mechanical_mean_tax": mech.mean_tax,
        "top10_turnover": report.turnover.mean_turnover,
        "effective_models_last": float(conc.effective_number[-1]) if conc.effective_number.size else None,
    }
    for b in range(events.dose_low.size):
        key = _dose_key(float(events.dose_low[b]), float(events.dose_high[b]))
        data[f"stake_jump_dose_{key}_events"] = int(events.dose_n_events[b])
        data[f"stake_jump_dose_{key}_median_mmc_change"] = float(events.dose_median_relative_change[b])
        data[f"stake_jump_dose_{key}_corr_change"] = float(events.dose_median_corr_relative_change[b])
    for key, rate in (rates or {}).items():
        if "." not in key:
            data[f"alerts_per_100_model_rounds_{key}"] = rate
    return {key: _num(value) for key, value in data.items()}


@dataclass(frozen=True)
class HeadlineRow:
    """One figure: this stream's value with today's MMC and with the 2020 MMC, beside the article's.

    ``value_2020`` is empty for a figure that does not involve MMC.
    """

    label: str
    value: str
    value_2020: str
    reference: str


def _fmt(x: float | int | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:+.0f}%"


def _arrow(a: float | None, b: float | None, digits: int = 3) -> str:
    return f"{_fmt(a, digits)} → {_fmt(b, digits)}"


def headline(report: CrowdingReport, mechanical: MechanicalPart | None = None) -> list[HeadlineRow]:
    """The headline figures of ``report`` (:func:`headline_data`) beside the seed article's.

    MMC figures are given with ``report.metric`` (today's MMC) and the 2020 MMC beside it.
    """
    d = headline_data(report, mechanical)
    ref = REFERENCE
    today = LABEL_TODAY if report.metric == "contribution" else LABEL_2020

    def steep(key: str) -> str:
        value = d[key]
        return "—" if value is None else str(value)

    def dose_rows() -> list[tuple[str, str, str, str]]:
        out = []
        events = report.events
        for b in range(events.dose_low.size):
            key = _dose_key(float(events.dose_low[b]), float(events.dose_high[b]))
            high = float(events.dose_high[b])
            span = f"{events.dose_low[b]:g}–{high:g}×" if math.isfinite(high) else f"> {events.dose_low[b]:g}×"
            out.append(
                (
                    f"  dose–response {span}: events · median MMC change · median CORR change",
                    f"{d[f'stake_jump_dose_{key}_events']} · "
                    f"{_pct(d[f'stake_jump_dose_{key}_median_mmc_change'])} · "
                    f"{_pct(d[f'stake_jump_dose_{key}_corr_change'])}",
                    "",
                    "—",
                )
            )
        return out

    rows: list[tuple[str, str, str, str]] = [
        ("observations (model-rounds)", str(d["observations"]), "", ref["observations"]),
        ("rounds · models", f"{d['rounds']} · {d['models']}", "", ref["rounds"]),
        ("mean CORR", _fmt(d["mean_corr"], 4), "", "≈ 0.01–0.03"),
        (f"mean MMC — {today} | {LABEL_2020}", _fmt(d["mean_mmc"], 4), _fmt(d["mean_mmc_2020"], 4), "—"),
        ("median corr_w_mm, top stake decile", _fmt(d["cwmm_top_stake_decile"]), "", ref["cwmm_top_stake_decile"]),
        (
            "median corr_w_mm, bottom stake decile",
            _fmt(d["cwmm_bottom_stake_decile"]),
            "",
            ref["cwmm_bottom_stake_decile"],
        ),
        (
            "mean MMC, lowest corr_w_mm decile",
            _fmt(d["mmc_lowest_cwmm_decile"], 4),
            _fmt(d["mmc_2020_lowest_cwmm_decile"], 4),
            ref["mmc_lowest_cwmm_decile"],
        ),
        (
            "mean MMC, highest corr_w_mm decile",
            _fmt(d["mmc_highest_cwmm_decile"], 4),
            _fmt(d["mmc_2020_highest_cwmm_decile"], 4),
            ref["mmc_highest_cwmm_decile"],
        ),
        (
            "steepest MMC drop into corr_w_mm decile",
            steep("steepest_drop_into_decile"),
            steep("steepest_drop_into_decile_2020"),
            ref["steepest_drop_into_decile"],
        ),
        (
            "stake-weighted mean corr_w_mm, first → last fifth of rounds",
            f"{_arrow(d['swmm_cwmm_first'], d['swmm_cwmm_last'])} ({_pct(d['swmm_cwmm_change'])})",
            "",
            f"{ref['swmm_cwmm']} (+44%)",
        ),
        (
            "unweighted median corr_w_mm, first → last fifth of rounds",
            f"{_arrow(d['median_cwmm_first'], d['median_cwmm_last'])} ({_pct(d['median_cwmm_change'])})",
            "",
            f"{ref['median_cwmm']} (+32%)",
        ),
        (
            "stake-weighted − median gap, first → last fifth of rounds",
            _arrow(d["gap_cwmm_first"], d["gap_cwmm_last"]),
            "",
            "0.07 → 0.13",
        ),
        ("≥5× stake increases (events)", str(d["stake_jump_events"]), "", "—"),
        (
            "median MMC change after a ≥5× stake increase",
            _pct(d["stake_jump_median_mmc_change"]),
            _pct(d["stake_jump_median_mmc_2020_change"]),
            ref["stake_jump_median_mmc_change"],
        ),
        (
            "mean MMC before → after a ≥5× stake increase",
            _arrow(d["stake_jump_mean_mmc_before"], d["stake_jump_mean_mmc_after"], 4),
            _arrow(d["stake_jump_mean_mmc_2020_before"], d["stake_jump_mean_mmc_2020_after"], 4),
            ref["stake_jump_mean_mmc"],
        ),
        (
            "CORR after a ≥5× stake increase (control): median change · mean before → after",
            f"{_pct(d['stake_jump_corr_change'])} · {_arrow(d['stake_jump_mean_corr_before'], d['stake_jump_mean_corr_after'], 4)}",
            "",
            ref["stake_jump_corr_change"],
        ),
        (
            f"settling point (rounds until the {report.events.settle_span}-round rolling mean MMC stops falling)",
            "—" if d["stake_jump_settling_round"] is None else str(d["stake_jump_settling_round"]),
            "",
            ref["stake_jump_settling_round"],
        ),
        *dose_rows(),
        (
            "mechanical part: MMC in the jump's round at the new stake vs re-scored at the old one "
            "(the worker's forecast on each crowding_tax alert), median change · events",
            "—" if not d["stake_jump_mechanical_events"] else f"{_pct(d['stake_jump_mechanical_median_change'])} · {d['stake_jump_mechanical_events']}",
            "",
            "—",
        ),
        ("top-10 stakers turnover per round (mean)", _pct(d["top10_turnover"]).lstrip("+"), "", "—"),
        ("effective number of models (last round)", _fmt(d["effective_models_last"], 1), "", "—"),
    ]
    return [HeadlineRow(*row) for row in rows]


# --------------------------------------------------------------------------- charts


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


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="grey")


def _chart_cwmm_by_stake(report: CrowdingReport, table: ScoreTable, path: Path) -> None:
    """(1) corr_w_mm vs stake (log x), stakers only, with the stake-decile medians overlaid."""
    figure, axes = _figure()
    keep = ~np.isnan(table.corr_w_mm) & (table.stakes > 0)
    stakes, cwmm = table.stakes[keep], table.corr_w_mm[keep]
    if stakes.size:
        axes.scatter(stakes, cwmm, s=4, alpha=0.2, color="tab:blue", linewidths=0, label="model-rounds")
        deciles = decile_of(stakes)
        centres = [float(np.median(stakes[deciles == d])) if (deciles == d).any() else math.nan for d in range(10)]
        medians = report.stake_deciles.median_corr_w_mm
        axes.plot(centres, medians, "o-", color="tab:red", label="median per stake decile")
        axes.set_xscale("log")
        axes.legend(loc="lower right", fontsize="small")
    else:
        _no_data(axes)
    axes.set_xlabel("stake (NMR, log scale)")
    axes.set_ylabel("corr_w_mm")
    axes.set_title(
        f"corr_w_mm vs stake — top stake decile {_fmt(report.stake_deciles.top_median)}, bottom {_fmt(report.stake_deciles.bottom_median)}",
        fontsize="medium",
    )
    figure.savefig(path)


def _chart_mmc_by_cwmm_decile(report: CrowdingReport, path: Path) -> None:
    """(2) mean MMC per corr_w_mm decile: today's MMC and the 2020 MMC side by side, with counts."""
    figure, axes = _figure()
    deciles, deciles_2020 = report.cwmm_deciles, report.cwmm_deciles_2020
    if deciles.count.sum() or deciles_2020.count.sum():
        x = deciles.decile + 1
        today = METRIC_LABELS[deciles.metric]
        bars = axes.bar(x - 0.2, np.nan_to_num(deciles.mean_mmc), width=0.4, color="tab:green", label=today)
        axes.bar(x + 0.2, np.nan_to_num(deciles_2020.mean_mmc), width=0.4, color="tab:grey", alpha=0.6, label=LABEL_2020)
        axes.bar_label(bars, labels=[f"n={c}" for c in deciles.count], fontsize="x-small", padding=2)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xticks(x)
        axes.legend(fontsize="small")
    else:
        _no_data(axes)
    axes.set_xlabel("corr_w_mm decile (1 = least like the meta model)")
    axes.set_ylabel("mean MMC")
    axes.set_title("Mean MMC by correlation-with-meta-model decile", fontsize="medium")
    figure.savefig(path)


def _chart_cwmm_trend(report: CrowdingReport, path: Path) -> None:
    """(3) stake-weighted mean vs unweighted median corr_w_mm per round."""
    figure, axes = _figure()
    trend = report.trend
    if np.isfinite(trend.median).any():
        axes.plot(trend.round, trend.weighted_mean, "-", color="tab:red", label="stake-weighted mean")
        axes.plot(trend.round, trend.median, "-", color="tab:blue", label="unweighted median")
        axes.legend(fontsize="small")
    else:
        _no_data(axes)
    axes.set_xlabel("round")
    axes.set_ylabel("corr_w_mm")
    axes.set_title(
        f"Crowding trend — slopes/round: weighted {_fmt(trend.weighted_mean_slope, 4)}, median {_fmt(trend.median_slope, 4)}",
        fontsize="medium",
    )
    figure.savefig(path)


def _chart_stake_jump_trajectory(report: CrowdingReport, path: Path) -> None:
    """(4) mean MMC by round relative to a ≥5× stake increase (today's and 2020), CORR as the
    control on its own axis, the event counts as grey bars and the settling point."""
    figure, axes = _figure()
    events, events_2020 = report.events, report.events_2020
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
            label=METRIC_LABELS[events.metric],
        )
        axes.plot(
            events_2020.trajectory_offset,
            events_2020.trajectory_mean_mmc,
            "-",
            color="tab:grey",
            linewidth=1,
            label=LABEL_2020,
        )
        axes.plot(
            events.trajectory_offset,
            events.settling_rolling_mmc,
            "--",
            color="tab:purple",
            linewidth=1,
            label=f"{events.settle_span}-round rolling mean",
        )
        if events.settling_round >= 0:
            axes.axvline(events.settling_round, color="tab:purple", linestyle=":", linewidth=1)
        axes.plot(
            events.trajectory_offset,
            events.trajectory_mean_corr / 10,
            "-",
            color="tab:orange",
            linewidth=1,
            label="CORR ÷ 10 (control)",
        )
        axes.axvline(0, color="black", linestyle="--", linewidth=0.8)
        axes.axhline(0, color="black", linewidth=0.5)
        axes.legend(fontsize="x-small", loc="lower left")
    else:
        _no_data(axes)
    axes.set_xlabel(f"rounds relative to a ≥{events.ratio:g}× stake increase (0 = first round at the new stake)")
    axes.set_ylabel("mean MMC")
    settled = f", settles at +{events.settling_round}" if events.settling_round >= 0 else ""
    axes.set_title(
        f"MMC around stake jumps — {events.n_events} events, median change {_pct(events.median_relative_change)}{settled}",
        fontsize="medium",
    )
    figure.savefig(path)


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
    _chart_cwmm_by_stake(report, table, charts["cwmm_by_stake"])
    _chart_mmc_by_cwmm_decile(report, charts["mmc_by_cwmm_decile"])
    _chart_cwmm_trend(report, charts["cwmm_trend"])
    _chart_stake_jump_trajectory(report, charts["stake_jump_trajectory"])
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
increases between adjacent rounds, 20 rounds before vs the 20 from the jump round on; the
settling point is the first round after the jump from which the rolling mean of MMC never falls
lower. Its mechanical part (the MMC at the old stake) needs the rounds' predictions, which the
scores topic does not carry: <code>mmc whatif MODEL --stake OLD_STAKE</code> computes it from the
service's state. The same figures are in <code>{HEADLINE_FILE}</code>. Reference figures: the seed
article, real tournament, ~30,000 model-rounds over ~600 rounds.</p>
<table>
<tr><th>figure</th><th>this stream: {e(METRIC_LABELS[metric])}</th><th>{e(LABEL_2020)}</th><th>article</th></tr>
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
    messages_read: int
    mechanical: MechanicalPart = field(default_factory=MechanicalPart)
    #: Alerts per 100 model-rounds by kind and by kind.stage (:func:`alert_rates`).
    alert_rates: dict[str, float] = field(default_factory=dict)

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
    return BuiltReport(files, headline(report, mechanical), report, latest.read, mechanical, rates)


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
