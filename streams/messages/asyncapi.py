"""The AsyncAPI 3.0 document of every topic the service reads and writes, generated from its definitions.

Everything in it comes from what the service already uses, so the document cannot disagree
with the service:

- channels: one per topic (address = full topic name), with the Kafka binding of the topic as
  :func:`streams.kafka.topics.create_topics` creates it: partitions, replicas and topic configs
  (``cleanup.policy``: ``compact`` where ``TOPIC_CONFIGS`` says so, Kafka's default ``delete``
  elsewhere);
- messages: the payload is the topic's published JSON Schema (``schemas/*.json``, draft
  2020-12, loaded as the validator loads it) with its ``#/$defs`` references re-pointed into
  the document; the key is described as a Kafka message binding; the dead-letter message's
  headers are ``deadletter.headers.json``; the input schemas' own examples are the messages'
  examples;
- operations: the document describes a *client* of the scorer, which sends to the input topics
  (``send``) and receives from the output topics (``receive``).

``streams/messages/asyncapi.json`` ships the document for the default settings (topic prefix
``mmc.``, 4 partitions); ``mmc web`` serves the document of its own settings at
``/api/asyncapi.json``. Regenerate the shipped file after changing a schema or a topic::

    python -m streams.messages.asyncapi > streams/messages/asyncapi.json
"""

from __future__ import annotations

import json
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

from streams.kafka.topics import INPUT_TOPICS, OUTPUT_TOPICS, TOPIC_CONFIGS, partitions_for
from streams.messages.schemas import DEADLETTER_HEADERS, INPUT_SCHEMAS, OUTPUT_SCHEMAS, load_schema
from streams.settings import Settings

ASYNCAPI_VERSION = "3.0.0"
#: The dialect of every schema in ``schemas/`` (their ``$schema``), as an AsyncAPI schema format.
JSON_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
KAFKA_BINDING_VERSION = "0.5.0"
#: The document for the default settings, shipped as package data.
SHIPPED = Path(__file__).with_name("asyncapi.json")

#: The value field whose value each topic's key carries (the schemas' ``x-kafka-key`` says it in
#: words): the key of an input must equal it (``bad_key``), an output is keyed by it. The alerts
#: (model or round) and dead letters (the original key) have no one field.
KEY_FIELDS: dict[str, str] = {
    "rounds": "round",
    "submissions": "model",
    "stakes": "model",
    "targets": "round",
    "scores": "model",
    "leaderboard": "model",
    "crowding": "round",
    "neighbours": "model",
}
#: A round number as a key: its decimal string, as ``str(round)`` writes it.
ROUND_KEY_PATTERN = "^(0|[1-9][0-9]*)$"
#: Kafka's default ``cleanup.policy``, which every topic created without one gets.
DEFAULT_CLEANUP_POLICY = "delete"
_SASL_SCHEMES = {"PLAIN": "plain", "SCRAM-SHA-256": "scramSha256", "SCRAM-SHA-512": "scramSha512"}


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 description of the service's topics under ``settings``.

    Arguments:
        settings: the topic prefix, partitions, replication factor and Kafka security protocol
            are read; no connection is made.

    Returns:
        The document as plain JSON data (``json.dumps`` writes it).
    """
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name in (*INPUT_TOPICS, *OUTPUT_TOPICS):
        messages[name] = _message(name)
        channels[name] = _channel(name, settings)
        action = "send" if name in INPUT_TOPICS else "receive"
        operations[f"{action}{name.capitalize()}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"{'Produce to' if action == 'send' else 'Consume'} {settings.topic(name)}",
            "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
        }
    components: dict[str, Any] = {"messages": messages}
    server: dict[str, Any] = {
        "host": "{bootstrap}",
        "protocol": "kafka-secure" if settings.kafka_security_protocol in ("SSL", "SASL_SSL") else "kafka",
        "description": f"The Kafka cluster the scorer runs on (MMC_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}).",
        "variables": {
            "bootstrap": {
                "default": Settings.model_fields["kafka_bootstrap"].default,
                "description": "Bootstrap servers, host:port (MMC_KAFKA_BOOTSTRAP; `mmc stack` prints the embedded broker's).",
            }
        },
    }
    if settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        scheme = _SASL_SCHEMES[settings.kafka_sasl_mechanism]
        components["securitySchemes"] = {"sasl": {"type": scheme, "description": f"SASL {settings.kafka_sasl_mechanism} (MMC_KAFKA_SASL_*)."}}
        server["security"] = [{"$ref": "#/components/securitySchemes/sasl"}]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "mmc-stream topics",
            "version": "1",
            "description": (
                f"The Kafka topics of the mmc-stream scorer, seen from a client: it sends to {_listing(INPUT_TOPICS)}, "
                f"and receives from {_listing(OUTPUT_TOPICS)}. "
                f"Topic names carry the prefix {settings.topic_prefix!r} (MMC_TOPIC_PREFIX). Values are UTF-8 JSON "
                "(the dead letters' are the refused input's bytes), keys UTF-8 strings; a record's timestamp is its "
                "event time. Payloads are the JSON Schemas (draft 2020-12) shipped in streams/messages/schemas/."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"kafka": server},
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def _listing(names: tuple[str, ...]) -> str:
    """``a, b and c``."""
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _channel(name: str, settings: Settings) -> dict[str, Any]:
    """The topic ``name`` as a channel: its address, its message and its Kafka binding."""
    configs = {"cleanup.policy": DEFAULT_CLEANUP_POLICY, **TOPIC_CONFIGS.get(name, {})}
    topic_configuration = {key: (value.split(",") if key == "cleanup.policy" else _config_value(value)) for key, value in configs.items()}
    return {
        "address": settings.topic(name),
        "title": settings.topic(name),
        "description": f"{'Input' if name in INPUT_TOPICS else 'Output'} topic {settings.topic(name)}.",
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        "bindings": {
            "kafka": {
                "partitions": partitions_for(settings, name),
                "replicas": settings.replication_factor,
                "topicConfiguration": topic_configuration,
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _config_value(value: str) -> int | str:
    """A topic config's value as the binding types it: an integer when it is one."""
    try:
        return int(value)
    except ValueError:
        return value


