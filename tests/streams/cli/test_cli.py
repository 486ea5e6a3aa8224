"""The ``mmc`` command line itself (each command's behaviour is tested beside its module)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.reading import TopicName
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def test_version_prints_the_installed_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mmc-stream {version('mmc-stream')}"


def test_subcommands_still_run_beside_the_version_option() -> None:
    result = CliRunner().invoke(app, ["tail", "--help"])
    assert result.exit_code == 0 and "tail" in result.stdout


# --- help texts ----------------------------------------------------------------------------------

COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]
SETTING_NAMES = {f"MMC_{name.upper()}" for name in Settings.model_fields}


def help_text(*command: str) -> str:
    """``mmc COMMAND --help`` as a person sees it in an 80-column terminal."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MMC_")}
    env.update(COLUMNS="80", NO_COLOR="1")
    result = subprocess.run([sys.executable, "-m", "streams", *command, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=lambda c: " ".join(c) or "mmc")
def test_help_is_clean_at_80_columns(command: list[str]) -> None:
    """No type tags on flags, no raw markup, nothing wider than the terminal."""
    text = help_text(*command)
    assert "<bool>" not in text and "``" not in text, text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    cmd = get_command(app)
    if command:
        cmd = cmd.commands[command[0]]  # type: ignore[attr-defined]
    for param in cmd.params:
        if getattr(param, "is_flag", False):  # a flag takes no value: nothing after its name
            for opt in (*param.opts, *param.secondary_opts):
                assert opt in text and not re.search(rf"{re.escape(opt)} <", text), (opt, text)


def test_tail_help_names_every_topic_whole() -> None:
    text = help_text("tail")
    for name in TopicName:
        assert re.search(rf"(?<![\w-]){name}(?![\w-])", text), (name, text)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_says_which_settings_it_reads(command: str) -> None:
    """A paragraph names the MMC_* variables the command reads; each is a setting (a name
    ending in * stands for the settings it starts)."""
    text = " ".join(help_text(command).split())
    assert re.search(r"\b[Rr]eads\b", text), text
    named = set(re.findall(r"MMC_[A-Z_]+\*?", text))
    assert named, text
    for name in named:
        if name.endswith("*"):
            assert any(setting.startswith(name[:-1]) for setting in SETTING_NAMES), name
        else:
            assert name in SETTING_NAMES, name


def test_mmc_demo_defaults_are_the_demo_season() -> None:
    """`mmc demo` without options runs DemoConfig's season (the calibrated one), not a copy of it."""
    import inspect

    from streams.cli.season import demo
    from streams.tools.demo import DemoConfig

    defaults = {name: p.default.default for name, p in inspect.signature(demo).parameters.items()}
    config = DemoConfig()
    assert (defaults["models"], defaults["ids"], defaults["rounds"], defaults["days"], defaults["every"], defaults["seed"]) == (
        config.n_models,
        config.n_ids,
        config.n_rounds,
        config.resolution_days,
        config.target_every_days,
        config.seed,
    )
    assert (defaults["workers"], defaults["out"]) == (config.workers, config.out_dir)


def test_mmc_simulate_help_states_the_simulators_defaults() -> None:
    """Every "(default X)" in `mmc simulate --help` is SimulationConfig's default (no drifting copy)."""
    import re

    from streams.tools.simulation import SimulationConfig

    out = subprocess.run(
        [sys.executable, "-m", "streams", "simulate", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=True
    ).stdout
    flat = " ".join(out.split())
    stated = {flag: default.replace(",", "") for flag, default in re.findall(r"(--[a-z-]+) <\w+> (?:(?!--).)*?\(default ([0-9.,]+)\)", flat)}
    config = SimulationConfig()
    fields = {
        "--models": config.n_models,
        "--rounds": config.n_rounds,
        "--ids": config.n_ids,
        "--seed": config.seed,
        "--start-round": config.start_round,
        "--jumps": config.n_jumps,
        "--crowd-weight": config.crowd_weight,
        "--early-nulls": config.early_null_fraction,
    }
    assert set(stated) == set(fields)
    for flag, value in fields.items():
        assert float(stated[flag]) == value, flag


def test_mmc_worker_says_so_when_the_worker_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken install (the worker's modules fail to import) ends in one clear line, exit 1, no traceback."""
    monkeypatch.setattr("streams.cli.service.wait_or_exit", lambda settings: None)
    monkeypatch.setitem(sys.modules, "streams.worker.main", None)  # importing it raises ImportError
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 1
    assert "the worker is not available: cannot import streams.worker.main.run_worker" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("http://127.0.0.1:6379/0", "must start with redis://"),
        ("redis://127.0.0.1:0/0", "port must be 1–65535"),
    ],
)
def test_a_redis_url_redis_cannot_open_is_a_settings_error(url: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad MMC_REDIS_URL is refused when the settings are read (exit 2, the reason named), not by a traceback when a client is built."""
    monkeypatch.setenv("MMC_REDIS_URL", url)
    result = CliRunner().invoke(app, ["topics"])
    assert result.exit_code == 2, result.output
    assert "invalid MMC_* settings" in result.output and "redis_url" in result.output and says in result.output
