"""Typed caller of ``save_summary.lua``: the fenced write of a session's history summary."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.errors import LeaseLost
from chatlane.keys import Keys
from chatlane.scripts.loader import register


class SaveSummary:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "save_summary")
        self._keys = keys

    async def __call__(self, *, session_id: str, token: str, upto: int, text: str) -> bool:
        """True if stored; False if the stored summary already covers ``upto`` entries. Raises
        LeaseLost, having written nothing, when ``token`` no longer holds the lease."""
        sk = self._keys.session(session_id)
        res = await self._script(keys=[sk.lease, sk.summary, sk.history, sk.trimmed], args=[token, upto, text])
        if res == "lost":
            raise LeaseLost(sk.lease)
        return bool(res == "ok")
