"""B4 idle enqueue → model call start, through the real langchain-openai client.

The worker is idle; the bench enqueues one turn and the OpenAI stub (in this process, same
clock) records when the model request arrives. Between samples the bench waits for the turn to
finish and then a random pause, so enqueues land at random phases of arq's poll cycle (the
poll delay is the floor of this latency). The worker's idle CPU is measured before sampling.
"""

from __future__ import annotations

import asyncio
import random
import time

from bench.cpu import CpuMeter
from bench.env import Bench, Side
from bench.report import Row, Sample, Target, fmt
from bench.scenarios.b3_handoff import MODEL, openai_env
from bench.stats import percentile
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer

ID = "B4"


def samples_per_repeat(quick: bool) -> int:
    return 15 if quick else 100


async def idle_cpu(side: Side, seconds: float) -> float:
    cpu = CpuMeter(side.pids[0])
    await asyncio.sleep(seconds)
    return cpu.share()


async def latencies_ms(producer: ChatProducer, stub: OpenAIStub, n: int, max_pause_s: float) -> list[float]:
    out = []
    run = f"b4-{random.getrandbits(32):x}"
    for i in range(n):
        seen = len(stub.received_at)
        t0 = time.perf_counter()
        # A new session each time: the openai SDK's request building grows with the history
        # (B3 shows it); this figure is about the queue.
        st = await producer.enqueue(f"{run}-{i}", "hello, how are you today?")
        await producer.wait(st.turn_id, 30)
        out.append((stub.received_at[seen] - t0) * 1000)
        await asyncio.sleep(random.uniform(0, max_pause_s))
    return out


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    samples: list[Sample] = []
    with OpenAIStub() as stub:
        async with (
            bench.run(bench.chatlane("b4", model=MODEL, env=openai_env(stub))) as (side,),
            ChatProducer(settings=side.settings) as producer,
        ):
            poll = side.settings.poll_delay_s
            for _ in range(repeats):
                idle = await idle_cpu(side, 1.0 if bench.quick else 3.0)
                lat = await latencies_ms(producer, stub, samples_per_repeat(bench.quick), 2 * poll)
                samples.append(
                    {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "idle_cpu": idle, "poll_ms": poll * 1000}
                )
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    what = f"idle enqueue → model request at the stub, poll_delay {fmt(m['poll_ms'], ' ms')}"
    return [
        Row(ID, what + ": p50", fmt(m["p50"], " ms", 1), "", "", Target("<=", 15.0, "p50 ≤ 15 ms"), m["p50"]),
        Row(ID, "… p99", fmt(m["p99"], " ms", 1), "", "", Target("<=", 50.0, "p99 ≤ 50 ms"), m["p99"]),
        Row(ID, "… idle worker CPU (the price of polling)", fmt(100 * m["idle_cpu"], " % of a core", 1)),
    ]
