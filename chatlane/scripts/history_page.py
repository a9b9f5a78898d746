"""Typed caller of ``history_page.lua``: one page of a session's history by absolute index."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register


@dataclass(frozen=True)
class RawPage:
    first: int  # the oldest index still kept: entries before it were trimmed (retention)
    total: int  # entries ever kept in the history: first + those stored now
    start: int  # index of entries[0]
    entries: list[str]  # raw JSON, oldest first


class HistoryPageRead:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "history_page")
        self._keys = keys

    async def __call__(self, session_id: str, limit: int | None, before: int | None) -> RawPage:
        """Up to ``limit`` entries (all when None) with index below ``before`` (the newest when None)."""
        sk = self._keys.session(session_id)
        first, total, start, entries = await self._script(
            keys=[sk.history, sk.trimmed], args=[-1 if limit is None else limit, -1 if before is None else before]
        )
        return RawPage(int(first), int(total), int(start), list(entries))
