"""The ``mmc`` command line itself (each command's behaviour is tested beside its module)."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from streams.cli import app


def test_version_prints_the_installed_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mmc-stream {version('mmc-stream')}"


def test_subcommands_still_run_beside_the_version_option() -> None:
    result = CliRunner().invoke(app, ["tail", "--help"])
    assert result.exit_code == 0 and "tail" in result.stdout
