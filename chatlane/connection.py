"""Redis connections as chatlane makes them, and what "Redis is down" means.

``connect`` is the one place connections are made. With ``CHATLANE_REDIS_SENTINELS`` set it asks
the sentinels for the current primary, and asks again whenever a connection is (re)made, so a
client follows a failover without a restart: connections to the old primary break (it died) or
answer READONLY (it was demoted), both count as "Redis down", and the next connection goes to
the new primary.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from chatlane.settings import Settings

# The errors that mean "Redis is not answering right now"; builtin TimeoutError is an OSError.
# ReadOnlyError: the server is a replica now (a demoted primary, or a URL that names a replica);
# a sentinel-managed connection turns it into a ConnectionError itself and reconnects.
# MasterNotFoundError (no sentinel knows a primary, mid-failover) is a ConnectionError.
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
)

# A blocking stream read never waits longer than this, so waiters notice a turn whose stream
# expired or a Redis restart, and socket timeouts stay above it.
BLOCK_MS = 1000


def connect(settings: Settings, *, redis_class: type[Redis] = Redis, decode_responses: bool = True) -> Redis:
    """A client that fails fast when Redis is unreachable or hung instead of waiting on it.

    ``redis_class``/``decode_responses``: arq's queue client is an ``ArqRedis`` that reads bytes.
    """
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s + BLOCK_MS / 1000,
        "health_check_interval": 30,
    }
    if not settings.redis_sentinels:
        client: Redis = redis_class.from_url(settings.redis_url, **options)
        return client
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses,
        sentinel_kwargs={
            "password": settings.redis_sentinel_password.get_secret_value() or None,
            "socket_connect_timeout": settings.redis_timeout_s,
            "socket_timeout": settings.redis_timeout_s,
        },
        password=settings.redis_password.get_secret_value() or None,
        **options,
    )
    master: Redis = sentinel.master_for(settings.redis_sentinel_master, redis_class=redis_class)
    return master


def where(settings: Settings) -> str:
    """Where Redis is, for messages; never echoes credentials."""
    if settings.redis_sentinels:
        return f"sentinel master {settings.redis_sentinel_master!r} ({settings.redis_sentinels})"
    return settings.redis_url.rsplit("@", 1)[-1]
