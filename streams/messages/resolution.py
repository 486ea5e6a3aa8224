"""From a round's scores to the messages downstream consumers read (pure; no Redis, no Kafka).

- :func:`score_messages` — one ``mmc.scores`` value per model;
- :func:`standing` — a model's rolling leaderboard row from its score history;
- :func:`round_figures` / :func:`trend_figures` — the round's crowding figures (DESIGN §2.2)
  and their trend across rounds.

Decisions written down here:

- The crowding figures use today's MMC (``contribution``) wherever they involve MMC, with
  the 2020 bootstrap MMC beside it in a field named ``*_2020*``: ``mmc_mean_by_cwmm_decile``
  is today's MMC per CWMM decile and ``mmc_2020_mean_by_cwmm_decile`` the 2020 one
  (``mean_mmc`` / ``mean_contribution`` keep naming the score fields they average).
- The payout score uses *today's* MMC (``contribution``), as Numerai's payouts from 2024 do:
  ``clip(0.5·corr + 2·contribution, ±0.05)``; the 2020 bootstrap MMC is published beside it.
- Percentiles are tie-kept uniform ranks among the round's models with a value, in (0, 1).
- The leaderboard window is a model's latest ``MMC_LEADERBOARD_WINDOW`` rounds with scores;
  each round counts with its latest update (final when it has arrived).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

import scoring
from scoring.crowding import (
    DEFAULT_TOP_STAKES,
    ScoreTable,
    cwmm_by_stake_decile,
    mmc_by_cwmm_decile,
    percent_change,
    series_ends,
    stake_concentration,
    top_stakers,
    turnover_share,
)
from scoring.standing import max_drawdown, positive_rounds, sharpe, stake_payout, window_std
from streams.settings import Settings

METRICS = ("corr", "mmc", "contribution", "corr_w_mm", "payout")


def finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def finite_or_none_list(values: NDArray[np.float64]) -> list[float | None]:
    """:func:`finite_or_none` of each value, converted at once (the same Python floats, NaN and
    ±inf as None) rather than one NumPy scalar at a time."""
    arr = np.asarray(values, dtype=np.float64)
    out: list[float | None] = arr.tolist()
    for i in np.flatnonzero(~np.isfinite(arr)).tolist():
        out[i] = None
    return out


def percentiles(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Tie-kept uniform rank of each finite value among the finite ones; NaN stays NaN."""
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values)
    if ok.sum() >= 2:
        out[ok] = scoring.rank_uniform(values[ok])
    elif ok.sum() == 1:
        out[ok] = 0.5
    return out


def payout(settings: Settings, corr: NDArray[np.float64], contribution: NDArray[np.float64]) -> NDArray[np.float64]:
    return scoring.payout_score(
        corr,
        contribution,
        corr_multiplier=settings.payout_corr_multiplier,
        mmc_multiplier=settings.payout_mmc_multiplier,
        clip=settings.payout_clip,
    )


def score_messages(
    settings: Settings,
    round_number: int,
    day: int,
    final: bool,
    models: list[str],
    stakes: NDArray[np.float64],
    scores: scoring.RoundScores,
) -> list[dict[str, Any]]:
    """One ``mmc.scores`` value per model, in model order."""
    metrics = {
        "corr": scores.corr,
        "mmc": scores.mmc,
        "contribution": scores.contribution,
        "corr_w_mm": scores.corr_w_mm,
        "payout": payout(settings, scores.corr, scores.contribution),
    }
    # Columns as Python lists once: indexing arrays per model and value costs a NumPy scalar each.
    values = {name: finite_or_none_list(v) for name, v in metrics.items()}
    pct = {name: finite_or_none_list(percentiles(v)) for name, v in metrics.items()}
    stake_values = np.asarray(stakes, dtype=np.float64).tolist()
    return [
        {
            "round": round_number,
            "day": day,
            "final": final,
            "model": model,
            "stake": stake_values[i],
            **{name: column[i] for name, column in values.items()},
            "percentiles": {name: column[i] for name, column in pct.items()},
            "n_ids_scored": scores.n_ids_scored,
            "n_ids_missing": scores.n_ids_missing,
        }
        for i, model in enumerate(models)
    ]


