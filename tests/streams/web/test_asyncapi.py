"""``mmc web`` serves the AsyncAPI document of its own settings at ``/api/asyncapi.json``, and documents the route."""

from __future__ import annotations

from typing import Any

import orjson

from streams.messages.asyncapi import asyncapi_document
from streams.settings import Settings
from tests.conftest import run_sync


def test_the_server_answers_its_settings_document() -> None:
    """The body is the generator's document for the server's topic prefix and partitions, as JSON."""
    from aiohttp.test_utils import TestClient, TestServer

    from streams.web import create_web_app

    settings = Settings(topic_prefix="web1.", partitions=3)

    async def get() -> tuple[int, str, bytes]:
        # No Redis is needed: the document is built from the settings alone.
        async with TestClient(TestServer(create_web_app(settings, follow=False))) as client:
            response = await client.get("/api/asyncapi.json")
            return response.status, response.headers["Content-Type"], await response.read()

    status, content_type, body = run_sync(get())
    assert status == 200 and content_type.startswith("application/json")
    doc: dict[str, Any] = orjson.loads(body)
    assert doc == asyncapi_document(settings)
    assert doc["channels"]["scores"]["address"] == "web1.scores"
    assert doc["channels"]["scores"]["bindings"]["kafka"]["partitions"] == 3


def test_the_route_is_in_the_openapi_document() -> None:
    """The OpenAPI document lists the route, built from the same route table the server registers."""
    from streams.web import openapi_document

    operation = openapi_document(Settings())["paths"]["/api/asyncapi.json"]["get"]
    assert operation["operationId"] == "asyncapi" and "AsyncAPI" in operation["summary"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "object"
