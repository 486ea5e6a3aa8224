"""End to end on a Redis Cluster: a small tournament through the real broker and a worker whose
state lives on three primaries publishes what it publishes on one Redis server and keeps the
same state, which ``mmc web`` serves alike; ``mmc rebuild --wipe`` rebuilds that state on the
cluster. About 60 s in all (the two tournaments run side by side)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from streams.kafka.topics import create_topics
from streams.settings import Settings
from streams.state.client import redis_sync_client
from tests.conftest import StackEnv, run_sync
from tests.e2e.harness import Received, collect, end_offsets
from tests.e2e.test_faults import snapshot
from tests.e2e.test_tournament import _comparable
from tests.e2e.tournament import OUTPUTS, Tournament, build, complete, run_tournament, tournament_settings
from tests.streams.web.test_web import http, web_server

pytestmark = pytest.mark.e2e


class Runs(NamedTuple):
    """The same tournament run on one Redis server and on the cluster (one namespace on both)."""

    single: Settings
    cluster: Settings
    on_single: list[Received]
    on_cluster: list[Received]
    seconds: float


@pytest.fixture(scope="module")
def small() -> Tournament:
    return build(n_models=12, n_ids=120, n_rounds=2, days=2, seed=5)


@pytest.fixture(scope="module")
def runs(stack_env: StackEnv, redis_cluster_url: str, small: Tournament, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Both runs, side by side (two worker processes at once); a small tournament (2 rounds,
    12 models) keeps the default suite quick."""
    tag = uuid.uuid4().hex[:8]

    def make(*, redis_url: str = stack_env.redis_url, **overrides: Any) -> Settings:
        run = uuid.uuid4().hex[:8]
        fields = {"kafka_bootstrap": stack_env.kafka_bootstrap, "redis_url": redis_url, "topic_prefix": f"t{run}.", "app_id": f"mmc-test-{run}"}
        settings = Settings(**{**fields, "state_namespace": f"t{tag}", **overrides})
        run_sync(create_topics(settings))
        return settings

    single = tournament_settings(make)
    cluster = tournament_settings(make, redis_url=redis_cluster_url, redis_cluster=True)
    logs = tmp_path_factory.mktemp("redis-cluster")
    (logs / "single").mkdir()
    (logs / "cluster").mkdir()
    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        on_single = pool.submit(run_tournament, single, small, 1, logs / "single")
        on_cluster = pool.submit(run_tournament, cluster, small, 1, logs / "cluster")
        return Runs(single, cluster, on_single.result(), on_cluster.result(), time.perf_counter() - began)


def state_of(settings: Settings) -> dict[bytes, object]:
    client = redis_sync_client(settings)
    try:
        return snapshot(client, settings)  # type: ignore[arg-type]
    finally:
        client.close()


def test_a_tournament_on_a_cluster_publishes_and_keeps_what_it_does_on_one_redis(runs: Runs) -> None:
    """The same bytes on every output topic and the same keys with the same contents, on one
    Redis server and on a three-primary cluster."""
    assert _comparable(runs.on_cluster, runs.cluster.topic_prefix) == _comparable(runs.on_single, runs.single.topic_prefix)
    on_cluster = state_of(runs.cluster)
    assert len(on_cluster) > 20
    assert on_cluster == state_of(runs.single)


def test_rebuild_wipe_on_a_cluster_gives_the_same_state_and_outputs(runs: Runs, small: Tournament) -> None:
    """``mmc rebuild --wipe --publish all`` on the cluster: the same state, every output sent again with the same bytes."""
    cluster = runs.cluster
    before = state_of(cluster)
    marks = run_sync(end_offsets(cluster, OUTPUTS))
    env = {**os.environ, **cluster.to_env()}
    done = subprocess.run([sys.executable, "-m", "streams", "rebuild", "--wipe", "--publish", "all"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rebuilt namespace" in done.stdout
    assert state_of(cluster) == before
    resent = run_sync(collect(cluster, OUTPUTS, complete(small), timeout=120, start=marks))
    assert _comparable(resent, cluster.topic_prefix) == _comparable(runs.on_cluster, cluster.topic_prefix)


def api_answers(settings: Settings, log_dir: Path) -> dict[str, Any]:
    """What ``mmc web`` over ``settings``' state answers on the routes that read the state."""
    log_dir.mkdir()
    with web_server(settings, log_dir) as url:
        out: dict[str, Any] = {path: http("GET", url + path).json() for path in ("/api/leaderboard", "/api/rounds", "/api/trend")}
        rounds = sorted({r["round"] for r in out["/api/rounds"]["rounds"]})
        models = sorted(row["model"] for row in out["/api/leaderboard"]["rows"])
        for r in rounds:
            out[f"/api/rounds/{r}/scores"] = http("GET", f"{url}/api/rounds/{r}/scores").json()
        for m in models[:4]:
            out[f"/api/models/{m}"] = http("GET", f"{url}/api/models/{m}").json()
            out[f"/api/models/{m}/neighbours"] = http("GET", f"{url}/api/models/{m}/neighbours").json()
        health = http("GET", url + "/api/health").json()
    assert health["redis"] == "ok", health
    return out


def test_mmc_web_on_a_cluster_answers_what_it_answers_on_one_redis(runs: Runs, tmp_path: Path) -> None:
    """``mmc web`` reads the same leaderboard, rounds, scores, model histories, neighbours and
    trend from the cluster as from one Redis server, and reports Redis healthy."""
    on_cluster = api_answers(runs.cluster, tmp_path / "cluster")
    assert len(on_cluster) > 5
    assert on_cluster == api_answers(runs.single, tmp_path / "single")
