"""Typed caller of ``expire.lua``: end a queued turn whose deadline passed before it began."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.settings import Settings


class Expire:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._script = register(redis, "expire")
        self._keys = keys
        self._settings = settings

    async def __call__(self, *, turn_id: str, session_id: str) -> str:
        """ "expired", "not_due" (its deadline is ahead) or "gone" (begun, ended, or no record)."""
        k, s = self._keys, self._settings
        res = await self._script(
            keys=[k.turn(turn_id), k.session(session_id).inbox, k.stream(turn_id), k.webhooks_due, k.deadlines],
            args=[turn_id, session_id, s.turn_ttl_ms, s.stream_ttl_ms],
        )
        return str(res)
