"""What every command shares: the settings read once, people's output on stderr, and failing with an exit status."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings, load_settings


def stderr() -> Console:
    """A console on stderr (people) - stdout is kept for machine-readable lines."""
    return Console(stderr=True)


def settings_or_exit() -> Settings:
    """Read the environment, or explain what is wrong and exit with status 2."""
    try:
        return load_settings()
    except ValidationError as exc:
        stderr().print(f"[red]invalid MMC_* settings:[/red]\n{exc}")
        raise typer.Exit(2) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise."""
    stderr().print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
