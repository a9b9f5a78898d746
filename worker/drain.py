"""The ``drain(session_id)`` arq job: serve a session's inbox in order while holding its lease."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from chatlane.errors import LeaseLost
from chatlane.messages import encode_message, turn_messages
from chatlane.scripts import AttemptEnd, Begun, Deferred, Finish, Next, Step, Stopped, StopRequested
from chatlane.stream import StreamEvent, partial_reply
from worker.budget import BudgetWait
from worker.lease import Lease
from worker.llm import stream_reply
from worker.publish import ChunkPublisher
from worker.runtime import RUNTIME, Runtime
from worker.stops import TurnStopped
from worker.window import FIRST_BATCH, load_window

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
        # The text the latest attempt generated so far (turn id, chunks), and its stream publisher:
        # a stopped turn's partial reply, as its stream readers saw it.
        self._partial: tuple[str, list[str]] = ("", [])
        self._pub: ChunkPublisher | None = None

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
            log.warning("session %s: lease lost; the next holder re-runs the head turn", self.session_id)
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
        history_key = rt.keys.session(self.session_id).history
        window = None
        if isinstance(step, Begun | StopRequested):
            window = await lease.guard(load_window(rt.redis, history_key, s.history_max_tokens, tail))
        started, served = time.monotonic(), 0
        while isinstance(step, Begun | StopRequested):
            assert window is not None
            messages: tuple[BaseMessage, ...] = ()
            if isinstance(step, StopRequested):
                finish = await self._stopped(lease, step)
            else:
                try:
                    finish, messages = await self._run_turn(lease, window.messages, step)
                except BudgetWait as w:
                    # Wait without a job slot, keeping the session's order; the attempt never reached
                    # the model, so it does not count.
                    self._ended = None
                    await lease.handback(delay_ms=w.ms, refund=True)
                    return f"waiting {w.ms} ms for the model's budget ({w.why}) after {served} turn(s)"
            step = await lease.advance(finish, self._ended, self._next_step(served + 1, started))
            self._ended = None
            if isinstance(step, StopRequested) and step.turn_id == finish.turn_id:
                continue  # not committed: a stop request came first and decides (advance.lua)
            served += 1
            if finish.stopped:
                # Whether its partial reply went to history was the stop request's to decide.
                window = await lease.guard(load_window(rt.redis, history_key, s.history_max_tokens))
            elif messages:
                window.extend(messages)
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
        leaves if the request keeps it (advance.lua reads which). The partial reply is what this
        holder generated, once its stream has it; after another holder died mid-turn, what the
        stream holds."""
        parts_of, parts = self._partial
        if parts_of == turn.turn_id:
            if self._pub is not None:
                await asyncio.shield(self._pub.aclose())
            partial = "".join(parts)
        else:
            raw = await lease.guard(self.rt.redis.xrange(self.rt.keys.stream(turn.turn_id)))
            partial = partial_reply([StreamEvent.parse(i, f) for i, f in raw])
        self._partial, self._pub = ("", []), None
        messages = turn_messages(turn.turn_id, turn.texts, AIMessage(content=partial), interrupted=True)
        return Finish(turn.turn_id, False, partial, tuple(encode_message(m) for m in messages), stopped=True)

    async def _run_turn(
        self, lease: Lease, window: list[BaseMessage], turn: Begun
    ) -> tuple[Finish, tuple[BaseMessage, ...]]:
        """Generate (with retries) until the turn completes, is out of attempts, or a client stops
        it: how it ends, and the messages it adds to the window."""
        rt = self.rt
        stop = rt.stops.watch(turn.turn_id)
        lease.watching = (turn.turn_id, stop)
        try:
            return await self._attempts(lease, window, turn, stop)
        except TurnStopped:
            # The model call is over (guard cancels until done): G1 holds at the model, the next
            # turn cannot start before this commit.
            return await self._stopped(lease, turn), ()
        finally:
            lease.watching = None
            rt.stops.forget(turn.turn_id)

    async def _attempts(
        self, lease: Lease, window: list[BaseMessage], turn: Begun, stop: asyncio.Event
    ) -> tuple[Finish, tuple[BaseMessage, ...]]:
        rt, s = self.rt, self.rt.settings
        while True:
            if turn.paused_ms:
                raise BudgetWait(turn.paused_ms, "provider pause")
            try:
                self._generating = turn
                try:
                    generate = asyncio.wait_for(self._generate(lease, window, turn, stop), s.model_timeout_s)
                    reply = await lease.guard(generate, stop)
                finally:
                    self._ended, self._generating = lease.attempt_end(turn), None
                messages = turn_messages(turn.turn_id, turn.texts, reply)
                entries = tuple(encode_message(m) for m in messages)
                return Finish(turn.turn_id, True, reply.text, entries), messages
            except (LeaseLost, BudgetWait, TurnStopped):
                raise
            except Exception as e:
                paused_ms = await rt.budget.pause_for(e)
                if paused_ms is not None:
                    raise BudgetWait(paused_ms, "provider 429") from e
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__  # TimeoutError has no text
                if turn.attempt >= s.max_attempts:
                    log.warning("turn %s failed after %d attempt(s): %s", turn.turn_id, turn.attempt, error)
                    return Finish(turn.turn_id, False, f"failed after {turn.attempt} attempt(s): {error}"), ()
                log.info("turn %s attempt %d failed (%s); retrying", turn.turn_id, turn.attempt, error)
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

    async def _generate(self, lease: Lease, window: list[BaseMessage], turn: Begun, stop: asyncio.Event) -> AIMessage:
        rt = self.rt
        messages = [SystemMessage(rt.settings.system_prompt), *window, *(HumanMessage(t) for t in turn.texts)]
        taken = await rt.budget.take(self.session_id, messages)  # raises BudgetWait
        if taken is not None and taken.slot is not None:
            lease.slot = (rt.budget.slots_key, taken.slot)
        pub = ChunkPublisher(rt.streams, rt.keys.stream(turn.turn_id), turn.attempt)
        parts: list[str] = []
        self._partial, self._pub = (turn.turn_id, parts), pub

        def on_chunk(text: str) -> None:
            parts.append(text)
            pub.put(text)

        used: int | None = None
        try:
            reply = await stream_reply(
                rt.model, messages, session_id=self.session_id, turn_id=turn.turn_id, attempt=turn.attempt,
                on_chunk=on_chunk,
            )  # fmt: skip
            used = reply.usage_metadata["total_tokens"] if reply.usage_metadata else None
        except BaseException:
            if not stop.is_set():  # a stopped turn's chunks so far are its partial reply: keep them
                pub.cancel()
            raise
        finally:
            lease.slot = None
            if taken is not None:
                # Shielded: a lease loss re-cancels this task until it is done; the slot must go back.
                await asyncio.shield(rt.budget.give_back(taken, used))
        await pub.aclose()
        return reply
