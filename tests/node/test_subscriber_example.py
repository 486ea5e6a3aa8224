"""docs/examples/subscriber.mjs, run with node against the suite's broker, prints the scores message produced."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.messages.schemas import validate_output
from streams.settings import Settings
from tests.conftest import run_sync
from tests.e2e.harness import Event, produce

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "subscriber.mjs"
#: Joining its consumer group takes the example ~5 s on the embedded broker.
PRINT_TIMEOUT_SECONDS = 60

SCORE: dict[str, Any] = {
    "round": 812,
    "day": 3,
    "final": False,
    "model": "m1",
    "stake": 120.5,
    "corr": 0.021,
    "mmc": 0.004,
    "contribution": 0.003,
    "corr_w_mm": 0.61,
    "payout": 0.0165,
    "percentiles": {"corr": 0.75, "mmc": 0.5, "contribution": 0.5, "corr_w_mm": 0.25, "payout": 0.75},
    "n_ids_scored": 3,
    "n_ids_missing": 0,
}


def first_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first line ``process`` writes on stdout, within ``timeout`` seconds."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"the subscriber printed {data!r} within {timeout} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"the subscriber exited ({process.wait()}) after printing {data!r}")
            data += chunk
    return data.split(b"\n", 1)[0]


def test_the_subscriber_prints_each_scores_message(node_dir: Path, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A schema-valid score produced on {prefix}scores comes out of the example as one JSON line: topic, key and the value."""
    validate_output("scores", SCORE)
    settings = make_settings()
    run_sync(produce(settings, [Event("scores", b"m1", orjson.dumps(SCORE), 1_700_000_000_000)]))

    # The example imports kafkajs from a node_modules/ beside it: tests/node's, through a link.
    (tmp_path / "node_modules").symlink_to(node_dir / "node_modules", target_is_directory=True)
    script = tmp_path / EXAMPLE.name
    shutil.copyfile(EXAMPLE, script)
    env = {
        **os.environ,
        "MMC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MMC_TOPIC_PREFIX": settings.topic_prefix,
        "MMC_SUBSCRIBER_GROUP": f"{settings.app_id}-subscriber",
    }
    log = tmp_path / "subscriber.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(["node", str(script)], env=env, stdout=subprocess.PIPE, stderr=stderr)
        try:
            line = first_line(process, PRINT_TIMEOUT_SECONDS)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
    printed = orjson.loads(line)
    assert printed["topic"] == settings.topic("scores") and printed["key"] == "m1" and printed["offset"] == "0"
    assert printed["score"] == SCORE, log.read_text()
    assert f"subscribed to {settings.topic('scores')}" in log.read_text()
