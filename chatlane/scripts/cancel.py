"""Typed caller of ``cancel.lua``: withdraw a queued turn."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.errors import TurnNotCancellable, TurnNotFound
from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.settings import Settings


class Cancel:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._script = register(redis, "cancel")
        self._keys = keys
        self._settings = settings

    async def __call__(self, *, turn_id: str, session_id: str, reason: str) -> None:
        """Raises TurnNotFound (no such turn in that session) or TurnNotCancellable (not queued)."""
        k, s = self._keys, self._settings
        res = await self._script(
            keys=[k.turn(turn_id), k.session(session_id).inbox, k.stream(turn_id), k.webhooks_due],
            args=[turn_id, session_id, reason, s.turn_ttl_ms, s.stream_ttl_ms],
        )
        if res[0] == "missing":
            raise TurnNotFound(turn_id)
        if res[0] == "state":
            raise TurnNotCancellable(turn_id, str(res[1]))
