"""Typed callers of the model budget scripts: ``budget_acquire.lua``, ``budget_release.lua``,
``budget_pause.lua`` and ``wake.lua`` (one class each, each its script's only caller)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register


@dataclass(frozen=True)
class Limits:
    """One model's fleet-wide budget; 0 means no limit."""

    max_concurrency: int = 0
    rpm: int = 0
    tpm: int = 0
    burst_s: float = 60.0  # the buckets hold at most this many seconds' worth

    @property
    def any(self) -> bool:
        return bool(self.max_concurrency or self.rpm or self.tpm)


@dataclass(frozen=True)
class Granted:
    slot: str | None  # the concurrency slot member held, if the model has a cap


@dataclass(frozen=True)
class Wait:
    ms: int
    why: str  # "paused" | "slot" | "rpm" | "tpm"


class BudgetAcquire:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "budget_acquire")
        self._keys = keys

    async def __call__(
        self, *, model: str, limits: Limits, member: str, session_id: str, slot_ttl_ms: int, est_tokens: int
    ) -> Granted | Wait:
        bk = self._keys.budget(model)
        res = await self._script(
            keys=[bk.slots, bk.bucket, bk.pause, bk.waiters, bk.seen, self._keys.stats],
            args=[member, session_id, slot_ttl_ms, limits.max_concurrency, limits.rpm, limits.tpm, est_tokens,
                  limits.burst_s],
        )  # fmt: skip
        if res[0] == "ok":
            return Granted(member if limits.max_concurrency else None)
        return Wait(int(res[1]), str(res[2]))


class BudgetRelease:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "budget_release")
        self._keys = keys

    async def __call__(self, *, model: str, limits: Limits, slot: str | None, unused_tokens: int) -> str | None:
        """Frees ``slot`` and settles the estimate; the oldest slot waiter's session, to wake."""
        bk = self._keys.budget(model)
        first = await self._script(
            keys=[bk.slots, bk.bucket, bk.waiters], args=[slot or "", unused_tokens, limits.tpm, limits.burst_s]
        )
        return str(first) or None


class BudgetPause:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "budget_pause")
        self._keys = keys

    async def __call__(self, *, model: str, pause_ms: int) -> int:
        """Pauses ``model`` fleet-wide; the pause left in ms (never shortened)."""
        return int(await self._script(keys=[self._keys.budget(model).pause, self._keys.stats], args=[pause_ms]))


class Wake:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "wake")
        self._keys = keys

    async def __call__(self, *, session_id: str) -> bool:
        """Brings the session's delayed drain job forward to now; False if there was none."""
        return bool(await self._script(keys=[self._keys.session(session_id).drain_job, self._keys.queue], args=[]))
