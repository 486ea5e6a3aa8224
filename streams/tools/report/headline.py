"""The report's headline: its figures as numbers (``headline.json``) and as rows beside the seed article's."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from scoring.crowding import METRIC_LABELS, CrowdingReport, percent_change
from scoring.crowding.interval import DEFAULT_INTERVAL_LEVEL, median_interval
from streams.tools.report.inputs import MechanicalPart

#: How the report names today's MMC and the 2020 one.
LABEL_TODAY = METRIC_LABELS["contribution"]
LABEL_2020 = METRIC_LABELS["mmc"]


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
      ``stake_jump_compared``: those with at least half the window (10 of 20 rounds) scored on
      each side, the events the study compares; ``stake_jump_median_mmc_change``: their median
      relative MMC change (20 rounds after vs before); ``stake_jump_mean_mmc_before`` / ``_after``; ``stake_jump_corr_change``:
      median relative CORR change (the control); ``stake_jump_median_mmc_change_low`` /
      ``_high``: the median's 95% bootstrap interval over the compared events
      (:func:`scoring.crowding.interval.median_interval`), ``stake_jump_mmc_fell``: how many
      of them lost MMC; ``stake_jump_median_mmc_change_vs_population``:
      the median change beyond the population's over the same rounds (the models without an
      event; :mod:`scoring.crowding.control`), ``stake_jump_population_mmc_before`` / ``_after``
      their mean MMC over the compared events' windows; ``stake_jump_settling_round``: rounds after
      the jump until the rolling mean of MMC stops falling
      (:func:`scoring.crowding.settling_point`); ``stake_jump_dose_<low>_<high>x_*``: the
      same per bucket of stake multiple;
    - ``stake_jump_mechanical_events``, ``stake_jump_mechanical_median_change``,
      ``stake_jump_mechanical_mean_tax``: :class:`MechanicalPart` (0 / null when not given);
    - ``top10_turnover``: mean share per round of the 10 largest stakers that are new since
      the previous round; ``effective_models_last``: 1/HHI in the last round;
    - ``alerts_per_100_model_rounds_<kind>``: :func:`alert_rates` by kind, when given.
    """
    data: dict[str, float | int | None] = {**_crowding_figures(report), **_stake_jump_figures(report, mechanical or MechanicalPart())}
    conc = report.concentration
    data["top10_turnover"] = report.turnover.mean_turnover
    data["effective_models_last"] = float(conc.effective_number[-1]) if conc.effective_number.size else None
    events = report.events
    for b in range(events.dose_low.size):
        key = _dose_key(float(events.dose_low[b]), float(events.dose_high[b]))
        data[f"stake_jump_dose_{key}_events"] = int(events.dose_n_events[b])
        data[f"stake_jump_dose_{key}_median_mmc_change"] = float(events.dose_median_relative_change[b])
        data[f"stake_jump_dose_{key}_corr_change"] = float(events.dose_median_corr_relative_change[b])
    for key, rate in (rates or {}).items():
        if "." not in key:
            data[f"alerts_per_100_model_rounds_{key}"] = rate
    return {key: _num(value) for key, value in data.items()}


def _crowding_figures(report: CrowdingReport) -> dict[str, float | int | None]:
    """The headline's population, decile and trend figures (:func:`headline_data`)."""
    deciles, deciles_2020 = report.cwmm_deciles, report.cwmm_deciles_2020

    def steepest(into: int) -> int | None:
        return into + 1 if into >= 0 else None

    return {
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
    }


def _stake_jump_figures(report: CrowdingReport, mech: MechanicalPart) -> dict[str, float | int | None]:
    """The headline's event-study figures (:func:`headline_data`), the mechanical part among them."""
    events, events_2020 = report.events, report.events_2020
    return {
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
        **_median_change_interval(events.relative_change),
        "stake_jump_median_mmc_change_vs_population": events.median_relative_change_vs_population,
        "stake_jump_population_mmc_before": events.mean_population_mmc_before,
        "stake_jump_population_mmc_after": events.mean_population_mmc_after,
        "stake_jump_settling_round": events.settling_round if events.settling_round >= 0 else None,
        "stake_jump_mechanical_events": mech.events,
        "stake_jump_mechanical_median_change": mech.median_relative_change,
        "stake_jump_mechanical_mean_tax": mech.mean_tax,
    }


