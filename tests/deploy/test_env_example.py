""".env.example lists every setting with a valid default; Settings and unknown MMC_* names.

What pydantic-settings does with unknown names (checked here, pydantic-settings 2.x with
``extra="forbid"``):

- keyword arguments: refused (``extra_forbidden``);
- a dotenv file (``Settings(_env_file=...)``): every unknown key is refused, prefixed or not;
- the process environment: unknown ``MMC_*`` variables are **ignored** - the environment
  source only looks up the names of fields, so a misspelt ``MMC_PARTITION=8`` is silently
  without effect.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from streams.settings import Settings
from tests.deploy.manifests import REPO, SETTING_ENV_NAMES

ENV_EXAMPLE = REPO / ".env.example"
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def assignments(path: Path) -> list[tuple[str, str]]:
    """``(name, value)`` of every ``NAME=value`` line; any other non-comment line fails."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        assert match, f"{path.name}:{number}: not NAME=value: {line!r}"
        pairs.append((match.group(1), match.group(2)))
    return pairs


def plain(value: Any) -> Any:
    """A settings value comparable across sources: secrets unwrapped, empty text as None."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return None if value == "" else value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No MMC_* variable of the test process (an external stack's, say) reaches Settings."""
    for name in [name for name in os.environ if name.startswith("MMC_")]:
        monkeypatch.delenv(name)
    yield monkeypatch


def test_lists_exactly_the_settings() -> None:
    """One line per Settings field (MMC_<FIELD>), no duplicates, nothing else."""
    names = [name for name, _ in assignments(ENV_EXAMPLE)]
    assert len(names) == len(set(names)), "duplicate names"
    assert set(names) - SETTING_ENV_NAMES == set(), "not settings"
    assert SETTING_ENV_NAMES - set(names) == set(), "settings missing from .env.example"


def test_every_setting_has_a_comment() -> None:
    """Each setting's line is preceded by a comment (directly or in a commented group)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if _ASSIGNMENT.match(line):
            above = lines[index - 1]
            assert above.startswith("#") or _ASSIGNMENT.match(above), line


def test_values_are_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """Loaded as a dotenv file, every value equals the field's default."""
    loaded = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings()
    different = {
        name: (plain(getattr(loaded, name)), plain(getattr(defaults, name)))
        for name in Settings.model_fields
        if plain(getattr(loaded, name)) != plain(getattr(defaults, name))
    }
    assert different == {}


def test_loads_from_the_process_environment(clean_env: pytest.MonkeyPatch) -> None:
    """The same values exported as environment variables (what compose does) load too."""
    from_file = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    for name, value in assignments(ENV_EXAMPLE):
        clean_env.setenv(name, value)
    from_env = Settings()
    assert {n: plain(getattr(from_env, n)) for n in Settings.model_fields} == {n: plain(getattr(from_file, n)) for n in Settings.model_fields}


def test_environment_values_are_parsed(clean_env: pytest.MonkeyPatch) -> None:
    """Values are strings in the environment; Settings converts and validates them."""
    clean_env.setenv("MMC_PARTITIONS", "12")
    clean_env.setenv("MMC_WEB_ENABLED", "false")
    clean_env.setenv("MMC_KAFKA_SASL_PASSWORD", "s3cret")
    settings = Settings()
    assert settings.partitions == 12 and settings.web_enabled is False
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "s3cret"
    clean_env.setenv("MMC_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="partitions"):
        Settings()


def test_unknown_init_argument_is_refused() -> None:
    """extra="forbid": an unknown keyword argument is an error."""
    with pytest.raises(ValidationError, match="extra_forbidden"):
        Settings(partition=8)  # type: ignore[call-arg]


def test_unknown_name_in_an_env_file_is_refused(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dotenv file with an unknown MMC_* name is refused (so is any other unknown name)."""
    env_file = tmp_path / "settings.env"
    env_file.write_text("MMC_PARTITION=8\n")
    with pytest.raises(ValidationError, match="extra_forbidden"):
        Settings(_env_file=env_file)  # type: ignore[call-arg]


def test_unknown_environment_variable_is_ignored(clean_env: pytest.MonkeyPatch) -> None:
    """An unknown MMC_* variable in the process environment is ignored, not refused.

    This is pydantic-settings' behaviour for the environment source (it reads field names
    only); it is also what lets compose's own MMC_WORKERS sit in the containers' .env.
    """
    clean_env.setenv("MMC_PARTITION", "8")
    settings = Settings()
    assert settings.partitions == Settings.model_fields["partitions"].default
