"""The Redis client the settings describe: URL, password, CA and cluster mode applied in one place."""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from streams.errors import ConfigurationError
from streams.settings import Settings

#: A single-node client or a Redis Cluster client (``MMC_REDIS_CLUSTER``): the store uses what both offer.
StateClient: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def redis_client(settings: Settings, **options: Any) -> StateClient:
    """A client for ``settings.redis_url`` with password and CA applied: ``redis.asyncio.Redis``,
    or ``redis.asyncio.cluster.RedisCluster`` with ``MMC_REDIS_CLUSTER`` (the URL names any node).

    ``options`` go to ``from_url`` (``decode_responses=True`` …). A password inside the URL wins
    over ``MMC_REDIS_PASSWORD``. The caller closes the client (``await client.aclose()``).

    Raises:
        ConfigurationError: ``MMC_REDIS_SSL_CA_CERTS`` is set for a non-TLS ``redis://`` URL, or
            ``MMC_REDIS_CLUSTER`` with a database other than 0 (a cluster has only that one).
    """
    options = _options(settings, options)
    if settings.redis_cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.asyncio.Redis.from_url(settings.redis_url, **options)


def redis_sync_client(settings: Settings, **options: Any) -> redis.Redis | redis.cluster.RedisCluster:
    """The blocking client of the same Redis, built by the same rules (for tools and tests that
    read the state outside an event loop); the caller closes it."""
    options = _options(settings, options)
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def _options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the password and CA of the settings, the URL and cluster flag checked."""
    parts = urlsplit(settings.redis_url)
    if settings.redis_password is not None:
        options.setdefault("password", settings.redis_password.get_secret_value())
    if settings.redis_ssl_ca_certs:
        if parts.scheme != "rediss":
            raise ConfigurationError("MMC_REDIS_SSL_CA_CERTS is set but MMC_REDIS_URL is not rediss://")
        options.setdefault("ssl_ca_certs", settings.redis_ssl_ca_certs)
    if settings.redis_cluster and parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError(f"MMC_REDIS_CLUSTER is set but MMC_REDIS_URL names database {parts.path.strip('/')}: a cluster has only database 0")
    return options
