"""Redis connections as chatlane makes them, and what "Redis is down" means.

``connect`` is the one place connections are made. With ``CHATLANE_REDIS_SENTINELS`` set it asks
the sentinels for the current primary, so a client follows a failover without a restart.

redis-py asks the sentinels only when it opens a connection, and a pooled connection to the old
primary stays open as long as that node lives. After a failover in which the old primary lives
on (``SENTINEL FAILOVER``, a partition that heals), Sentinel turns it into a replica only about
10 s after naming the new one; until then it still takes writes, which are thrown away when it
becomes a replica. Measured with redis-py's own pool: one client kept writing to the old primary
for 10.1 s after the switch, and 194 of its 246 acknowledged writes were gone. So chatlane's pool
asks the sentinels again at most every ``MASTER_RECHECK_S`` when it hands out a connection, and
drops connections to any other node than the one they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

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

MASTER_RECHECK_S = 1.0


class _DropOnReadOnly:
    """Reconnect when the server says it is a replica: behind a failover endpoint (a DNS name or
    a proxy that moves to the new primary) a connection opened before the failover still reaches
    the old primary, and would answer READONLY to every write for as long as it stays open."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis_errors.ReadOnlyError as e:
            await self.disconnect()  # type: ignore[attr-defined]
            raise redis_errors.ConnectionError(f"the server is a replica now ({e}); reconnecting") from e


class PrimaryConnection(_DropOnReadOnly, Connection):
    pass


class PrimarySSLConnection(_DropOnReadOnly, SSLConnection):
    pass


class FollowingPool(SentinelConnectionPool):
    """A Sentinel pool that notices a new primary within MASTER_RECHECK_S even on open connections."""

    _next_check = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        # Arguments passed through as given: redis-py before 5.3 requires a command name, 5.3
        # deprecates passing one.
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + MASTER_RECHECK_S
            # Closes the idle connections if the primary moved. No sentinel answers (in time: a
            # hung one would hold this call up to its socket timeout): keep the connections we have.
            with contextlib.suppress(*REDIS_DOWN):
                async with asyncio.timeout(MASTER_RECHECK_S):
                    await self.get_master_address()  # type: ignore[no-untyped-call]
        connection: AbstractConnection = await super().get_connection(*args, **kwargs)
        return connection

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        # Also a connection that was in use when the primary moved, or opened just before.
        where = (getattr(connection, "host", None), getattr(connection, "port", None))
        if self.master_address and connection.is_connected and where != self.master_address:
            await connection.disconnect()
        await super().ensure_connection(connection)


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
        pool = client.connection_pool
        # from_url picks the connection class from the URL's scheme; keep that choice (not for
        # unix sockets: those reach one local server, not an endpoint that moves).
        ours: dict[type[AbstractConnection], type[AbstractConnection]] = {
            Connection: PrimaryConnection,
            SSLConnection: PrimarySSLConnection,
        }
        pool.connection_class = ours.get(pool.connection_class, pool.connection_class)
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
    master: Redis = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=redis_class, connection_pool_class=FollowingPool
    )
    return master


def where(settings: Settings) -> str:
    """Where Redis is, for messages; never echoes credentials."""
    if settings.redis_sentinels:
        return f"sentinel master {settings.redis_sentinel_master!r} ({settings.redis_sentinels})"
    return settings.redis_url.rsplit("@", 1)[-1]
