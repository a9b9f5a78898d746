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

Every client's pool is bounded (``CHATLANE_REDIS_MAX_CONNECTIONS``): Redis's ``maxclients`` is
shared by every API process and worker, so one process under load must wait for one of its own
connections (up to ``CHATLANE_REDIS_TIMEOUT_S``, then "Redis unavailable") rather than take them
all. Each connection names itself (``CLIENT SETNAME``, ``CHATLANE_REDIS_CLIENT_NAME``) so that
``CLIENT LIST`` tells the API's connections from a worker's.

The Redis URL is a secret (it may carry a password): print or log it only through ``redacted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
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
        "client_name": settings.redis_client_name or None,
    }
    if not settings.redis_sentinels:
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=settings.redis_timeout_s,
            **options,
        )
        # from_url picks the connection class from the URL's scheme; keep that choice (not for
        # unix sockets: those reach one local server, not an endpoint that moves).
        ours: dict[type[AbstractConnection], type[AbstractConnection]] = {
            Connection: PrimaryConnection,
            SSLConnection: PrimarySSLConnection,
        }
        pool.connection_class = ours.get(pool.connection_class, pool.connection_class)
        client: Redis = redis_class.from_pool(pool)
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
    # Bounded, but not blocking: redis-py's Sentinel pool is not a BlockingConnectionPool, and a
    # full one fails the call at once ("Too many connections", read as Redis unavailable).
    master: Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        redis_class=redis_class,
        connection_pool_class=FollowingPool,
        max_connections=settings.redis_max_connections,
    )
    return master


def where(settings: Settings) -> str:
    """Where Redis is, for log lines and exceptions; never echoes credentials. Not for HTTP
    answers: a client has no business knowing the Redis host."""
    if settings.redis_sentinels:
        return f"sentinel master {settings.redis_sentinel_master!r} ({settings.redis_sentinels})"
    safe = redacted(settings.redis_url)
    _scheme, sep, rest = safe.partition("://")
    return rest.rsplit("@", 1)[-1] if sep else safe


_SECRET_PARAMS = {"password"}


def redacted(url: str) -> str:
    """``url`` fit to log or print: its password (in the user info or a ``?password=``) as ``***``.

    Done on the text rather than with urlsplit so that a malformed URL (the one an operator most
    needs to see) is redacted too. User info without a colon may be a password alone: hidden whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # Up to the last "@": a password with an unescaped "/", "?" or "@" must still be cut out whole.
    userinfo, at, rest = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else "***"
    location, question, query = rest.partition("?")
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return f"{scheme}{sep}{userinfo}{at}{location}{question}{query}"
