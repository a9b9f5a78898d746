"""B5 history growth: latency of a turn in an idle session whose history holds 10 000 messages,
against one whose history holds 10 (the target), and one whose history holds 1 000 (both longer
than the window: what is left is the window's cost, not the history's length).

The worker polls every 2 ms here so that arq's poll wait (the same for both) stays small next
to the turn's own work; latency is enqueue → ``wait`` returns (woken by the turn's end entry),
fake model delay 0. Messages are chat-sized (user 150, assistant 600 characters); the model sees
the token-bounded window (``history_max_tokens``), so a long history costs its window, not its
length.
"""

from __future__ import annotations

import random
import time
import uuid

from bench.env import Bench
from bench.load import prefill
from bench.report import Row, Sample, Target, fmt, times
from bench.stats import median
from producer import ChatProducer

ID = "B5"
LONG, MID, SHORT = 10_000, 1_000, 10
USER_CHARS, AI_CHARS = 150, 600
POLL_S = 0.002


async def latency_ms(producer: ChatProducer, session: str) -> float:
    t0 = time.perf_counter()
    st = await producer.enqueue(session, "u" * USER_CHARS)
    await producer.wait(st.turn_id, 30)
    return (time.perf_counter() - t0) * 1000


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    n = 10 if bench.quick else 60
    samples: list[Sample] = []
    async with (
        bench.run(bench.chatlane("b5", poll_delay_s=POLL_S)) as (side,),
        ChatProducer(settings=side.settings) as producer,
    ):
        # A few long sessions per size, reused: each turn adds 2 messages, nothing next to their
        # length. A short one is new each time, so it stays at 10.
        reused = {
            "long": [f"b5-long-{i}" for i in range(2 if bench.quick else 4)],
            "mid": [f"b5-mid-{i}" for i in range(2 if bench.quick else 4)],
        }
        for name, sessions in reused.items():
            for s in sessions:
                size = long_size(bench.quick) if name == "long" else MID
                await prefill(bench.redis, side.keys, s, size, USER_CHARS, AI_CHARS)
        for _ in range(repeats):
            lat: dict[str, list[float]] = {"long": [], "mid": [], "short": []}
            for i in range(n):
                short = f"b5-short-{uuid.uuid4().hex[:8]}"
                await prefill(bench.redis, side.keys, short, SHORT, USER_CHARS, AI_CHARS)
                order = [("long", reused["long"][i % len(reused["long"])]),
                         ("mid", reused["mid"][i % len(reused["mid"])]), ("short", short)]  # fmt: skip
                random.shuffle(order)  # no size always goes first
                for name, session in order:
                    lat[name].append(await latency_ms(producer, session))
            p50 = {name: median(v) for name, v in lat.items()}
            ratios = {"ratio": p50["long"] / p50["short"], "vs_mid": p50["long"] / p50["mid"]}
            samples.append(p50 | ratios | {"window": side.settings.history_max_tokens})
    return samples


def long_size(quick: bool) -> int:
    return 2_000 if quick else LONG


def rows(m: Sample, quick: bool) -> list[Row]:
    long = long_size(quick)
    return [
        Row(
            ID,
            f"turn latency (p50, idle session, enqueue → done, poll {POLL_S * 1000:g} ms): "
            f"{long:,}-message history vs {SHORT}",
            fmt(m["long"], " ms", 1),
            f"{SHORT}-message history {fmt(m['short'], ' ms', 1)}",
            times(m["ratio"]),
            Target("<=", 1.3, "≤ 1.3×"),
            m["ratio"],
        ),
        Row(
            ID,
            f"… {long:,} vs {MID:,} messages (both fill the {fmt(m['window'])}-token window)",
            fmt(m["long"], " ms", 1),
            f"{MID:,}-message history {fmt(m['mid'], ' ms', 1)}",
            times(m["vs_mid"]),
        ),
    ]
