"""``mmc web`` and the workers' ``/metrics`` against a real worker, the real broker and Redis.

One small tournament runs through a real worker (with its Faust web server on, for
``/metrics``); ``mmc web`` then runs as a subprocess on a free port and every endpoint is
checked against the messages the worker published. The last round's final targets are held
back and streamed at the end, to time the live events.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from scoring.standing import max_drawdown, sharpe, stake_payout, window_std
from streams.kafka.clients import kafka_client_options
from streams.messages.resolution import history_entry
from streams.settings import Settings
from streams.tools.stack import free_port
from tests.conftest import StackEnv, fresh_settings, run_sync
from tests.e2e.harness import Event, Received, collect, end_offsets, produce, workers
from tests.e2e.tournament import Tournament, build

pytestmark = pytest.mark.e2e

OUTPUTS = ["scores", "leaderboard", "crowding", "alerts", "deadletter"]
LIVE = ["scores", "leaderboard", "crowding", "alerts"]


# --------------------------------------------------------------------------- HTTP (stdlib: no client library needed)


@dataclass
class HttpResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return orjson.loads(self.body)


def http(method: str, url: str, params: dict[str, Any] | None = None, timeout: float = 10) -> HttpResponse:
    """One HTTP request; 4xx/5xx are returned, not raised."""
    if params:
        url += "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback test server
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, dict(error.headers.items()), error.read())


# --------------------------------------------------------------------------- the running service


@dataclass
class LiveService:
    """A worker and ``mmc web`` that have processed a tournament (all but ``withheld``)."""

    settings: Settings
    tournament: Tournament
    sent: list[Event]
    withheld: list[Event]
    received: list[Received]
    worker_url: str
    web_url: str
    log_dir: Path
    by_topic: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.received:
            self.by_topic.setdefault(m.topic, []).append(m)

    def values(self, topic: str) -> list[Any]:
        return [m.json() for m in self.by_topic.get(topic, [])]

    def get(self, path: str, **params: Any) -> HttpResponse:
        return http("GET", self.web_url + path, params)


def service_settings(stack_env: StackEnv, **overrides: Any) -> Settings:
    """Fresh topics, group and Redis namespace (conftest's fresh_settings), with alerts that fire on a small season."""
    fields: dict[str, Any] = {
        "max_message_bytes": 100_000,
        "alert_min_effective_models": 1000.0,  # every round counts as concentrated
        "alert_trend_rounds": 3,
        "alert_trend_min_t": 0.0,
        **overrides,
    }
    return fresh_settings(stack_env, **fields)


def expected_counts(t: Tournament, withheld: list[Event]) -> dict[str, int]:
    """Output messages of the tournament without the held-back target updates."""
    held = {(v["round"], v["day"]) for v in (orjson.loads(e.value) for e in withheld if e.value)}
    per_round = Counter(r for (r, _) in t.accepted)
    updates = [(r, d) for r, d, _, _ in t.target_updates if (r, d) not in held]
    scored = sum(per_round[r] for r, _ in updates)
    return {
        "scores": scored,
        "leaderboard": scored,
        "crowding": len(updates),
        "deadletter": len(t.bad),
    }


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@contextmanager
def web_process(settings: Settings, log_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m streams web`` on a free port; yields its URL and process once it follows the topics."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {**os.environ, **settings.to_env(), "MMC_WEB_HOST": "127.0.0.1", **env}
    with (log_dir / "web.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "web", "--port", str(port)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: proc.poll() is None and http("GET", url + "/api/health", timeout=2).json().get("kafka") == "following",
                30,
                "mmc web to follow the output topics",
            )
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def web_server(settings: Settings, log_dir: Path) -> Iterator[str]:
    """``python -m streams web`` on a free port; yields its URL once its live feed follows the topics."""
    with web_process(settings, log_dir) as (url, _):
        yield url


@contextmanager
def live_service(settings: Settings, t: Tournament, log_dir: Path) -> Iterator[LiveService]:
    """Run ``t`` (minus the last round's final targets) through a worker with /metrics on, then start ``mmc web``."""
    final_targets = max(
        (e for e in t.events if e.topic == "targets" and e.value and b'"final":true' in e.value),
        key=lambda e: e.timestamp_ms,
    )
    withheld = [final_targets]
    sent = [e for e in t.events if e is not final_targets]
    want = expected_counts(t, withheld)
    worker_port = free_port()
    run_sync(produce(settings, sent))
    env = {"MMC_WEB_ENABLED": "true", "MMC_WEB_HOST": "127.0.0.1", "MMC_WORKER_WEB_PORT": str(worker_port)}
    with workers(settings, 1, log_dir=log_dir, **env):

        def done(received: list[Received]) -> bool:
            have = Counter(m.topic for m in received)
            return all(have[k] >= v for k, v in want.items()) and have["alerts"] > 0

        received = run_sync(collect(settings, OUTPUTS, done, timeout=240))
        assert done(received), f"outputs missing: {Counter(m.topic for m in received)} vs {want}"
        with web_server(settings, log_dir) as web_url:
            yield LiveService(
                settings,
                t,
                sent,
                withheld,
                received,
                f"http://127.0.0.1:{worker_port}",
                web_url,
                log_dir,
            )


@pytest.fixture(scope="module")
def service(stack_env: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = service_settings(stack_env)
    with live_service(settings, build(), tmp_path_factory.mktemp("web")) as running:
        yield running


# --------------------------------------------------------------------------- helpers


def latest_by(messages: list[Received], key: Callable[[Any], Any]) -> dict[Any, Any]:
    """The last message (in topic order) for each key."""
    out: dict[Any, Any] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        value = m.json()
        out[key(value)] = value
    return out


def documented_schema(doc: dict[str, Any], path: str) -> Any:
    """A validator for the 200 JSON body the OpenAPI document gives for GET ``path``."""
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "components": doc["components"],
    }
    return jsonschema_rs.validator_for(root)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format → {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --------------------------------------------------------------------------- API


def test_leaderboard_is_the_latest_row_of_every_model(service: LiveService) -> None:
    """/api/leaderboard gives each model's last leaderboard message, best payout first, with rank and n_models."""
    last = latest_by(service.by_topic["leaderboard"], lambda v: v["model"])
    body = service.get("/api/leaderboard", limit=1000).json()
    assert body["n_models"] == len(service.tournament.models) == len(body["rows"])
    assert body["window"] == service.settings.leaderboard_window
    assert {row["model"]: row for row in body["rows"]} == last
    assert [row["rank"] for row in body["rows"]] == list(range(1, len(body["rows"]) + 1))
    payouts = [row["payout_mean"] for row in body["rows"]]
    assert payouts == sorted(payouts, reverse=True)
    top = service.get("/api/leaderboard", limit=5).json()["rows"]
    assert top == body["rows"][:5]


def test_leaderboard_rows_carry_the_window_statistics(service: LiveService) -> None:
    """Each /api/leaderboard row's std, Sharpe, drawdown, positive rounds and Σ stake × payout equal scoring.standing on the model's history."""
    window = service.settings.leaderboard_window
    rows = service.get("/api/leaderboard", limit=1000).json()["rows"]
    for row in rows[:8]:
        history = service.get(f"/api/models/{row['model']}").json()["history"][-window:]
        paid = [h for h in history if h["payout"] is not None]
        payouts = [h["payout"] for h in paid]
        assert row["payout_std"] == window_std(payouts)
        assert row["payout_sharpe"] == sharpe(payouts)
        assert row["payout_max_drawdown"] == max_drawdown(payouts)
        assert row["positive_rounds"] == sum(p > 0 for p in payouts)
        assert row["stake_payout"] == stake_payout([h["stake"] for h in paid], payouts)
    from streams.web import openapi_document

    documented = openapi_document(service.settings)["components"]["schemas"]["LeaderboardRow"]["properties"]
    assert {"payout_std", "payout_sharpe", "payout_max_drawdown", "positive_rounds", "stake_payout"} <= set(documented)


def test_round_scores_and_crowding_are_the_latest_messages(service: LiveService) -> None:
    """/api/rounds/{r}/scores and /crowding equal each round's latest score and crowding messages."""
    scores = latest_by(service.by_topic["scores"], lambda v: (v["round"], v["model"]))
    crowding = latest_by(service.by_topic["crowding"], lambda v: v["round"])
    rounds = service.get("/api/rounds").json()["rounds"]
    assert [r["round"] for r in rounds] == sorted({*service.tournament.rounds, 50})
    assert {r["round"] for r in rounds if r["scored"]} == set(service.tournament.rounds)
    for r in service.tournament.rounds:
        body = service.get(f"/api/rounds/{r}/scores").json()
        want = {m: v for (rr, m), v in scores.items() if rr == r}
        assert {s["model"]: s for s in body["scores"]} == want
        assert body["day"] == crowding[r]["day"] and body["final"] == crowding[r]["final"]
        payouts = [s["payout"] for s in body["scores"]]
        assert payouts == sorted(payouts, reverse=True)
        by_corr = service.get(f"/api/rounds/{r}/scores", sort="corr", order="asc", limit=3).json()["scores"]
        assert [s["corr"] for s in by_corr] == sorted(v["corr"] for v in want.values())[:3]
        assert service.get(f"/api/rounds/{r}/crowding").json() == crowding[r]
    info = {r["round"]: r for r in rounds}
    last_round = max(service.tournament.rounds)
    assert info[last_round]["day"] == crowding[last_round]["day"] and info[50]["scored"] is False


def test_model_history_matches_its_score_messages(service: LiveService) -> None:
    """/api/models/{m}: one entry per round (its latest update, final wins), the rank and the rolling means."""
    scores = latest_by(service.by_topic["scores"], lambda v: (v["round"], v["model"]))
    leaderboard = latest_by(service.by_topic["leaderboard"], lambda v: v["model"])
    for model in service.tournament.models[:6]:
        body = service.get(f"/api/models/{model}").json()
        assert body["model"] == model
        want = [history_entry(scores[(r, model)]) for r in service.tournament.rounds]
        assert body["history"] == want
        assert body["rank"] == leaderboard[model]["rank"] and body["n_models"] == leaderboard[model]["n_models"]
        for name in (
            "corr_mean",
            "mmc_mean",
            "contribution_mean",
            "corr_w_mm_mean",
            "payout_mean",
            "stake",
            "rounds",
        ):
            assert body["standing"][name] == leaderboard[model][name], name


def test_alerts_and_trend(service: LiveService) -> None:
    """/api/alerts holds every alert published (newest first); /api/trend every round's latest crowding figures."""
    alerts = service.get("/api/alerts", limit=1000).json()["alerts"]
    published = service.values("alerts")
    assert sorted(map(orjson.dumps, alerts)) == sorted(map(orjson.dumps, published))
    assert service.get("/api/alerts", limit=2).json()["alerts"] == alerts[:2]
    crowding = latest_by(service.by_topic["crowding"], lambda v: v["round"])
    trend = service.get("/api/trend").json()["trend"]
    assert [f["round"] for f in trend] == sorted(crowding)
    for figures in trend:
        want = {k: v for k, v in crowding[figures["round"]].items() if k != "trend"}
        assert figures == want


def test_model_neighbours_are_the_close_time_messages_with_the_tax_of_final_rounds(service: LiveService) -> None:
    """/api/models/{model}/neighbours: each round's neighbours message as the batch computes it, the crowd over rounds, the crowding tax of final rounds."""
    import numpy as np

    import scoring
    from streams.messages.neighbours import neighbour_messages, tax_figures

    t, settings = service.tournament, service.settings
    doc = service.get("/api/openapi.json").json()
    withheld = {(v["round"], v["day"]) for v in (orjson.loads(e.value) for e in service.withheld if e.value)}
    finals = {r: tt for r, d, f, tt in t.target_updates if f and (r, d) not in withheld}
    model = next(m for m in t.models if all(t.stakes_at([m], t.close_ts[r])[0] > 0 for r in t.rounds if (r, m) in t.accepted))
    rounds = [r for r in t.rounds if (r, model) in t.accepted]
    batch: dict[int, tuple[dict[str, Any], dict[str, Any] | None]] = {}
    for r in rounds:
        models = sorted(m for (rr, m) in t.accepted if rr == r)
        preds = np.stack([t.accepted[(r, m)][1] for m in models])
        found = scoring.crowd_neighbours(preds, t.stakes_at(models, t.close_ts[r]), settings.neighbours_k, settings.crowd_threshold)
        tax = tax_figures(models, scoring.crowd_tax(preds, finals[r], found)) if r in finals else {}
        batch[r] = (neighbour_messages(r, models, found)[models.index(model)], tax.get(model))

    body = wait_until(
        lambda: (b := service.get(f"/api/models/{model}/neighbours").json()).get("round") == rounds[-1] and len(b["tax"]) == len(finals) and b,
        60,
        "the neighbours of every round and the tax of every final round",
    )
    documented_schema(doc, "/api/models/{model}/neighbours").validate(body)
    assert body["model"] == model and body["neighbours"] == batch[rounds[-1]][0]
    assert [p["round"] for p in body["crowd"]] == rounds
    assert [p["crowd_share"] for p in body["crowd"]] == [batch[r][0]["crowd_share"] for r in rounds]
    assert [entry["round"] for entry in body["tax"]] == sorted(finals)
    for entry in body["tax"]:
        want = batch[entry["round"]][1]
        assert want is not None and entry["status"] == want["status"]
        for name in ("contribution", "contribution_without_crowd", "tax"):
            assert entry[name] == pytest.approx(want[name], abs=1e-12)
    earlier = service.get(f"/api/models/{model}/neighbours", round=str(rounds[0])).json()
    assert earlier["round"] == rounds[0] and earlier["neighbours"] == batch[rounds[0]][0]
    for params, status, code in (
        ({"round": "999"}, 404, "unknown_round"),
        ({"round": "-1"}, 400, "bad_round"),
    ):
        response = service.get(f"/api/models/{model}/neighbours", **params)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    response = service.get("/api/models/nobody/neighbours")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "unknown_model")


def test_every_response_matches_the_openapi_document(service: LiveService) -> None:
    """Each JSON endpoint's body validates against the response schema the OpenAPI document gives for it."""
    doc = service.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    model = service.tournament.models[0]
    calls = {
        "/api/leaderboard": "/api/leaderboard",
        "/api/models/{model}": f"/api/models/{model}",
        "/api/rounds": "/api/rounds",
        "/api/rounds/{round}/scores": f"/api/rounds/{service.tournament.rounds[0]}/scores",
        "/api/rounds/{round}/crowding": f"/api/rounds/{service.tournament.rounds[-1]}/crowding",
        "/api/alerts": "/api/alerts",
        "/api/trend": "/api/trend",
        "/api/health": "/api/health",
    }
    for documented, path in calls.items():
        response = service.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        documented_schema(doc, documented).validate(response.json())


def test_every_route_is_documented() -> None:
    """Every route the server registers is in the OpenAPI document, and every documented path is a route."""
    from streams.web import create_web_app, openapi_document

    settings = Settings()
    app = create_web_app(settings, follow=False)
    routes = {resource.canonical for resource in app.router.resources() if not resource.canonical.startswith("/static")}
    doc = openapi_document(settings)
    assert routes == set(doc["paths"])
    for path, item in doc["paths"].items():
        for operation in item.values():
            assert operation["summary"] and "200" in operation["responses"], path
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for x in node:
                yield from refs(x)

    for ref in refs(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # every reference resolves inside the document
        assert isinstance(target, dict), ref


@pytest.mark.parametrize(
    "path, params, status, code",
    [
        ("/api/models/bad%20model", {}, 400, "bad_model_id"),
        ("/api/models/%7Br1%7D", {}, 400, "bad_model_id"),
        ("/api/models/m1%3Ax", {}, 400, "bad_model_id"),
        ("/api/models/" + "x" * 65, {}, 400, "bad_model_id"),
        ("/api/models/nobody", {}, 404, "unknown_model"),
        ("/models/bad%20model", {}, 400, "bad_model_id"),
        ("/api/rounds/abc/scores", {}, 400, "bad_round"),
        ("/api/rounds/-1/crowding", {}, 400, "bad_round"),
        ("/api/rounds/99999999999999999/scores", {}, 400, "bad_round"),
        ("/api/rounds/999/scores", {}, 404, "unknown_round"),
        ("/api/rounds/50/crowding", {}, 404, "not_scored"),
        ("/api/rounds/1/scores", {"sort": "nope"}, 400, "bad_sort"),
        ("/api/leaderboard", {"limit": "0"}, 400, "bad_limit"),
        ("/api/leaderboard", {"limit": "abc"}, 400, "bad_limit"),
        ("/api/alerts", {"limit": "100000"}, 400, "bad_limit"),
        ("/api/nothing-here", {}, 404, "not_found"),
    ],
)
def test_errors_are_json_with_status(service: LiveService, path: str, params: dict[str, str], status: int, code: str) -> None:
    """Bad parameters, unknown things and unknown routes answer JSON errors with the right status."""
    response = http("GET", service.web_url + path, params)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]


def test_method_not_allowed_is_json(service: LiveService) -> None:
    """A POST to a read-only endpoint is a JSON 405."""
    response = http("POST", service.web_url + "/api/leaderboard")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_pages_and_static_files_are_served_locally(service: LiveService) -> None:
    """The page, a model page and the assets load from this server; the CSP allows nothing else."""
    for path in ("/", f"/models/{service.tournament.models[0]}"):
        response = service.get(path)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert "/static/app.js" in response.text and "http" not in response.text.split("<footer>")[0].replace("http-equiv", "")
    for asset in ("/static/app.js", "/static/charts.js", "/static/style.css"):
        assert service.get(asset).status_code == 200


# --------------------------------------------------------------------------- the route table, the OpenAPI document and the parameter models (in process)


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema of the document, followed through its ``$ref`` (if it is one)."""
    while "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def test_served_routes_and_documented_operations_are_the_same_list() -> None:
    """Every GET route the app registers is a documented operation (named by its operationId), and every operation is served."""
    from streams.web import ROUTES, create_web_app, openapi_document

    settings = Settings()
    app = create_web_app(settings, follow=False)
    doc = openapi_document(settings)
    served = {(route.resource.canonical, route.method, route.resource.name) for route in app.router.routes() if route.resource is not None}
    documented = {(path, method.upper(), operation["operationId"]) for path, item in doc["paths"].items() for method, operation in item.items()}
    assert {s for s in served if s[1] == "GET" and s[2] != "static"} == documented
    # aiohttp answers HEAD beside every GET; the page's assets are the one resource outside the document
    assert {(path, name) for path, method, name in served if method == "HEAD"} == {(path, name) for path, _, name in served if name}
    assert {r.canonical for r in app.router.resources()} - set(doc["paths"]) == {"/static"}
    assert [route.path for route in ROUTES] == list(doc["paths"])


def test_each_handler_takes_and_returns_what_its_route_documents() -> None:
    """A handler's parameters are its route's parameter model; a handler that returns a model returns the documented body."""
    import typing

    from streams.web import ROUTES
    from streams.web.models import Body

    for route in ROUTES:
        hints = typing.get_type_hints(route.endpoint)
        assert hints["params"] is route.parameters, route.path
        returned = hints["return"]
        if isinstance(returned, type) and issubclass(returned, Body):
            assert returned is route.ok.body, route.path


def _bad_values(schema: dict[str, Any]) -> list[str]:
    """Values the documented schema of a parameter refuses."""
    if "enum" in schema:
        return ["nope", str(schema["enum"][0]).upper()]
    if schema["type"] == "integer":
        bad = ["abc", "1.5", str(schema["minimum"] - 1)]
        if "maximum" in schema:
            bad.append(str(schema["maximum"] + 1))
        if "exclusiveMaximum" in schema:
            bad.append(str(schema["exclusiveMaximum"]))
        return bad
    assert schema["type"] == "string" and "pattern" in schema, schema
    bad = ["bad id", "{r1}", "m1:x", "x" * 65, "é"]
    assert not any(re.search(schema["pattern"], value) for value in bad)
    return bad


def _bad_requests(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(documented path, request path and query, parameter name) for a refused value of every documented parameter."""
    fine = {"model": "m1", "round": "1"}
    cases = []
    for path, item in doc["paths"].items():
        for parameter in item["get"].get("parameters", []):
            name = parameter["name"]
            for value in _bad_values(parameter["schema"]):
                quoted = urllib.parse.quote(value, safe="")
                url = path
                for other, good in fine.items():
                    url = url.replace("{" + other + "}", quoted if (other == name and parameter["in"] == "path") else good)
                if parameter["in"] == "query":
                    url += "?" + urllib.parse.urlencode({name: value})
                cases.append((path, url, name))
    return cases


def test_refused_parameters_answer_the_documented_400() -> None:
    """A value outside a parameter's documented schema is a 400 whose body is the documented Error, with a code the document lists."""
    from aiohttp.test_utils import TestClient, TestServer

    from streams.web import create_web_app, openapi_document

    settings = Settings()
    doc = openapi_document(settings)
    cases = _bad_requests(doc)
    assert {name for _, _, name in cases} == {"model", "round", "sort", "order", "limit"}

    async def answers() -> list[tuple[int, str, Any]]:
        out = []
        # No request below reaches Redis: parameters are checked before the handler runs.
        async with TestClient(TestServer(create_web_app(settings, follow=False))) as client:
            for _, url, _ in cases:
                response = await client.get(url)
                out.append((response.status, response.headers["Content-Type"], await response.json()))
        return out

    for (path, url, name), (status, content_type, body) in zip(cases, run_sync(answers()), strict=True):
        assert status == 400 and content_type.startswith("application/json"), (url, status, body)
        documented = doc["paths"][path]["get"]["responses"]["400"]
        schema = documented["content"]["application/json"]["schema"]
        jsonschema_rs.validator_for({**_resolve(doc, schema), "components": doc["components"]}).validate(body)
        error = body["error"]
        assert error["status"] == 400 and error["code"].startswith(f"bad_{name}") and error["message"], (url, error)
        assert error["code"] in documented["description"], (url, error["code"], documented["description"])


def test_documented_bounds_and_defaults_are_accepted() -> None:
    """Every documented default, minimum and maximum of a parameter passes its model (the bounds are the same on both sides)."""
    from streams.web import ROUTES, openapi_document
    from streams.web.models import parse_parameters

    doc = openapi_document(Settings())
    for route in ROUTES:
        parameters = doc["paths"][route.path]["get"].get("parameters", [])
        required = {p["name"]: "1" if p["schema"]["type"] == "integer" else "m1" for p in parameters if p["required"]}
        for parameter in parameters:
            schema = parameter["schema"]
            edges = [schema[k] for k in ("default", "minimum", "maximum") if k in schema] + schema.get("enum", [])
            if "exclusiveMaximum" in schema:
                edges.append(schema["exclusiveMaximum"] - 1)
            for edge in edges:
                parsed = parse_parameters(route.parameters, {**required, parameter["name"]: str(edge)})
                assert getattr(parsed, parameter["name"]) == edge, (route.path, parameter["name"], edge)


def test_the_document_is_valid_openapi_3_1() -> None:
    """The OpenAPI 3.1 structure the document relies on, and every schema in it a valid JSON Schema 2020-12."""
    from streams.web import openapi_document

    doc = openapi_document(Settings())
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"]) and set(doc) <= {"openapi", "info", "tags", "paths", "components"}
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    tags = {tag["name"] for tag in doc["tags"]}
    schemas: list[Any] = list(doc["components"]["schemas"].values())
    operation_ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/") and set(item) == {"get"}, path
        operation = item["get"]
        operation_ids.append(operation["operationId"])
        assert operation["summary"] and set(operation["tags"]) <= tags, path
        parameters = operation.get("parameters", [])
        assert len({(p["name"], p["in"]) for p in parameters}) == len(parameters), path
        placeholders = set(re.findall(r"\{(\w+)\}", path))
        assert {p["name"] for p in parameters if p["in"] == "path"} == placeholders, path
        for parameter in parameters:
            assert parameter["in"] in ("path", "query") and isinstance(parameter["required"], bool), (path, parameter)
            assert parameter["in"] == "query" or parameter["required"], (path, parameter)
            schemas.append(parameter["schema"])
        assert "200" in operation["responses"], path
        for status, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5][0-9][0-9]", status) and response["description"], (path, status)
            for media, content in response["content"].items():
                assert re.fullmatch(r"[a-z]+/[a-z0-9.+-]+", media), (path, media)
                schemas.append(content["schema"])
            for header in response.get("headers", {}).values():
                schemas.append(header["schema"])
    assert len(set(operation_ids)) == len(operation_ids)
    for schema in schemas:
        jsonschema_rs.meta.validate(schema)
    for schema in schemas:  # pydantic's own keywords, had they slipped through, would not be JSON Schema
        assert not {"ge", "le", "gt", "lt", "x-topic-schema"} & set(_keywords(schema)), schema


def _keywords(node: Any) -> Iterator[str]:
    """Every keyword of a JSON Schema tree (the names under ``properties`` are names, not keywords)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "properties":
                for sub in v.values():
                    yield from _keywords(sub)
            else:
                yield k
                yield from _keywords(v)
    elif isinstance(node, list):
        for x in node:
            yield from _keywords(x)


# --------------------------------------------------------------------------- metrics


def test_worker_metrics_count_what_was_sent(service: LiveService) -> None:
    """The worker's /metrics: inputs by topic and outcome, dead letters by reason, outputs and latency match the run."""
    t = service.tournament
    sent = Counter(e.topic for e in service.sent)
    bad = Counter(reason for reason, _ in t.bad)
    bad_by_topic = Counter(topic for _, topic in t.bad)
    want_out = Counter(m.topic for m in service.received)

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        response = http("GET", service.worker_url + "/metrics", timeout=5)
        samples = parse_metrics(response.text)
        handled = sum(metric(samples, "mmc_input_messages_total", topic=topic, outcome=o) for topic in sent for o in ("applied", "unchanged", "refused"))
        return samples if handled >= len(service.sent) else None

    samples = wait_until(scrape, 30, "the worker to count every input")
    for topic, n in sent.items():
        applied = metric(samples, "mmc_input_messages_total", topic=topic, outcome="applied")
        unchanged = metric(samples, "mmc_input_messages_total", topic=topic, outcome="unchanged")
        refused = metric(samples, "mmc_input_messages_total", topic=topic, outcome="refused")
        assert applied + unchanged + refused == n, topic
        assert refused == bad_by_topic[topic], topic
        assert unchanged == 0, topic  # one worker, no redelivery
    for reason, n in bad.items():
        assert metric(samples, "mmc_dead_letters_total", reason=reason) == n, reason
    for topic in ("scores", "leaderboard", "crowding", "deadletter"):
        assert metric(samples, "mmc_output_messages_total", topic=topic) == want_out[topic], topic
    assert metric(samples, "mmc_output_messages_total", topic="alerts") >= want_out["alerts"]
    resolved = expected_counts(t, service.withheld)["crowding"]
    assert metric(samples, "mmc_resolution_latency_seconds_count") == resolved
    assert 0 < metric(samples, "mmc_resolution_latency_seconds_sum") < 60 * resolved
    assert metric(samples, "mmc_rounds_known") == len(t.rounds) + 1
    assert metric(samples, "mmc_rounds_open") == 0
    for r in t.rounds:
        assert metric(samples, "mmc_redis_round_memory_bytes", round=str(r)) > t.n_ids * 8


def test_web_metrics_count_requests(service: LiveService) -> None:
    """mmc web's /metrics counts requests by route template and status, and reports the state gauges."""
    service.get("/api/rounds/1/scores")
    service.get("/api/rounds/abc/scores")
    samples = parse_metrics(service.get("/metrics").text)
    assert (
        metric(
            samples,
            "mmc_web_requests_total",
            route="/api/rounds/{round}/scores",
            method="GET",
            status="200",
        )
        >= 1
    )
    assert (
        metric(
            samples,
            "mmc_web_requests_total",
            route="/api/rounds/{round}/scores",
            method="GET",
            status="400",
        )
        >= 1
    )
    assert metric(samples, "mmc_rounds_known") == len(service.tournament.rounds) + 1


def test_sse_frames() -> None:
    """A value becomes one event (several data lines if it has newlines).

    Slow live clients and the cap on them: tests/streams/web/test_live_clients.py.
    """
    from streams import web

    assert web.sse_frame("scores", b'{"a":1}') == b'event: scores\ndata: {"a":1}\n\n'
    assert web.sse_frame("alerts", b"{\n}") == b"event: alerts\ndata: {\ndata: }\n\n"


# --------------------------------------------------------------------------- live (last: it changes the state)


async def _stream_and_topics(service: LiveService, want: int, timeout: float) -> tuple[list[tuple[str, bytes, float]], list[tuple[str, bytes, float]]]:
    """Read /api/stream and the output topics side by side while the withheld targets are produced."""
    import aiohttp

    settings = service.settings
    sse: list[tuple[str, bytes, float]] = []
    kafka: list[tuple[str, bytes, float]] = []
    marks = await end_offsets(settings, LIVE)
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(list(marks))
        for tp, offset in marks.items():
            consumer.seek(tp, offset)
        short = {settings.topic(t): t for t in LIVE}
        async with (
            aiohttp.ClientSession() as session,
            session.get(service.web_url + "/api/stream") as response,
        ):
            assert response.headers["Content-Type"].startswith("text/event-stream")

            async def read_sse() -> None:
                event, data = "", b""
                async for raw in response.content:
                    line = raw.rstrip(b"\n")
                    if line.startswith(b"event: "):
                        event = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                    elif not line and event:
                        if event in LIVE:
                            sse.append((event, data, time.monotonic()))
                        event, data = "", b""

            async def read_kafka() -> None:
                while True:
                    batch = await consumer.getmany(timeout_ms=200)
                    now = time.monotonic()
                    for tp, records in batch.items():
                        kafka.extend((short[tp.topic], r.value, now) for r in records)

            readers = [asyncio.create_task(read_sse()), asyncio.create_task(read_kafka())]
            await asyncio.sleep(0.5)  # both readers attached
            await produce(settings, service.withheld)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and (len(sse) < want or len(kafka) < want):
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # anything late (alerts) arrives too
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        await consumer.stop()
    return sse, kafka


def test_live_events_arrive_within_a_second_of_the_messages(service: LiveService, record_property: Callable[[str, object], None]) -> None:
    """A new target update's scores, leaderboard rows and crowding reach /api/stream within 1 s of the topic."""
    t = service.tournament
    (event,) = service.withheld
    r = orjson.loads(event.value)["round"]
    n = sum(1 for (rr, _) in t.accepted if rr == r)
    day = orjson.loads(event.value)["day"]
    sse, kafka = run_sync(_stream_and_topics(service, want=2 * n + 1, timeout=60))
    # The embedded broker's end offsets can point inside the last batch (see streams.web.LiveFeed):
    # the test's own reader keeps only what this update published.
    kafka = [(topic, value, at) for topic, value, at in kafka if _of_update(topic, orjson.loads(value), r, day)]
    on_topics = Counter(topic for topic, _, _ in kafka)
    assert on_topics["scores"] == n and on_topics["leaderboard"] == n and on_topics["crowding"] == 1, on_topics
    streamed = {(topic, data): at for topic, data, at in sse}
    assert len(streamed) == len(sse) == len(kafka)
    delays = []
    for topic, value, at in kafka:
        assert (topic, value) in streamed, f"{topic} message not streamed"
        delays.append(streamed[(topic, value)] - at)
    record_property("live_delay_max_s", round(max(delays), 3))
    assert max(delays) < 1.0, f"slowest live event {max(delays):.3f} s after the topic"
    # the API serves the new state too
    scores = service.get(f"/api/rounds/{r}/scores").json()
    assert scores["final"] is True and scores["day"] == t.days


def _of_update(topic: str, value: dict[str, Any], r: int, day: int) -> bool:
    """Whether an output message comes from round ``r``'s update of ``day``."""
    if topic == "leaderboard":
        return value["as_of"]["round"] == r and value["as_of"]["day"] == day
    return value["round"] == r and value.get("day") == day