def _median_change_interval(relative_change: NDArray[np.float64]) -> dict[str, float | int | None]:
    """The 95% bootstrap interval of the median MMC change and how many compared events fell."""
    low, high = median_interval(relative_change)
    compared = relative_change[np.isfinite(relative_change)]
    return {
        "stake_jump_median_mmc_change_low": low,
        "stake_jump_median_mmc_change_high": high,
        "stake_jump_mmc_fell": int((compared < 0).sum()),
    }


@dataclass(frozen=True)
class HeadlineRow:
    """One figure: this stream's value with today's MMC and with the 2020 MMC, beside the article's.

    ``value_2020`` is empty for a figure that does not involve MMC.
    """

    label: str
    value: str
    value_2020: str
    reference: str


def fmt(x: float | int | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:+.0f}%"


def arrow(a: float | None, b: float | None, digits: int = 3) -> str:
    return f"{fmt(a, digits)} → {fmt(b, digits)}"


def headline(report: CrowdingReport, mechanical: MechanicalPart | None = None) -> list[HeadlineRow]:
    """The headline figures of ``report`` (:func:`headline_data`) beside the seed article's.

    MMC figures are given with ``report.metric`` (today's MMC) and the 2020 MMC beside it.
    """
    d = headline_data(report, mechanical)
    rows = [*_crowding_rows(report, d), *_stake_jump_rows(report, d)]
    return [HeadlineRow(*row) for row in rows]


def _crowding_rows(report: CrowdingReport, d: dict[str, float | int | None]) -> list[tuple[str, str, str, str]]:
    """The headline's rows of the population, the deciles and the trend."""
    ref = REFERENCE
    today = LABEL_TODAY if report.metric == "contribution" else LABEL_2020

    def steep(key: str) -> str:
        value = d[key]
        return "—" if value is None else str(value)

    return [
        ("observations (model-rounds)", str(d["observations"]), "", ref["observations"]),
        ("rounds · models", f"{d['rounds']} · {d['models']}", "", ref["rounds"]),
        ("mean CORR", fmt(d["mean_corr"], 4), "", "≈ 0.01–0.03"),
        (f"mean MMC — {today} | {LABEL_2020}", fmt(d["mean_mmc"], 4), fmt(d["mean_mmc_2020"], 4), "—"),
        ("median corr_w_mm, top stake decile", fmt(d["cwmm_top_stake_decile"]), "", ref["cwmm_top_stake_decile"]),
        (
            "median corr_w_mm, bottom stake decile",
            fmt(d["cwmm_bottom_stake_decile"]),
            "",
            ref["cwmm_bottom_stake_decile"],
        ),
        (
            "mean MMC, lowest corr_w_mm decile",
            fmt(d["mmc_lowest_cwmm_decile"], 4),
            fmt(d["mmc_2020_lowest_cwmm_decile"], 4),
            ref["mmc_lowest_cwmm_decile"],
        ),
        (
            "mean MMC, highest corr_w_mm decile",
            fmt(d["mmc_highest_cwmm_decile"], 4),
            fmt(d["mmc_2020_highest_cwmm_decile"], 4),
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
            f"{arrow(d['swmm_cwmm_first'], d['swmm_cwmm_last'])} ({pct(d['swmm_cwmm_change'])})",
            "",
            f"{ref['swmm_cwmm']} (+44%)",
        ),
        (
            "unweighted median corr_w_mm, first → last fifth of rounds",
            f"{arrow(d['median_cwmm_first'], d['median_cwmm_last'])} ({pct(d['median_cwmm_change'])})",
            "",
            f"{ref['median_cwmm']} (+32%)",
        ),
        (
            "stake-weighted − median gap, first → last fifth of rounds",
            arrow(d["gap_cwmm_first"], d["gap_cwmm_last"]),
            "",
            "0.07 → 0.13",
        ),
    ]


