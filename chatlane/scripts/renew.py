"""Typed caller of ``renew.lua``: extend a lease we hold."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register


class Renew:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "renew")
        self._keys = keys

    async def __call__(self, *, lease_key: str, token: str, ttl_ms: int) -> bool:
        """True if renewed; False if the lease expired or belongs to another holder."""
        return bool(await self._script(keys=[lease_key, self._keys.stats], args=[token, ttl_ms]))
