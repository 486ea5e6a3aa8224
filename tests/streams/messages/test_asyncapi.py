"""The AsyncAPI document: generated from the topic definitions and the schema files, shipped up to date.

The official parser's verdict on it is in ``tests/node``; here, what the parser does not check:
the payloads are the schema files (draft 2020-12) and still validate as they do, the Kafka
bindings are the topics as the service creates them, and the shipped file is the generator's
output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS, TOPIC_CONFIGS, partitions_for
from streams.messages.asyncapi import (
    JSON_SCHEMA_FORMAT,
    KEY_FIELDS,
    SHIPPED,
    asyncapi_document,
    default_settings,
    render,
)
from streams.messages.schemas import DEADLETTER_HEADERS, INPUT_SCHEMAS, OUTPUT_SCHEMAS, load_schema
from streams.settings import Settings

ROOT = Path(__file__).parents[3]
SCHEMA_FILES = {**INPUT_SCHEMAS, **OUTPUT_SCHEMAS, "deadletter": DEADLETTER_HEADERS}


def embedded_schema(doc: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """The JSON pointer and the schema a message of topic ``name`` carries (the dead letter's headers)."""
    part = "headers" if name == "deadletter" else "payload"
    multi = doc["components"]["messages"][name][part]
    assert multi["schemaFormat"] == JSON_SCHEMA_FORMAT
    return f"#/components/messages/{name}/{part}/schema", multi["schema"]


def in_document(doc: dict[str, Any], pointer: str) -> Any:
    """A validator for the schema at ``pointer``, its references resolved inside the document."""
    return jsonschema_rs.Draft202012Validator({"$ref": pointer, "components": doc["components"]})


def test_the_shipped_document_is_the_generators_output() -> None:
    """streams/messages/asyncapi.json is exactly what the generator writes for the default settings."""
    assert SHIPPED.read_text(encoding="utf-8") == render(asyncapi_document(default_settings())), (
        "the shipped AsyncAPI document is stale: python -m streams.messages.asyncapi > streams/messages/asyncapi.json"
    )


def test_the_module_prints_the_shipped_document_whatever_the_environment() -> None:
    """``python -m streams.messages.asyncapi`` writes the shipped file's bytes even with MMC_* settings in the environment."""
    env = {"MMC_TOPIC_PREFIX": "other.", "MMC_PARTITIONS": "9", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "streams.messages.asyncapi"], cwd=ROOT, env=env, capture_output=True, check=True, timeout=60)
    assert out.stdout == SHIPPED.read_bytes()


def test_the_shipped_document_is_package_data() -> None:
    """pyproject's package data for streams.messages names the shipped document."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch(SHIPPED.name, pattern) for pattern in package_data["streams.messages"])


def test_one_channel_and_one_operation_per_topic() -> None:
    """Every topic is a channel at its full name; a client sends to the inputs and receives from the outputs."""
    settings = Settings.model_construct(topic_prefix="t1.")
    doc = asyncapi_document(settings)
    assert doc["asyncapi"] == "3.0.0"
    assert list(doc["channels"]) == [*INPUT_TOPICS, *OUTPUT_TOPICS]
    by_channel = {op["channel"]["$ref"].removeprefix("#/channels/"): op for op in doc["operations"].values()}
    assert len(by_channel) == len(doc["operations"])
    for name, channel in doc["channels"].items():
        assert channel["address"] == f"t1.{name}"
        assert channel["messages"] == {name: {"$ref": f"#/components/messages/{name}"}}
        operation = by_channel[name]
        assert operation["action"] == ("send" if name in INPUT_TOPICS else "receive")
        assert operation["messages"] == [{"$ref": f"#/channels/{name}/messages/{name}"}]


@pytest.mark.parametrize("partitions, replicas", [(4, 1), (12, 3)])
def test_channel_bindings_are_the_topics_as_created(partitions: int, replicas: int) -> None:
    """Partitions, replicas and topic configs are what create_topics asks for; the leaderboard alone is compacted."""
    settings = Settings.model_construct(partitions=partitions, replication_factor=replicas)
    doc = asyncapi_document(settings)
    for name, channel in doc["channels"].items():
        binding = channel["bindings"]["kafka"]
        assert binding["partitions"] == partitions_for(settings, name) and binding["replicas"] == replicas
        config = binding["topicConfiguration"]
        assert config["cleanup.policy"] == (["compact"] if name in ("leaderboard", "neighbours") else ["delete"])
        assert {k: str(v) for k, v in config.items() if k != "cleanup.policy"} == {
            k: v for k, v in TOPIC_CONFIGS.get(name, {}).items() if k != "cleanup.policy"
        }
    assert doc["channels"]["rounds"]["bindings"]["kafka"]["partitions"] == 1
    assert doc["channels"]["submissions"]["bindings"]["kafka"]["partitions"] == partitions


@pytest.mark.parametrize("name", list(SCHEMA_FILES))
def test_each_payload_is_its_schema_file(name: str) -> None:
    """A message's schema is its file without $schema/$id, with only the #/$defs references re-pointed into the document."""
    doc = asyncapi_document(default_settings())
    pointer, schema = embedded_schema(doc, name)
    original = dict(load_schema(SCHEMA_FILES[name]))
    assert original.pop("$schema") == "https://json-schema.org/draft/2020-12/schema"
    original.pop("$id")
    text = json.dumps(schema).replace(f'"{pointer}/$defs/', '"#/$defs/')
    assert json.loads(text) == original
    jsonschema_rs.meta.validate(schema)


