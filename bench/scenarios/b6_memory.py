"""B6 Redis memory per completed turn, against the raw bytes of its two messages.

The worker runs with short retention (turn records, idempotency keys and token streams expire
after a few seconds instead of a day), so the run sees what a completed turn leaves behind for
good: its history entries plus per-session keys. Memory is ``MEMORY USAGE`` summed over every
key of the run's prefix (arq's keys are gone: chatlane keeps no job results), once right after
the turns completed (what is held during retention) and once after the TTLs passed.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bench.env import Bench, paused
from bench.load import backlog, enqueue_chatlane, wait_chatlane
from bench.report import Row, Sample, Target, fmt, times
from producer import ChatProducer, TurnState

ID = "B6"
TTL_S = 4
USER_CHARS = 150


async def prefix_bytes(redis: Redis, prefix: str) -> int:
    """Bytes Redis attributes to the prefix's keys; reading each key also expires it if due."""
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.memory_usage(k, samples=0)
        sizes = await pipe.execute()
    return sum(s for s in sizes if s)


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    sessions, turns = (5, 4) if bench.quick else (20, 10)
    samples: list[Sample] = []
    spec = bench.chatlane("b6", turn_ttl_s=TTL_S, stream_ttl_s=TTL_S)
    async with bench.run(spec) as (side,), ChatProducer(settings=side.settings) as producer:
        for r in range(repeats):
            # A prefix per repeat would need a worker per repeat; sessions are new each time, so
            # memory is measured as the growth of the prefix's total.
            before = await prefix_bytes(bench.redis, side.spec.prefix)
            work = {s: ["x" * USER_CHARS for _ in texts] for s, texts in backlog(sessions, turns, tag=f"r{r}").items()}
            with paused(side):
                ids = await enqueue_chatlane(producer, work)
            await wait_chatlane(bench.redis, side.keys, 60)
            retained = await prefix_bytes(bench.redis, side.spec.prefix) - before
            raw = 0
            for tids in ids.values():
                for tid in tids:
                    st = await producer.status(tid)
                    if st.state is not TurnState.completed or st.reply is None:
                        raise RuntimeError(f"B6: turn {tid} is {st.state.value}")
                    raw += len(st.text.encode()) + len(st.reply.encode())
            await asyncio.sleep(TTL_S + 1)
            left = await prefix_bytes(bench.redis, side.spec.prefix) - before
            n = sessions * turns
            samples.append(
                {
                    "raw_per_turn": raw / n,
                    "left_per_turn": left / n,
                    "retained_per_turn": retained / n,
                    "ratio": left / raw,
                    "retained_ratio": retained / raw,
                }
            )
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    return [
        Row(
            ID,
            "Redis memory per completed turn after its records' TTL (history + per-session keys)",
            fmt(m["left_per_turn"], " B/turn"),
            f"raw message bytes {fmt(m['raw_per_turn'], ' B/turn')} (user {USER_CHARS} chars + fake reply)",
            times(m["ratio"]),
            Target("<=", 3.0, "≤ 3×"),
            m["ratio"],
        ),
        Row(
            ID,
            "… while the turn record and token stream are retained (default 24 h / 10 min)",
            fmt(m["retained_per_turn"], " B/turn"),
            f"raw {fmt(m['raw_per_turn'], ' B/turn')}",
            times(m["retained_ratio"]),
        ),
    ]
