"""The ``drain(session_id)`` arq job: serve a session's inbox in order while holding its lease."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from chatlane.connection import REDIS_DOWN
from chatlane.errors import CommitNotReplicated, HistoryEntryUnreadable, LeaseLost
from chatlane.logs import REDIS_OUTAGE, log_context, reset_log_context, turn_fields
from chatlane.messages import encode_message, interrupted_turn_messages, reply_text, turn_messages, user_messages
from chatlane.scripts import AttemptEnd, Begun, Deferred, Finish, Next, Step, Stopped, StopRequested
from chatlane.stream import StreamEvent, partial_reply
from chatlane.tenants import SessionRef
from chatlane.tracing import NO_SPANS, turn_spans
from worker import metrics
from worker.budget import BudgetWait
from worker.history import SessionHistory
from worker.lease import Lease
from worker.publish import ChunkPublisher
from worker.replicated import hold_until_replicated
from worker.runtime import RUNTIME, Runtime
from worker.stops import PartialReply, TurnStopped
from worker.turn import Turn, run_config
from worker.window import FIRST_BATCH

log = logging.getLogger("chatlane.drain")


async def drain(ctx: dict[str, Any], session_id: str) -> str:
    rt: Runtime = ctx[RUNTIME]
    token = log_context(session_id)
    try:
        done = await SessionRunner(rt, session_id, ctx["job_id"]).run()
    except REDIS_DOWN as e:
        # What the drain leaves (a lease nobody renews) the lease TTL and the sweep recover; one
        # line per outage, not a traceback per job.
        REDIS_OUTAGE.failed("a drain job", e)
        return f"Redis unavailable ({type(e).__name__})"
    finally:
        reset_log_context(token)
    REDIS_OUTAGE.ok()
    return done


class SessionRunner:
    def __init__(self, rt: Runtime, session_id: str, job_id: str) -> None:
        self.rt = rt
        self.session_id = session_id
        self.job_id = job_id
        # The attempt generating now, or the end of the last one not yet recorded by a commit.
        self._generating: Begun | None = None
        self._ended: AttemptEnd | None = None
        self._last_reply: float | None = None  # perf_counter at the end of the last reply (handoff metric)
        # What the latest attempt streamed: a stopped turn's partial reply.
        self._partial: PartialReply | None = None
        self._spans = NO_SPANS  # the trace spans of the turn being served (chatlane/tracing.py)

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
            self._spans.end()

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
            s.summary_refresh_messages, s.model_timeout_s, s.history_max_messages,
        )  # fmt: skip
        if isinstance(step, Begun | StopRequested):
            await history.load(lease, tail)
        started, served = time.monotonic(), 0
        while isinstance(step, Begun | StopRequested):
            log_context(self.session_id, step.turn_id, step.attempt)
            self._spans.end()
            self._spans = await turn_spans(rt.redis, rt.keys.turn(step.turn_id), self.session_id, step)
            messages: list[BaseMessage] = []
            if isinstance(step, StopRequested):
                finish = await self._stopped(lease, step)
            else:
                try:
                    finish, messages = await self._run_turn(lease, history, step)
                except BudgetWait as w:
                    # Wait without a job slot, keeping the session's order; the attempt never reached
                    # the model, so it does not count.
                    self._ended = None
                    await lease.handback(delay_ms=w.ms, refund=True)
                    return f"waiting {w.ms} ms for the model's budget ({w.why}) after {served} turn(s)"
            try:
                with self._spans.commit():
                    step = await lease.advance(finish, self._ended, self._next_step(served + 1, started))
            except CommitNotReplicated as e:
                step = await hold_until_replicated(rt, lease, e)
            self._ended = None
            if isinstance(step, StopRequested) and step.turn_id == finish.turn_id:
                continue  # not committed: a stop request came first and decides (advance.lua)
            metrics.turn_committed(finish.completed, stopped=finish.stopped)
            self._spans.end("stopped" if finish.stopped else "completed" if finish.completed else "failed")
            served += 1
            if finish.stopped:
                # Whether its partial reply went to history was the stop request's to decide.
                await history.load(lease, None)
            elif messages:
                history.committed(messages)
        if isinstance(step, Deferred):
            # The head waits for more texts (on_busy=coalesce): no job slot is held meanwhile.
            await lease.handback(delay_ms=step.ms)
            return f"head turn waits {step.ms} ms for more texts, after {served} turn(s)"
        if isinstance(step, Stopped):
            await lease.handback()
            return f"handed back after {served} turn(s)"
        return f"drained {served} turn(s)"

    def _next_step(self, served: int, started: float) -> Next:
        s = self.rt.settings
        held_s = time.monotonic() - started
        if held_s >= s.drain_max_seconds or self.rt.stopping.is_set():
            return Next.stop
        if served % s.drain_max_turns == 0 or held_s >= s.drain_yield_after_s:
            # Let a session whose drain job waits for a slot have ours (advance.lua decides,
            # atomically with the begin). With none waiting, handing back would only make this
            # session wait one poll delay (bench B3: that wait was the p99 of the handoff).
            return Next.yield_
        return Next.begin

    async def _stopped(self, lease: Lease, turn: Begun | StopRequested) -> Finish:
        """The commit of a turn a client stopped: its partial reply, and the history entries it
        leaves if the request keeps it (advance.lua reads which). The partial reply is the text this
        holder's attempt streamed; after another holder died mid-turn, what the turn's stream holds."""
        if self._partial is not None and self._partial.turn_id == turn.turn_id:
            partial = await self._partial.flushed()
        else:
            raw = await lease.guard(self.rt.redis.xrange(self.rt.keys.stream(turn.turn_id)))
            partial = partial_reply([StreamEvent.parse(i, f) for i, f in raw])
        self._partial = None
        entries = tuple(encode_message(m) for m in interrupted_turn_messages(turn.turn_id, turn.texts, partial))
        return Finish(turn.turn_id, False, partial, entries, stopped=True)

    async def _run_turn(self, lease: Lease, history: SessionHistory, turn: Begun) -> tuple[Finish, list[BaseMessage]]:
        """Generate (with retries) until the turn completes, is out of attempts, or a client stops
        it: how it ends, and the history entries it writes."""
        stop = self.rt.stops.watch(turn.turn_id)
        lease.watching = (turn.turn_id, stop)
        try:
            return await self._attempts(lease, history, turn, stop)
        except TurnStopped:
            # The model call is over (guard cancels until done): G1 holds at the model, the next
            # turn cannot start before this commit.
            return await self._stopped(lease, turn), []
        finally:
            lease.watching = None
            self.rt.stops.forget(turn.turn_id)

    async def _attempts(
        self, lease: Lease, history: SessionHistory, turn: Begun, stop: asyncio.Event
    ) -> tuple[Finish, list[BaseMessage]]:
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
            log_context(self.session_id, turn.turn_id, turn.attempt)
            if turn.paused_ms:
                raise BudgetWait(turn.paused_ms, "provider pause")
            metrics.turn_begun(turn)
            try:
                self._generating = turn
                try:
                    generate = asyncio.wait_for(self._generate(lease, window, turn, stop), s.model_timeout_s)
                    added = await lease.guard(generate, stop)
                finally:
                    self._ended, self._generating = lease.attempt_end(turn), None
                messages = turn_messages(turn.turn_id, turn.texts, added)
                entries = tuple(encode_message(m) for m in messages)
                return Finish(turn.turn_id, True, reply_text(added), entries), messages
            except (LeaseLost, BudgetWait, TurnStopped):
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
                await lease.guard(asyncio.sleep(self._backoff(turn.attempt)), stop)
                nxt = await lease.advance(None, self._ended, Next.begin)
                self._ended = None
                if isinstance(nxt, StopRequested) and nxt.turn_id == turn.turn_id:
                    raise TurnStopped() from e
                if not isinstance(nxt, Begun) or nxt.turn_id != turn.turn_id:
                    raise RuntimeError(f"head changed under a held lease: {nxt!r}") from e
                turn = nxt

    def _backoff(self, attempt: int) -> float:
        s = self.rt.settings
        base = min(s.retry_backoff_max_s, s.retry_backoff_s * 2 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))

    async def _generate(
        self, lease: Lease, window: list[BaseMessage], turn: Begun, stop: asyncio.Event
    ) -> list[BaseMessage]:
        """One attempt: the handler's messages, its text and tool activity streamed as they come."""
        rt = self.rt
        user, *joined = user_messages(turn.turn_id, turn.texts)
        ref = SessionRef.parse(self.session_id)
        handler_turn = Turn(
            session_id=ref.session_id,
            tenant=ref.tenant,
            turn_id=turn.turn_id,
            attempt=turn.attempt,
            user=user,
            window=window,
            metadata=turn.metadata,
            config=run_config(
                session_id=self.session_id, turn_id=turn.turn_id, attempt=turn.attempt, metadata=turn.metadata
            ),
            joined=joined,
        )
        # One budget take per turn: a turn is one request in the RPM bucket (an agent's extra model
        # calls ride on it), and its tokens are settled from every reply's usage_metadata.
        taken = await rt.budget.take(self.session_id, handler_turn.messages)  # raises BudgetWait
        if taken is not None and taken.slot is not None:
            lease.slot = (rt.budget.slots_key, taken.slot)
        pub = ChunkPublisher(rt.streams, rt.keys.stream(turn.turn_id), turn.attempt)
        self._partial = PartialReply(turn.turn_id, pub)
        used: int | None = None
        if self._last_reply is not None:
            metrics.HANDOFF.observe(time.perf_counter() - self._last_reply)
        gen = metrics.Generation()
        try:
            with self._spans.model(turn.attempt):
                added = await rt.handler.run(handler_turn, gen.emitter(self._partial))
            used = sum(m.usage_metadata["total_tokens"] for m in added if isinstance(m, AIMessage) and m.usage_metadata)
        except BaseException:
            gen.done(ok=False)
            self._last_reply = None  # a retry's start is not a handoff
            if not stop.is_set():  # a stopped turn's text so far is its partial reply: keep it
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
