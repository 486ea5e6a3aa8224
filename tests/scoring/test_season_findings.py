"""The simulated season, scored with the scoring core alone (no broker), against the seed
article's crowding findings (DESIGN §2.2; "MMC" is today's MMC, ``contribution``).

The season is the demo's (streams/demo.py: 120 models × 5,000 ids × 30 rounds, 20-day
resolution). The figures that hold for every seed tried are asserted here; docs/simulation.md
lists every figure measured per seed, including those that do not hold at every seed — run
``.venv/bin/python tests/scoring/test_season_findings.py 2026 1 2 3`` to print them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.stats import rankdata

import scoring
from streams.demo import DemoConfig
from streams.simulation import Simulation

WINDOW = 20  # rounds before / after a stake jump (the article's event study)


@dataclass
class Figures:
    mean_corr: float
    cwmm_top_stake_decile: float
    cwmm_bottom_stake_decile: float
    mmc_by_cwmm_decile: np.ndarray
    steepest_drop_into_decile: int
    swmm_cwmm: np.ndarray  # per round
    median_cwmm: np.ndarray  # per round
    stake_jump_events: int
    mmc_change_median: float
    mmc_before: float
    mmc_after: float
    corr_change: float
    clip_rate: float  # share of the simulator's payouts at ±clip
    jump_shares: np.ndarray  # each ≥5× reinvestor's share of the total stake right after it


def _deciles(x: np.ndarray) -> np.ndarray:
    """Decile 0..9 of each value by average rank, all rows pooled."""
    return np.minimum((10 * (rankdata(x) - 0.5) / x.size).astype(int), 9)


def season_figures(seed: int) -> Figures:
    """Score every round with scoring.score_round (final targets, stakes at close)."""
    sim = Simulation(DemoConfig(seed=seed).season())
    rows = []
    for i, r in enumerate(sim.rounds):
        who = np.flatnonzero(sim.submitted[i])
        stakes = sim.stakes[i, who]
        s = scoring.score_round(sim.predictions(r)[who], stakes, sim.targets(r), round=r)
        rows += zip([i] * who.size, who, stakes, s.corr, s.contribution, s.corr_w_mm, strict=True)
    rnd, model, stake, corr, mmc, cwmm = np.array(rows, dtype=float).T
    rnd, model = rnd.astype(int), model.astype(int)

    staked = stake > 0
    d = _deciles(stake[staked])
    by_cwmm = _deciles(cwmm)
    mmc_dec = np.array([mmc[by_cwmm == q].mean() for q in range(10)])
    weighted, median = [], []
    for i in range(len(sim.rounds)):
        here = rnd == i
        w = here & staked
        weighted.append(float(np.sum(stake[w] * cwmm[w]) / np.sum(stake[w])))
        median.append(float(np.median(cwmm[here])))

    # Event study: ≥5× stake between adjacent rounds; before = r−20..r−1, after = r..r+19.
    at = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(rnd, model, strict=True))}
    ratio = np.divide(sim.stakes[1:], sim.stakes[:-1], out=np.zeros_like(sim.stakes[1:]), where=sim.stakes[:-1] > 0)
    events = [(i + 1, m) for i, m in zip(*np.nonzero(ratio >= 5), strict=True)]
    changes, before_mmc, after_mmc, before_corr, after_corr = [], [], [], [], []
    for i, m in events:
        b = [at[(t, m)] for t in range(i - WINDOW, i) if (t, m) in at]
        a = [at[(t, m)] for t in range(i, i + WINDOW) if (t, m) in at]
        if b and a:
            changes.append((mmc[a].mean() - mmc[b].mean()) / abs(mmc[b].mean()))
            before_mmc += mmc[b].tolist()
            after_mmc += mmc[a].tolist()
            before_corr += corr[b].tolist()
            after_corr += corr[a].tolist()
    drops = mmc_dec[:-1] - mmc_dec[1:]
    paid = sim.payouts[np.isfinite(sim.payouts)]
    shares = [j.stake_after / sim.stakes[sim.rounds.index(j.round)].sum() for j in sim.jumps]
    return Figures(
        mean_corr=float(np.mean(corr)),
        cwmm_top_stake_decile=float(np.median(cwmm[staked][d == 9])),
        cwmm_bottom_stake_decile=float(np.median(cwmm[staked][d == 0])),
        mmc_by_cwmm_decile=mmc_dec,
        steepest_drop_into_decile=int(np.argmax(drops)) + 2,
        swmm_cwmm=np.array(weighted),
        median_cwmm=np.array(median),
        stake_jump_events=len(events),
        mmc_change_median=float(np.median(changes)) if changes else float("nan"),
        mmc_before=float(np.mean(before_mmc)) if before_mmc else float("nan"),
        mmc_after=float(np.mean(after_mmc)) if after_mmc else float("nan"),
        corr_change=float(np.mean(after_corr) / np.mean(before_corr) - 1) if before_corr else float("nan"),
        clip_rate=float(np.mean(np.abs(paid) >= sim.config.payout_clip - 1e-12)),
        jump_shares=np.array(shares),
    )


def _first_last(x: np.ndarray) -> tuple[float, float]:
    """Means of the first and the last fifth of the season's rounds."""
    t = max(1, x.size // 5)
    return float(x[:t].mean()), float(x[-t:].mean())


def check_findings(f: Figures) -> None:
    """What holds at every seed measured (docs/simulation.md)."""
    # Realistic magnitudes.
    assert 0.005 <= f.mean_corr <= 0.04
    # MMC is positive for the most original models and lower for the most crowded, and it
    # falls most steeply in the penalised deciles (the article: flat, then falling from 7).
    lowest, highest = f.mmc_by_cwmm_decile[0], f.mmc_by_cwmm_decile[-1]
    assert lowest > 0 and highest < lowest
    assert f.steepest_drop_into_decile >= 6
    # Stake-weighted CWMM rises over the season and pulls away from the median.
    sw_first, sw_last = _first_last(f.swmm_cwmm)
    gap_first, gap_last = _first_last(f.swmm_cwmm - f.median_cwmm)
    assert sw_last > sw_first
    assert gap_last > gap_first
    # The money sits nearer the meta model (the article's +0.17).
    assert f.cwmm_top_stake_decile >= f.cwmm_bottom_stake_decile + 0.10
    # The event study: enough ≥5× reinvestments arise from good runs, and CORR — which no stake
    # moves — stays put around them (the control). (The median MMC change is asserted at the
    # default seed only: with 12 events it is ±25% noise, see docs/simulation.md.)
    assert f.stake_jump_events >= 5
    assert abs(f.corr_change) <= 0.15


def test_default_season_reproduces_the_findings() -> None:
    """The demo's season at its default seed; there the most crowded decile also keeps less
    than a third of the most original decile's MMC, and the median MMC change after a ≥5×
    reinvestment lies between −20% and −60% (the article's criteria)."""
    f = season_figures(2026)
    check_findings(f)
    assert f.mmc_by_cwmm_decile[-1] < f.mmc_by_cwmm_decile[0] / 3
    assert -0.60 <= f.mmc_change_median <= -0.20


def test_the_checks_fail_without_a_crowd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: with no common signal (crowd shares near 0) the stake deciles no
    longer differ in CWMM and the MMC of the most crowded decile is not a third of the rest."""
    import dataclasses

    season = DemoConfig(seed=2026).season()
    flat = dataclasses.replace(season, crowd_weight=0.01, newcomer_crowd_weight=0.01)
    monkeypatch.setattr(DemoConfig, "season", lambda self: flat)
    with pytest.raises(AssertionError):
        check_findings(season_figures(2026))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds_reproduce_the_findings(seed: int) -> None:
    """The same findings at other seeds."""
    check_findings(season_figures(seed))


def _table(seeds: list[int]) -> None:
    """Print docs/simulation.md's per-seed figures."""
    rows: dict[str, list[str]] = {}
    for seed in seeds:
        f = season_figures(seed)
        lo, hi = f.mmc_by_cwmm_decile[0], f.mmc_by_cwmm_decile[-1]
        sw, gap = _first_last(f.swmm_cwmm), _first_last(f.swmm_cwmm - f.median_cwmm)
        median = _first_last(f.median_cwmm)
        figures = {
            "mean CORR": f"{f.mean_corr:.3f}",
            "mean MMC (CWMM deciles' means averaged)": f"{np.mean(f.mmc_by_cwmm_decile):.4f}",
            "payouts at the clip": f"{f.clip_rate:.0%}",
            "CWMM top − bottom stake decile": f"{f.cwmm_top_stake_decile - f.cwmm_bottom_stake_decile:+.3f}",
            "MMC lowest / highest CWMM decile": f"{lo:.4f} / {hi:.4f}",
            "steepest MMC drop into decile": str(f.steepest_drop_into_decile),
            "stake-weighted CWMM, first → last fifth": f"{sw[0]:.3f} → {sw[1]:.3f}",
            "gap stake-weighted − median": f"{gap[0]:.3f} → {gap[1]:.3f}",
            "median CWMM, first → last fifth": f"{median[0]:.3f} → {median[1]:.3f}",
            "≥5× events": str(f.stake_jump_events),
            "median MMC change per event": f"{f.mmc_change_median:+.1%}",
            "MMC before → after (pooled)": f"{f.mmc_before:.4f} → {f.mmc_after:.4f}",
            "CORR change around the events": f"{f.corr_change:+.1%}",
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
