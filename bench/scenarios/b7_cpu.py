"""B7 worker CPU while long generations are in flight and the worker still has free slots.

100 turns whose fake model streams for 5 s, on a worker with max_jobs 200, so arq keeps polling.
CPU is the worker process's user+system time over a window in the middle of the generations.
Beside it, bare arq holding 100 five-second jobs with the same knobs: arq keeps a running job in
its queue and re-checks it on every poll, which chatlane avoids by taking a claimed drain out of
the queue (claim.lua).
"""

from __future__ import annotations

import asyncio

from bench.cpu import CpuMeter
from bench.env import Bench, Side, paused
from bench.load import arq_pool, backlog, enqueue_arq_jobs, enqueue_chatlane
from bench.report import Row, Sample, Target, fmt, times
from producer import ChatProducer

ID = "B7"
SLOTS = 200


def shape(quick: bool) -> tuple[int, float, float]:
    """(generations, seconds each, measuring window seconds)."""
    return (20, 2.0, 0.8) if quick else (100, 5.0, 3.0)


async def in_flight_cpu(side: Side, start: object, seconds: float, window: float) -> float:
    """CPU share over ``window`` seconds, beginning 1 s after the work started (all of it running)."""
    await start  # type: ignore[misc]
    await asyncio.sleep(max(0.3, (seconds - window) / 2))
    cpu = CpuMeter(side.pids[0])
    await asyncio.sleep(window)
    share = cpu.share()
    await asyncio.sleep(seconds - window)  # let the generations end before the next side starts
    return share


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    n, seconds, window = shape(bench.quick)
    specs = [
        bench.chatlane("b7c", fake_delay_ms=int(seconds * 1000), max_jobs=SLOTS),
        bench.bare_arq("b7a", max_jobs=SLOTS),
    ]
    samples: list[Sample] = []
    async with bench.run(*specs) as (ours, arq):
        pool = await arq_pool(arq)
        try:
            async with ChatProducer(settings=ours.settings) as producer:
                for _ in range(repeats):
                    with paused(arq):
                        chatlane = await in_flight_cpu(ours, enqueue_chatlane(producer, backlog(n, 1)), seconds, window)
                    with paused(ours):
                        bare = await in_flight_cpu(
                            arq, enqueue_arq_jobs(pool, "sleep", [(seconds,)] * n), seconds, window
                        )
                    samples.append({"chatlane": chatlane, "arq": bare, "ratio": chatlane / bare})
        finally:
            await pool.aclose()
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    n, seconds, _ = shape(quick)
    return [
        Row(
            ID,
            f"worker CPU with {n} generations of {seconds:g} s in flight, max_jobs {SLOTS} (arq keeps polling)",
            fmt(100 * m["chatlane"], " % of a core", 1),
            f"bare arq, {n} running {seconds:g}-s jobs: {fmt(100 * m['arq'], ' %', 1)}",
            times(m["ratio"]),
            Target("<=", 0.10, "≤ 10 % of a core"),
            m["chatlane"],
        )
    ]
