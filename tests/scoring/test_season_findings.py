"""The simulated season, scored with the scoring core alone (no broker), against the seed
article's crowding findings (DESIGN §2.2; "MMC" is today's MMC, ``contribution``).

The season is the demo's (streams/tools/demo.py: 120 models × 10,000 ids × 60 rounds, 20-day
resolution). Every criterion is asserted at the default seed; at sixteen seeds (2026 and 1–15),
the criteria that hold at each of them, and how many seeds meet every criterion. docs/simulation.md
lists every figure measured per seed — run
``.venv/bin/python tests/scoring/test_season_findings.py 2026 1 2 3`` to print them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import scoring
from scoring.crowding import ScoreTable, crowding_report
from streams.tools.demo import DemoConfig
from streams.tools.report import headline_data
from streams.tools.simulation import Simulation


@dataclass
class Figures:
    """The headline figures (``headline.json``'s keys) and what only the simulator knows."""

    headline: dict[str, float | int | None]
    clip_rate: float  # share of the simulator's realised payouts at ±clip
    jump_shares: np.ndarray  # each ≥5× reinvestor's share of the total stake right after it
    hhi: tuple[float, float]  # HHI of the stakes, mean over the first / last fifth of the rounds
    control_mmc: tuple[float, float]  # the same for the mean MMC of the models without a ≥5× reinvestment


def season_figures(seed: int) -> Figures:
    """Score every round with scoring.score_round (final targets, stakes at close) and compute
    the report's headline from those scores, exactly as ``mmc report`` does from the stream."""
    sim = Simulation(DemoConfig(seed=seed).season())
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("rounds", "models", "stakes", "corr_w_mm", "mmc", "contribution", "corr")}
    reinvestors = {j.model for j in sim.jumps}
    control = np.array([m not in reinvestors for m in sim.models])
    control_mmc = []
    for i, r in enumerate(sim.rounds):
        who = np.flatnonzero(sim.submitted[i])
        s = scoring.score_round(sim.predictions(r)[who], sim.stakes[i, who], sim.targets(r), round=r)
        control_mmc.append(float(np.nanmean(s.contribution[control[who]])))
        columns["rounds"].append(np.full(who.size, r))
        columns["models"].append(np.array(sim.models, dtype=object)[who])
        columns["stakes"].append(sim.stakes[i, who])
        for name in ("corr_w_mm", "mmc", "contribution", "corr"):
            columns[name].append(getattr(s, name))
    table = ScoreTable(**{k: np.concatenate(v) for k, v in columns.items()})
    paid = sim.payouts[np.isfinite(sim.payouts)]
    shares = [j.stake_after / sim.stakes[sim.rounds.index(j.round)].sum() for j in sim.jumps]
    hhi = ((sim.stakes / sim.stakes.sum(axis=1, keepdims=True)) ** 2).sum(axis=1)
    fifth = len(sim.rounds) // 5
    return Figures(
        headline=headline_data(crowding_report(table)),
        clip_rate=float(np.mean(np.abs(paid) >= sim.config.payout_clip - 1e-12)),
        jump_shares=np.array(shares),
        hhi=(float(hhi[:fifth].mean()), float(hhi[-fifth:].mean())),
        control_mmc=(float(np.mean(control_mmc[:fifth])), float(np.mean(control_mmc[-fifth:]))),
    )


#: The article's criteria on the headline (the same keys ``make demo`` writes to headline.json).
CRITERIA: dict[str, Callable[[dict[str, Any]], bool]] = {
    "mean CORR in 0.005–0.04": lambda d: 0.005 <= d["mean_corr"] <= 0.04,
    "mean MMC in 0.002–0.01": lambda d: 0.002 <= d["mean_mmc"] <= 0.01,
    "top stake decile's CWMM ≥ bottom's + 0.10": lambda d: d["cwmm_top_stake_decile"] >= d["cwmm_bottom_stake_decile"] + 0.10,
    "MMC of the lowest CWMM decile > 0": lambda d: d["mmc_lowest_cwmm_decile"] > 0,
    "MMC of the highest CWMM decile < lowest / 3": lambda d: d["mmc_highest_cwmm_decile"] < d["mmc_lowest_cwmm_decile"] / 3,
    "steepest MMC drop into decile 6 or later": lambda d: (d["steepest_drop_into_decile"] or 0) >= 6,
    "stake-weighted CWMM rising": lambda d: d["swmm_cwmm_last"] > d["swmm_cwmm_first"],
    "stake-weighted − median gap widening": lambda d: d["gap_cwmm_last"] > d["gap_cwmm_first"],
    "≥ 5 stake-jump events compared": lambda d: d["stake_jump_compared"] >= 5,
    "median MMC change after a jump in −60%…−20%": lambda d: -0.60 <= d["stake_jump_median_mmc_change"] <= -0.20,
    "CORR change after a jump within ±15%": lambda d: abs(d["stake_jump_corr_change"]) <= 0.15,
}

