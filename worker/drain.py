"""The ``drain(session_id)`` arq job: serve a session's inbox in order while holding its lease."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlane.errors import CommitNotReplicated, HistoryEntryUnreadable, LeaseLost
from chatlane.logs import turn_fields
from chatlane.messages import USER_SUFFIX, encode_message, reply_text, turn_messages
from chatlane.scripts import AttemptEnd, Begun, Finish, Next, Step, Stopped
from worker import metrics
from worker.budget import BudgetWait
from worker.history import SessionHistory
from worker.lease import Lease
from worker.publish import ChunkPublisher
from worker.replicated import hold_until_replicated
from worker.runtime import RUNTIME, Runtime
from worker.turn import Turn, run_config
from worker.window import FIRST_BATCH

log = logging.getLogger("chatlane.drain")


async def drain(ctx: dict[str, Any], session_id: str) -> str:
    rt: Runtime = ctx[RUNTIME]
    return await SessionRunner(rt, session_id, ctx["job_id"]).run()


class SessionRunner:
    def __init__(self, rt: Runtime, session_id: str, job_id: str) -> None:
        self.rt = rt
        self.session_id = session_id
        self.job_id = job_id
        # The attempt generating now, or the end of the last one not yet recorded by a commit.
        self._generating: Begun | None = None
        self._ended: AttemptEnd | None = None
        self._last_reply: float | None = None  # perf_counter at the end of the last reply (handoff metric)

    async def run(self) -> str:
        rt = self.rt
        claimed = await Lease.claim(
            rt.lease_scripts,
            rt.lease_policy,
            session_id=self.session_id,
            lease_key=rt.keys.session(self.session_id).lease,
            holder=rt.worker_id,
            job_id=self.job_id,
            tail_len=FIRST_BATCH,
        )
        if claimed is None:
            return "not claimed (held elsewhere, or nothing waits)"
        lease, step, tail = claimed
        lease.start()
        try:
            return await self._serve(lease, step, tail)
        except LeaseLost:
            metrics.LEASES_LOST.inc()
            log.warning(
                "session %s: lease lost; the next holder re-runs the head turn", self.session_id,
                extra=turn_fields(self.session_id),
            )  # fmt: skip
            return "lease lost"
        except asyncio.CancelledError:
            # Worker shutdown past its grace (or job timeout): give the session back now
            # rather than make it wait for the lease to expire.
            try:
                await asyncio.wait_for(lease.handback(), 2.0)
            except Exception as e:
                log.warning("session %s: hand-back failed (%r); the sweep will recover it", self.session_id, e)
            raise
        finally:
            await lease.stop()
            self._record_unrecorded(lease)

    def _record_unrecorded(self, lease: Lease) -> None:
        """The end of a generation attempt that the fenced commit will not record."""
        if self._generating is not None:
            self.rt.evidence.add(lease.attempt_end(self._generating))
        elif self._ended is not None:
            self.rt.evidence.add(self._ended)
        self._generating = self._ended = None

    async def _serve(self, lease: Lease, step: Step, tail: list[str]) -> str:
        """Serve turns from ``step`` (begun by claim.lua), with the window that ends in ``tail``."""
        rt, s = self.rt, self.rt.settings
        history = SessionHistory(
            rt.redis, rt.keys.session(self.session_id), s.history_max_tokens, rt.summarizer,
            s.summary_refresh_messages, s.model_timeout_s,
        )  # fmt: skip
        await history.load(lease, tail)
        started, served = time.monotonic(), 0
        while isinstance(step, Begun):
            try:
                finish, messages = await self._run_turn(lease, history, step)
            except BudgetWait as w:
                # Wait without a job slot, keeping the session's order; the attempt never reached
                # the model, so it does not count.
                self._ended = None
                await lease.handback(delay_ms=w.ms, refund=True)
                return f"waiting {w.ms} ms for the model's budget ({w.why}) after {served} turn(s)"
            served += 1
            held_s = time.monotonic() - started
            if held_s >= s.drain_max_seconds or rt.stopping.is_set():
                nxt = Next.stop
            elif served % s.drain_max_turns == 0 or held_s >= s.drain_yield_after_s:
                # Let a session whose drain job waits for a slot have ours (advance.lua decides,
                # atomically with the begin). With none waiting, handing back would only make this
                # session wait one poll delay (bench B3: that wait was the p99 of the handoff).
                nxt = Next.yield_
            else:
                nxt = Next.begin
            try:
                step = await lease.advance(finish, self._ended, nxt)
            except CommitNotReplicated as e:
                step = await hold_until_replicated(rt, lease, e)
            metrics.turn_committed(finish.completed)
            self._ended = None
            if messages:
                history.committed(messages)
        if isinstance(step, Stopped):
            await lease.handback()
            return f"handed back after {served} turn(s)"
        return f"drained {served} turn(s)"

    async def _run_turn(self, lease: Lease, history: SessionHistory, turn: Begun) -> tuple[Finish, list[BaseMessage]]:
        """Generate (with retries) until the turn completes or is out of attempts: how it ends,
        and the history entries it writes."""
        rt, s = self.rt, self.rt.settings
        self._generating = turn  # a summary refresh is part of the attempt (and its evidence)
        try:
            window = await history.window_for(lease, self.session_id, turn.turn_id)
        except HistoryEntryUnreadable as e:
            # Every attempt would read the same entry: fail now, with what is wrong and where.
            self._ended, self._generating = lease.attempt_end(turn), None
            log.warning("turn %s failed: %s", turn.turn_id, e)
            return Finish(turn.turn_id, False, f"{e.code}: {e}"), []
        while True:
            if turn.paused_ms:
                raise BudgetWait(turn.paused_ms, "provider pause")
            metrics.turn_begun(turn)
            try:
                self._generating = turn
                try:
                    added = await lease.guard(asyncio.wait_for(self._generate(lease, window, turn), s.model_timeout_s))
                finally:
                    self._ended, self._generating = lease.attempt_end(turn), None
                messages = turn_messages(turn.turn_id, turn.text, added)
                entries = tuple(encode_message(m) for m in messages)
                return Finish(turn.turn_id, True, reply_text(added), entries), messages
            except (LeaseLost, BudgetWait):
                raise
            except Exception as e:
                metrics.model_error(e)
                paused_ms = await rt.budget.pause_for(e)
                if paused_ms is not None:
                    raise BudgetWait(paused_ms, "provider 429") from e
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__  # TimeoutError has no text
                if turn.attempt >= s.max_attempts:
                    log.warning(
                        "turn %s failed after %d attempt(s): %s", turn.turn_id, turn.attempt, error,
                        extra=turn_fields(self.session_id, turn.turn_id, turn.attempt),
                    )  # fmt: skip
                    return Finish(turn.turn_id, False, f"failed after {turn.attempt} attempt(s): {error}"), []
                log.info(
                    "turn %s attempt %d failed (%s); retrying", turn.turn_id, turn.attempt, error,
                    extra=turn_fields(self.session_id, turn.turn_id, turn.attempt),
                )  # fmt: skip
                await lease.guard(asyncio.sleep(self._backoff(turn.attempt)))
                nxt = await lease.advance(None, self._ended, Next.begin)
                self._ended = None
                if not isinstance(nxt, Begun) or nxt.turn_id != turn.turn_id:
                    raise RuntimeError(f"head changed under a held lease: {nxt!r}") from e
                turn = nxt

    def _backoff(self, attempt: int) -> float:
        s = self.rt.settings
        base = min(s.retry_backoff_max_s, s.retry_backoff_s * 2 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))

    async def _generate(self, lease: Lease, window: list[BaseMessage], turn: Begun) -> list[BaseMessage]:
        """One attempt: the handler's messages, its text and tool activity streamed as they come."""
        rt = self.rt
        handler_turn = Turn(
            session_id=self.session_id,
            turn_id=turn.turn_id,
            attempt=turn.attempt,
            user=HumanMessage(turn.text, id=f"{turn.turn_id}{USER_SUFFIX}"),
            window=window,
            metadata=turn.metadata,
            config=run_config(
                session_id=self.session_id, turn_id=turn.turn_id, attempt=turn.attempt, metadata=turn.metadata
            ),
        )
        # One budget take per turn: a turn is one request in the RPM bucket (an agent's extra model
        # calls ride on it), and its tokens are settled from every reply's usage_metadata.
        taken = await rt.budget.take(self.session_id, [*window, handler_turn.user])  # raises BudgetWait
        if taken is not None and taken.slot is not None:
            lease.slot = (rt.budget.slots_key, taken.slot)
        pub = ChunkPublisher(rt.streams, rt.keys.stream(turn.turn_id), turn.attempt)
        used: int | None = None
        if self._last_reply is not None:
            metrics.HANDOFF.observe(time.perf_counter() - self._last_reply)
        gen = metrics.Generation()
        try:
            added = await rt.handler.run(handler_turn, gen.emitter(pub))
            used = sum(m.usage_metadata["total_tokens"] for m in added if isinstance(m, AIMessage) and m.usage_metadata)
        except BaseException:
            gen.done(ok=False)
            self._last_reply = None  # a retry's start is not a handoff
            pub.cancel()
            raise
        finally:
            lease.slot = None
            if taken is not None:
                # Shielded: a lease loss re-cancels this task until it is done; the slot must go back.
                await asyncio.shield(rt.budget.give_back(taken, used))
        self._last_reply = gen.done(ok=True)
        for m in added:
            if isinstance(m, AIMessage) and m.usage_metadata:
                metrics.usage(dict(m.usage_metadata))
        await pub.aclose()
        if not all(isinstance(m, BaseMessage) for m in added):
            raise TypeError(f"the {rt.handler.kind} handler returned something other than messages")
        return added
