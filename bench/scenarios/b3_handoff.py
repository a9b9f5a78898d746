"""B3 same-session handoff seen from outside, through the real langchain-openai client.

A local OpenAI-compatible stub (TCP_NODELAY) records when each request arrives and when each
streamed reply ends. With a session's next turn already waiting, the gap from "reply n ended"
to "request n+1 arrived" is what the queue adds between turns. The floor is the same gap for
back-to-back calls of the bare client in its own process (``bench.openai_floor``), over
conversations of the same shape. Conversations run one at a time, alternating between
chatlane and the floor, so requests never mix and both see the same machine.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench.env import Bench, paused
from bench.load import backlog, enqueue_chatlane, wait_chatlane
from bench.report import Row, Sample, Target, fmt
from bench.stats import percentile
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer

ID = "B3"
MODEL = "openai:gpt-4o-mini"


def shape(quick: bool) -> tuple[int, int]:
    """(conversations per side, turns each): a realistic length; gaps are taken within one."""
    return (2, 6) if quick else (10, 20)


def openai_env(stub: OpenAIStub) -> dict[str, str]:
    return {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "bench"}


def gaps_ms(stub: OpenAIStub, first: int) -> list[float]:
    """Reply-end → next-request gaps of the one conversation that began at request ``first``."""
    with stub.lock:
        received, finished = stub.received_at[first:], stub.finished_at[first:]
    return [(received[i + 1] - finished[i]) * 1000 for i in range(len(received) - 1)]


@asynccontextmanager
async def floor_client(stub: OpenAIStub, turns: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.openai_floor", stub.base_url, str(turns),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def floor_conversation(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    if (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() != b"done":
        raise RuntimeError("bench.openai_floor failed")


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    conversations, turns = shape(bench.quick)
    samples: list[Sample] = []
    with OpenAIStub() as stub:
        async with (
            bench.run(bench.chatlane("b3", model=MODEL, env=openai_env(stub))) as (side,),
            ChatProducer(settings=side.settings) as producer,
            floor_client(stub, turns) as floor,
        ):
            for _ in range(repeats):
                gaps: dict[str, list[float]] = {"chatlane": [], "floor": []}
                for _ in range(conversations):
                    first = len(stub.received_at)
                    with paused(side):
                        await enqueue_chatlane(producer, backlog(1, turns))
                    await wait_chatlane(bench.redis, side.keys, 60)
                    gaps["chatlane"] += gaps_ms(stub, first)
                    first = len(stub.received_at)
                    await floor_conversation(floor)
                    gaps["floor"] += gaps_ms(stub, first)
                s: Sample = {}
                for name, g in gaps.items():
                    s[f"{name}.p50"] = percentile(g, 50)
                    s[f"{name}.p99"] = percentile(g, 99)
                s["p50_over_floor"] = s["chatlane.p50"] - s["floor.p50"]
                s["p99_over_floor"] = s["chatlane.p99"] - s["floor.p99"]
                samples.append(s)
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    conversations, turns = shape(quick)

    def ms(v: float) -> str:
        return fmt(v, " ms", 1)

    def diff(v: float) -> str:
        return fmt(v, " ms", 1) if v < 0 else "+" + fmt(v, " ms", 1)

    return [
        Row(
            ID,
            f"handoff: reply n ends → request n+1 arrives (openai client → local stub), "
            f"{conversations} conversations × {turns} queued turns",
            f"p99 {ms(m['chatlane.p99'])} (p50 {ms(m['chatlane.p50'])})",
            f"bare client back-to-back: p99 {ms(m['floor.p99'])} (p50 {ms(m['floor.p50'])})",
            f"p50 {diff(m['p50_over_floor'])}",
            Target("<=", 10.0, "p99 ≤ 10 ms"),
            m["chatlane.p99"],
        ),
        Row(
            ID,
            "… p99 above the bare-client floor",
            ms(m["chatlane.p99"]),
            ms(m["floor.p99"]),
            f"p99 {diff(m['p99_over_floor'])}",
            Target("<=", 3.0, "≤ floor + 3 ms"),
            m["p99_over_floor"],
        ),
    ]
