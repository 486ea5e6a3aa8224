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
from scoring.crowding.interval import median_interval
from streams.kafka.clients import kafka_client_options
from streams.settings import Settings
from streams.tools.report import (
    CHART_FILES,
    HEADLINE_FILE,
    LatestScores,
    MechanicalPart,
    alert_rates,
    build_report,
    headline,
    headline_data,
    leaderboard_rows,
    leaderboard_table,
    mechanical_part,
    render_report,
    score_table_from_messages,
)
from tests.conftest import run_sync

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def score_message(r: int, day: int, final: bool, model: str, stake: float, **metrics: float) -> dict[str, Any]:
    """An ``mmc.scores`` value in the service's format."""
    values = {name: none_if_nan(metrics.get(name, math.nan)) for name in ("corr", "mmc", "contribution", "corr_w_mm", "payout")}
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


#: The small season: (model index, round) of each 6× stake jump.
JUMPS = ((3, 8), (7, 10), (11, 12), (16, 14), (19, 9), (23, 11))


def small_season(n_models: int = 40, n_ids: int = 200, rounds: range = range(1, 25)) -> Any:
    """Per round: model ids, stakes, predictions and three days of targets (1, 2, final=20).

    Predictions mix a common signal (the crowd) with each model's own; stakes are constant
    except the 6× jumps of :data:`JUMPS`; a fifth of the models never stake. Built here, not
    with the simulator, so these tests depend only on the scoring core.
    """
    rng = np.random.default_rng(7)
    models = [f"m{i:02d}" for i in range(n_models)]
    crowd_share = rng.uniform(0.1, 0.9, n_models)
    base = rng.lognormal(3.0, 1.0, n_models)
    base[::5] = 0.0
    for r in rounds:
        common = rng.normal(size=n_ids)
        own = rng.normal(size=(n_models, n_ids))
        preds = crowd_share[:, None] * common + (1 - crowd_share[:, None]) * own
        stakes = base.copy()
        for m, jump_round in JUMPS:
            if r >= jump_round:
                stakes[m] *= 6.0
        signal = 0.3 * common + 0.2 * own[:5].mean(axis=0)
        targets = {d: np.clip(np.round((signal + rng.normal(scale=1.0, size=n_ids)) * 1.0 + 2) / 4, 0, 1) for d in (1, 2, 20)}
        yield r, models, stakes, preds, targets


