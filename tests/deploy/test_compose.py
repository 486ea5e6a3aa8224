"""docker-compose.yml, the Dockerfile and .dockerignore: structure and agreement with Settings.

No Docker engine is needed: the files are parsed (YAML; the Dockerfile line by line) and
checked for what the deployment relies on - services, health checks, start order, pinned
images, and MMC_* names that are real settings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from streams.settings import Settings
from tests.deploy.manifests import REPO, SETTING_ENV_NAMES, mmc_names_in

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"

#: Compose-only interpolation variables: not settings, never read by the service.
COMPOSE_ONLY = frozenset({"MMC_WORKERS"})
MMC_SERVICES = ("topics", "worker", "web")
_INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` for the tests' values."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if variables.get(name):
            return variables[name]
        if operator in (":-", "-"):
            return argument
        raise AssertionError(f"{name} is required: {argument}")

    return _INTERPOLATION.sub(replace, value).replace("$$", "$")


def test_services(services: dict[str, Any]) -> None:
    """Kafka, Redis, the one-shot topic creator, the workers and the web service."""
    assert set(services) == {"kafka", "redis", "topics", "worker", "web"}


def test_images_are_pinned(services: dict[str, Any]) -> None:
    """Every image names a version tag, never ``latest`` or none."""
    for name, service in services.items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository and re.fullmatch(r"\d+(\.\d+)*(-[\w.]+)?", tag), (name, service["image"])


def test_mmc_services_run_the_project_image(services: dict[str, Any]) -> None:
    """topics, worker and web are one image (built here) with different commands."""
    assert len({services[name]["image"] for name in MMC_SERVICES}) == 1
    assert all(services[name]["build"]["context"] == "." for name in MMC_SERVICES)
    assert {name: services[name]["command"] for name in MMC_SERVICES} == {
        "topics": ["topics"],
        "worker": ["worker"],
        "web": ["web"],
    }


def test_kafka_runs_kraft_with_an_in_network_listener(services: dict[str, Any]) -> None:
    """Single KRaft broker advertising the address the mmc containers bootstrap from."""
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = {key: str(value) for key, value in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    advertised = {entry.split("://", 1)[1] for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in MMC_SERVICES:
        bootstrap = services[name]["environment"]["MMC_KAFKA_BOOTSTRAP"]
        assert set(bootstrap.split(",")) <= advertised, name
    # Above the service's own input limit, so oversize inputs reach it to be dead-lettered.
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) > Settings().max_message_bytes


def test_redis_requires_the_password_of_the_settings(services: dict[str, Any]) -> None:
    """Redis starts with --requirepass MMC_REDIS_PASSWORD, the value the mmc services use."""
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert '--requirepass "$$MMC_REDIS_PASSWORD"' in command
    password = redis["environment"]["MMC_REDIS_PASSWORD"]
    assert password.startswith("${MMC_REDIS_PASSWORD:?")  # compose refuses to start without it
    assert all(services[name]["environment"]["MMC_REDIS_PASSWORD"] == password for name in MMC_SERVICES)


def test_health_checks(services: dict[str, Any]) -> None:
    """Kafka, Redis, workers and web have health checks; the one-shot topics job has none."""
    kafka_test = " ".join(services["kafka"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in kafka_test or "kafka-topics.sh" in kafka_test
    redis_test = " ".join(services["redis"]["healthcheck"]["test"])
    assert "redis-cli" in redis_test and "ping" in redis_test
    assert "REDISCLI_AUTH" in redis_test or "-a" in redis_test.split()  # with auth
    for name, port in (("worker", "worker_web_port"), ("web", "web_port")):  # each its own port, with its default
        check = services[name]["healthcheck"]
        default = Settings.model_fields[port].default
        assert not check.get("disable") and f"os.environ.get('MMC_{port.upper()}', '{default}')" in " ".join(check["test"]), name
    assert services["web"]["ports"] == ["127.0.0.1:{0}:{0}".format(Settings.model_fields["web_port"].default)]
    assert services["topics"]["healthcheck"] == {"disable": True}


def test_start_order(services: dict[str, Any]) -> None:
    """Topics are created once Kafka is healthy; workers and web start after that succeeded."""
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["topics"]["restart"] == "no"
    for name in ("worker", "web"):
        depends = services[name]["depends_on"]
        assert depends["topics"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
    assert services["worker"]["depends_on"]["kafka"] == {"condition": "service_healthy"}


def test_worker_replicas_come_from_mmc_workers(services: dict[str, Any]) -> None:
    """``deploy.replicas: ${MMC_WORKERS:-2}``."""
    replicas = services["worker"]["deploy"]["replicas"]
    assert replicas == "${MMC_WORKERS:-2}"
    assert interpolate(replicas, {}) == "2"


def test_every_mmc_name_is_a_setting() -> None:
    """Container MMC_* variables are Settings fields; only MMC_WORKERS is compose-only."""
    text = COMPOSE.read_text()
    compose = yaml.safe_load(text)
    container_names = {key for service in compose["services"].values() for key in service.get("environment", {}) if key.startswith("MMC_")}
    assert container_names - SETTING_ENV_NAMES == set()
    interpolated = {match.group(1) for match in _INTERPOLATION.finditer(text)}
    assert {name for name in interpolated if name.startswith("MMC_")} - SETTING_ENV_NAMES == COMPOSE_ONLY
    assert mmc_names_in(text) - SETTING_ENV_NAMES == COMPOSE_ONLY


def test_mmc_containers_get_valid_settings(services: dict[str, Any]) -> None:
    """.env.example + each service's environment (compose's precedence) loads as Settings."""
    dotenv = {key: value or "" for key, value in dotenv_values(ENV_EXAMPLE).items()}
    dotenv["MMC_REDIS_PASSWORD"] = "a-password"
    for name in MMC_SERVICES:
        service = services[name]
        assert [entry["path"] for entry in service["env_file"]] == [".env"]
        env = {
            **dotenv,
            **{k: interpolate(str(v), dotenv) for k, v in service["environment"].items()},
        }
        settings = Settings.model_validate({k.removeprefix("MMC_").lower(): v for k, v in env.items()})
        assert settings.kafka_bootstrap == "kafka:9092", name
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.redis_password is not None
        assert settings.redis_password.get_secret_value() == "a-password"
        assert settings.web_host == "0.0.0.0", name


# --- Dockerfile and .dockerignore ----------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_multi_stage_and_runs_mmc_as_non_root() -> None:
    """Builder + slim runtime; runs ``mmc worker`` as a numeric non-root user."""
    instructions = dockerfile_instructions(DOCKERFILE)
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and any("AS builder" in stage for stage in stages)
    args = dict(arg.split("=", 1) for keyword, arg in instructions if keyword == "ARG" and "=" in arg)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base
    runtime = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [arg for keyword, arg in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(keyword == "COPY" and "--from=builder" in arg for keyword, arg in runtime)
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["mmc"]
    assert json.loads(dict(runtime)["CMD"]) == ["worker"]


def test_dockerfile_health_check_uses_the_web_port() -> None:
    """HEALTHCHECK asks the worker's (Faust's) web server on MMC_WORKER_WEB_PORT, with its
    default; both web servers' default ports are EXPOSEd."""
    instructions = dict(dockerfile_instructions(DOCKERFILE))
    defaults = Settings.model_fields
    assert f"os.environ.get('MMC_WORKER_WEB_PORT', '{defaults['worker_web_port'].default}')" in instructions["HEALTHCHECK"]
    assert set(instructions["EXPOSE"].split()) == {str(defaults[name].default) for name in ("worker_web_port", "web_port")}


def test_dockerfile_mmc_names_are_settings() -> None:
    """MMC_* names in the Dockerfile are settings (MMC_UID is a build argument)."""
    assert mmc_names_in(DOCKERFILE.read_text()) - SETTING_ENV_NAMES == {"MMC_UID"}


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    """Local env files, the virtualenv, git and Faust data directories never reach the build."""
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".env", ".venv", ".git", "*-data", "tests"} <= patterns
    copied = [arg.split()[0] for keyword, arg in dockerfile_instructions(DOCKERFILE) if keyword == "COPY" and "--from" not in arg]
    assert not any(source.rstrip("/") in patterns for source in copied)
