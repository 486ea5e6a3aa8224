"""Alert rules (pure): each returns ``mmc.alerts`` values; thresholds come from the settings.

Kinds (DESIGN §3):

- ``corr_w_mm_spike`` — a model's CWMM rises more than ``MMC_ALERT_CWMM_SPIKE_DELTA`` above
  its own mean over its previous ``MMC_ALERT_CWMM_BASELINE_ROUNDS`` rounds, or it enters the
  round's top CWMM decile having been below the top decile of its previous round. Raised at a
  round's first scored update (``stage: "resolution"``) and, provisionally, when a submission
  arrives against the round's running meta model (``stage: "live"``: it reflects the
  submissions received so far, so it depends on arrival order; every other output does not).
- ``crowding_tax`` — a model's frozen stake rose ≥ ``MMC_ALERT_STAKE_JUMP_RATIO``× between
  adjacent rounds; the population's measured MMC change after such jumps is attached.
- ``crowding_trend`` — the stake-weighted mean CWMM has risen over the latest
  ``MMC_ALERT_TREND_ROUNDS`` rounds by at least ``MMC_ALERT_TREND_MIN_SLOPE`` per round.
- ``concentration`` — the effective number of staked models (1/HHI) fell below
  ``MMC_ALERT_MIN_EFFECTIVE_MODELS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.settings import Settings


def alert(
    kind: str,
    severity: str,
    message: str,
    *,
    round_number: int,
    model: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
    stage: str = "resolution",
    day: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "severity": severity,
        "model": model,
        "round": round_number,
        "day": day,
        "stage": stage,
        "value": value,
        "threshold": threshold,
        "message": message,
        **extra,
    }


def cwmm_baseline(settings: Settings, history: dict[int, dict[str, Any]], before: int) -> float | None:
    """Mean CWMM of the model's latest baseline rounds before ``before`` (None without any)."""
    rounds = [r for r in sorted(history) if r < before and history[r].get("corr_w_mm") is not None]
    rounds = rounds[-settings.alert_cwmm_baseline_rounds :]
    return float(np.mean([history[r]["corr_w_mm"] for r in rounds])) if rounds else None


def cwmm_spike(
    settings: Settings,
    model: str,
    round_number: int,
    cwmm: float | None,
    history: dict[int, dict[str, Any]],
    top_decile: float | None,
    previous_top_decile: float | None,
    stage: str = "resolution",
    day: int | None = None,
) -> dict[str, Any] | None:
    """A ``corr_w_mm_spike`` alert for one model, or None."""
    if cwmm is None:
        return None
    baseline = cwmm_baseline(settings, history, round_number)
    if baseline is not None and cwmm > baseline + settings.alert_cwmm_spike_delta:
        threshold = baseline + settings.alert_cwmm_spike_delta
        return alert(
            "corr_w_mm_spike", "warning",
            f"{model}: correlation with the meta model {cwmm:.3f} in round {round_number} is "
            f"{cwmm - baseline:+.3f} above its baseline {baseline:.3f}",
            round_number=round_number, model=model, value=cwmm, threshold=threshold,
            stage=stage, day=day, baseline=baseline, trigger="baseline",
        )
    previous = [r for r in sorted(history) if r < round_number]
    prev_cwmm = history[previous[-1]].get("corr_w_mm") if previous else None
    if (
        top_decile is not None
        and cwmm >= top_decile
        and prev_cwmm is not None
        and previous_top_decile is not None
        and prev_cwmm < previous_top_decile
    ):
        return alert(
            "corr_w_mm_spike", "info",
            f"{model}: entered the top decile of correlation with the meta model "
            f"({cwmm:.3f} ≥ {top_decile:.3f}) in round {round_number}",
            round_number=round_number, model=model, value=cwmm, threshold=top_decile,
            stage=stage, day=day, baseline=baseline, trigger="top_decile",
        )
    return None


def crowding_tax(
    settings: Settings,
    model: str,
    round_number: int,
    stake: float,
    previous_stake: float | None,
    population: dict[str, Any],
    day: int | None = None,
) -> dict[str, Any] | None:
    """A ``crowding_tax`` alert when the stake rose ≥ ratio× since the previous round."""
    if previous_stake is None or previous_stake <= 0 or stake < settings.alert_stake_jump_ratio * previous_stake:
        return None
    ratio = stake / previous_stake
    change = population.get("median_relative_change")
    measured = (
        f"; after such jumps MMC has changed by a median {change:+.0%} over {population.get('n_compared', 0)} events"
        if change is not None
        else "; no earlier jumps to measure the MMC change on yet"
    )
    return alert(
        "crowding_tax", "warning",
        f"{model}: stake rose {ratio:.1f}× to {stake:,.2f} in round {round_number}{measured}",
        round_number=round_number, model=model, value=ratio, threshold=settings.alert_stake_jump_ratio,
        day=day, stake=stake, previous_stake=previous_stake, population=population,
    )


def crowding_trend(settings: Settings, round_number: int, trend: dict[str, Any], day: int | None = None) -> dict[str, Any] | None:
    """A ``crowding_trend`` alert when the recent stake-weighted CWMM slope is at or above the threshold."""
    slope = trend.get("recent_weighted_slope")
    if slope is None or len(trend.get("recent_rounds", [])) < settings.alert_trend_rounds:
        return None
    if slope < settings.alert_trend_min_slope:
        return None
    return alert(
        "crowding_trend", "warning",
        f"stake-weighted correlation with the meta model rising {slope:+.4f} per round over "
        f"rounds {trend['recent_rounds'][0]}–{trend['recent_rounds'][-1]}",
        round_number=round_number, value=slope, threshold=settings.alert_trend_min_slope, day=day,
        median_slope=trend.get("median_slope"),
    )


def concentration(settings: Settings, round_number: int, effective_models: float | None, day: int | None = None) -> dict[str, Any] | None:
    """A ``concentration`` alert when 1/HHI of the round's stakes is below the threshold."""
    if effective_models is None or effective_models <= 0 or effective_models >= settings.alert_min_effective_models:
        return None
    return alert(
        "concentration", "warning",
        f"round {round_number}: stake is concentrated in the equivalent of {effective_models:.1f} models "
        f"(threshold {settings.alert_min_effective_models:g})",
        round_number=round_number, value=effective_models, threshold=settings.alert_min_effective_models, day=day,
    )
