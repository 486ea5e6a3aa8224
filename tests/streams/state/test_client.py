"""The Redis client the settings describe: the configured Redis, its password and CA."""

from __future__ import annotations

import asyncio

import pytest

from streams.errors import ConfigurationError
from streams.settings import Settings
from streams.state.client import redis_client

SECRET = "s3cr3t-Pa55word-never-printed"


def test_redis_client_talks_to_the_configured_redis(settings: Settings) -> None:
    """``redis_client`` builds an asyncio client for ``settings.redis_url``."""

    async def ping() -> bool:
        client = redis_client(settings, decode_responses=True)
        try:
            await client.set("mmc:test:async", "v")
            return bool(await client.ping()) and await client.get("mmc:test:async") == "v"
        finally:
            await client.delete("mmc:test:async")
            await client.aclose()

    assert asyncio.run(ping())


def test_redis_client_applies_password_and_refuses_ca_without_tls() -> None:
    """The Redis password comes from its secret; a CA file needs a rediss:// URL."""
    settings = Settings(redis_url="redis://127.0.0.1:6390/0", redis_password=SECRET)  # type: ignore[arg-type]
    client = redis_client(settings)
    assert client.connection_pool.connection_kwargs["password"] == SECRET
    assert SECRET not in repr(client)
    tls = Settings(redis_url="rediss://cache:6380/0", redis_ssl_ca_certs="/ca.pem")
    assert redis_client(tls).connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    with pytest.raises(ConfigurationError, match="rediss://"):
        redis_client(Settings(redis_url="redis://cache:6379/0", redis_ssl_ca_certs="/ca.pem"))
