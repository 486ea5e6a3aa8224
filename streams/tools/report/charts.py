"""The report's four charts, drawn with matplotlib (Agg, no pyplot state) to PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scoring.crowding import METRIC_LABELS, CrowdingReport, ScoreTable, decile_of
from streams.tools.report.headline import LABEL_2020, fmt, pct

_DPI = 110
_SIZE = (7.0, 4.4)


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="grey")


def chart_cwmm_by_stake(report: CrowdingReport, table: ScoreTable, path: Path) -> None:
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
        f"corr_w_mm vs stake — top stake decile {fmt(report.stake_deciles.top_median)}, bottom {fmt(report.stake_deciles.bottom_median)}",
        fontsize="medium",
    )
    figure.savefig(path)


def chart_mmc_by_cwmm_decile(report: CrowdingReport, path: Path) -> None:
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


def chart_cwmm_trend(report: CrowdingReport, path: Path) -> None:
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
        f"Crowding trend — slopes/round: weighted {fmt(trend.weighted_mean_slope, 4)}, median {fmt(trend.median_slope, 4)}",
        fontsize="medium",
    )
    figure.savefig(path)


def chart_stake_jump_trajectory(report: CrowdingReport, path: Path) -> None:
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
        f"MMC around stake jumps — {events.n_events} events, median change {pct(events.median_relative_change)}{settled}",
        fontsize="medium",
    )
    figure.savefig(path)
