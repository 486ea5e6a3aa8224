"""The Grafana dashboard in deploy/grafana: every expression names metrics the workers and
``mmc web`` export, every exported family is on a panel, and the panels are well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.web.metrics import WebMetrics
from streams.worker.metrics import WorkerMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mmc-stream.json"
METRIC = re.compile(r"\bmmc_[a-z0-9_]+")
# What a PromQL expression of a dashboard must be able to use: the sample names Prometheus
# stores from a family (a counter's _total, a histogram's _bucket/_sum/_count; not _created).
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def _families(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Family name → the label names of its samples (``le`` left out)."""
    families: dict[str, set[str]] = {}
    for family in registry.collect():
        labels = {name for sample in family.samples for name in sample.labels if name != "le"}
        families[family.name] = labels
    return families


def _exported() -> dict[str, set[str]]:
    worker, web = WorkerMetrics(), WebMetrics()
    # Label values are created on first use: touch every labelled child so collect() lists its labels.
    worker.inputs.labels("rounds", "applied")
    worker.outputs.labels("scores")
    worker.dead_letters.labels("bad_json")
    worker.alerts.labels("crowding_tax")
    worker.lag.labels("rounds")
    worker.state.round_memory.labels("1")
    web.requests.labels("leaderboard", "GET", "200")
    web.duration.labels("leaderboard")
    web.live_dropped.labels("buffer")
    web.live_messages.labels("scores")
    merged = _families(worker.registry)
    for family, labels in _families(web.registry).items():
        merged[family] = merged.get(family, set()) | labels
    return merged


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_expression_names_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = _exported()
    samples = {family + suffix for family in exported for suffix in SUFFIXES}
    for title, expr in _expressions(dashboard):
        names = METRIC.findall(expr)
        assert names, f"{title}: {expr} names no mmc metric"
        unknown = [name for name in names if name not in samples]
        assert not unknown, f"{title}: {unknown} are not exported (exported: {sorted(exported)})"


def test_grouping_labels_exist_on_the_metric(dashboard: dict[str, Any]) -> None:
    """``by (label)`` groups by labels the metric has (a typo would silently sum everything)."""
    exported = _exported()
    by_sample = {family + suffix: labels for family, labels in exported.items() for suffix in SUFFIXES}
    for title, expr in _expressions(dashboard):
        labels: set[str] = set()
        for name in METRIC.findall(expr):
            labels |= by_sample[name]
        for group in re.findall(r"by \(([^)]*)\)", expr):
            wanted = {g.strip() for g in group.split(",")} - {"le"}
            assert wanted <= labels, f"{title}: groups by {wanted - labels}, which {METRIC.findall(expr)} do not have"


def test_every_exported_family_is_on_a_panel(dashboard: dict[str, Any]) -> None:
    used = {name for _, expr in _expressions(dashboard) for name in METRIC.findall(expr)}
    used_families = {name.removesuffix(suffix) for name in used for suffix in SUFFIXES if suffix and name.endswith(suffix)} | used
    missing = sorted(set(_exported()) - used_families)
    assert not missing, f"exported but on no panel: {missing}"


def test_the_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["description"], f"{panel['title']} says nothing about what it shows"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
