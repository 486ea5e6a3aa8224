"""The README's path through the CLI, as a newcomer takes it, from one shell's environment.

A worker (with its own web server on) and ``mmc web`` start from the same ``MMC_*``
environment, on the real broker and Redis, and score a small tournament: both must come up
(each on its own port) and answer, and the worker's log must read one line per scored update.
Then ``mmc whatif`` and ``mmc tail`` are asked about it in an 80-column terminal.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from scoring.counterfactual import StakeCounterfactual
from streams.admin import create_topics
from streams.app import CHATTY_LIBRARIES, faust_app, quiet_libraries
from streams.settings import Settings
from streams.stack import free_port
from streams.whatif import WhatIfRow, stake_whatif, whatif_table
from tests.conftest import StackEnv, run_sync
from tests.e2e.harness import Received, collect, produce, stop_workers
from tests.e2e.tournament import SPIKE_MODEL, Tournament, build, expected_counts

REPO = Path(__file__).resolve().parents[2]


def test_the_worker_and_mmc_web_have_separate_port_settings_and_defaults() -> None:
    """MMC_WORKER_WEB_PORT is the worker's (Faust's) port, MMC_WEB_PORT `mmc web`'s; the
    defaults differ, so both run on one machine without setting anything."""
    fields = Settings.model_fields
    assert fields["worker_web_port"].default == 6066
    assert fields["web_port"].default == 8080
    settings = Settings(worker_web_port=7001, web_port=7002, app_id=f"ports-{uuid.uuid4().hex[:6]}")
    assert faust_app(settings).conf.web_port == 7001


def get(url: str) -> tuple[int, Any]:
    """Status and JSON body of GET ``url`` (an HTTP error's too)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"null")


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> tuple[int, Any]:
    """The first answer of ``url``; fails if ``proc`` exits first or nothing answers in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            return get(url)
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class SideBySide:
    settings: Settings
    env: dict[str, str]
    tournament: Tournament
    received: list[Received]
    worker_url: str
    web_url: str
    worker_log: Path
    web_log: Path


@pytest.fixture(scope="module")
def side_by_side(stack_env: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SideBySide]:
    """One worker and ``mmc web`` started from one environment; a small tournament scored."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=stack_env.kafka_bootstrap,
        redis_url=stack_env.redis_url,
        topic_prefix=f"s{tag}.",
        app_id=f"mmc-side-{tag}",
        state_namespace=f"s{tag}",
        web_enabled=True,
        web_host="127.0.0.1",
        worker_web_port=free_port(),
        web_port=free_port(),
    )
    run_sync(create_topics(settings))
    log_dir = tmp_path_factory.mktemp("side-by-side")
    # The one environment both commands run in, as after `. ./.mmc.env` in a shell.
    env = {name: value for name, value in os.environ.items() if not name.startswith("MMC_")}
    env.update(settings.to_env())
    t = build(n_models=12, n_ids=100, n_rounds=3, days=2)
    procs: list[subprocess.Popen[bytes]] = []
    worker_log, web_log = log_dir / "worker.log", log_dir / "web.log"
    try:
        for command, log in (("worker", worker_log), ("web", web_log)):
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "streams", command], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append(proc)
        worker, web = procs
        worker_url = f"http://127.0.0.1:{settings.worker_web_port}"
        web_url = f"http://127.0.0.1:{settings.web_port}"
        assert wait_for(worker_url + "/health", worker, worker_log, timeout=120)[0] == 200
        assert wait_for(web_url + "/api/health", web, web_log, timeout=60)[0] == 200
        run_sync(produce(settings, t.events))
        want = expected_counts(t)

        def done(received: list[Received]) -> bool:
            have = Counter(m.topic for m in received)
            return all(have[k] >= v for k, v in want.items())

        received = run_sync(collect(settings, ["scores", "crowding", "deadletter", "leaderboard"], done, timeout=180))
        assert done(received), f"outputs missing: {Counter(m.topic for m in received)} vs {want}"
        time.sleep(1.0)  # the worker's log lines of the last update
        yield SideBySide(settings, env, t, received, worker_url, web_url, worker_log, web_log)
    finally:
        stop_workers(procs)


def test_a_worker_and_mmc_web_run_side_by_side(side_by_side: SideBySide) -> None:
    """Both started from the same environment, both serve: the worker its /health, `mmc web`
    the leaderboard the worker computed; neither ran into the other's port."""
    status, health = get(side_by_side.worker_url + "/health")
    assert (status, health) == (200, {"status": "ok", "problems": []})
    status, board = get(side_by_side.web_url + "/api/leaderboard")
    assert status == 200
    assert {row["model"] for row in board["rows"]} == {m for (_, m) in side_by_side.tournament.accepted}, board
    for log in (side_by_side.worker_log, side_by_side.web_log):
        text = log.read_text(errors="replace")
        assert "address already in use" not in text.lower() and "Traceback" not in text, text[-3000:]


#: A line of a library's log table (Faust draws aiokafka's subscriptions and assignments as
#: ``+----+`` / ``| topic |`` tables; terminaltables' other styles use box-drawing characters).
TABLE_LINE = re.compile(r"^\s*(\+[-+=]|\|[ \w]|[┌┐└┘├┤┬┴┼│─╭╮╰╯║═╔╗╚╝])")


