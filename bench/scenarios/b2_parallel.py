"""B2 parallel efficiency: many sessions with a slow model on one worker process.

Ideal throughput is min(sessions, slots) / delay; a session's turns are serial, so the ideal
run takes turns × delay. Efficiency = measured rate / ideal rate, from the turn records.
"""

from __future__ import annotations

from bench.cpu import CpuMeter
from bench.env import Bench, paused
from bench.load import backlog, chatlane_spans, enqueue_chatlane, wait_chatlane
from bench.report import Row, Sample, Target, fmt
from bench.stats import rate
from producer import ChatProducer

ID = "B2"
DELAY_MS = 200
SLOTS = 100


def shape(quick: bool) -> tuple[int, int]:
    return (20, 3) if quick else (100, 5)


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    sessions, turns = shape(bench.quick)
    samples: list[Sample] = []
    async with (
        bench.run(bench.chatlane("b2", fake_delay_ms=DELAY_MS, max_jobs=SLOTS)) as (side,),
        ChatProducer(settings=side.settings) as producer,
    ):
        for _ in range(repeats):
            with paused(side):
                ids = await enqueue_chatlane(producer, backlog(sessions, turns))
            cpu = CpuMeter(side.pids[0])
            await wait_chatlane(bench.redis, side.keys, 60)
            cpu_share = cpu.share()
            spans = await chatlane_spans(bench.redis, side.keys, [t for ts in ids.values() for t in ts])
            measured = rate(len(spans), ((s.started, s.finished) for s in spans))
            ideal = min(sessions, SLOTS) / (DELAY_MS / 1000)
            samples.append({"rate": measured, "ideal": ideal, "efficiency": measured / ideal, "cpu": cpu_share})
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    sessions, turns = shape(quick)
    return [
        Row(
            ID,
            f"parallel efficiency, {sessions} sessions × {turns} turns, delay {DELAY_MS} ms, max_jobs {SLOTS}",
            f"{fmt(m['rate'], ' turns/s')} (worker CPU {fmt(100 * m['cpu'], '%')})",
            f"ideal min(sessions, slots)/delay = {fmt(m['ideal'], '/s')}",
            fmt(100 * m["efficiency"], " %"),
            Target(">=", 0.9, "≥ 90 %"),
            m["efficiency"],
        )
    ]
