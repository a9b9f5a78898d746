"""Typed caller of ``attempt_ended.lua``: record when a generation attempt stopped."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.advance import AttemptEnd
from chatlane.scripts.loader import register


class AttemptEnded:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "attempt_ended")
        self._keys = keys

    async def __call__(self, ended: AttemptEnd) -> bool:
        """False if the turn record is gone (nothing written)."""
        res = await self._script(keys=[self._keys.turn(ended.turn_id)], args=[ended.attempt, ended.ended_ms])
        return bool(res)