def _message(name: str) -> dict[str, Any]:
    """The message of topic ``name``: payload (or headers) from its schema, key binding, examples."""
    pointer = f"#/components/messages/{name}"
    if name == "deadletter":
        schema = load_schema(DEADLETTER_HEADERS)
        message: dict[str, Any] = {
            "name": name,
            "title": schema["title"],
            "description": schema["description"],
            "contentType": "application/octet-stream",
            "headers": {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": _embedded(schema, f"{pointer}/headers/schema")},
            "payload": {"description": schema["x-kafka-value"]},
        }
        key: dict[str, Any] = {"type": ["string", "null"], "description": schema["x-kafka-key"]}
    else:
        schema = load_schema({**INPUT_SCHEMAS, **OUTPUT_SCHEMAS}[name])
        message = {
            "name": name,
            "title": schema["title"],
            "description": schema["description"],
            "payload": {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": _embedded(schema, f"{pointer}/payload/schema")},
        }
        if "examples" in schema:
            message["examples"] = [{"payload": example} for example in schema["examples"]]
        key = {**_key_schema(schema, KEY_FIELDS.get(name)), "description": schema["x-kafka-key"]}
    message["bindings"] = {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}
    return message


def _key_schema(schema: dict[str, Any], field: str | None) -> dict[str, Any]:
    """The key as a string schema: a model id's pattern from the value's schema, a round's decimal form."""
    if field == "round":
        return {"type": "string", "pattern": ROUND_KEY_PATTERN}
    if field == "model":
        model = schema["properties"]["model"]
        while "$ref" in model:
            model = schema["$defs"][model["$ref"].removeprefix("#/$defs/")]
        return {"type": "string", "pattern": model["pattern"]}
    return {"type": "string"}


def _embedded(schema: dict[str, Any], at: str) -> dict[str, Any]:
    """A copy of a schema file to place at JSON pointer ``at`` of the document.

    ``$schema`` and ``$id`` are dropped (the schema format names the dialect, and an ``$id``
    would make the references below resolve against the schema's URN instead of the document);
    ``#/$defs/…`` references are re-pointed to ``at/$defs/…``.
    """
    copy = deepcopy(schema)
    copy.pop("$schema", None)
    copy.pop("$id", None)

    def repoint(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (at + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/") else repoint(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [repoint(item) for item in node]
        return node

    embedded: dict[str, Any] = repoint(copy)
    return embedded


def render(document: dict[str, Any]) -> str:
    """The document as the shipped file writes it: indented JSON, keys in document order, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def default_settings() -> Settings:
    """The settings' defaults, whatever the environment says (the shipped document's settings)."""
    return Settings.model_construct()


def main() -> None:
    """Write the document for the default settings on stdout."""
    sys.stdout.write(render(asyncapi_document(default_settings())))


if __name__ == "__main__":
    main()
