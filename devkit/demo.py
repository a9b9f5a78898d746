"""``make demo``: several workers, several concurrent producers, many sessions, then a check.

``--agent``: every turn runs an agent with two tools (devkit/agent_example.py, on the offline fake
model); most turns ask for a tool, and the check also verifies every tool-call group.

Uses CHATLANE_REDIS_URL if set, else Redis on localhost:6379 if it answers, else a private
redis-server in a temporary directory (stopped at the end). Keys live under a fresh prefix
that is deleted afterwards, so the demo never touches other data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

from langchain_core.messages import AIMessage, ToolMessage
from pydantic import SecretStr

from chatlane.connection import redacted
from devkit.agent_example import HANDLER
from devkit.check import Report, check
from devkit.demo_policies import run_policies
from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import redis_for_demo
from producer import ChatProducer, Settings, TurnState, TurnStatus

AGENT = HANDLER


class Enqueue(Protocol):
    """``ChatProducer.enqueue`` or ``HttpChatClient.enqueue``."""

    def __call__(self, session_id: str, text: str, *, idempotency_key: str | None = None) -> Awaitable[TurnStatus]: ...


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devkit.demo", description=__doc__)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--turns", type=int, default=8, help="turns per session")
    p.add_argument("--workers", type=int, default=3, help="worker processes")
    p.add_argument("--producers", type=int, default=6, help="concurrent producer tasks")
    p.add_argument("--delay-ms", type=int, default=150, help="fake model generation time per turn")
    p.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the demo's keys in Redis")
    p.add_argument("--private-redis", action="store_true", help="always start a private redis-server")
    p.add_argument("--http", action="store_true", help="producers enqueue through the HTTP API (served by uvicorn)")
    p.add_argument("--agent", action="store_true", help="turns run an agent with two tools (devkit/agent_example.py)")
    p.add_argument(
        "--policies", action="store_true", help="instead: one session under each on_busy policy, a stop, a deadline"
    )
    return p.parse_args(argv)


def turn_text(session: str, n: int, agent: bool) -> str:
    """The n-th message of a session; with an agent, two of three ask for a tool."""
    if agent and n % 3 == 0:
        return f'{session} message {n}: what is {n} + 7? !tool=add:{{"a": {n}, "b": 7}}'
    if agent and n % 3 == 1:
        term = ("lease", "fence", "drain")[n // 3 % 3]
        return f'{session} message {n}: what is a {term}? !tool=lookup:{{"term": "{term}"}}'
    return f"{session} message {n}"


class Demo:
    def __init__(self, args: argparse.Namespace, redis_url: str) -> None:
        self.args = args
        self.prefix = f"demo-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(redis_url=redis_url, key_prefix=self.prefix)
        self.sessions = [f"user-{i:03d}" for i in range(args.sessions)]
        self.sent: dict[str, list[str]] = {s: [] for s in self.sessions}
        self.logs = Path(tempfile.mkdtemp(prefix="chatlane-demo-"))
        self.tty = sys.stdout.isatty()

    def start_workers(self) -> list[WorkerProcess]:
        extra = {"CHATLANE_FAKE_DELAY_MS": str(self.args.delay_ms), "CHATLANE_LEASE_TTL_MS": "3000"}
        if self.args.agent:
            extra["CHATLANE_HANDLER"] = AGENT
        env = worker_env(self.settings.redis_url, self.prefix, extra)
        return [WorkerProcess(env, self.logs / f"worker{i}.log").start() for i in range(self.args.workers)]

    async def produce(self, enqueue: Enqueue) -> None:
        locks = {s: asyncio.Lock() for s in self.sessions}
        plan = [s for s in self.sessions for _ in range(self.args.turns)]
        random.Random(7).shuffle(plan)  # interleave sessions
        shares = [plan[i :: self.args.producers] for i in range(self.args.producers)]

        async def producer_task(share: list[str]) -> None:
            for s in share:
                # The lock makes "the order we recorded" the order Redis accepted.
                async with locks[s]:
                    n = len(self.sent[s])
                    st = await enqueue(s, turn_text(s, n, self.args.agent), idempotency_key=f"{s}-{n}")
                    self.sent[s].append(st.turn_id)
                await asyncio.sleep(random.random() * 0.004)

        await asyncio.gather(*(producer_task(sh) for sh in shares))

    async def progress(self, p: ChatProducer, started: float) -> None:
        total = len(self.sessions) * self.args.turns
        while True:
            tids = [t for ts in self.sent.values() for t in ts]
            async with p.redis.pipeline(transaction=False) as pipe:
                for t in tids:
                    pipe.hget(p.keys.turn(t), "state")
                states = await pipe.execute()
            done = sum(s is not None and TurnState(s).terminal for s in states)
            running = sum(s == "running" for s in states)
            elapsed = time.monotonic() - started
            line = (
                f"  {elapsed:5.1f}s  enqueued {len(tids):4d}/{total}  running {running:3d}  "
                f"done {done:4d}/{total}  ({done / max(elapsed, 1e-9):5.1f} turns/s)"
            )
            # Redraw in place on a terminal; one line per tick in a log.
            print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", flush=True)
            if done == total:
                if self.tty:
                    print()
                return
            if elapsed > self.args.timeout:
                print("\n  timed out waiting for turns")
                return
            await asyncio.sleep(0.5)

    async def run(self) -> int:
        a = self.args
        print(f"chatlane demo: {a.sessions} sessions × {a.turns} turns, {a.workers} worker processes, "
              f"{a.producers} concurrent producers, fake model {a.delay_ms} ms per call")  # fmt: skip
        if a.agent:
            print(f"  turns run the agent {AGENT} (tools add and lookup)")
        print(f"  redis {redacted(self.settings.redis_url)}  key prefix {self.prefix}  worker logs {self.logs}")
        workers = self.start_workers()
        try:
            async with ChatProducer(settings=self.settings) as p, contextlib.AsyncExitStack() as stack:
                enqueue: Enqueue = p.enqueue
                if a.http:
                    # Imported here: the HTTP client needs the dev extra (httpx).
                    from devkit.api_server import ServedApp
                    from devkit.http_client import HttpChatClient
                    from producer.api import create_app

                    # A bare key acts for tenant "default", whose sessions the demo's checks read.
                    key = secrets.token_urlsafe(16)
                    api_settings = self.settings.model_copy(update={"api_keys": SecretStr(key)})
                    server = stack.enter_context(ServedApp(create_app(api_settings)))
                    enqueue = (await stack.enter_async_context(HttpChatClient(server.base_url, key))).enqueue
                    print(f"  producers enqueue over HTTP: POST {server.base_url}/v1/sessions/{{id}}/turns")
                await self.wait_for_workers(p, workers)
                started = time.monotonic()
                await asyncio.gather(self.produce(enqueue), self.progress(p, started))
                wall = time.monotonic() - started
                report = await check(p, self.sent)
                if a.agent:
                    await self.show_conversation(p, self.sessions[0])
                self.print_report(report, wall)
                if not a.keep:
                    await self.cleanup(p)
                tools_ok = report.tool_calls > 0 or not a.agent
                return 0 if report.ok and report.completed == report.accepted and tools_ok else 1
        finally:
            for w in workers:
                w.stop()

    async def wait_for_workers(self, p: ChatProducer, workers: list[WorkerProcess]) -> None:
        """Start the clock only once every worker has registered its heartbeat."""
        deadline = time.monotonic() + 60
        while await p.redis.zcard(p.keys.workers) < len(workers):
            if time.monotonic() > deadline or not all(w.alive() for w in workers):
                logs = "\n".join(w.log()[-2000:] for w in workers)
                raise RuntimeError(f"workers did not start:\n{logs}")
            await asyncio.sleep(0.1)

    def print_report(self, r: Report, wall: float) -> None:
        # An agent's turn that calls a tool makes two model calls: the call, then the answer.
        texts = [turn_text(s, n, self.args.agent) for s in self.sessions for n in range(self.args.turns)]
        tool_turns = sum("!tool=" in t for t in texts)
        model_time = (r.completed + tool_turns) * self.args.delay_ms / 1000
        print("\nresult")
        for name, value in r.rows():
            print(f"  {name:<34} {value:>8}")
        print(f"  {'wall time':<34} {wall:>7.1f}s")
        print(f"  {'sum of model delays':<34} {model_time:>7.1f}s  ({model_time / wall:.1f}× faster than serial)")
        checks = [
            ("every turn completed", r.completed == r.accepted),
            ("none lost", r.lost == 0),
            ("none duplicated", r.duplicated == 0),
            ("each session's history in enqueue order", r.out_of_order == 0),
            ("no two turns of one session overlapped", r.overlapping == 0),
            ("different sessions overlapped in time", r.parallel_pairs > 0),
            ("every turn whole in the history, never half", r.partial == 0),
        ]
        if self.args.agent:
            checks.append(("tool calls made, each answered once right after it", r.tool_calls > 0
                           and r.malformed_tool_groups == 0))  # fmt: skip
        print("\nper-session check")
        for name, ok in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}")
        for v in r.violations[:20]:
            print(f"  ! {v}")

    async def show_conversation(self, p: ChatProducer, session: str, turns: int = 3) -> None:
        """The first turns of one session as stored: user, AI tool calls, tool results, answer."""
        print(f"\na conversation ({session}), as stored (first {turns} turns)")
        for m in await p.history(session):
            if m.type == "human" and m.id and m.id.split(":")[0] not in self.sent[session][:turns]:
                break
            line = _clip(m.text)
            if isinstance(m, AIMessage) and m.tool_calls:
                line = "calls " + ", ".join(f"{c['name']}({json.dumps(c['args'])}) [{c['id']}]" for c in m.tool_calls)
            elif isinstance(m, ToolMessage):
                line = f"{m.name} [{m.tool_call_id}] -> {_clip(m.text, 60)}"
            print(f"  {ROLE.get(m.type, m.type):<10} {line}")

    async def cleanup(self, p: ChatProducer) -> None:
        keys = [k async for k in p.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await p.redis.delete(*keys[i : i + 500])


ROLE = {"human": "user", "ai": "assistant"}


def _clip(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with redis_for_demo(private=args.private_redis) as url:
        if args.policies:
            return asyncio.run(run_policies(url))
        return asyncio.run(Demo(args, url).run())


if __name__ == "__main__":
    sys.exit(main())
