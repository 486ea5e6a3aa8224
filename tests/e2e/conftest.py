"""Runs several end-to-end tests check, made once per session on the session's broker and Redis."""

from __future__ import annotations

import pytest

from tests.conftest import StackEnv, fresh_settings
from tests.e2e.test_faults import UndisturbedSeason, undisturbed_season


@pytest.fixture(scope="session")
def undisturbed_small_season(stack_env: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> UndisturbedSeason:
    """The kill trials' small tournament through one worker with no fault: the reference of the
    lost-Redis test (:mod:`tests.e2e.test_faults`) and of the fault suite's Redis flush."""
    return undisturbed_season(lambda **extra: fresh_settings(stack_env, **extra), tmp_path_factory.mktemp("undisturbed"))