def history_entry(message: dict[str, Any]) -> dict[str, Any]:
    """What a model's history keeps of one round (its latest update)."""
    return {k: message[k] for k in ("round", "day", "final", "stake", *METRICS)}


def _mean(values: list[float | None]) -> float | None:
    """Mean of the values present (``math.fsum``: correctly rounded, independent of order)."""
    finite = [v for v in values if v is not None]
    return math.fsum(finite) / len(finite) if finite else None


def payout_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The window's payout-score statistics (docs/semantics.md, "Leaderboard statistics").

    Over the rounds with a payout score, in round order; each round's stake is the stake frozen
    at its close (the score message's ``stake``).
    """
    paid = [row for row in rows if row.get("payout") is not None]
    values = [float(row["payout"]) for row in paid]
    return {
        "payout_std": window_std(values),
        "payout_sharpe": sharpe(values),
        "payout_max_drawdown": max_drawdown(values),
        "positive_rounds": positive_rounds(values),
        "stake_payout": stake_payout([float(row.get("stake") or 0.0) for row in paid], values),
    }


def standing(settings: Settings, model: str, history: dict[int, dict[str, Any]], as_of: dict[str, Any]) -> dict[str, Any]:
    """A model's rolling leaderboard row over its latest ``leaderboard_window`` rounds.

    ``as_of`` names the update that produced it (round, day, final).
    """
    rounds = sorted(history)[-settings.leaderboard_window :]
    rows = [history[r] for r in rounds]
    latest = rows[-1] if rows else {}
    return {
        "model": model,
        "window": settings.leaderboard_window,
        "rounds": len(rounds),
        "first_round": rounds[0] if rounds else None,
        "last_round": rounds[-1] if rounds else None,
        **{f"{name}_mean": _mean([row.get(name) for row in rows]) for name in METRICS},
        **payout_statistics(rows),
        "stake": latest.get("stake", 0.0),
        "as_of": as_of,
    }


def standing_score(row: dict[str, Any]) -> float:
    """The leaderboard orders by rolling mean payout; a model without one sorts last."""
    value = row.get("payout_mean")
    return float(value) if value is not None else -1e9


def cwmm_decile_edges(cwmm: NDArray[np.float64]) -> list[float | None] | None:
    """The 10th … 90th percentiles of a round's CWMMs (NaN ignored): deciles 2–10 start there
    (the 90th is the top-decile threshold); None when no model has one."""
    ok = np.isfinite(cwmm)
    if not ok.any():
        return None
    return [finite_or_none(float(q)) for q in np.quantile(cwmm[ok], np.arange(1, 10) / 10)]


def round_figures(
    round_number: int,
    day: int,
    final: bool,
    models: list[str],
    stakes: NDArray[np.float64],
    scores: scoring.RoundScores,
) -> dict[str, Any]:
    """The round's crowding figures (DESIGN §2.2) for one update.

    MMC per CWMM decile is today's MMC (``contribution``) in ``mmc_mean_by_cwmm_decile`` and
    the 2020 MMC in ``mmc_2020_mean_by_cwmm_decile``; ``top10_stakers`` (largest first, ties
    by id) lets :func:`trend_figures` measure the top-10 turnover.
    """
    table = ScoreTable.from_arrays(
        rounds=np.full(len(models), round_number),
        models=np.asarray(models, dtype=object),
        stakes=stakes,
        corr_w_mm=scores.corr_w_mm,
        mmc=scores.mmc,
        contribution=scores.contribution,
        corr=scores.corr,
    )
    cwmm = scores.corr_w_mm
    ok = np.isfinite(cwmm)
    staked = ok & (stakes > 0)
    weighted = float(np.sum(stakes[staked] * cwmm[staked]) / np.sum(stakes[staked])) if staked.any() else float("nan")
    median = float(np.median(cwmm[ok])) if ok.any() else float("nan")
    edges = cwmm_decile_edges(cwmm)
    conc = stake_concentration(stakes)
    by_stake = cwmm_by_stake_decile(table)
    by_cwmm = mmc_by_cwmm_decile(table, metric="contribution")
    by_cwmm_2020 = mmc_by_cwmm_decile(table, metric="mmc")
    return {
        "round": round_number,
        "day": day,
        "final": final,
        "n_models": len(models),
        "n_stakers": int((stakes > 0).sum()),
        "total_stake": float(stakes.sum()),
        "stake_weighted_cwmm": finite_or_none(weighted),
        "median_cwmm": finite_or_none(median),
        "gap": finite_or_none(weighted - median),
        "cwmm_p90": edges[-1] if edges is not None else None,
        "cwmm_decile_edges": edges,
        "hhi": finite_or_none(conc.hhi),
        "effective_models": finite_or_none(conc.effective_number),
        "top10_share": finite_or_none(conc.top_share),
        "cwmm_median_by_stake_decile": [finite_or_none(x) for x in by_stake.median_corr_w_mm],
        "mmc_mean_by_cwmm_decile": [finite_or_none(x) for x in by_cwmm.mean_mmc],
        "mmc_2020_mean_by_cwmm_decile": [finite_or_none(x) for x in by_cwmm_2020.mean_mmc],
        "top10_stakers": top_stakers(models, stakes, DEFAULT_TOP_STAKES),
        "mean_mmc": finite_or_none(float(np.nanmean(scores.mmc))) if np.isfinite(scores.mmc).any() else None,
        "mean_contribution": finite_or_none(float(np.nanmean(scores.contribution))) if np.isfinite(scores.contribution).any() else None,
    }


def _slope(x: list[int], y: list[float | None]) -> float | None:
    pts = [(a, b) for a, b in zip(x, y, strict=True) if b is not None]
    if len(pts) < 2:
        return None
    xs, ys = np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)
    xs = xs - xs.mean()
    denom = float(xs @ xs)
    return float(xs @ (ys - ys.mean()) / denom) if denom > 0 else None


def _ends(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    """First and last level (:func:`scoring.crowding.series_ends`) and their relative change."""
    first, last = series_ends(np.array([np.nan if v is None else v for v in values], dtype=float))
    return finite_or_none(first), finite_or_none(last), finite_or_none(percent_change(first, last))


def trend_figures(trend: dict[int, dict[str, Any]], upto: int, recent: int) -> dict[str, Any]:
    """Stake-weighted mean vs unweighted median CWMM per round up to ``upto``, and their trend.

    - slopes: least squares per round number; ``recent_weighted_slope`` covers the latest
      ``recent`` rounds (the crowding_trend alert);
    - ``*_first`` / ``*_last``: the mean of the first / last fifth of the rounds with a value
      (at least one round; :func:`scoring.crowding.series_ends`), ``*_change`` the relative
      change ``(last − first) / |first|``;
    - ``top10_turnover``: per round, the share of its 10 largest stakers that were not among
      the previous listed round's (null for the first round or when either list is unknown);
      ``mean_top10_turnover`` its mean.
    """
    rounds = [r for r in sorted(trend) if r <= upto]
    weighted = [trend[r].get("stake_weighted_cwmm") for r in rounds]
    median = [trend[r].get("median_cwmm") for r in rounds]
    gap = [w - m if w is not None and m is not None else None for w, m in zip(weighted, median, strict=True)]
    turnover: list[float | None] = []
    previous: list[str] | None = None
    for r in rounds:
        current = trend[r].get("top10_stakers")
        share = turnover_share(current, previous) if current is not None else float("nan")
        turnover.append(finite_or_none(share))
        previous = current
    w_first, w_last, w_change = _ends(weighted)
    m_first, m_last, m_change = _ends(median)
    g_first, g_last, _ = _ends(gap)
    shares = [t for t in turnover if t is not None]
    return {
        "rounds": rounds,
        "stake_weighted_cwmm": weighted,
        "median_cwmm": median,
        "weighted_slope": _slope(rounds, weighted),
        "median_slope": _slope(rounds, median),
        "recent_rounds": rounds[-recent:],
        "recent_weighted_slope": _slope(rounds[-recent:], weighted[-recent:]),
        "stake_weighted_cwmm_first": w_first,
        "stake_weighted_cwmm_last": w_last,
        "stake_weighted_cwmm_change": w_change,
        "median_cwmm_first": m_first,
        "median_cwmm_last": m_last,
        "median_cwmm_change": m_change,
        "gap_first": g_first,
        "gap_last": g_last,
        "top10_turnover": turnover,
        "mean_top10_turnover": math.fsum(shares) / len(shares) if shares else None,
    }
