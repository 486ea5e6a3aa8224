"""JSON bodies and JSON errors: every answer of the API, including its errors, is JSON with its status."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel


def _fields(value: object) -> object:
    """A response model as its fields, for orjson (which writes the values, nested models included, itself)."""
    if isinstance(value, BaseModel):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``value`` (plain data or a response model) as a JSON response; NaN and infinities are written as null."""
    return web.Response(
        body=orjson.dumps(value, default=_fields, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"status": status, "code": code, "message": message}}, status, headers)
