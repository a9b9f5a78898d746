"""The ``drain(session_id)`` arq job: serve a session's inbox in order while holding its lease."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from chatlane.errors import CommitNotReplicated, LeaseLost
from chatlane.messages import encode_message, turn_messages
from chatlane.scripts import Begun, Finish, Step, Stopped
from worker.lease import Lease
from worker.llm import stream_reply
from worker.publish import ChunkPublisher
from worker.replicated import hold_until_replicated
from worker.runtime import RUNTIME, Runtime
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

    async def run(self) -> str:
        rt, s = self.rt, self.rt.settings
        claimed = await Lease.claim(
            rt.lease_scripts,
            session_id=self.session_id,
            lease_key=rt.keys.session(self.session_id).lease,
            holder=rt.worker_id,
            job_id=self.job_id,
            tail_len=FIRST_BATCH,
            ttl_ms=s.lease_ttl_ms,
            renew_ms=s.lease_renew_ms,
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

    async def _serve(self, lease: Lease, step: Step, tail: list[str]) -> str:
        """Serve turns from ``step`` (begun by claim.lua), with the window that ends in ``tail``."""
        rt, s = self.rt, self.rt.settings
        history_key = rt.keys.session(self.session_id).history
        window = await lease.guard(load_window(rt.redis, history_key, s.history_max_tokens, tail))
        started, served, budget = time.monotonic(), 0, s.drain_max_turns
        while isinstance(step, Begun):
            finish, messages = await self._run_turn(lease, window.messages, step)
            served += 1
            if served >= budget and not await self._others_waiting():
                # The turn budget lets waiting sessions have the slot. With none waiting, handing
                # back would only make this session wait one poll delay (bench B3: that wait was
                # the p99 of the handoff between queued turns).
                budget += s.drain_max_turns
            more = served < budget and time.monotonic() - started < s.drain_max_seconds and not rt.stopping.is_set()
            try:
                step = await lease.advance(finish, begin=more)
            except CommitNotReplicated as e:
                step = await hold_until_replicated(rt, lease, e)
            if messages:
                window.extend(messages)
        if isinstance(step, Stopped):
            await lease.handback()
            return f"handed back after {served} turn(s)"
        return f"drained {served} turn(s)"

    async def _others_waiting(self) -> bool:
        """Whether a drain job is due and not started (claimed drains leave arq's queue). The
        sweep's cron job does not count: it is due every second and holds a slot only briefly.
        Drain job ids are bare uuids (DrainJob.new); arq names cron jobs "<name>:<ms>"."""
        due = await self.rt.redis.zrangebyscore(self.rt.keys.queue, "-inf", int(time.time() * 1000), start=0, num=2)
        return any(":" not in job_id for job_id in due)

    async def _run_turn(
        self, lease: Lease, window: list[BaseMessage], turn: Begun
    ) -> tuple[Finish, tuple[BaseMessage, ...]]:
        """Generate (with retries) until the turn completes or is out of attempts: how it ends,
        and the messages it adds to the window."""
        s = self.rt.settings
        while True:
            try:
                reply = await lease.guard(asyncio.wait_for(self._generate(window, turn), s.model_timeout_s))
                messages = turn_messages(turn.turn_id, turn.text, reply)
                entries = tuple(encode_message(m) for m in messages)
                return Finish(turn.turn_id, True, reply.text, entries), messages
            except LeaseLost:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__  # TimeoutError has no text
                if turn.attempt >= s.max_attempts:
                    log.warning("turn %s failed after %d attempt(s): %s", turn.turn_id, turn.attempt, error)
                    return Finish(turn.turn_id, False, f"failed after {turn.attempt} attempt(s): {error}"), ()
                log.info("turn %s attempt %d failed (%s); retrying", turn.turn_id, turn.attempt, error)
                await lease.guard(asyncio.sleep(self._backoff(turn.attempt)))
                nxt = await lease.advance(None, begin=True)
                if not isinstance(nxt, Begun) or nxt.turn_id != turn.turn_id:
                    raise RuntimeError(f"head changed under a held lease: {nxt!r}") from e
                turn = nxt

    def _backoff(self, attempt: int) -> float:
        s = self.rt.settings
        base = min(s.retry_backoff_max_s, s.retry_backoff_s * 2 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))

    async def _generate(self, window: list[BaseMessage], turn: Begun) -> AIMessage:
        rt = self.rt
        messages = [SystemMessage(rt.settings.system_prompt), *window, HumanMessage(turn.text)]
        pub = ChunkPublisher(rt.streams, rt.keys.stream(turn.turn_id), turn.attempt)
        try:
            reply = await stream_reply(
                rt.model, messages, session_id=self.session_id, turn_id=turn.turn_id, attempt=turn.attempt,
                on_chunk=pub.put,
            )  # fmt: skip
        except BaseException:
            pub.cancel()
            raise
        await pub.aclose()
        return reply
