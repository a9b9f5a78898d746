"""Typed caller of ``cancel.lua``: withdraw a queued turn, or ask a running one's holder to stop it."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.errors import TurnNotCancellable, TurnNotFound
from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.scripts.replication import Replication
from chatlane.settings import Settings


class Cancel:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings, replication: Replication) -> None:
        self._script = register(redis, "cancel")
        self._keys = keys
        self._settings = settings
        self._replication = replication

    async def __call__(
        self, *, turn_id: str, session_id: str, reason: str, keep_partial: bool, stop_reason: str
    ) -> str | None:
        """None if the queued turn was cancelled; for a running one, the stop that stands:
        "interrupt" (it ends interrupted, its partial reply kept) or "cancel" (it ends cancelled).
        ``reason`` is a queued turn's, ``stop_reason`` a running one's. Raises TurnNotFound (no such
        turn in that session) or TurnNotCancellable (it has ended), nothing written; ReplicationTimeout
        when the cancel or the stop request is on the primary but not yet on enough replicas (asking
        again is safe: the first request decides)."""
        k, s = self._keys, self._settings
        res, acked = await self._replication.run(
            self._script,
            keys=[k.turn(turn_id), k.session(session_id).inbox, k.stream(turn_id), k.webhooks_due,
                  k.session(session_id).lease],
            args=[turn_id, session_id, reason, s.turn_ttl_ms, s.stream_ttl_ms,
                  "interrupt" if keep_partial else "cancel", stop_reason, k.stop_channel_prefix],
        )  # fmt: skip
        if res[0] == "missing":
            raise TurnNotFound(turn_id)
        if res[0] == "state":
            raise TurnNotCancellable(turn_id, str(res[1]))
        self._replication.require(acked, f"cancel of turn {turn_id}")
        return str(res[1]) if res[0] == "stopping" else None