#: The criteria that hold at each of the sixteen seeds measured (2026 and 1–15, docs/simulation.md).
#: The others — the highest CWMM decile's MMC, the steepest drop's decile, the stake-weighted
#: trend and gap, and the median MMC change — each miss at one to three of them.
EVERY_SEED = (
    "mean CORR in 0.005–0.04",
    "mean MMC in 0.002–0.01",
    "top stake decile's CWMM ≥ bottom's + 0.10",
    "MMC of the lowest CWMM decile > 0",
    "≥ 5 stake-jump events compared",
    "CORR change after a jump within ±15%",
)

#: The seeds measured beside the default (docs/simulation.md's tables).
OTHER_SEEDS = tuple(range(1, 16))
MEDIAN_IN_BAND = "median MMC change after a jump in −60%…−20%"


def numbers(f: Figures) -> dict[str, Any]:
    """The headline with its undefined figures (null in headline.json) as NaN: a criterion on an
    undefined figure is missed, and the table prints it as nan."""
    return {key: math.nan if value is None else value for key, value in f.headline.items()}


def failed(f: Figures, names: Iterable[str] = CRITERIA) -> list[str]:
    d = numbers(f)
    return [name for name in names if not CRITERIA[name](d)]


def assert_the_tax_is_there(f: Figures) -> None:
    """The crowding tax's sign, at every seed measured: after a ≥5× reinvestment the median
    reinvestor's MMC falls relative to the population's over the same rounds (the change beyond
    the population's is below 0), while its CORR, the control, stays within ±15%."""
    d = numbers(f)
    assert d["stake_jump_median_mmc_change_vs_population"] < 0
    assert abs(d["stake_jump_corr_change"]) <= 0.15


def test_default_season_reproduces_the_findings() -> None:
    """The demo's season at its default seed meets every criterion of the article, and its
    realised payouts rarely reach the clip."""
    f = figures_of(2026)
    assert failed(f) == []
    assert_the_tax_is_there(f)
    assert f.clip_rate <= 0.05


