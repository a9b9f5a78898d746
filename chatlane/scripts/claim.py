"""Typed caller of ``claim.lua``: take a session's lease and begin its head turn."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.scripts.steps import Begun, Deferred, Released, StopRequested, parse_step
from chatlane.settings import Settings


@dataclass(frozen=True)
class Claimed:
    token: str  # the lease token, which is also the fencing token
    step: Begun | Released | StopRequested | Deferred
    tail: list[str]  # the newest history entries (raw JSON), oldest first


class Claim:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._script = register(redis, "claim")
        self._keys = keys
        self._settings = settings

    async def __call__(self, *, session_id: str, holder: str, job_id: str, tail_len: int) -> Claimed | None:
        """None when another holder has the lease or the inbox is empty (nothing to do)."""
        nonce = uuid.uuid4().hex[:12]  # 48 random bits: see claim.lua
        k, s, sk = self._keys, self._settings, self._keys.session(session_id)
        res = await self._script(
            keys=[sk.lease, sk.fence, sk.inbox, sk.drain_job, k.pending, k.queue, k.stats, sk.history,
                  k.budget(s.model).pause, k.webhooks_due, sk.summary, sk.turns, sk.trimmed],
            args=[session_id, holder, s.lease_ttl_ms, job_id, k.turn_prefix, k.stream_suffix, s.max_attempts,
                  s.turn_ttl_ms, s.stream_ttl_ms, tail_len, nonce, s.session_idle_ttl_ms],
        )  # fmt: skip
        if res[0] != 1:
            return None
        step = parse_step(res[2], sk.lease)
        if not isinstance(step, Begun | Released | StopRequested | Deferred):
            raise ValueError(f"claim.lua answered {res!r}")
        return Claimed(str(res[1]), step, list(res[3]))
