"""The per-session lease a drain holds: claimed, renewed periodically, and guarding work.

The lease token is also the fencing token: every write a holder makes goes through a script
that first checks the token (advance.lua, handback.lua), so a holder that lost the lease
cannot write even if it has not noticed yet. Noticing early only saves wasted model calls.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript

from producer.keys import SessionKeys

T = TypeVar("T")
log = logging.getLogger("chatlane.lease")


class LeaseLost(Exception):
    pass


class Lease:
    def __init__(
        self,
        renew: AsyncScript,
        keys: SessionKeys,
        token: str,
        ttl_ms: int,
        renew_ms: int,
        stats_key: str,
    ) -> None:
        self._renew = renew
        self.keys = keys
        self.stats_key = stats_key
        self.token = token
        self.ttl_ms = ttl_ms
        self.renew_ms = renew_ms
        self.lost = asyncio.Event()
        # Monotonic time at which we sent the last renewal that succeeded: Redis set the TTL
        # after that, so the lease is ours at least until this + ttl.
        self._renewed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_loop(), name=f"lease-renew:{self.keys.lease}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _renew_loop(self) -> None:
        ttl, every = self.ttl_ms / 1000, self.renew_ms / 1000
        while True:
            await asyncio.sleep(every)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(every):
                    ok = await self._renew(keys=[self.keys.lease, self.stats_key], args=[self.token, self.ttl_ms])
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, TimeoutError, OSError) as e:
                # Unknown whether Redis still counts us as holder. Stop before it could have
                # expired: the next renewal would come too late, and past expiry another
                # worker may legitimately hold it.
                if time.monotonic() - self._renewed_at > ttl - every:
                    log.warning("lease %s: renewals failing (%r); giving it up", self.keys.lease, e)
                    self.lost.set()
                    return
                continue
            if not ok:
                log.warning("lease %s lost (expired or taken over)", self.keys.lease)
                self.lost.set()
                return
            self._renewed_at = sent

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.keys.lease)

    async def guard(self, aw: Awaitable[T]) -> T:
        """Await ``aw``, cancelling it and raising LeaseLost as soon as the lease is lost."""
        if self.lost.is_set() and inspect.iscoroutine(aw):
            aw.close()  # it will never start; closing it spares a "never awaited" warning
        self.check()
        work = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
            lost.cancel()
        if work.cancelled() and self.lost.is_set():
            raise LeaseLost(self.keys.lease)
        return work.result()
