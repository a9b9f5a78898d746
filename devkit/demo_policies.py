"""``make demo ARGS=--policies``: one session under each on_busy policy, a stop, a coalesced burst and
a deadline, each printed as a timeline with the history it left, checked against what the policy
promises, then the whole run through the invariant checker (devkit/check.py).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatlane.connection import redacted
from chatlane.messages import is_interrupted
from devkit.check import check
from devkit.processes import WorkerProcess, worker_env
from producer import ChatProducer, SessionBusy, Settings, TurnState, TurnStatus

REPLY_MS = 1500  # the fake model's pace: long enough to stop a reply half-way


@dataclass
class Scene:
    name: str
    session: str
    started: float = field(default_factory=time.time)
    turns: list[str] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)  # (epoch s, what happened)
    lines: list[str] = field(default_factory=list)  # the history and the verdict

    def say(self, what: str, at: float | None = None) -> None:
        self.events.append((time.time() if at is None else at, what))

    def timeline(self) -> list[str]:
        return [f"  {at - self.started:5.2f}s  {what}" for at, what in sorted(self.events, key=lambda e: e[0])]


class PolicyDemo:
    def __init__(self, producer: ChatProducer) -> None:
        self.p = producer
        self.scenes: list[Scene] = []
        self.failures: list[str] = []

    def scene(self, name: str) -> Scene:
        sc = Scene(name, f"demo-{name}-{uuid.uuid4().hex[:6]}")
        self.scenes.append(sc)
        return sc

    async def send(self, sc: Scene, text: str, **kw: object) -> TurnStatus:
        enq = await self.p.submit(sc.session, text, **kw)  # type: ignore[arg-type]
        if enq.created:
            sc.turns.append(enq.status.turn_id)
        how = "joined its queued turn" if enq.joined else f"turn {len(sc.turns)} queued at {enq.status.position}"
        sc.say(f"send {text!r}{_opts(kw)}: {how}")
        return enq.status

    async def streaming(self, sc: Scene, turn_id: str) -> None:
        for _ in range(1500):
            st = await self.p.status(turn_id)
            if st.state is TurnState.running and st.reply:
                sc.say(f"turn {sc.turns.index(turn_id) + 1} is streaming: {st.reply!r}")
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"turn {turn_id} did not start streaming")

    async def settle(self, sc: Scene, expect_states: list[TurnState], expect_history: list[str]) -> None:
        states = [(await self.p.wait(t, 30)).state for t in sc.turns]
        for i, t in enumerate(sc.turns, 1):
            st = await self.p.status(t)
            # Redis stamps whole milliseconds: the end happened within the next one.
            ended = st.finished_at.timestamp() + 0.001 if st.finished_at else None
            sc.say(f"turn {i} {st.state.value}" + (f" ({st.reason})" if st.reason else ""), ended)
        history = await self.p.history(sc.session)
        shape = [("user" if m.type == "human" else "partial" if is_interrupted(m) else "reply") for m in history]
        for m in history:
            role = "user     " if m.type == "human" else "assistant"
            mark = "  [interrupted]" if is_interrupted(m) else ""
            sc.lines.append(f"           {role} {_clip(m.text)}{mark}")
        ok = states == expect_states and shape == expect_history
        if not ok:
            self.failures.append(f"{sc.name}: states {states}, history {shape}")
        sc.lines.append(f"  {'PASS' if ok else 'FAIL'}  {sc.name}")

    # -- the scenes --------------------------------------------------------------------------

    async def enqueue(self) -> None:
        sc = self.scene("enqueue")
        first = await self.send(sc, "Tell me about Rome.")
        await self.streaming(sc, first.turn_id)
        await self.send(sc, "And Paris?", on_busy="enqueue")
        await self.settle(sc, [TurnState.completed] * 2, ["user", "reply", "user", "reply"])

    async def reject(self) -> None:
        sc = self.scene("reject")
        first = await self.send(sc, "Summarise my inbox.")
        await self.streaming(sc, first.turn_id)
        try:
            await self.send(sc, "Hello?", on_busy="reject")
        except SessionBusy as e:
            sc.say(f"send 'Hello?' (on_busy=reject): 409 {e.code}, nothing written")
        await self.settle(sc, [TurnState.completed], ["user", "reply"])

    async def interrupt(self) -> None:
        sc = self.scene("interrupt")
        first = await self.send(sc, "Write a long poem about the sea.")
        await self.send(sc, "Make it rhyme.")
        await self.streaming(sc, first.turn_id)
        await self.send(sc, "Actually, a haiku.", on_busy="interrupt")
        await self.settle(
            sc, [TurnState.interrupted, TurnState.cancelled, TurnState.completed], ["user", "partial", "user", "reply"]
        )

    async def rollback(self) -> None:
        sc = self.scene("rollback")
        first = await self.send(sc, "Draft an angry email to my landlord.")
        await self.streaming(sc, first.turn_id)
        await self.send(sc, "No, a polite one.", on_busy="rollback")
        await self.settle(sc, [TurnState.cancelled, TurnState.completed], ["user", "reply"])

    async def coalesce(self) -> None:
        sc = self.scene("coalesce")
        for text in ("hi", "my order has not arrived", "it is #4411"):
            await self.send(sc, text, on_busy="coalesce")
            await asyncio.sleep(0.3)
        await self.settle(sc, [TurnState.completed], ["user", "user", "user", "reply"])

    async def stop(self) -> None:
        sc = self.scene("stop")
        first = await self.send(sc, "Explain quantum computing in detail.")
        await self.streaming(sc, first.turn_id)
        await self.p.cancel(first.turn_id, keep_partial=True)
        sc.say("cancel turn 1 (keep_partial=true): the worker stops the model call")
        second = await self.send(sc, "Shorter, please.")
        await self.streaming(sc, second.turn_id)
        await self.p.cancel(second.turn_id, keep_partial=False)
        sc.say("cancel turn 2 (keep_partial=false)")
        await self.settle(sc, [TurnState.interrupted, TurnState.cancelled], ["user", "partial"])

    async def deadline(self) -> None:
        sc = self.scene("deadline")
        first = await self.send(sc, "Plan my week.")
        await self.send(sc, "Is it raining?", expires_after_s=0.5)
        await self.streaming(sc, first.turn_id)
        await self.settle(sc, [TurnState.completed, TurnState.expired], ["user", "reply"])

    async def run(self) -> int:
        scenes: list[Callable[[], Awaitable[None]]] = [
            self.enqueue, self.reject, self.interrupt, self.rollback, self.coalesce, self.stop, self.deadline,
        ]  # fmt: skip
        await asyncio.gather(*(s() for s in scenes))
        for sc in self.scenes:
            print(f"\n{sc.name}  (session {sc.session})")
            print("\n".join([*sc.timeline(), "  history:", *sc.lines]))
        report = await check(self.p, {sc.session: sc.turns for sc in self.scenes})
        print("\nall sessions, checked")
        for name, value in report.rows():
            print(f"  {name:<34} {value:>8}")
        checks = [
            ("every policy did what it promises", not self.failures),
            ("every history is a conversation that happened", report.ok),
            ("no two generations of a session overlapped", report.overlapping == 0),
        ]
        for name, ok in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}")
        for v in [*self.failures, *report.violations][:20]:
            print(f"  ! {v}")
        return 0 if all(ok for _, ok in checks) else 1


async def run_policies(redis_url: str, workers: int = 2) -> int:
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, coalesce_window_ms=800, coalesce_max_wait_ms=3000)
    logs = Path(tempfile.mkdtemp(prefix="chatlane-demo-"))
    env = worker_env(redis_url, prefix, {"CHATLANE_FAKE_DELAY_MS": str(REPLY_MS), "CHATLANE_LEASE_TTL_MS": "3000"})
    print(f"chatlane demo --policies: {workers} worker processes, fake model {REPLY_MS} ms per reply, "
          f"coalesce window {settings.coalesce_window_ms} ms")  # fmt: skip
    print(f"  redis {redacted(redis_url)}  key prefix {prefix}  worker logs {logs}")
    procs = [WorkerProcess(env, logs / f"worker{i}.log").start() for i in range(workers)]
    try:
        async with ChatProducer(settings=settings) as p:
            while await p.redis.zcard(p.keys.workers) < workers:
                if not all(w.alive() for w in procs):
                    raise RuntimeError("a worker did not start:\n" + "\n".join(w.log()[-2000:] for w in procs))
                await asyncio.sleep(0.1)
            code = await PolicyDemo(p).run()
            keys = [k async for k in p.redis.scan_iter(match=f"{prefix}:*", count=1000)]
            for i in range(0, len(keys), 500):
                await p.redis.delete(*keys[i : i + 500])
            return code
    finally:
        for w in procs:
            w.stop()


def _opts(kw: dict[str, object]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else ""


def _clip(s: str, n: int = 90) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