@pytest.fixture(scope="module")
def season() -> dict[str, Any]:
    """A small season scored with score_round: final-score messages plus earlier-day noise,
    and the table built directly from the final scores."""
    messages: list[dict[str, Any]] = []
    direct: dict[str, list[Any]] = {k: [] for k in ("rounds", "models", "stakes", "corr_w_mm", "mmc", "contribution", "corr")}
    for r, models, stakes, preds, targets in small_season():
        by_day = {d: scoring.score_round(preds, stakes, targets[d], round=r) for d in targets}
        final = by_day[20]
        # Arrival order as a consumer may see it: day 2, final, then a late redelivery of day 1.
        for d in (2, 20, 1):
            s = by_day[d]
            for j, model in enumerate(models):
                messages.append(
                    score_message(
                        r,
                        d,
                        d == 20,
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
        direct["corr"] += final.corr.tolist()
    return {"messages": messages, "direct": direct}


def direct_table(direct: dict[str, list[Any]]) -> ScoreTable:
    return ScoreTable.from_arrays(
        direct["rounds"],
        np.array(direct["models"], dtype=object),
        direct["stakes"],
        direct["corr_w_mm"],
        direct["mmc"],
        contribution=direct["contribution"],
        corr=direct["corr"],
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
    latest.add(score_message(6, 20, True, "b", 1.0, mmc=0.11))  # the same update again: last read wins
    kept = {(m["round"], m["model"]): m["mmc"] for m in latest.messages()}
    assert kept == {(5, "a"): 0.7, (5, "b"): 0.9, (6, "b"): 0.11}
    assert latest.read == 8


def test_leaderboard_rows_are_the_workers_standings_best_first() -> None:
    """The report's leaderboard: each model's latest update per round, its window statistics, mean payout descending then model id."""
    latest = LatestScores()
    for r, payouts in enumerate([(0.02, 0.01, None), (-0.01, 0.01, 0.02), (0.03, 0.01, 0.0)], start=1):
        for model, p in zip(("a", "b", "c"), payouts, strict=True):
            latest.add(score_message(r, 20, True, model, 10.0 * r, payout=math.nan if p is None else p))
    latest.add(score_message(3, 4, False, "a", 1.0, payout=-0.05))  # older than the final: ignored
    rows = leaderboard_rows(Settings(leaderboard_window=20), latest)
    assert [(row["model"], row["rank"]) for row in rows] == [("a", 1), ("b", 2), ("c", 3)]
    a, b, c = rows
    assert a["payout_mean"] == pytest.approx(0.04 / 3) and a["positive_rounds"] == 2
    assert a["payout_max_drawdown"] == pytest.approx(0.01) and a["stake_payout"] == pytest.approx(0.2 - 0.2 + 0.9)
    assert b["payout_mean"] == c["payout_mean"] == pytest.approx(0.01)  # a tie: model id ascending
    assert b["payout_std"] == 0.0 and b["payout_sharpe"] is None
    assert c["rounds"] == 3 and c["positive_rounds"] == 1 and c["payout_std"] == pytest.approx(np.std([0.02, 0.0], ddof=1))
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(leaderboard_table(rows, top=2))
    text = console.export_text()
    assert "Sharpe" in text and "paid NMR" in text and "+0.0133" in text and "2/3" in text
    assert "\n│ 3 " not in text  # only the top 2


def test_nulls_become_nan_and_both_mmcs_are_columns() -> None:
    """``null`` metrics are NaN; the table holds today's MMC (its default), the 2020 MMC and CORR."""
    messages = [
        score_message(1, 20, True, "a", 2.0, corr=0.03, mmc=0.01, contribution=0.02, corr_w_mm=0.5),
        score_message(1, 20, True, "b", 0.0, corr_w_mm=0.4),  # corr, mmc, contribution null
    ]
    table = score_table_from_messages(messages)
    assert table.mmc[0] == 0.01 and math.isnan(table.mmc[1])
    assert table.contribution[0] == 0.02 and math.isnan(table.contribution[1])
    assert table.corr[0] == 0.03 and math.isnan(table.corr[1])
    assert table.default_metric == "contribution"
    assert table.stakes.tolist() == [2.0, 0.0] and table.models.tolist() == ["a", "b"]


def test_malformed_message_is_refused() -> None:
    """A value without round/model/day is not silently dropped."""
    with pytest.raises(ValueError, match="not a score message"):
        score_table_from_messages([{"round": 1, "model": "a"}])


# --------------------------------------------------------------------------- figures


def test_report_numbers_match_a_direct_computation(season: dict[str, Any]) -> None:
    """Messages → latest per round → crowding_report equals crowding functions on final scores;
    its MMC figures use today's MMC (contribution) and the *_2020 ones the 2020 MMC."""
    from_messages = score_table_from_messages(season["messages"])
    direct = direct_table(season["direct"])
    assert len(from_messages) == len(direct)
    report = crowding_report(from_messages)
    assert report.metric == "contribution"
    stake = cwmm_by_stake_decile(direct)
    assert_same_array(report.stake_deciles.median_corr_w_mm, stake.median_corr_w_mm)
    assert_same_array(report.stake_deciles.count, stake.count)
    for got, metric in ((report.cwmm_deciles, "contribution"), (report.cwmm_deciles_2020, "mmc")):
        deciles = mmc_by_cwmm_decile(direct, metric=metric)
        assert got.metric == metric
        np.testing.assert_allclose(got.mean_mmc, deciles.mean_mmc, rtol=1e-12, atol=1e-15)
        assert_same_array(got.count, deciles.count)
    today = mmc_by_cwmm_decile(direct, metric="contribution").mean_mmc
    old = mmc_by_cwmm_decile(direct, metric="mmc").mean_mmc
    assert not np.allclose(today, old)  # the two MMCs do differ, so the choice is visible
    trend = cwmm_trend(direct)
    np.testing.assert_allclose(report.trend.weighted_mean, trend.weighted_mean, rtol=1e-12)
    assert_same_array(report.trend.median, trend.median)
    concentration = concentration_by_round(direct)
    np.testing.assert_allclose(report.concentration.hhi, concentration.hhi, rtol=1e-12)
    for got, metric in ((report.events, "contribution"), (report.events_2020, "mmc")):
        events = stake_jump_events(direct, metric=metric)
        assert got.n_events == events.n_events == len(JUMPS)
        np.testing.assert_allclose(got.relative_change, events.relative_change, rtol=1e-12)
        np.testing.assert_allclose(got.trajectory_mean_mmc, events.trajectory_mean_mmc, rtol=1e-12)
        np.testing.assert_allclose(got.corr_before, events.corr_before, rtol=1e-12)


def test_headline_reports_the_figures(season: dict[str, Any]) -> None:
    """The headline rows carry today's MMC, the 2020 MMC beside it, and the article's figures."""
    report = crowding_report(score_table_from_messages(season["messages"]))
    rows = {row.label: row for row in headline(report)}
    top = rows["median corr_w_mm, top stake decile"]
    assert top.value == f"{report.stake_deciles.top_median:.3f}" and top.reference == "≈ 0.45"
    low = rows["mean MMC, lowest corr_w_mm decile"]
    assert low.value == f"{report.cwmm_deciles.mean_mmc[0]:.4f}"
    assert low.value_2020 == f"{report.cwmm_deciles_2020.mean_mmc[0]:.4f}"
    events = rows["≥5× stake increases (events · compared: ≥ half the window scored on each side)"]
    assert events.value == f"{report.events.n_events} · {report.events.n_compared}"
    change = rows["median MMC change after a ≥5× stake increase"]
    assert change.value == f"{100 * report.events.median_relative_change:+.0f}%"
    assert change.value_2020 == f"{100 * report.events_2020.median_relative_change:+.0f}%"
    assert "→" in rows["stake-weighted mean corr_w_mm, first → last fifth of rounds"].value
    control = rows[
        "the population's control: MMC change beyond the population's over the same rounds (median) "
        "· the population's mean MMC before → after (the models without a ≥5× increase)"
    ]
    assert control.value.startswith(f"{100 * report.events.median_relative_change_vs_population:+.0f}% · ")


HEADLINE_KEYS = (
    "mean_corr",
    "mean_mmc",
    "mean_mmc_2020",
    "cwmm_top_stake_decile",
    "cwmm_bottom_stake_decile",
    "mmc_lowest_cwmm_decile",
    "mmc_highest_cwmm_decile",
    "steepest_drop_into_decile",
    "swmm_cwmm_first",
    "swmm_cwmm_last",
    "median_cwmm_first",
    "median_cwmm_last",
    "stake_jump_events",
    "stake_jump_median_mmc_change",
    "stake_jump_mean_mmc_before",
    "stake_jump_mean_mmc_after",
    "stake_jump_corr_change",
    "top10_turnover",
)


def test_headline_data_is_the_same_bytes_in_any_arrival_order(season: dict[str, Any]) -> None:
    """The score messages of a season read in any interleaving give the same headline.json bytes
    (each (round, model) keeps its final, latest-day update whatever the order)."""
    messages = season["messages"]
    rng = np.random.default_rng(11)
    written = {orjson.dumps(headline_data(crowding_report(score_table_from_messages([messages[j] for j in rng.permutation(len(messages))])))) for _ in range(3)}
    assert written == {orjson.dumps(headline_data(crowding_report(score_table_from_messages(messages))))}


def test_headline_data_holds_the_figures_as_numbers(season: dict[str, Any]) -> None:
    """headline_data has every required key, each a finite number or None, equal to the report's."""
    table = score_table_from_messages(season["messages"])
    report = crowding_report(table)
    data = headline_data(report)
    for key in HEADLINE_KEYS:
        assert key in data, key
    for key, value in data.items():
        assert value is None or (isinstance(value, int | float) and math.isfinite(value)), (key, value)
    assert data["mean_mmc"] == pytest.approx(float(np.nanmean(table.contribution)), rel=1e-12)
    assert data["mean_mmc_2020"] == pytest.approx(float(np.nanmean(table.mmc)), rel=1e-12)
    assert data["mean_corr"] == pytest.approx(float(np.nanmean(table.corr)), rel=1e-12)
    assert data["mmc_lowest_cwmm_decile"] == report.cwmm_deciles.mean_mmc[0]
    assert data["stake_jump_events"] == report.events.n_events > 0
    assert data["stake_jump_mean_mmc_before"] == report.events.mean_mmc_before
    assert data["stake_jump_corr_change"] == report.events.median_corr_relative_change
    assert data["stake_jump_median_mmc_change_vs_population"] == report.events.median_relative_change_vs_population
    compared = report.events.relative_change[np.isfinite(report.events.relative_change)]
    assert (data["stake_jump_median_mmc_change_low"], data["stake_jump_median_mmc_change_high"]) == median_interval(compared)
    assert data["stake_jump_median_mmc_change_low"] <= data["stake_jump_median_mmc_change"] <= data["stake_jump_median_mmc_change_high"]
    assert data["stake_jump_mmc_fell"] == int((compared < 0).sum())
    assert data["stake_jump_population_mmc_before"] == report.events.mean_population_mmc_before
    assert data["swmm_cwmm_first"] == report.weighted_first
    assert data["top10_turnover"] == report.turnover.mean_turnover


def test_headline_data_of_an_empty_table_is_null_not_nan() -> None:
    """No scores: the figures are None (JSON null), the counts 0."""
    data = headline_data(crowding_report(score_table_from_messages([])))
    for key in HEADLINE_KEYS:
        assert key in data
    assert data["stake_jump_events"] == 0
    assert data["mean_mmc"] is None and data["swmm_cwmm_first"] is None and data["top10_turnover"] is None


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
    assert "MMC (today&#x27;s: contribution)" in page and "MMC 2020 (bootstrap)" in page
    assert files.headline_json.name == HEADLINE_FILE and files.headline_json.parent == files.html.parent
    written = orjson.loads(files.headline_json.read_bytes())
    assert written == headline_data(report)
    assert set(HEADLINE_KEYS) <= set(written)


def test_render_report_on_an_empty_table(tmp_path: Path) -> None:
    """No scores yet: the report still renders (charts say so), nothing raises."""
    table = score_table_from_messages([])
    files = render_report(crowding_report(table), table, tmp_path)
    assert all(p.stat().st_size > 0 for p in files.paths)


# --------------------------------------------------------------------------- from the topic


def test_build_report_from_the_scores_topic(settings: Settings, season: dict[str, Any], tmp_path: Path) -> None:
    """Score messages produced to the real broker come back as the same report."""

    async def produce() -> None:
        producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=10)
        await producer.start()
        try:
            for message in season["messages"]:
                await producer.send(settings.topic("scores"), orjson.dumps(message), key=message["model"].encode())
            await producer.flush()
        finally:
            await producer.stop()

    run_sync(produce())
    built = run_sync(build_report(settings, tmp_path))
    assert built.messages_read == len(season["messages"])
    expected = crowding_report(direct_table(season["direct"]))
    assert built.report.n_observations == expected.n_observations
    assert_same_array(built.report.stake_deciles.median_corr_w_mm, expected.stake_deciles.median_corr_w_mm)
    np.testing.assert_allclose(built.report.cwmm_deciles.mean_mmc, expected.cwmm_deciles.mean_mmc, rtol=1e-12)
    assert built.report.events.n_events == expected.events.n_events
    assert built.files.html.is_file()
    written = orjson.loads((tmp_path / HEADLINE_FILE).read_bytes())
    assert written == headline_data(expected)
    assert all(key in written for key in HEADLINE_KEYS)


# --------------------------------------------------------------------------- mechanical part


def _tax_alert(model: str, round_number: int, old: float | None, new: float | None) -> dict[str, Any]:
    forecast = (
        None
        if old is None or new is None
        else {
            "contribution_at_old_stake": old,
            "contribution_at_new_stake": new,
            "tax": new - old,
        }
    )
    alert = {"kind": "crowding_tax", "model": model, "round": round_number}
    return {**alert, "own_forecast": forecast} if forecast is not None else alert


def test_mechanical_part_from_the_alerts_forecasts(tmp_path: Path) -> None:
    """Median of tax / |MMC at the old stake| over the jumps with a forecast (latest per model and
    round; other kinds, missing and non-finite forecasts skipped); it reaches headline.json."""
    alerts = [
        _tax_alert("a", 5, 0.010, 0.006),  # −40%
        _tax_alert("b", 6, 0.020, 0.015),  # −25%
        _tax_alert("c", 7, -0.010, -0.012),  # −20% (relative to |old|)
        _tax_alert("c", 7, -0.010, -0.013),  # a repeat replaces it: −30%
        _tax_alert("d", 8, 0.0, -0.001),  # no relative change (old is 0), counts in the mean tax
        _tax_alert("e", 9, None, None),  # no forecast
        _tax_alert("f", 9, float("nan"), 0.01),
        {"kind": "corr_w_mm_spike", "model": "g", "round": 9, "own_forecast": {"contribution_at_old_stake": 1.0, "tax": 1.0}},
    ]
    part = mechanical_part(alerts)
    assert part.events == 4
    assert part.median_relative_change == pytest.approx(np.median([-0.4, -0.25, -0.3]))
    assert part.mean_tax == pytest.approx(np.mean([-0.004, -0.005, -0.003, -0.001]))
    assert mechanical_part([]) == MechanicalPart()
    # The alerts of different models arrive in any order across partitions: the same bytes.
    rng = np.random.default_rng(3)
    many = [_tax_alert(f"m{i:03d}", 10 + i % 7, float(x), float(y)) for i, (x, y) in enumerate(rng.normal(0.01, 0.01, (200, 2)))]
    figures = {orjson.dumps(mechanical_part([many[j] for j in rng.permutation(len(many))]).__dict__) for _ in range(20)}
    assert len(figures) == 1
    table = score_table_from_messages([])
    files = render_report(crowding_report(table), table, tmp_path, mechanical=part)
    written = orjson.loads(files.headline_json.read_bytes())
    assert written["stake_jump_mechanical_events"] == 4
    assert written["stake_jump_mechanical_median_change"] == pytest.approx(part.median_relative_change)
    assert "-30% · 4" in files.html.read_text(encoding="utf-8")


def test_alert_rates_per_100_model_rounds() -> None:
    """By kind and by kind.stage, per 100 model-rounds; nothing without model-rounds."""
    alerts = [
        {"kind": "corr_w_mm_spike", "stage": "live"},
        {"kind": "corr_w_mm_spike", "stage": "live"},
        {"kind": "corr_w_mm_spike", "stage": "resolution"},
        {"kind": "crowding_tax", "stage": "resolution"},
    ]
    assert alert_rates(alerts, 200) == {
        "corr_w_mm_spike": 1.5,
        "corr_w_mm_spike.live": 1.0,
        "corr_w_mm_spike.resolution": 0.5,
        "crowding_tax": 0.5,
        "crowding_tax.resolution": 0.5,
    }
    assert alert_rates(alerts, 0) == {}
