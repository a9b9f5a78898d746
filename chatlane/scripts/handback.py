"""Typed caller of ``handback.lua``: give a held session back to the fleet."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.errors import LeaseLost
from chatlane.jobs import DrainJob
from chatlane.keys import Keys
from chatlane.scripts.loader import register


class Handback:
    def __init__(self, redis: Redis, keys: Keys, idle_ttl_ms: int = 0) -> None:
        self._script = register(redis, "handback")
        self._keys = keys
        self._idle_ttl_ms = idle_ttl_ms

    async def __call__(self, *, session_id: str, token: str, delay_ms: int = 0, refund: bool = False) -> bool:
        """True if turns still wait and a new drain job was queued for them (due in ``delay_ms``);
        False if the inbox was empty. Either way the lease is released. ``refund``: the head turn's
        current attempt did not reach the model. Raises LeaseLost (nothing written) if not ours."""
        k, sk, job = self._keys, self._keys.session(session_id), DrainJob.new(session_id)
        res = await self._script(
            keys=[sk.lease, sk.inbox, sk.drain_job, k.pending, job.key, k.queue, *sk.idle_keys],
            args=[token, session_id, job.job_id, job.payload, job.expires_ms, k.turn_prefix, delay_ms,
                  "1" if refund else "0", self._idle_ttl_ms],
        )  # fmt: skip
        if res == 0:
            raise LeaseLost(sk.lease)
        return bool(res == 2)