@pytest.mark.parametrize("name", list(INPUT_SCHEMAS))
def test_embedded_payloads_judge_values_as_the_files_do(name: str) -> None:
    """The schema files' examples are the messages' examples; they and broken copies get the same verdict in the document."""
    doc = asyncapi_document(default_settings())
    original = load_schema(INPUT_SCHEMAS[name])
    message = doc["components"]["messages"][name]
    assert [example["payload"] for example in message["examples"]] == original["examples"]
    embedded = in_document(doc, embedded_schema(doc, name)[0])
    standalone = jsonschema_rs.validator_for(original)
    values: list[Any] = []
    for example in original["examples"]:
        values.append(example)
        for field, value in example.items():
            values.append({k: v for k, v in example.items() if k != field})
            values.append({**example, field: [value] if not isinstance(value, list) else [None, {}]})
        values.append({**example, "model": "bad model id"})
        values.append({**example, "round": -1})
    assert any(standalone.is_valid(v) for v in values) and not all(standalone.is_valid(v) for v in values)
    for value in values:
        assert embedded.is_valid(value) == standalone.is_valid(value), value


def test_keys_are_described_by_their_field() -> None:
    """Each key binding says what the schema's x-kafka-key says, with the model id's pattern or a round's decimal form."""
    doc = asyncapi_document(default_settings())
    model_pattern = re.compile(load_schema(OUTPUT_SCHEMAS["scores"])["$defs"]["model"]["pattern"])
    for name, message in doc["components"]["messages"].items():
        key = message["bindings"]["kafka"]["key"]
        assert key["description"] == load_schema(SCHEMA_FILES[name])["x-kafka-key"]
        jsonschema_rs.meta.validate(key)
        field = KEY_FIELDS.get(name)
        if field == "model":
            assert "model id" in key["description"] and key["pattern"] == model_pattern.pattern
        elif field == "round":
            assert "round number" in key["description"]
            check = jsonschema_rs.validator_for(key)
            assert [check.is_valid(k) for k in ("0", "812", str(2**40))] == [True] * 3
            assert [check.is_valid(k) for k in ("", "0812", "-1", "8.0", "r812")] == [False] * 5
        else:
            assert name in ("alerts", "deadletter") and "pattern" not in key
    assert set(KEY_FIELDS) == set(INPUT_TOPICS) | set(OUTPUT_TOPICS) - {"alerts", "deadletter"}


def test_dead_letters_describe_their_headers_and_raw_value() -> None:
    """The dead-letter message carries the original bytes, its headers schema names every mmc.error.* header."""
    message = asyncapi_document(default_settings())["components"]["messages"]["deadletter"]
    headers = load_schema(DEADLETTER_HEADERS)
    assert message["contentType"] == "application/octet-stream"
    assert message["payload"] == {"description": headers["x-kafka-value"]}
    assert set(message["headers"]["schema"]["properties"]) == set(headers["properties"])
    assert "mmc.error.reason" in message["headers"]["schema"]["required"]


@pytest.mark.parametrize(
    "security, mechanism, protocol, scheme",
    [
        ("PLAINTEXT", "PLAIN", "kafka", None),
        ("SSL", "PLAIN", "kafka-secure", None),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", "kafka", "scramSha256"),
        ("SASL_SSL", "SCRAM-SHA-512", "kafka-secure", "scramSha512"),
    ],
)
def test_the_server_says_how_to_connect(security: str, mechanism: str, protocol: str, scheme: str | None) -> None:
    """The server's protocol follows MMC_KAFKA_SECURITY_PROTOCOL and SASL is a security scheme; no address or secret is in it."""
    settings = Settings.model_construct(kafka_security_protocol=security, kafka_sasl_mechanism=mechanism, kafka_bootstrap="kafka.internal:9093")
    doc = asyncapi_document(settings)
    server = doc["servers"]["kafka"]
    assert server["protocol"] == protocol and server["variables"]["bootstrap"]["default"] == "127.0.0.1:9092"
    assert "kafka.internal" not in json.dumps(doc)
    if scheme is None:
        assert "security" not in server and "securitySchemes" not in doc["components"]
    else:
        assert doc["components"]["securitySchemes"]["sasl"]["type"] == scheme
        assert server["security"] == [{"$ref": "#/components/securitySchemes/sasl"}]