@pytest.mark.slow
def test_the_checks_fail_without_a_crowd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: with no common signal (crowd shares near 0) the most crowded decile
    earns as much MMC as the most original one, so the crowding finding is missed."""
    import dataclasses

    season = DemoConfig(seed=2026).season()
    flat = dataclasses.replace(season, crowd_weight=0.01, newcomer_crowd_weight=0.01)
    monkeypatch.setattr(DemoConfig, "season", lambda self: flat)
    f = season_figures(2026)
    assert "MMC of the highest CWMM decile < lowest / 3" in failed(f)
    assert f.headline["mmc_highest_cwmm_decile"] >= f.headline["mmc_lowest_cwmm_decile"] / 3


@functools.cache
def figures_of(seed: int) -> Figures:
    """:func:`season_figures`, once per seed and test session."""
    return season_figures(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", OTHER_SEEDS)
def test_other_seeds_keep_the_robust_findings(seed: int) -> None:
    """At seeds 1–15, the criteria that hold at every seed measured (:data:`EVERY_SEED`) and the
    crowding tax's sign beyond the population's."""
    f = figures_of(seed)
    assert failed(f, EVERY_SEED) == []
    assert_the_tax_is_there(f)
    assert f.clip_rate <= 0.05


@pytest.mark.slow
def test_most_seeds_reproduce_every_finding() -> None:
    """Across the sixteen seeds, every criterion holds at eleven and the median MMC change after
    a ≥5× jump lies in −60%…−20% at thirteen (docs/simulation.md): asserted as at least ten and
    twelve, the counts printed."""
    seeds = (2026, *OTHER_SEEDS)
    misses = {seed: failed(figures_of(seed)) for seed in seeds}
    every = [seed for seed in seeds if not misses[seed]]
    in_band = [seed for seed in seeds if MEDIAN_IN_BAND not in misses[seed]]
    print(f"every criterion at {len(every)} of {len(seeds)} seeds {every}; median in the band at {len(in_band)} {in_band}")
    assert len(every) >= 10
    assert len(in_band) >= 12


def _table(seeds: list[int]) -> None:
    """Print docs/simulation.md's per-seed figures (✗ marks a criterion missed)."""
    rows: dict[str, list[str]] = {}
    for seed in seeds:
        f = season_figures(seed)
        d, missed = numbers(f), set(failed(f))

        def mark(*names: str, missed: set[str] = missed) -> str:
            return " ✗" if missed.intersection(names) else ""

        figures = {
            "mean CORR": f"{d['mean_corr']:.3f}" + mark("mean CORR in 0.005–0.04"),
            "mean MMC": f"{d['mean_mmc']:.4f}" + mark("mean MMC in 0.002–0.01"),
            "realised payouts at the clip": f"{f.clip_rate:.0%}",
            "CWMM top − bottom stake decile": f"{d['cwmm_top_stake_decile'] - d['cwmm_bottom_stake_decile']:+.3f}"
            + mark("top stake decile's CWMM ≥ bottom's + 0.10"),
            "MMC lowest / highest CWMM decile": f"{d['mmc_lowest_cwmm_decile']:.4f} / {d['mmc_highest_cwmm_decile']:.4f}"
            + mark("MMC of the lowest CWMM decile > 0", "MMC of the highest CWMM decile < lowest / 3"),
            "steepest MMC drop into decile": str(d["steepest_drop_into_decile"]) + mark("steepest MMC drop into decile 6 or later"),
            "stake-weighted CWMM, first → last fifth": f"{d['swmm_cwmm_first']:.3f} → {d['swmm_cwmm_last']:.3f}" + mark("stake-weighted CWMM rising"),
            "gap stake-weighted − median": f"{d['gap_cwmm_first']:.3f} → {d['gap_cwmm_last']:.3f}" + mark("stake-weighted − median gap widening"),
            "median CWMM, first → last fifth": f"{d['median_cwmm_first']:.3f} → {d['median_cwmm_last']:.3f}",
            "≥5× events (compared: half a window on each side)": f"{d['stake_jump_events']} ({d['stake_jump_compared']})"
            + mark("≥ 5 stake-jump events compared"),
            "median MMC change per event": f"{d['stake_jump_median_mmc_change']:+.1%}" + mark("median MMC change after a jump in −60%…−20%"),
            "the median's 95% bootstrap interval · events whose MMC fell": f"{d['stake_jump_median_mmc_change_low']:+.0%} …"
            f" {d['stake_jump_median_mmc_change_high']:+.0%} · {d['stake_jump_mmc_fell']} of {d['stake_jump_compared']}",
            "mean MMC before → after": f"{d['stake_jump_mean_mmc_before']:.4f} → {d['stake_jump_mean_mmc_after']:.4f}",
            "median CORR change per event": f"{d['stake_jump_corr_change']:+.1%}" + mark("CORR change after a jump within ±15%"),
            "median MMC change beyond the population's": f"{d['stake_jump_median_mmc_change_vs_population']:+.1%}",
            "population's mean MMC before → after": f"{d['stake_jump_population_mmc_before']:.4f} → {d['stake_jump_population_mmc_after']:.4f}",
            "HHI of the stakes, first → last fifth": f"{f.hhi[0]:.3f} → {f.hhi[1]:.3f}",
            "mean MMC of the models without a ≥5× reinvestment, first → last fifth": f"{f.control_mmc[0]:.4f} → {f.control_mmc[1]:.4f}",
            "reinvestor's share of the stake after (median, max)": f"{np.median(f.jump_shares):.1%}, {np.max(f.jump_shares):.1%}",
        }
        for name, value in figures.items():
            rows.setdefault(name, []).append(value)
    print("| figure | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    import sys

    _table([int(a) for a in sys.argv[1:]] or [2026])
