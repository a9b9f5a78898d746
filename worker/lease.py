"""The per-session lease a drain holds, and the fence that comes with it.

The lease token is also the fencing token: every write a holder makes goes through a script
that first checks the token (advance.lua, handback.lua), so a holder that lost the lease
cannot write even if it has not noticed yet. Noticing early only saves wasted model calls.
``Lease`` is the only thing in the worker that knows the token: the drain asks it to advance,
hand back or guard a piece of work, never reaches into it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from chatlane.connection import REDIS_DOWN
from chatlane.errors import LeaseLost
from chatlane.scripts import Advance, Begun, Claim, Finish, Handback, Released, Renew, Step

T = TypeVar("T")
log = logging.getLogger("chatlane.lease")


@dataclass(frozen=True)
class LeaseScripts:
    claim: Claim
    renew: Renew
    advance: Advance
    handback: Handback


class Lease:
    def __init__(
        self, scripts: LeaseScripts, session_id: str, lease_key: str, token: str, ttl_ms: int, renew_ms: int
    ) -> None:
        self._scripts = scripts
        self.session_id = session_id
        self.lease_key = lease_key
        self._token = token
        self.ttl_ms = ttl_ms
        self.renew_ms = renew_ms
        self.lost = asyncio.Event()
        # Monotonic time at which we sent the last claim or renewal that succeeded: Redis set the
        # TTL after that, so the lease is ours at least until this + ttl.
        self._renewed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def claim(
        cls, scripts: LeaseScripts, *, session_id: str, lease_key: str, holder: str, job_id: str, tail_len: int,
        ttl_ms: int, renew_ms: int,
    ) -> tuple[Lease, Begun | Released, list[str]] | None:  # fmt: skip
        """Take the session's lease and begin its head turn; None if held elsewhere or empty."""
        claimed = await scripts.claim(session_id=session_id, holder=holder, job_id=job_id, tail_len=tail_len)
        if claimed is None:
            return None
        return cls(scripts, session_id, lease_key, claimed.token, ttl_ms, renew_ms), claimed.step, claimed.tail

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_loop(), name=f"lease-renew:{self.lease_key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mark_lost(self) -> None:
        self.lost.set()

    async def advance(self, finish: Finish | None, *, begin: bool) -> Step:
        """The fenced commit of ``finish`` (if any) and the begin of the next turn (``begin``),
        or keep the lease to hand it back. Raises LeaseLost, having written nothing."""
        try:
            return await self._scripts.advance(session_id=self.session_id, token=self._token, finish=finish,
                                               begin=begin)  # fmt: skip
        except LeaseLost:
            self.mark_lost()
            raise

    async def handback(self) -> bool:
        """Release the lease, queuing a new drain job if turns still wait (True then)."""
        try:
            return await self._scripts.handback(session_id=self.session_id, token=self._token)
        except LeaseLost:
            self.mark_lost()
            raise

    async def _renew_loop(self) -> None:
        ttl, every = self.ttl_ms / 1000, self.renew_ms / 1000
        while True:
            await asyncio.sleep(every)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(every):
                    ok = await self._scripts.renew(lease_key=self.lease_key, token=self._token, ttl_ms=self.ttl_ms)
            except REDIS_DOWN as e:  # asyncio.timeout raises TimeoutError, an OSError
                # Unknown whether Redis still counts us as holder. Stop before it could have
                # expired: the next renewal would come too late, and past expiry another
                # worker may legitimately hold it.
                if time.monotonic() - self._renewed_at > ttl - every:
                    log.warning("lease %s: renewals failing (%r); giving it up", self.lease_key, e)
                    self.mark_lost()
                    return
                continue
            if not ok:
                log.warning("lease %s lost (expired or taken over)", self.lease_key)
                self.mark_lost()
                return
            self._renewed_at = sent

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.lease_key)

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
            raise LeaseLost(self.lease_key)
        return work.result()
