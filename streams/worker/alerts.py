"""Alert rules (pure): each returns ``mmc.alerts`` values; thresholds come from the settings.

Kinds (DESIGN §3):

- ``corr_w_mm_spike`` — a model's CWMM rises above its own baseline (mean of its previous
  ``MMC_ALERT_CWMM_BASELINE_ROUNDS`` rounds with a CWMM) by ``MMC_ALERT_CWMM_SPIKE_SIGMAS`` of
  its own standard deviations and by at least ``MMC_ALERT_CWMM_SPIKE_DELTA``, or it enters the
  penalised CWMM deciles of its round (decile ``MMC_ALERT_CWMM_PENALISED_DECILE`` or higher,
  the article's 7–10) from below them (its baseline placed among its previous round's deciles;
  its previous round's CWMM while it has no baseline), rising by at least
  ``MMC_ALERT_CWMM_SPIKE_DELTA`` over where it stood. Each carries the model's stake,
  its decile and the MMC (today's) the population has earned in that decile over the latest
  ``MMC_ALERT_TREND_ROUNDS`` rounds (:func:`population_decile_mmc`). Raised when the round
  closes (``stage: "close"``; CWMM needs no targets): the CWMMs are those of the round's meta
  model at close (stakes frozen), the baseline is the model's CWMMs at its previous closes,
  the deciles are the round's own and its previous round's at close, and the population's MMC
  comes from the rounds whose first final update was stamped before the close — so a replay
  raises the same alerts. Also raised provisionally when a submission arrives, against the
  round's running meta model (``stage: "live"``: it reflects the submissions received so far,
  so it depends on arrival order; every other output does not).
- ``crowding_tax`` — a model's frozen stake rose ≥ ``MMC_ALERT_STAKE_JUMP_RATIO``× between
  adjacent rounds; attached: the model's own forecast (today's MMC in this round at the new
  stake vs re-scored at the old one) and the population's measured median change of today's
  MMC after such jumps.
- ``crowding_trend`` — over the latest ``MMC_ALERT_TREND_ROUNDS`` rounds, the least-squares
  slope of the stake-weighted mean CWMM, or of its gap over the unweighted median (the article's
  signal: stake concentrating on crowded models), is significant: t-statistic ≥
  ``MMC_ALERT_TREND_MIN_T`` and slope > ``MMC_ALERT_TREND_MIN_SLOPE`` per round.
- ``concentration`` — the effective number of staked models (1/HHI) fell below
  ``MMC_ALERT_MIN_EFFECTIVE_MODELS``.
"""

from __future__ import annotations

import math
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


def cwmm_baseline(settings: Settings, history: dict[int, dict[str, Any]], before: int) -> tuple[float, float] | None:
    """Mean and standard deviation (n−1) of the model's CWMM over its latest baseline rounds
    before ``before``; None with fewer than two such rounds."""
    rounds = [r for r in sorted(history) if r < before and history[r].get("corr_w_mm") is not None]
    values = [float(history[r]["corr_w_mm"]) for r in rounds[-settings.alert_cwmm_baseline_rounds :]]
    if len(values) < 2:
        return None
    spread = float(np.std(values, ddof=1))
    # A flat series' spread is 0 up to rounding (a few 1e-17): treated as 0, not as a scale.
    return float(np.mean(values)), spread if spread > 1e-12 else 0.0


def decile_of(value: float, edges: list[float | None] | None) -> int | None:
    """Decile 1–10 of ``value`` among a round's CWMMs, from the round's nine decile edges
    (its 10th … 90th percentiles); None without edges."""
    if not edges or any(e is None for e in edges):
        return None
    return 1 + sum(value >= e for e in edges if e is not None)


def population_decile_mmc(trend: dict[int, dict[str, Any]], upto: int, recent: int) -> list[float | None]:
    """Mean MMC (today's) per CWMM decile over the latest ``recent`` rounds up to ``upto`` that
    have one (each round's ``mmc_mean_by_cwmm_decile``, averaged with equal weight per round)."""
    rounds = [r for r in sorted(trend) if r <= upto and trend[r].get("mmc_mean_by_cwmm_decile")][-recent:]
    out: list[float | None] = []
    for d in range(10):
        values = [v for r in rounds if (v := trend[r]["mmc_mean_by_cwmm_decile"][d]) is not None]
        out.append(float(np.mean(values)) if values else None)
    return out


