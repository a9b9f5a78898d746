"""Typed caller of ``renew.lua``: extend a lease we hold."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register


class Renew:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "renew")
        self._keys = keys

    async def __call__(self, *, lease_key: str, token: str, ttl_ms: int, slot: tuple[str, str] | None = None) -> bool:
        """True if renewed; False if the lease expired or belongs to another holder. ``slot``: the
        (slots key, member) of a model budget's concurrency slot held now, renewed with it."""
        slots_key, member = slot or (lease_key, "")
        return bool(await self._script(keys=[lease_key, self._keys.stats, slots_key], args=[token, ttl_ms, member]))
