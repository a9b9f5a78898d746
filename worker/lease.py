"""The per-session lease a drain holds, and the fence that comes with it.

The lease token is also the fencing token: every write a holder makes goes through a script
that first checks the token (advance.lua, handback.lua, save_summary.lua), so a holder that lost the lease
cannot write even if it has not noticed yet. ``Lease`` is the only thing in the worker that
knows the token: the drain asks it to advance, hand back or guard a piece of work.

Fencing keeps the data right; it cannot stop a model call. For G1 at the model, the holder
keeps a deadline: the send time of its last claim or renewal that succeeded, plus the TTL less
a safety margin. Redis set the TTL after that send, so until the deadline nobody else can hold
the session. At the deadline, renewed or not, answered or not (a partition that blackholes
packets answers nothing), the holder declares the lease lost and cancels its work, re-cancelling
until the work is really done. Measured before this (issue 12): a blackholed holder let go only
6.67 s into a 5 s lease, and its model stream stayed open 17 s after the cut.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from chatlane.cancelling import cancel_and_wait
from chatlane.connection import REDIS_DOWN
from chatlane.errors import CommitNotReplicated, LeaseLost
from chatlane.logs import REDIS_OUTAGE
from chatlane.scripts import (
    Advance,
    AttemptEnd,
    Begun,
    Claim,
    Deferred,
    Finish,
    Handback,
    Next,
    Released,
    Renew,
    Renewal,
    SaveSummary,
    Step,
    StopRequested,
)
from worker.stops import TurnStopped

T = TypeVar("T")
log = logging.getLogger("chatlane.lease")


@dataclass(frozen=True)
class LeaseScripts:
    claim: Claim
    renew: Renew
    advance: Advance
    handback: Handback
    save_summary: SaveSummary


@dataclass(frozen=True)
class LeasePolicy:
    ttl_ms: int
    renew_ms: int
    margin_ms: int  # the deadline is a claim/renewal's send time + ttl - margin
    # A deliberately broken holder that keeps generating after it lost its lease: the mutation
    # that G1's tests must catch (CHATLANE_FAULT_IGNORE_LEASE_LOSS). Never set it in production.
    ignore_loss: bool = False


class Lease:
    def __init__(self, scripts: LeaseScripts, session_id: str, lease_key: str, token: str, policy: LeasePolicy,
                 sent_at: float) -> None:  # fmt: skip
        self._scripts = scripts
        self.session_id = session_id
        self.lease_key = lease_key
        self._token = token
        self.policy = policy
        self.lost = asyncio.Event()
        self._deadline = self._deadline_for(sent_at)
        # When the script that began the current turn was sent: with its Redis start time, this
        # bounds the attempt's end in Redis time (see attempt_end).
        self.begun_sent_at = sent_at
        # The model budget's concurrency slot held by the call in flight: renewed with the lease.
        self.slot: tuple[str, str] | None = None
        # The turn generating now and the event its stop request sets: each renewal also looks for
        # a request on it, the fallback for a missed pub/sub message (worker/stops.py).
        self.watching: tuple[str, asyncio.Event] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def claim(
        cls, scripts: LeaseScripts, policy: LeasePolicy, *, session_id: str, lease_key: str, holder: str, job_id: str,
        tail_len: int,
    ) -> tuple[Lease, Begun | Released | StopRequested | Deferred, list[str]] | None:  # fmt: skip
        """Take the session's lease and begin its head turn; None if held elsewhere or empty."""
        sent = time.monotonic()
        claimed = await scripts.claim(session_id=session_id, holder=holder, job_id=job_id, tail_len=tail_len)
        if claimed is None:
            return None
        return cls(scripts, session_id, lease_key, claimed.token, policy, sent), claimed.step, claimed.tail

    def _deadline_for(self, sent_at: float) -> float:
        return sent_at + (self.policy.ttl_ms - self.policy.margin_ms) / 1000

    @property
    def seconds_left(self) -> float:
        return self._deadline - time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name=f"lease:{self.lease_key}")

    async def stop(self) -> None:
        if self._task is not None:
            # Re-cancelled until done: a cancel lost inside redis-py would leave the keeper renewing
            # a finished drain's lease for ever (chatlane/cancelling.py).
            await cancel_and_wait(self._task)

    def mark_lost(self) -> None:
        if not self.policy.ignore_loss:
            self.lost.set()

    def attempt_end(self, turn: Begun) -> AttemptEnd:
        """An upper bound, in Redis time, of when ``turn``'s generation stopped (now)."""
        return AttemptEnd(
            turn.turn_id, turn.attempt, turn.started_ms + int((time.monotonic() - self.begun_sent_at) * 1000) + 1
        )

    async def advance(self, finish: Finish | None, ended: AttemptEnd | None, next: Next) -> Step:
        """The fenced commit of ``finish`` (if any), then begin the next turn as ``next`` says.
        Raises LeaseLost, having written nothing."""
        self.check()
        sent = time.monotonic()
        try:
            step = await self._scripts.advance(
                session_id=self.session_id, token=self._token, finish=finish, ended=ended, next=next
            )
        except LeaseLost:
            self.mark_lost()
            raise
        except CommitNotReplicated as e:
            # Committed and stepped on the primary all the same (the drain holds until replicated).
            self._stepped(e.step, sent)
            raise
        self._stepped(step, sent)
        return step

    def _stepped(self, step: Step, sent: float) -> None:
        # advance.lua renewed the lease (PEXPIRE) when it ran, after `sent`.
        self._deadline = max(self._deadline, self._deadline_for(sent))
        if isinstance(step, Begun):
            self.begun_sent_at = sent

    async def save_summary(self, upto: int, text: str) -> bool:
        """The fenced write of the session's history summary; False if a newer one is stored.
        Raises LeaseLost, having written nothing."""
        self.check()
        try:
            return await self._scripts.save_summary(session_id=self.session_id, token=self._token, upto=upto, text=text)
        except LeaseLost:
            self.mark_lost()
            raise

    async def handback(self, *, delay_ms: int = 0, refund: bool = False) -> bool:
        """Release the lease, queuing a new drain job (due in ``delay_ms``) if turns still wait
        (True then). ``refund``: the head turn's current attempt never reached the model."""
        try:
            return await self._scripts.handback(
                session_id=self.session_id, token=self._token, delay_ms=delay_ms, refund=refund
            )
        except LeaseLost:
            self.mark_lost()
            raise

    async def _keep(self) -> None:
        """Renew every renew interval; declare the lease lost at the deadline at the latest."""
        every = self.policy.renew_ms / 1000
        next_at = time.monotonic() + every
        while True:
            wake = next_at if self.policy.ignore_loss else min(next_at, self._deadline)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            sent = time.monotonic()
            left = self._deadline - sent
            if left <= 0 and not self.policy.ignore_loss:
                log.warning("lease %s: no renewal answered in time; giving it up", self.lease_key)
                self.mark_lost()
                return
            watching = self.watching
            try:
                async with asyncio.timeout(every if self.policy.ignore_loss else left):
                    renewal = await self._scripts.renew(
                        lease_key=self.lease_key, token=self._token, ttl_ms=self.policy.ttl_ms, slot=self.slot,
                        watch=watching[0] if watching else None,
                    )  # fmt: skip
            except REDIS_DOWN as e:  # asyncio.timeout raises TimeoutError, an OSError
                # Unknown whether Redis still counts us as holder: try again soon, until the deadline.
                # Retried every 0.1 s: one line per outage (REDIS_OUTAGE), the retries at debug.
                REDIS_OUTAGE.failed("a lease renewal", e)
                log.debug("lease %s: renewal failed (%r); %.2fs to the deadline", self.lease_key, e, self.seconds_left)
                next_at = time.monotonic() + min(every, 0.1)
                continue
            if renewal is Renewal.lost:
                log.warning("lease %s lost (expired or taken over)", self.lease_key)
                self.mark_lost()
                return
            if renewal is Renewal.stop_requested and watching is not None:
                watching[1].set()
            self._deadline = max(self._deadline, self._deadline_for(sent))
            next_at = sent + every

    def check(self) -> None:
        if self.policy.ignore_loss:
            return
        if self.lost.is_set() or time.monotonic() >= self._deadline:
            self.mark_lost()
            raise LeaseLost(self.lease_key)

    async def guard(self, aw: Awaitable[T], stop: asyncio.Event | None = None) -> T:
        """Await ``aw``; as soon as the lease is lost, or ``stop`` is set (a client's stop request),
        cancel it (again and again until it is done) and raise LeaseLost, or TurnStopped."""
        if (self.lost.is_set() or (stop is not None and stop.is_set())) and inspect.iscoroutine(aw):
            aw.close()  # it will never start; closing it spares a "never awaited" warning
        self.check()
        if stop is not None and stop.is_set():
            raise TurnStopped()
        work = asyncio.ensure_future(aw)
        waits = {asyncio.ensure_future(self.lost.wait())}
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait({work, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(work)
            for w in waits:
                w.cancel()
        if work.cancelled() and self.lost.is_set():
            raise LeaseLost(self.lease_key)
        if work.cancelled() and stop is not None and stop.is_set():
            raise TurnStopped()
        return work.result()
