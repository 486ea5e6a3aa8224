"""Fixtures of the deployment tests (helpers live in :mod:`tests.deploy.manifests`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import DEPLOY, KUSTOMIZATIONS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Manifests rendered by kustomize, by kustomization (``base``, ``overlays/example``)."""
    return {name: render(DEPLOY / name) for name in KUSTOMIZATIONS}
