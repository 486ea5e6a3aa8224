"""The scoring core stays pure: importing it pulls in no Kafka, Redis or service code."""

from __future__ import annotations

import subprocess
import sys


def test_import_scoring_imports_no_io_packages() -> None:
    """`import scoring` (with the crowding module) loads neither faust, aiokafka, redis, orjson nor streams."""
    code = (
        "import sys, scoring, scoring.crowding;"
        "bad = [m for m in ('faust', 'aiokafka', 'redis', 'orjson', 'streams', 'pandas') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
