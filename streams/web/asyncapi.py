"""``/api/asyncapi.json``: the AsyncAPI 3.0 document of the Kafka topics, for this server's settings.

The document is :func:`streams.messages.asyncapi.asyncapi_document` of the settings ``mmc web``
runs with (their topic prefix, partitions and security protocol), built per request (about a
millisecond): it describes the topics the workers of this deployment read and write.
"""

from __future__ import annotations

from aiohttp import web

from streams.messages.asyncapi import asyncapi_document
from streams.web.context import SETTINGS
from streams.web.models import NoParameters
from streams.web.responses import json_response


async def api_asyncapi(request: web.Request, params: NoParameters) -> web.StreamResponse:
    return json_response(asyncapi_document(request.app[SETTINGS]))
