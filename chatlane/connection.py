"""Redis connections as chatlane makes them, and what "Redis is down" means."""

from __future__ import annotations

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from chatlane.settings import Settings

# The errors that mean "Redis is not answering right now"; builtin TimeoutError is an OSError.
REDIS_DOWN: tuple[type[Exception], ...] = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

# A blocking stream read never waits longer than this, so waiters notice a turn whose stream
# expired or a Redis restart, and socket timeouts stay above it.
BLOCK_MS = 1000


def connect(settings: Settings) -> Redis:
    """A client that fails fast when Redis is unreachable or hung instead of waiting on it."""
    redis: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s + BLOCK_MS / 1000,
        health_check_interval=30,
    )
    return redis
