"""Typed caller of ``import_session.lua``: write an export's history into an empty session."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.errors import SessionNotEmpty
from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.scripts.replication import Replication
from chatlane.settings import Settings


@dataclass(frozen=True)
class Imported:
    messages: int  # history entries stored
    trimmed: int  # of those given, trimmed at once (CHATLANE_HISTORY_MAX_MESSAGES)


class ImportSession:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings, replication: Replication) -> None:
        self._script = register(redis, "import_session")
        self._keys = keys
        self._settings = settings
        self._replication = replication

    async def __call__(
        self, session_id: str, *, entries: list[str], history_start: int, summary: tuple[int, str] | None
    ) -> Imported:
        """``entries``: encoded history entries, oldest first (validated by the caller); ``summary``:
        (upto, text). Raises SessionNotEmpty (nothing written) unless the session is empty;
        ReplicationTimeout when written on the primary but not yet on enough replicas."""
        s, sk = self._settings, self._keys.session(session_id)
        upto, text = summary if summary is not None else (-1, "")
        res, acked = await self._replication.run(
            self._script,
            keys=[sk.lease, sk.inbox, sk.history, sk.turns, sk.summary, sk.trimmed, sk.fence],
            args=[history_start, upto, text, s.history_max_messages, s.session_idle_ttl_ms, *entries],
        )
        if res[0] != "ok":
            raise SessionNotEmpty(session_id, str(res[1]))
        self._replication.require(acked, f"import of session {session_id!r}")
        return Imported(int(res[1]), int(res[2]))