def cwmm_spike(
    settings: Settings,
    model: str,
    round_number: int,
    cwmm: float | None,
    history: dict[int, dict[str, Any]],
    edges: list[float | None] | None,
    previous_edges: list[float | None] | None,
    stage: str = "close",
    day: int | None = None,
    stake: float | None = None,
    population: list[float | None] | None = None,
) -> dict[str, Any] | None:
    """A ``corr_w_mm_spike`` alert for one model, or None.

    Arguments:
        edges, previous_edges: the nine CWMM decile edges of this round and of the model's
            previous round (``cwmm_decile_edges`` of their crowding figures); None when unknown.
        stake: the model's stake in this round.
        population: mean MMC per CWMM decile (:func:`population_decile_mmc`).
    """
    if cwmm is None:
        return None
    decile = decile_of(cwmm, edges)
    context = {
        "stake": stake,
        "decile": decile,
        "population_mmc": population[decile - 1] if population is not None and decile is not None else None,
    }
    measured = cwmm_baseline(settings, history, round_number)
    if measured is not None:
        found = _above_baseline(settings, model, round_number, cwmm, measured, stage, day, context)
        if found is not None:
            return found
    return _into_penalised_deciles(settings, model, round_number, cwmm, history, edges, previous_edges, measured, stage, day, context)


def _above_baseline(
    settings: Settings,
    model: str,
    round_number: int,
    cwmm: float,
    measured: tuple[float, float],
    stage: str,
    day: int | None,
    context: dict[str, Any],
) -> dict[str, Any] | None:
    """The baseline trigger: CWMM above the model's own mean by the larger of the sigma and delta thresholds."""
    mean, std = measured
    threshold = mean + max(settings.alert_cwmm_spike_sigmas * std, settings.alert_cwmm_spike_delta)
    if cwmm <= threshold:
        return None
    sigmas = (cwmm - mean) / std if std > 0 else None
    return alert(
        "corr_w_mm_spike",
        "warning",
        f"{model}: correlation with the meta model {cwmm:.3f} in round {round_number} is "
        f"{cwmm - mean:+.3f} above its baseline {mean:.3f}"
        + (f" ({sigmas:.1f} of its own standard deviations)" if sigmas is not None else "")
        + _decile_note(context),
        round_number=round_number,
        model=model,
        value=cwmm,
        threshold=threshold,
        stage=stage,
        day=day,
        baseline=mean,
        baseline_std=std,
        trigger="baseline",
        **context,
    )


def _into_penalised_deciles(
    settings: Settings,
    model: str,
    round_number: int,
    cwmm: float,
    history: dict[int, dict[str, Any]],
    edges: list[float | None] | None,
    previous_edges: list[float | None] | None,
    measured: tuple[float, float] | None,
    stage: str,
    day: int | None,
    context: dict[str, Any],
) -> dict[str, Any] | None:
    """The penalised-deciles trigger: the model entered them from below, by at least the delta."""
    baseline = measured[0] if measured is not None else None
    decile = context["decile"]
    # Where the model stood: its baseline (when it has one) rather than its last round alone, so
    # that a model hovering at the boundary does not alert every time it steps across.
    previous = [r for r in sorted(history) if r < round_number]
    prev_cwmm = baseline if baseline is not None else (history[previous[-1]].get("corr_w_mm") if previous else None)
    penalised = settings.alert_cwmm_penalised_decile
    prev_decile = decile_of(float(prev_cwmm), previous_edges) if prev_cwmm is not None else None
    if (
        edges is not None
        and decile is not None
        and decile >= penalised
        and prev_cwmm is not None
        and prev_decile is not None
        and prev_decile < penalised
        and cwmm >= float(prev_cwmm) + settings.alert_cwmm_spike_delta
    ):
        edge = edges[penalised - 2]
        return alert(
            "corr_w_mm_spike",
            "info",
            f"{model}: entered correlation-with-the-meta-model decile {decile} ({cwmm:.3f}) in round "
            f"{round_number}, from decile {prev_decile}" + _decile_note(context),
            round_number=round_number,
            model=model,
            value=cwmm,
            threshold=edge,
            stage=stage,
            day=day,
            baseline=baseline,
            trigger="penalised_deciles",
            **context,
        )
    return None


def _decile_note(context: dict[str, Any]) -> str:
    parts = []
    if context["stake"] is not None:
        parts.append(f"stake {context['stake']:,.2f}")
    if context["population_mmc"] is not None:
        parts.append(f"MMC earned in decile {context['decile']} lately {context['population_mmc']:+.4f}")
    return f"; {', '.join(parts)}" if parts else ""


