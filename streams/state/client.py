"""The Redis client the settings describe: URL, password and CA applied in one place."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio

from streams.errors import ConfigurationError
from streams.settings import Settings


def redis_client(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """A ``redis.asyncio.Redis`` for ``settings.redis_url`` with password and CA applied.

    ``options`` go to ``redis.asyncio.Redis.from_url`` (``decode_responses=True`` …). A
    password inside the URL wins over ``MMC_REDIS_PASSWORD``. The caller closes the client
    (``await client.aclose()``).

    Raises:
        ConfigurationError: ``MMC_REDIS_SSL_CA_CERTS`` is set for a non-TLS ``redis://`` URL.
    """
    scheme = urlsplit(settings.redis_url).scheme
    if settings.redis_password is not None:
        options.setdefault("password", settings.redis_password.get_secret_value())
    if settings.redis_ssl_ca_certs:
        if scheme != "rediss":
            raise ConfigurationError("MMC_REDIS_SSL_CA_CERTS is set but MMC_REDIS_URL is not rediss://")
        options.setdefault("ssl_ca_certs", settings.redis_ssl_ca_certs)
    return redis.asyncio.Redis.from_url(settings.redis_url, **options)
