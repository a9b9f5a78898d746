"""The ``drain(session_id)`` arq job: serve a session's inbox in order while holding its lease."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from producer.history import encode_message, turn_messages
from producer.jobs import DrainJob
from producer.keys import SessionKeys
from worker.history import FIRST_BATCH, load_window
from worker.lease import Lease, LeaseLost
from worker.llm import stream_reply
from worker.publish import ChunkPublisher
from worker.runtime import RUNTIME, Runtime

log = logging.getLogger("chatlane.drain")


@dataclass(frozen=True)
class Turn:
    turn_id: str
    text: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    completed: bool
    text: str  # reply, or error
    messages: tuple[HumanMessage, AIMessage] | None = None


async def drain(ctx: dict[str, Any], session_id: str) -> str:
    rt: Runtime = ctx[RUNTIME]
    return await SessionRunner(rt, session_id, ctx["job_id"]).run()


class SessionRunner:
    def __init__(self, rt: Runtime, session_id: str, job_id: str) -> None:
        self.rt = rt
        self.session_id = session_id
        self.job_id = job_id
        self.sk: SessionKeys = rt.keys.session(session_id)

    async def run(self) -> str:
        rt, sk, s = self.rt, self.sk, self.rt.settings
        res = await rt.scripts.claim(
            keys=[sk.lease, sk.fence, sk.inbox, sk.drain, rt.keys.pending, rt.keys.queue, rt.keys.stats, sk.history],
            args=[self.session_id, rt.worker_id, s.lease_ttl_ms, self.job_id, rt.keys.turn_prefix,
                  rt.keys.stream_suffix, s.max_attempts, s.turn_ttl_s * 1000, s.stream_ttl_s * 1000, FIRST_BATCH],
        )  # fmt: skip
        got, token = res[0], res[1]
        if got != 1:
            return "busy" if got == 0 else "empty"
        lease = Lease(rt.scripts.renew, sk, token, s.lease_ttl_ms, s.lease_renew_ms, rt.keys.stats)
        lease.start()
        try:
            return await self._serve(lease, self._step(lease, res[2]), res[3])
        except LeaseLost:
            log.warning("session %s: lease lost; the next holder re-runs the head turn", self.session_id)
            return "lease lost"
        except asyncio.CancelledError:
            # Worker shutdown past its grace (or job timeout): give the session back now
            # rather than make it wait for the lease to expire.
            try:
                await asyncio.wait_for(self._handback(lease), 2.0)
            except Exception as e:
                log.warning("session %s: hand-back failed (%s); the sweep will recover it", self.session_id, e)
            raise
        finally:
            await lease.stop()

    async def _serve(self, lease: Lease, step: Turn | str, tail: list[str]) -> str:
        """Serve turns from ``step`` (begun by claim.lua), with the window that ends in ``tail``."""
        s = self.rt.settings
        window = await lease.guard(load_window(self.rt.redis, self.sk.history, s.history_max_tokens, tail))
        started, served, budget = time.monotonic(), 0, s.drain_max_turns
        while isinstance(step, Turn):
            outcome = await self._run_turn(lease, window.messages, step)
            served += 1
            if served >= budget and not await self._others_waiting():
                # The turn budget lets waiting sessions have the slot. With none waiting, handing
                # back would only make this session wait one poll delay (bench B3: that wait was
                # the p99 of the handoff between queued turns).
                budget += s.drain_max_turns
            more = (
                served < budget and time.monotonic() - started < s.drain_max_seconds and not self.rt.stopping.is_set()
            )
            step = await self._advance(lease, (step, outcome), begin=more)
            if outcome.messages:
                window.extend(outcome.messages)
        if step == "stopped":
            await self._handback(lease)
            return f"handed back after {served} turn(s)"
        return f"drained {served} turn(s)"

    async def _others_waiting(self) -> bool:
        """Whether a drain job is due and not started (claimed drains leave arq's queue). The
        sweep's cron job does not count: it is due every second and holds a slot only briefly.
        Drain job ids are bare uuids (DrainJob.new); arq names cron jobs "<name>:<ms>"."""
        due = await self.rt.redis.zrangebyscore(self.rt.keys.queue, "-inf", int(time.time() * 1000), start=0, num=2)
        return any(":" not in job_id for job_id in due)

    async def _run_turn(self, lease: Lease, window: list[BaseMessage], turn: Turn) -> Outcome:
        s = self.rt.settings
        while True:
            try:
                reply = await lease.guard(asyncio.wait_for(self._generate(window, turn), s.model_timeout_s))
                return Outcome(True, reply.text, turn_messages(turn.turn_id, turn.text, reply))
            except LeaseLost:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__  # TimeoutError has no text
                if turn.attempt >= s.max_attempts:
                    log.warning("turn %s failed after %d attempt(s): %s", turn.turn_id, turn.attempt, error)
                    return Outcome(False, f"failed after {turn.attempt} attempt(s): {error}")
                log.info("turn %s attempt %d failed (%s); retrying", turn.turn_id, turn.attempt, error)
                await lease.guard(asyncio.sleep(self._backoff(turn.attempt)))
                nxt = await self._advance(lease, None, begin=True)
                if not isinstance(nxt, Turn) or nxt.turn_id != turn.turn_id:
                    raise RuntimeError(f"head changed under a held lease: {nxt!r}") from e
                turn = nxt

    def _backoff(self, attempt: int) -> float:
        s = self.rt.settings
        base = min(s.retry_backoff_max_s, s.retry_backoff_s * 2 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))

    async def _generate(self, window: list[BaseMessage], turn: Turn) -> AIMessage:
        rt = self.rt
        messages = [SystemMessage(rt.settings.system_prompt), *window, HumanMessage(turn.text)]
        pub = ChunkPublisher(rt.streams, rt.keys.stream(turn.turn_id), turn.attempt)
        try:
            reply = await stream_reply(rt.model, messages, turn_id=turn.turn_id, attempt=turn.attempt, on_chunk=pub.put)
        except BaseException:
            pub.cancel()
            raise
        await pub.aclose()
        return reply

    async def _advance(self, lease: Lease, finished: tuple[Turn, Outcome] | None, *, begin: bool) -> Turn | str:
        rt, s = self.rt, self.rt.settings
        turn_id, state, text, user, ai = "", "", "", "", ""
        if finished is not None:
            turn, outcome = finished
            turn_id, text = turn.turn_id, outcome.text
            state = "completed" if outcome.completed else "failed"
            if outcome.messages:
                user, ai = (encode_message(m) for m in outcome.messages)
        res = await rt.scripts.advance(
            keys=[self.sk.lease, self.sk.inbox, self.sk.history, rt.keys.stats, rt.keys.pending],
            args=[
                lease.token,
                s.lease_ttl_ms,
                rt.keys.turn_prefix,
                rt.keys.stream_suffix,
                turn_id,
                state,
                text,
                user,
                ai,
                s.turn_ttl_s * 1000,
                s.stream_ttl_s * 1000,
                "begin" if begin else "stop",
                s.max_attempts,
                self.session_id,
            ],
        )
        return self._step(lease, res)

    def _step(self, lease: Lease, res: list[Any]) -> Turn | str:
        """The turn a script began, or what it did instead ("released", "stopped")."""
        kind = res[0]
        if kind == "lost":
            lease.lost.set()
            raise LeaseLost(self.sk.lease)
        if kind == "turn":
            return Turn(res[1], res[2], int(res[3]))
        return str(kind)

    async def _handback(self, lease: Lease) -> None:
        rt = self.rt
        job = DrainJob.new(self.session_id)
        await rt.scripts.handback(
            keys=[self.sk.lease, self.sk.inbox, self.sk.drain, rt.keys.pending, job.key, rt.keys.queue],
            args=[lease.token, self.session_id, *job.argv(), rt.keys.turn_prefix],
        )
