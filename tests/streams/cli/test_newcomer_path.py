"""The README's path through the CLI, as a newcomer takes it, from one shell's environment.

A worker (with its own web server on) and ``mmc web`` start from the same ``MMC_*``
environment, on the real broker and Redis, and score a small tournament: both must come up
(each on its own port) and answer, and the worker's log must read one line per scored update.
Then ``mmc whatif`` and ``mmc tail`` are asked about it in an 80-column terminal.

The README itself: every ``.venv/bin/mmc`` line of its "Running the pieces yourself" section
names a real command with options that command's ``--help`` lists; it stays under 15 KB; and
every relative link in it and in ``docs/`` leads to a file (and heading) that exists.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
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
from streams.kafka.topics import create_topics
from streams.logs import CHATTY_LIBRARIES, quiet_libraries
from streams.settings import Settings
from streams.tools.stack import free_port
from streams.tools.whatif import WhatIfRow, stake_whatif, whatif_table
from streams.worker.app import faust_app
from tests.conftest import StackEnv, run_sync
from tests.e2e.harness import Received, collect, produce, stop_workers
from tests.e2e.tournament import SPIKE_MODEL, Tournament, build, expected_counts

REPO = Path(__file__).resolve().parents[3]


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
    assert logging.getLogger("streams.worker.targets").isEnabledFor(logging.INFO)
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


# --- the README's commands and links ---------------------------------------------------------

README = REPO / "README.md"
#: The section of the README whose commands a newcomer copies into a shell.
PIECES_HEADING = "## Running the pieces yourself"
#: How the README spells the command: the console script `make` installs into `.venv`.
MMC_AS_PRINTED = ".venv/bin/mmc"
#: Markdown files whose relative links must resolve.
LINKED_PAGES = [README, REPO / "deploy" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_section(heading: str) -> str:
    """The README's text from ``heading`` to the next heading of the same level."""
    text = README.read_text()
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section {heading!r}"
    return match.group(1)


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced ``sh`` code blocks of ``markdown``."""
    return re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", markdown, re.M | re.S)


@dataclass(frozen=True)
class MmcLine:
    """One ``.venv/bin/mmc`` command of a README line: its subcommand, the options it passes
    and the options and commands its trailing comment mentions."""

    line: str
    command: str
    options: tuple[str, ...]
    mentioned_options: tuple[str, ...]
    mentioned_commands: tuple[str, ...]


#: An option as typed: ``--long`` (``=value`` cut off) or ``-x``.
OPTION = re.compile(r"^(--[a-z][a-z0-9-]*|-[a-zA-Z])(?:=.*)?$")


def mmc_lines(block: str) -> list[MmcLine]:
    """Every mmc command in a shell block; a line's comment (after `` #``) is parsed apart."""
    found = []
    for line in block.splitlines():
        code, _, comment = line.partition(" #")
        if code.lstrip().startswith("#"):
            code, comment = "", code
        lexer = shlex.shlex(code, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        # one command per run of words between shell operators (&, &&, |, ;)
        commands: list[list[str]] = [[]]
        for word in words:
            if word and set(word) <= set("&|;"):
                commands.append([])
            else:
                commands[-1].append(word)
        for command in commands:
            if not command or not command[0].endswith("mmc"):
                continue
            assert command[0] == MMC_AS_PRINTED, f"spelled {command[0]!r}, not {MMC_AS_PRINTED!r}: {line}"
            assert len(command) > 1 and not command[1].startswith("-"), f"no subcommand: {line}"
            found.append(
                MmcLine(
                    line=line.strip(),
                    command=command[1],
                    options=tuple(m.group(1) for word in command[2:] if (m := OPTION.match(word))),
                    mentioned_options=tuple(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", comment)),
                    mentioned_commands=tuple(re.findall(r"`mmc ([a-z]+)", comment)),
                )
            )
    return found


def pieces_commands() -> list[MmcLine]:
    return [line for block in shell_blocks(readme_section(PIECES_HEADING)) for line in mmc_lines(block)]


def mmc_script() -> list[str]:
    """The console script as the README prints it, else the one installed beside this Python."""
    for script in (REPO / MMC_AS_PRINTED, Path(sys.executable).with_name("mmc")):
        if script.exists():
            return [str(script)]
    return [sys.executable, "-m", "streams"]


@pytest.fixture(scope="module")
def mmc_help() -> dict[str, str]:
    """``mmc --help`` (key ``""``) from the console script the README runs, and ``mmc COMMAND
    --help`` of every command the README's section runs or mentions, from the same Typer app in
    this process (a process each would spend most of its time importing the app again); a
    command whose help fails maps to its error."""
    from typer.testing import CliRunner

    from streams.cli import app

    wanted = {c for line in pieces_commands() for c in (line.command, *line.mentioned_commands)}
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    top = subprocess.run([*mmc_script(), "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    helps = {"": top.stdout if top.returncode == 0 else f"exit {top.returncode}: {top.stdout}{top.stderr}"}
    runner = CliRunner()
    for name in sorted(wanted):
        result = runner.invoke(app, [name, "--help"], prog_name="mmc", env={"COLUMNS": "200", "NO_COLOR": "1"}, terminal_width=200)
        helps[name] = result.output if result.exit_code == 0 else f"exit {result.exit_code}: {result.output}{result.exception!r}"
    return helps


def listed_commands(top_help: str) -> set[str]:
    """The command names of ``mmc --help``'s Commands section."""
    section = top_help.split("Commands:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^\s{2}([a-z][a-z-]*)\s", section, re.M)}


def test_the_readme_runs_every_piece_with_mmc() -> None:
    """The section shows the stack, a worker, the simulator and a replay, tail and the web page."""
    commands = {line.command for line in pieces_commands()}
    assert {"stack", "worker", "simulate", "replay", "tail", "web"} <= commands, commands
    assert any(line.command == "stack" and "--env-file" in line.options for line in pieces_commands())


@pytest.mark.parametrize("line", pieces_commands(), ids=lambda line: line.line.split(" #")[0].strip())
def test_each_readme_command_is_a_real_command_with_real_options(line: MmcLine, mmc_help: dict[str, str]) -> None:
    """``mmc COMMAND`` is one of ``mmc --help``'s commands, its ``--help`` runs, and every option
    on the line — and every option or command its comment mentions — is one that help lists."""
    commands = listed_commands(mmc_help[""])
    for command in (line.command, *line.mentioned_commands):
        assert command in commands, f"`mmc {command}` is not a command ({sorted(commands)}): {line.line}"
    text = mmc_help[line.command]
    assert text.startswith(f"Usage: mmc {line.command}"), text
    for option in (*line.options, *line.mentioned_options):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), f"`mmc {line.command}` has no {option}:\n{text}"


def test_readme_is_at_most_15_kb() -> None:
    """The README stays a page for users (15,000 bytes at most); the rest lives in docs/."""
    size = README.stat().st_size
    assert size <= 15_000, f"README.md is {size:,} bytes"


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (lower case, punctuation dropped,
    spaces as hyphens, ``-1``, ``-2`` … on repeats)."""
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", strip_fences(markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def strip_fences(markdown: str) -> str:
    """``markdown`` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)


def strip_code(markdown: str) -> str:
    """``markdown`` without fenced code blocks and inline code spans (their brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", strip_fences(markdown))


def relative_links(markdown: str) -> list[str]:
    """Targets of the Markdown links and images of ``markdown`` that are not URLs."""
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", strip_code(markdown))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_an_existing_file(page: Path) -> None:
    """Each relative link of the page names a file or directory of the repository, and a
    ``#fragment`` into a Markdown page names one of its headings."""
    broken = []
    for target in relative_links(page.read_text()):
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or not resolved.is_relative_to(REPO):
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in heading_anchors(resolved.read_text()):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_link_checks_find_what_they_should() -> None:
    """The helpers above on a hand-made page: links found (not in code), anchors as GitHub makes them."""
    page = "# A `b` c!\n## A b c\n[x](docs/a.md#s) ![i](p.png) [u](https://e.org) `[no](t.md)`\n```sh\n[no](u.md)\n```\n"
    assert relative_links(page) == ["docs/a.md#s", "p.png"]
    assert heading_anchors(page) == {"a-b-c", "a-b-c-1"}
    line = mmc_lines(".venv/bin/mmc tail scores --limit=5 -k 2 &   # --json for `mmc replay` too\nuntil [ -f x ]; do sleep 1; done\n")
    assert line == [MmcLine(".venv/bin/mmc tail scores --limit=5 -k 2 &   # --json for `mmc replay` too", "tail", ("--limit", "-k"), ("--json",), ("replay",))]
