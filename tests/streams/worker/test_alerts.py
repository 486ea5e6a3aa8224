"""Alert rules on the article's scale: each fires on a constructed case and stays (almost) silent
on a noise-only season of the same length; the false-positive rates are measured and printed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from scoring.crowding import stake_concentration
from streams.settings import Settings
from streams.tools.simulation import Simulation, SimulationConfig
from streams.worker import alerts

SETTINGS = Settings()
SEASONS = 2000


def history(values: list[float], first_round: int = 1) -> dict[int, dict[str, Any]]:
    return {first_round + i: {"corr_w_mm": v, "stake": 1.0} for i, v in enumerate(values)}


def trend(weighted: list[float], median: list[float]) -> dict[str, Any]:
    return {"rounds": list(range(1, len(weighted) + 1)), "stake_weighted_cwmm": weighted, "median_cwmm": median}


def test_slope_t_of_a_hand_computed_line() -> None:
    """y = 2x + noise (±1 alternating) on x = 1..4: slope 1.8 by hand, t = 1.8 / sqrt(Σr²/(n−2)/Sxx)."""
    fit = alerts.slope_t([1, 2, 3, 4], [3.0, 3.0, 7.0, 7.0])
    assert fit is not None
    slope, t = fit
    assert slope == pytest.approx(1.6)  # Sxy = 8, Sxx = 5
    residuals = np.array([3, 3, 7, 7]) - (5 + 1.6 * (np.array([1, 2, 3, 4]) - 2.5))
    assert t == pytest.approx(1.6 / np.sqrt(residuals @ residuals / 2 / 5))
    assert alerts.slope_t([1, 2], [1, 2]) is None


def test_spike_fires_on_a_jump_of_several_own_deviations() -> None:
    """Baseline 0.30 ± ~0.02 over ten rounds; 0.45 in round 11 fires with trigger baseline."""
    rng = np.random.default_rng(1)
    past = list(0.30 + 0.02 * rng.standard_normal(10))
    found = alerts.cwmm_spike(SETTINGS, "m1", 11, 0.45, history(past), None, None)
    assert found is not None and found["trigger"] == "baseline" and found["threshold"] < 0.45
    assert found["baseline"] == pytest.approx(np.mean(past)) and found["baseline_std"] == pytest.approx(np.std(past, ddof=1))


def test_spike_needs_the_minimum_jump_even_for_a_flat_model() -> None:
    """A model whose CWMM never moved: +0.01 is not a spike (MMC_ALERT_CWMM_SPIKE_DELTA 0.05), +0.06 is."""
    flat = history([0.3] * 10)
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, 0.31, flat, None, None) is None
    assert alerts.cwmm_spike(SETTINGS, "m1", 11, 0.36, flat, None, None) is not None


def test_spike_false_positive_rate_on_noise_only_seasons() -> None:
    """Models whose CWMM is i.i.d. noise (0.30 ± 0.05) for 30 rounds: the share of model-rounds
    that fire (baseline trigger) stays near the rule's nominal rate, well under 1.5%."""
    rng = np.random.default_rng(7)
    fired = checked = 0
    for _ in range(SEASONS // 4):
        values = list(0.30 + 0.05 * rng.standard_normal(30))
        past = history(values)
        for r in range(SETTINGS.alert_cwmm_baseline_rounds + 1, 31):
            checked += 1
            fired += alerts.cwmm_spike(SETTINGS, "m", r, values[r - 1], {k: v for k, v in past.items() if k < r}, None, None) is not None
    rate = fired / checked
    print(f"corr_w_mm_spike false positives on noise: {rate:.2%} of {checked:,} model-rounds")
    assert rate < 0.015


EDGES = [0.1 * k for k in range(1, 10)]  # decile d starts at 0.1·(d−1)


def test_spike_on_entering_the_penalised_deciles_carries_stake_decile_and_population_mmc() -> None:
    """From decile 6 (0.55) to decile 8 (0.75) with no baseline spike: trigger penalised_deciles
    (MMC_ALERT_CWMM_PENALISED_DECILE 7), with the stake and what decile 8 has earned lately."""
    past = history([0.40, 0.70, 0.55])  # baseline 0.55 (decile 6), too noisy for a baseline spike
    population = [0.01 - 0.001 * d for d in range(10)]
    found = alerts.cwmm_spike(SETTINGS, "m1", 4, 0.75, past, EDGES, EDGES, stake=250.0, population=population)
    assert found is not None and found["trigger"] == "penalised_deciles"
    assert found["decile"] == 8 and found["stake"] == 250.0 and found["population_mmc"] == pytest.approx(0.003)
    assert found["threshold"] == pytest.approx(0.6)  # decile 7's lower edge
    assert "decile 8" in found["message"] and "stake 250.00" in found["message"]
    # already in the penalised deciles last round, or still below them: nothing
    assert alerts.cwmm_spike(SETTINGS, "m1", 4, 0.75, history([0.50, 0.80, 0.65]), EDGES, EDGES) is None
    assert alerts.cwmm_spike(SETTINGS, "m1", 4, 0.58, past, EDGES, EDGES) is None
    # unknown deciles (no scored round yet): no decile trigger, null context
    assert alerts.cwmm_spike(SETTINGS, "m1", 4, 0.75, past, None, EDGES) is None


def test_population_decile_mmc_averages_the_latest_rounds() -> None:
    table = {r: {"mmc_mean_by_cwmm_decile": [float(r)] * 9 + [None]} for r in range(1, 31)}
    means = alerts.population_decile_mmc(table, upto=25, recent=20)
    assert means[0] == pytest.approx(np.mean(range(6, 26))) and means[9] is None
    assert alerts.decile_of(0.05, EDGES) == 1 and alerts.decile_of(0.95, EDGES) == 10 and alerts.decile_of(0.35, EDGES) == 4
    assert alerts.decile_of(0.3, None) is None


def test_penalised_decile_entries_on_noise_only_seasons() -> None:
    """Models whose CWMM moves at random around a persistent level (no crowding): the share of
    model-rounds that enter deciles 7–10 from below and rise by the minimum jump is printed and
    stays near 1% (without the baseline and the minimum jump, reshuffling alone fires ~10%)."""
    rng = np.random.default_rng(11)
    fired = checked = 0
    for _ in range(SEASONS // 100):
        n = 100
        persistent = rng.standard_normal(n)
        values = [list(0.4 + 0.05 * (persistent + 0.5 * rng.standard_normal(n))) for _ in range(30)]
        edges = [list(np.quantile(v, np.arange(1, 10) / 10)) for v in values]
        for m in range(n):
            for r in range(2, 31):
                checked += 1
                past = {k: {"corr_w_mm": values[k - 1][m]} for k in range(max(1, r - SETTINGS.alert_cwmm_baseline_rounds), r)}
                found = alerts.cwmm_spike(SETTINGS, "m", r, values[r - 1][m], past, edges[r - 1], edges[r - 2])
                fired += found is not None and found["trigger"] == "penalised_deciles"
    rate = fired / checked
    print(f"corr_w_mm_spike penalised_deciles entries on reshuffling noise: {rate:.2%} of {checked:,} model-rounds")
    assert 0 < rate < 0.02


def test_trend_fires_on_the_article_signal_in_a_noisy_season() -> None:
    """Stake-weighted CWMM rising 0.004 per round and its gap over the median widening, with
    ±0.01 noise per round, over 20 rounds: fires, names both triggers, says the % change."""
    rng = np.random.default_rng(3)
    x = np.arange(20)
    weighted = list(0.32 + 0.004 * x + 0.01 * rng.standard_normal(20))
    median = list(0.25 + 0.001 * x + 0.01 * rng.standard_normal(20))
    found = alerts.crowding_trend(SETTINGS, 20, trend(weighted, median))
    assert found is not None and found["trigger"] == "stake_weighted+gap"
    assert found["weighted_t"] >= SETTINGS.alert_trend_min_t and found["window"] == [1, 20]
    assert "%" in found["message"]


def test_trend_needs_the_whole_window() -> None:
    """19 rounds of a perfect rise are not enough for a 20-round window."""
    rising = [0.3 + 0.01 * i for i in range(19)]
    assert alerts.crowding_trend(SETTINGS, 19, trend(rising, [0.25] * 19)) is None


def test_trend_false_positive_rate_on_noise_only_seasons() -> None:
    """Flat series with ±0.01 noise, 40 rounds, the rule checked at every round from the 20th:
    the share of checks that fire stays under 2% (two one-sided tests at p ≈ 0.004 each)."""
    rng = np.random.default_rng(11)
    fired = checked = 0
    for _ in range(SEASONS // 10):
        weighted = list(0.40 + 0.01 * rng.standard_normal(40))
        median = list(0.30 + 0.01 * rng.standard_normal(40))
        for r in range(20, 41):
            checked += 1
            fired += alerts.crowding_trend(SETTINGS, r, trend(weighted[:r], median[:r])) is not None
    rate = fired / checked
    print(f"crowding_trend false positives on noise: {rate:.2%} of {checked:,} round checks")
    assert rate < 0.02


# --- crowding_tax and concentration on simulated seasons -----------------------------------------


def _season(**overrides: Any) -> Simulation:
    """A small simulated season whose stakes move as the demo's do: payouts reinvested,
    withdrawals after losing runs, new money shared by stake squared up to 4% of the total stake,
    newcomers arriving."""
    knobs: dict[str, Any] = {
        "n_models": 120,
        "n_ids": 200,
        "n_rounds": 40,
        "resolution_days": 3,
        "inflow_rate": 0.02,
        "inflow_exponent": 2.0,
        "inflow_saturation": 0.04,
    }
    knobs.update(overrides)
    return Simulation(SimulationConfig.small(**knobs))


def _tax_alerts(sim: Simulation) -> tuple[set[tuple[str, int]], int]:
    """The (model, round) pairs the ``crowding_tax`` rule fires on, fed each model's stake and its
    stake of the round before (None before it first staked), and how many model-rounds it checked."""
    fired: set[tuple[str, int]] = set()
    checked = 0
    for j in range(1, len(sim.rounds)):
        for m, model in enumerate(sim.models):
            previous = float(sim.stakes[j - 1, m]) or None
            checked += 1
            if alerts.crowding_tax(SETTINGS, model, sim.rounds[j], float(sim.stakes[j, m]), previous, {}) is not None:
                fired.add((model, sim.rounds[j]))
    return fired, checked


def test_crowding_tax_fires_on_each_large_reinvestment_and_never_on_ordinary_stake_moves() -> None:
    """With large reinvestments in the season it fires exactly on each of them (the simulator's
    ground truth); the same season without them (payouts, withdrawals, new money, newcomers)
    raises none."""
    jumps = _season(jump_probability=0.05, jump_range=(5.0, 15.0), n_jumps=1000)
    fired, _ = _tax_alerts(jumps)
    assert len(jumps.jumps) >= 5
    assert fired == {(j.model, j.round) for j in jumps.jumps}
    fired, checked = _tax_alerts(_season(jump_probability=0.0))
    print(f"crowding_tax on a season without large reinvestments: {len(fired)} of {checked:,} model-rounds")
    assert fired == set()


def _concentration_alerts(sim: Simulation) -> list[int]:
    return [r for j, r in enumerate(sim.rounds) if alerts.concentration(SETTINGS, r, float(stake_concentration(sim.stakes[j]).effective_number)) is not None]


def test_concentration_fires_when_new_money_concentrates_the_stake_and_not_otherwise() -> None:
    """New money drawn by stake cubed (10% of the total stake per round) leaves the stake with
    fewer than ten effective stakers within the season, and the rule fires from then on; the
    same season with new money pro rata (shares unchanged) raises none."""
    concentrating = _season(inflow_rate=0.10, inflow_exponent=3.0, inflow_saturation=0.0, jump_probability=0.0)
    fired = _concentration_alerts(concentrating)
    assert fired and fired == list(concentrating.rounds[concentrating.rounds.index(fired[0]) :])
    plain = _season(inflow_rate=0.02, inflow_exponent=1.0, jump_probability=0.0)
    fired = _concentration_alerts(plain)
    print(f"concentration on a season with pro-rata new money: {len(fired)} of {len(plain.rounds)} rounds")
    assert fired == []