def _stake_jump_rows(report: CrowdingReport, d: dict[str, float | int | None]) -> list[tuple[str, str, str, str]]:
    """The headline's rows of the event study (≥5× stake increases), turnover and concentration."""
    ref = REFERENCE
    return [
        (
            "≥5× stake increases (events · compared: ≥ half the window scored on each side)",
            f"{d['stake_jump_events']} · {d['stake_jump_compared']}",
            "",
            "—",
        ),
        (
            "median MMC change after a ≥5× stake increase",
            pct(d["stake_jump_median_mmc_change"]),
            pct(d["stake_jump_median_mmc_2020_change"]),
            ref["stake_jump_median_mmc_change"],
        ),
        (
            f"  its {100 * DEFAULT_INTERVAL_LEVEL:.0f}% bootstrap interval over the compared events · events whose MMC fell",
            f"{pct(d['stake_jump_median_mmc_change_low'])} … {pct(d['stake_jump_median_mmc_change_high'])}"
            f" · {d['stake_jump_mmc_fell']} of {d['stake_jump_compared']}",
            "",
            "—",
        ),
        (
            "mean MMC before → after a ≥5× stake increase",
            arrow(d["stake_jump_mean_mmc_before"], d["stake_jump_mean_mmc_after"], 4),
            arrow(d["stake_jump_mean_mmc_2020_before"], d["stake_jump_mean_mmc_2020_after"], 4),
            ref["stake_jump_mean_mmc"],
        ),
        (
            "CORR after a ≥5× stake increase (control): median change · mean before → after",
            f"{pct(d['stake_jump_corr_change'])} · {arrow(d['stake_jump_mean_corr_before'], d['stake_jump_mean_corr_after'], 4)}",
            "",
            ref["stake_jump_corr_change"],
        ),
        (
            "the population's control: MMC change beyond the population's over the same rounds (median) "
            "· the population's mean MMC before → after (the models without a ≥5× increase)",
            f"{pct(d['stake_jump_median_mmc_change_vs_population'])} · {arrow(d['stake_jump_population_mmc_before'], d['stake_jump_population_mmc_after'], 4)}",
            "",
            "—",
        ),
        (
            f"settling point (rounds until the {report.events.settle_span}-round rolling mean MMC stops falling)",
            "—" if d["stake_jump_settling_round"] is None else str(d["stake_jump_settling_round"]),
            "",
            ref["stake_jump_settling_round"],
        ),
        *_dose_rows(report, d),
        (
            "mechanical part: MMC in the jump's round at the new stake vs re-scored at the old one "
            "(the worker's forecast on each crowding_tax alert), median change · events",
            "—" if not d["stake_jump_mechanical_events"] else f"{pct(d['stake_jump_mechanical_median_change'])} · {d['stake_jump_mechanical_events']}",
            "",
            "—",
        ),
        ("top-10 stakers turnover per round (mean)", pct(d["top10_turnover"]).lstrip("+"), "", "—"),
        ("effective number of models (last round)", fmt(d["effective_models_last"], 1), "", "—"),
    ]


def _dose_rows(report: CrowdingReport, d: dict[str, float | int | None]) -> list[tuple[str, str, str, str]]:
    """One row per bucket of stake multiple: events, median MMC change, median CORR change."""
    out = []
    events = report.events
    for b in range(events.dose_low.size):
        key = _dose_key(float(events.dose_low[b]), float(events.dose_high[b]))
        high = float(events.dose_high[b])
        span = f"{events.dose_low[b]:g}–{high:g}×" if math.isfinite(high) else f"> {events.dose_low[b]:g}×"
        out.append(
            (
                f"  dose–response {span}: events · median MMC change · median CORR change",
                f"{d[f'stake_jump_dose_{key}_events']} · {pct(d[f'stake_jump_dose_{key}_median_mmc_change'])} · {pct(d[f'stake_jump_dose_{key}_corr_change'])}",
                "",
                "—",
            )
        )
    return out
