"""The crowding report: score messages → table → figures (checked against scoring.crowding
called directly), the rendered files, and a build from the real scores topic."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

import scoring
from scoring.crowding import (
    ScoreTable,
    concentration_by_round,
    crowding_report,
    cwmm_by_stake_decile,
    cwmm_trend,
    mmc_by_cwmm_decile,
    stake_jump_events,
)
from streams.admin import kafka_client_options
from streams.report import (
    CHART_FILES,
    LatestScores,
    build_report,
    headline,
    render_report,
    score_table_from_messages,
)
from streams.settings import Settings
from streams.simulation import Simulation, SimulationConfig
from tests.conftest import run_sync

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def score_message(
    r: int, day: int, final: bool, model: str, stake: float, **metrics: float
) -> dict[str, Any]:
    """An ``mmc.scores`` value in the service's format."""
    values = {
        name: none_if_nan(metrics.get(name, math.nan))
        for name in ("corr", "mmc", "contribution", "corr_w_mm", "payout")
    }
    return {
        "round": r,
        "day": day,
        "final": final,
        "model": model,
        "stake": stake,
        **values,
        "percentiles": dict.fromkeys(values, 0.5),
        "n_ids_scored": 100,
        "n_ids_missing": 0,
    }


@pytest.fixture(scope="module")
def season() -> dict[str, Any]:
    """A small season scored with score_round: final-score messages plus earlier-day noise,
    and the table built directly from the final scores."""
    sim = Simulation(SimulationConfig.small(n_models=60, n_ids=300, n_rounds=24, n_jumps=6))
    messages: list[dict[str, Any]] = []
    direct: dict[str, list[Any]] = {
        k: [] for k in ("rounds", "models", "stakes", "corr_w_mm", "mmc", "contribution")
    }
    for i, r in enumerate(sim.rounds):
        rows = np.flatnonzero(sim.submitted[i])
        models = [sim.models[m] for m in rows]
        stakes = sim.stakes[i, rows]
        preds = sim.predictions(r)[rows]
        by_day = {
            d: scoring.score_round(preds, stakes, sim.targets(r, d), round=r)
            for d in (1, 2, sim.config.resolution_days)
        }
        final = by_day[sim.config.resolution_days]
        # Arrival order as a consumer may see it: day 2, final, then a late redelivery of day 1.
        for d in (2, sim.config.resolution_days, 1):
            s = by_day[d]
            for j, model in enumerate(models):
                messages.append(
                    score_message(
                        r,
                        d,
                        d == sim.config.resolution_days,
                        model,
                        float(stakes[j]),
                        corr=s.corr[j],
                        mmc=s.mmc[j],
                        contribution=s.contribution[j],
                        corr_w_mm=s.corr_w_mm[j],
                    )
                )
        direct["rounds"] += [r] * len(models)
        direct["models"] += models
        direct["stakes"] += stakes.tolist()
        direct["corr_w_mm"] += final.corr_w_mm.tolist()
        direct["mmc"] += final.mmc.tolist()
        direct["contribution"] += final.contribution.tolist()
    return {"sim": sim, "messages": messages, "direct": direct}


def direct_table(direct: dict[str, list[Any]], metric: str = "mmc") -> ScoreTable:
    return ScoreTable.from_arrays(
        direct["rounds"],
        np.array(direct["models"], dtype=object),
        direct["stakes"],
        direct["corr_w_mm"],
        direct[metric],
    )


def assert_same_array(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- selection


def test_latest_update_per_round_wins() -> None:
    """Highest day wins among non-final updates; final wins over any later non-final one."""
    latest = LatestScores()
    latest.add(score_message(5, 3, False, "a", 1.0, mmc=0.3))
    latest.add(score_message(5, 7, False, "a", 1.0, mmc=0.7))
    latest.add(score_message(5, 6, False, "a", 1.0, mmc=0.6))  # older day, arrives late
    latest.add(score_message(5, 2, False, "b", 1.0, mmc=0.2))
    latest.add(score_message(5, 20, True, "b", 1.0, mmc=0.9))
    latest.add(score_message(5, 4, False, "b", 1.0, mmc=0.4))  # redelivered after the final
    latest.add(score_message(6, 20, True, "b", 1.0, mmc=0.1))
    latest.add(
        score_message(6, 20, True, "b", 1.0, mmc=0.11)
    )  # the same update again: last read wins
    kept = {(m["round"], m["model"]): m["mmc"] for m in latest.messages()}
    assert kept == {(5, "a"): 0.7, (5, "b"): 0.9, (6, "b"): 0.11}
    assert latest.read == 8


def test_nulls_become_nan_and_metric_is_selectable() -> None:
    """``null`` metrics are NaN in the table; ``metric`` picks mmc or contribution."""
    messages = [
        score_message(1, 20, True, "a", 2.0, mmc=0.01, contribution=0.02, corr_w_mm=0.5),
        score_message(1, 20, True, "b", 0.0, corr_w_mm=0.4),  # mmc, contribution null
    ]
    table = score_table_from_messages(messages)
    assert table.mmc[0] == 0.01 and math.isnan(table.mmc[1])
    assert score_table_from_messages(messages, metric="contribution").mmc[0] == 0.02
    assert table.stakes.tolist() == [2.0, 0.0] and table.models.tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="metric"):
        score_table_from_messages(messages, metric="corr")  # type: ignore[arg-type]


