"""Typed caller of ``delete_session.lua``: erase a session and its turns."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.scripts.replication import Replication


@dataclass(frozen=True)
class Deleted:
    turns: int  # turn records removed
    cancelled: int  # of them, queued or running when the session was deleted
    messages: int  # history messages removed


class DeleteSession:
    def __init__(self, redis: Redis, keys: Keys, replication: Replication) -> None:
        self._script = register(redis, "delete_session")
        self._keys = keys
        self._replication = replication

    async def __call__(self, session_id: str) -> Deleted:
        """Raises ReplicationTimeout when the delete is done on the primary but not yet on enough
        replicas (a failover then could bring the session back: call again)."""
        k, sk = self._keys, self._keys.session(session_id)
        (turns, cancelled, messages), acked = await self._replication.run(
            self._script,
            keys=[
                sk.inbox,
                sk.history,
                sk.lease,
                sk.fence,
                sk.drain_job,
                sk.turns,
                k.pending,
                k.webhooks_due,
                sk.summary,
                sk.trimmed,
            ],
            args=[session_id, k.turn_prefix, k.stream_suffix, k.webhook_suffix],
        )
        self._replication.require(acked, f"delete of session {session_id!r}")
        return Deleted(int(turns), int(cancelled), int(messages))