def crowding_tax(
    settings: Settings,
    model: str,
    round_number: int,
    stake: float,
    previous_stake: float | None,
    population: dict[str, Any],
    day: int | None = None,
    forecast: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """A ``crowding_tax`` alert when the stake rose ≥ ratio× since the previous round, with the
    model's own forecast (its MMC in this round at the new and at the old stake) when given, and
    the population's measured median change of today's MMC after such jumps."""
    if previous_stake is None or not (previous_stake > 0 and math.isfinite(stake)) or stake < settings.alert_stake_jump_ratio * previous_stake:
        return None
    ratio = stake / previous_stake
    change = population.get("median_relative_change")
    measured = (
        f"; after such jumps MMC has changed by a median {change:+.0%} over {population.get('n_compared', 0)} events"
        if change is not None
        else "; no earlier jumps to measure the MMC change on yet"
    )
    own = ""
    if forecast is not None and forecast.get("tax") is not None:
        own = (
            f"; its MMC this round {forecast['contribution_at_new_stake']:+.4f} at the new stake vs "
            f"{forecast['contribution_at_old_stake']:+.4f} at the old one (tax {forecast['tax']:+.4f})"
        )
    extra: dict[str, Any] = {"own_forecast": forecast} if forecast is not None else {}
    return alert(
        "crowding_tax",
        "warning",
        f"{model}: stake rose {ratio:.1f}× to {stake:,.2f} in round {round_number}{own}{measured}",
        round_number=round_number,
        model=model,
        value=ratio,
        threshold=settings.alert_stake_jump_ratio,
        day=day,
        stake=stake,
        previous_stake=previous_stake,
        population=population,
        **extra,
    )


def slope_t(x: list[float], y: list[float]) -> tuple[float, float] | None:
    """Least-squares slope of y on x and its t-statistic (slope / standard error, n−2 degrees of
    freedom); None with fewer than three points or no spread in x. A perfect fit gives ±inf."""
    if len(x) < 3:
        return None
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = xa - xa.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return None
    slope = float(dx @ (ya - ya.mean())) / sxx
    residual = ya - ya.mean() - slope * dx
    se = float(np.sqrt((residual @ residual) / (len(xa) - 2) / sxx))
    if se <= 1e-12 * abs(slope):  # what is left is rounding: a perfect fit
        se = 0.0
    if se == 0:
        return slope, (np.inf if slope > 0 else -np.inf if slope < 0 else 0.0)
    return slope, slope / se


def crowding_trend(settings: Settings, round_number: int, trend: dict[str, Any], day: int | None = None) -> dict[str, Any] | None:
    """A ``crowding_trend`` alert when, over the latest ``alert_trend_rounds`` rounds with both
    figures, the stake-weighted CWMM or its gap over the median CWMM rises significantly."""
    points = [
        (float(r), float(w), float(w) - float(m))
        for r, w, m in zip(trend.get("rounds", []), trend.get("stake_weighted_cwmm", []), trend.get("median_cwmm", []), strict=False)
        if w is not None and m is not None
    ][-settings.alert_trend_rounds :]
    if len(points) < settings.alert_trend_rounds:
        return None
    rounds = [p[0] for p in points]
    weighted = slope_t(rounds, [p[1] for p in points])
    gap = slope_t(rounds, [p[2] for p in points])
    if weighted is None or gap is None:
        return None

    def rising(fit: tuple[float, float]) -> bool:
        return fit[1] >= settings.alert_trend_min_t and fit[0] > settings.alert_trend_min_slope

    triggers = [name for name, fit in (("stake_weighted", weighted), ("gap", gap)) if rising(fit)]
    if not triggers:
        return None
    first, last = points[0][1], points[-1][1]
    change = (last - first) / abs(first) if first else None
    return alert(
        "crowding_trend",
        "warning",
        f"stake-weighted correlation with the meta model {weighted[0]:+.4f} per round (t = {_t(weighted[1])}) and its gap "
        f"over the median {gap[0]:+.4f} per round (t = {_t(gap[1])}) over rounds {int(rounds[0])}–{int(rounds[-1])}"
        + (f"; stake-weighted CWMM {first:.3f} → {last:.3f} ({change:+.0%})" if change is not None else ""),
        round_number=round_number,
        value=weighted[0],
        threshold=settings.alert_trend_min_t,
        day=day,
        trigger="+".join(triggers),
        weighted_slope=weighted[0],
        weighted_t=_finite(weighted[1]),
        gap_slope=gap[0],
        gap_t=_finite(gap[1]),
        window=[int(rounds[0]), int(rounds[-1])],
        median_slope=trend.get("median_slope"),
    )


def _finite(t: float) -> float | None:
    """A t-statistic as JSON can carry it (a perfect fit's infinite t becomes null)."""
    return float(t) if np.isfinite(t) else None


def _t(t: float) -> str:
    return f"{t:.1f}" if np.isfinite(t) else "∞"


def concentration(settings: Settings, round_number: int, effective_models: float | None, day: int | None = None) -> dict[str, Any] | None:
    """A ``concentration`` alert when 1/HHI of the round's stakes is below the threshold."""
    # A round without stake (effective number 0, scoring.crowding.stake_concentration) is as
    # concentrated as a round can be: it alerts too. An undefined figure (None, NaN) does not.
    if effective_models is None or not math.isfinite(effective_models) or effective_models >= settings.alert_min_effective_models:
        return None
    return alert(
        "concentration",
        "warning",
        f"round {round_number}: no stake at all: there is no meta model"
        if effective_models == 0
        else f"round {round_number}: stake is concentrated in the equivalent of {effective_models:.1f} models "
        f"(threshold {settings.alert_min_effective_models:g})",
        round_number=round_number,
        value=effective_models,
        threshold=settings.alert_min_effective_models,
        day=day,
    )