def test_malformed_message_is_refused() -> None:
    """A value without round/model/day is not silently dropped."""
    with pytest.raises(ValueError, match="not a score message"):
        score_table_from_messages([{"round": 1, "model": "a"}])


# --------------------------------------------------------------------------- figures


def test_report_numbers_match_a_direct_computation(season: dict[str, Any]) -> None:
    """Messages → latest per round → crowding_report equals crowding functions on final scores."""
    for metric in ("mmc", "contribution"):
        from_messages = score_table_from_messages(season["messages"], metric=metric)
        direct = direct_table(season["direct"], metric)
        assert len(from_messages) == len(direct)
        report = crowding_report(from_messages)
        stake = cwmm_by_stake_decile(direct)
        assert_same_array(report.stake_deciles.median_corr_w_mm, stake.median_corr_w_mm)
        assert_same_array(report.stake_deciles.count, stake.count)
        deciles = mmc_by_cwmm_decile(direct)
        np.testing.assert_allclose(
            report.cwmm_deciles.mean_mmc, deciles.mean_mmc, rtol=1e-12, atol=1e-15
        )
        assert_same_array(report.cwmm_deciles.count, deciles.count)
        trend = cwmm_trend(direct)
        np.testing.assert_allclose(report.trend.weighted_mean, trend.weighted_mean, rtol=1e-12)
        assert_same_array(report.trend.median, trend.median)
        concentration = concentration_by_round(direct)
        np.testing.assert_allclose(report.concentration.hhi, concentration.hhi, rtol=1e-12)
        events = stake_jump_events(direct)
        assert report.events.n_events == events.n_events == len(season["sim"].jumps)
        np.testing.assert_allclose(
            report.events.relative_change, events.relative_change, rtol=1e-12
        )
        np.testing.assert_allclose(
            report.events.trajectory_mean_mmc, events.trajectory_mean_mmc, rtol=1e-12
        )


def test_headline_reports_the_figures(season: dict[str, Any]) -> None:
    """The headline rows carry the report's numbers beside the article's reference figures."""
    report = crowding_report(score_table_from_messages(season["messages"]))
    contribution = crowding_report(
        score_table_from_messages(season["messages"], metric="contribution")
    )
    rows = {row.label: row for row in headline(report, contribution)}
    top = rows["median corr_w_mm, top stake decile"]
    assert top.value == f"{report.stake_deciles.top_median:.3f}" and top.reference == "≈ 0.45"
    low = rows["mean MMC, lowest corr_w_mm decile"]
    assert low.value == f"{report.cwmm_deciles.mean_mmc[0]:.4f}"
    assert low.value_contribution == f"{contribution.cwmm_deciles.mean_mmc[0]:.4f}"
    assert rows["≥5× stake increases (events)"].value == str(report.events.n_events)
    change = rows["median MMC change after a ≥5× stake increase"]
    assert change.value == f"{100 * report.events.median_relative_change:+.0f}%"
    assert "→" in rows["stake-weighted mean corr_w_mm, first → last round"].value


# --------------------------------------------------------------------------- rendering


def test_render_report_writes_the_files_it_names(season: dict[str, Any], tmp_path: Path) -> None:
    """report.html and four non-empty PNGs; the page shows every chart and the headline."""
    table = score_table_from_messages(season["messages"])
    report = crowding_report(table)
    files = render_report(report, table, tmp_path / "out")
    assert set(files.charts) == set(CHART_FILES)
    for path in files.paths:
        assert path.is_file() and path.stat().st_size > 0
    for path in files.charts.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000
    page = files.html.read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == sorted(CHART_FILES.values())
    assert all((files.html.parent / name).is_file() for name in images)
    assert "median corr_w_mm, top stake decile" in page and "0.32 → 0.46" in page


def test_render_report_on_an_empty_table(tmp_path: Path) -> None:
    """No scores yet: the report still renders (charts say so), nothing raises."""
    table = score_table_from_messages([])
    files = render_report(crowding_report(table), table, tmp_path)
    assert all(p.stat().st_size > 0 for p in files.paths)


# --------------------------------------------------------------------------- from the topic


def test_build_report_from_the_scores_topic(
    settings: Settings, season: dict[str, Any], tmp_path: Path
) -> None:
    """Score messages produced to the real broker come back as the same report."""

    async def produce() -> None:
        producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=10)
        await producer.start()
        try:
            for message in season["messages"]:
                await producer.send(
                    settings.topic("scores"), orjson.dumps(message), key=message["model"].encode()
                )
            await producer.flush()
        finally:
            await producer.stop()

    run_sync(produce())
    built = run_sync(build_report(settings, tmp_path))
    assert built.messages_read == len(season["messages"])
    expected = crowding_report(direct_table(season["direct"]))
    assert built.report.n_observations == expected.n_observations
    assert_same_array(
        built.report.stake_deciles.median_corr_w_mm, expected.stake_deciles.median_corr_w_mm
    )
    np.testing.assert_allclose(
        built.report.cwmm_deciles.mean_mmc, expected.cwmm_deciles.mean_mmc, rtol=1e-12
    )
    assert built.report.events.n_events == expected.events.n_events
    assert built.files.html.is_file()
