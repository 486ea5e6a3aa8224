"""The official AsyncAPI parser (@asyncapi/parser 3) accepts the generated documents, and refuses a broken one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS
from streams.messages.asyncapi import SHIPPED, asyncapi_document, render
from streams.settings import Settings

#: One parse takes ~2 s, most of it loading the parser and its rule set.
PARSE_TIMEOUT_SECONDS = 120


def parse(node_dir: Path, *documents: Path) -> subprocess.CompletedProcess[str]:
    """``node validate_asyncapi.mjs documents…``: exit status, one line per valid document, the diagnostics."""
    return subprocess.run(
        ["node", "validate_asyncapi.mjs", *map(str, documents)],
        cwd=node_dir,
        capture_output=True,
        text=True,
        timeout=PARSE_TIMEOUT_SECONDS,
    )


def test_the_shipped_and_a_deployments_document_parse_without_errors(node_dir: Path, tmp_path: Path) -> None:
    """The shipped file and the document ``mmc web`` serves for other settings (SASL over TLS …) have no error diagnostic."""
    settings = Settings.model_construct(
        topic_prefix="prod.mmc.", partitions=24, replication_factor=3, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512"
    )
    deployment = tmp_path / "deployment.json"
    deployment.write_text(render(asyncapi_document(settings)), encoding="utf-8")
    result = parse(node_dir, SHIPPED, deployment)
    assert result.returncode == 0, result.stderr
    topics = len(INPUT_TOPICS) + len(OUTPUT_TOPICS)
    for path in (SHIPPED, deployment):
        assert f"{path}: valid AsyncAPI 3.0.0, {topics} channels, {topics} operations" in result.stdout.splitlines()


def test_a_broken_document_is_refused(node_dir: Path, tmp_path: Path) -> None:
    """A copy of the document with three faults exits non-zero, with an error diagnostic naming each."""
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    doc["operations"]["receiveScores"]["action"] = "subscribe"
    # What embedding a schema file without re-pointing its #/$defs references would give:
    doc["components"]["messages"]["scores"]["payload"]["schema"]["properties"]["round"] = {"$ref": "#/$defs/count"}
    doc["channels"]["leaderboard"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] = ["forever"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc), encoding="utf-8")
    result = parse(node_dir, broken)
    assert result.returncode == 1 and result.stdout == "", result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error ")]
    for fault in (
        "at /operations/receiveScores/action:",
        "'#/$defs/count' does not exist",
        "at /channels/leaderboard/bindings/kafka/topicConfiguration/cleanup.policy/0:",
    ):
        assert any(fault in line for line in errors), (fault, result.stderr)