def test_the_worker_log_is_one_line_per_scored_update(side_by_side: SideBySide) -> None:
    """At INFO the worker's log has its own lines - one per scored update - and no library
    tables or start-up chatter between them."""
    lines = side_by_side.worker_log.read_text(errors="replace").splitlines()
    text = "\n".join(lines)
    assert not [line for line in lines if TABLE_LINE.match(line)], text[-3000:]
    for chatter in ("Updating subscribed topics", "Subscribed to topic", "Setting newly assigned partitions", "Starting...", "Joined group"):
        assert chatter not in text, (chatter, text[-3000:])
    updates = {(r, d) for r, d, _, _ in side_by_side.tournament.target_updates}
    scored = {(int(m.group(1)), int(m.group(2))) for line in lines if (m := re.search(r"round (\d+) day (\d+)(?: final)?: \d+ models scored", line))}
    assert scored == updates, text[-3000:]
    assert sum("worker ready: group " in line for line in lines) == 1, text[-3000:]
    # Every line is a log record of its own: no continuation lines (tables, tracebacks).
    assert all(line.startswith("[") for line in lines if line.strip()), text[-3000:]


@pytest.fixture
def saved_levels() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in CHATTY_LIBRARIES] + [logging.getLogger()]
    levels = [logger.level for logger in loggers]
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@pytest.mark.usefixtures("saved_levels")
def test_quiet_libraries_keeps_their_warnings_and_errors() -> None:
    """At INFO the chatty libraries' INFO lines go, their warnings and errors stay; the
    service's own INFO lines stay; at DEBUG nothing is held back."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)
    quiet_libraries("info")
    for name in ("aiokafka.consumer.subscription_state", "aiokafka.consumer.group_coordinator", "faust.worker", "mode.services"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO), name
        assert logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR), name
    assert logging.getLogger("streams.processing").isEnabledFor(logging.INFO)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET)
    quiet_libraries("debug")
    assert all(logging.getLogger(name).level == logging.NOTSET for name in CHATTY_LIBRARIES)


def mmc(side_by_side: SideBySide, *args: str) -> subprocess.CompletedProcess[str]:
    """``mmc ARGS`` in the newcomer's shell, an 80-column terminal."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=REPO,
        env={**side_by_side.env, "COLUMNS": "80", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def whatif_figures(row: WhatIfRow) -> list[str]:
    """The figures ``mmc whatif`` prints for a round, as it formats them."""
    cf = row.counterfactual
    return [
        f"{cf.stake:,.2f}",
        *(f"{x:+.4f}" for x in (cf.contribution, cf.contribution_whatif, cf.mmc, cf.mmc_whatif)),
        f"{cf.corr_w_mm:.3f}",
        f"{cf.corr_w_mm_whatif:.3f}",
    ]


def test_whatif_table_fits_80_columns_whatever_the_stake() -> None:
    """Stakes up to hundreds of millions and a long model id: every cell whole at 80 columns."""
    rows = [
        WhatIfRow(812 + i, StakeCounterfactual(3, 5.0, 123_456_789.12 * (i + 1), 617_283_945.6 * (i + 1), 0.01234, -0.00567, 0.0213, -0.0345, 0.812, 0.934))
        for i in range(3)
    ]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(whatif_table("a_rather_long_model_id_0123456789", rows, "stake × 5"))
    text = console.export_text()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines()), text
    for row in rows:
        (line,) = [line for line in text.splitlines() if line.lstrip().startswith(str(row.round))]
        assert line.split() == [str(row.round), *whatif_figures(row)], line


def test_mmc_whatif_at_80_columns_prints_every_figure(side_by_side: SideBySide) -> None:
    """``mmc whatif MODEL -k 5`` on the scored tournament: one line per round with the stake and
    the six scores in full (no "…"), the ones the service's state gives."""
    result = mmc(side_by_side, "whatif", SPIKE_MODEL, "--stake-multiplier", "5", "--rounds", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines()), text
    rows = run_sync(stake_whatif(side_by_side.settings, SPIKE_MODEL, 5.0, 3))
    assert [row.round for row in rows] == side_by_side.tournament.rounds[-3:]
    for row in rows:
        (line,) = [line for line in text.splitlines() if line.split()[:1] == [str(row.round)]]
        assert line.split() == [str(row.round), *whatif_figures(row)], text
    assert "mean change: MMC (today's: contribution)" in result.stderr


def test_mmc_tail_shows_compact_lines_and_json_on_request(side_by_side: SideBySide) -> None:
    """``mmc tail scores``: one line per message - topic, key (the model), the main fields with
    floats to 4 significant digits; ``--json``: every message whole, its value as the worker
    sent it (full precision)."""
    scores = {(m.key.decode(), m.value) for m in side_by_side.received if m.topic == "scores" and m.key}
    result = mmc(side_by_side, "tail", "scores", "--from-beginning", "--limit", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    topic = side_by_side.settings.topic("scores")
    models = {key for key, _ in scores}
    for line in lines:
        fields = line.split()
        assert fields[2] == topic and fields[3] in models, line
        assert [f.split("=")[0] for f in fields[4:]] == ["round", "day", "final", "stake", "corr", "mmc", "contribution", "corr_w_mm", "payout"], line
        for field in fields[4:]:
            number = field.split("=")[1]
            assert len(re.sub(r"^-?0\.0*|[-.]", "", number)) <= 6, line  # 4 significant digits (an integer part keeps its own)
    result = mmc(side_by_side, "tail", "scores", "--from-beginning", "--limit", "5", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    shown = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(shown) == 5
    for message in shown:
        assert message["topic"] == topic
        assert (message["key"], orjson.dumps(message["value"])) in {(key, orjson.dumps(orjson.loads(value))) for key, value in scores}
    assert any(len(repr(message["value"]["corr"])) > 12 for message in shown)  # the raw floats, not rounded
