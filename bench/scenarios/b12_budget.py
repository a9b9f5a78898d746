"""B12 throughput under a fleet-wide tokens-per-minute budget, as a fraction of the budget.

Two workers serve 20 sessions through the real langchain-openai client against the local stub,
which counts every reply's tokens (prompt + completion, as it reports them in the stream's usage).
The budget is small enough that the sessions always want more than it allows, so the figure is
how much of the budget the fleet manages to use (target ≥ 90 %) and must never exceed it.
Measured over a window that starts after the first burst (the bucket starts full).
"""

from __future__ import annotations

import asyncio
import time

from bench.env import Bench
from bench.report import Row, Sample, Target, fmt
from bench.scenarios.b3_handoff import MODEL, openai_env
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer

ID = "B12"
TPM = 12_000  # 200 tokens/s
BURST_S = 2.0


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    window_s = 8.0 if bench.quick else 30.0
    samples: list[Sample] = []
    with OpenAIStub() as stub:
        spec = bench.chatlane(
            "b12",
            model=MODEL,
            env=openai_env(stub),
            count=2,
            model_tpm=TPM,
            budget_burst_s=BURST_S,
            budget_reply_tokens=20,
        )
        async with bench.run(spec) as (side,), ChatProducer(settings=side.settings) as producer:
            for r in range(repeats):
                sessions = [f"b12-{r}-{i}" for i in range(20)]
                for s in sessions:
                    for i in range(60):
                        await producer.enqueue(s, f"{s} question {i}: what is the weather like today?")
                await asyncio.sleep(BURST_S + 1)
                t0 = time.monotonic()
                await asyncio.sleep(window_s)
                used = sum(n for t, n in stub.tokens if t0 <= t < t0 + window_s)
                allowed = TPM / 60 * window_s
                samples.append({"used": used, "allowed": allowed, "fraction": used / allowed, "window": window_s})
                # The bench's own Redis: drop the backlog rather than wait minutes for it to drain.
                for s in sessions:
                    await producer.redis.delete(producer.keys.session(s).inbox)
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    what = f"throughput under a {TPM:,} TPM budget (2 workers, 20 sessions, {fmt(m['window'])} s window)"
    return [
        Row(
            ID,
            what,
            f"{fmt(m['used'])} tokens of {fmt(m['allowed'])} allowed",
            "",
            fmt(m["fraction"], "", 2),
            Target(">=", 0.9, "≥ 0.90 of the budget, never over (+burst)"),
            m["fraction"],
        )
    ]
