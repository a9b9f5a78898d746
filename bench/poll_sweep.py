"""``python -m bench --poll-sweep``: the trade-off behind the ``poll_delay_s`` default.

arq polls its queue every ``poll_delay``; an enqueue on an idle worker waits for the next poll,
so the delay is the floor of B4's latency, and each poll costs CPU (idle, and with long
generations in flight, B7). For each candidate delay this starts fresh workers and measures
B4's p50/p99, the idle worker's CPU, and B7's CPU, with the scenarios' own code.
"""

from __future__ import annotations

from bench.env import Bench
from bench.load import backlog, enqueue_chatlane
from bench.report import fmt
from bench.scenarios import b4_idle_latency as b4
from bench.scenarios import b7_cpu as b7
from bench.scenarios.b3_handoff import MODEL, openai_env
from bench.stats import percentile
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer

DELAYS_S = (0.005, 0.01, 0.02, 0.05, 0.1)


async def point(bench: Bench, stub: OpenAIStub, poll: float) -> tuple[float, float, float, float]:
    """(B4 p50 ms, B4 p99 ms, idle CPU share, B7 CPU share) at one poll delay."""
    samples = 20 if bench.quick else 150
    spec = bench.chatlane("ps4", model=MODEL, env=openai_env(stub), poll_delay_s=poll)
    async with bench.run(spec) as (side,), ChatProducer(settings=side.settings) as producer:
        idle = await b4.idle_cpu(side, 1.0 if bench.quick else 3.0)
        lat = await b4.latencies_ms(producer, stub, samples, max(2 * poll, 0.02))
    n, seconds, window = b7.shape(bench.quick)
    spec = bench.chatlane("ps7", fake_delay_ms=int(seconds * 1000), max_jobs=b7.SLOTS, poll_delay_s=poll)
    async with bench.run(spec) as (side,), ChatProducer(settings=side.settings) as producer:
        busy = await b7.in_flight_cpu(side, enqueue_chatlane(producer, backlog(n, 1)), seconds, window)
    return percentile(lat, 50), percentile(lat, 99), idle, busy


async def run(bench: Bench) -> str:
    lines = [
        "poll_delay trade-off (one worker per point; B4 through the openai stub, fresh sessions)",
        "",
        "| poll_delay | B4 p50 | B4 p99 | idle worker CPU | B7 worker CPU (100 × 5 s in flight) |",
        "|---|---|---|---|---|",
    ]
    with OpenAIStub() as stub:
        for poll in DELAYS_S:
            p50, p99, idle, busy = await point(bench, stub, poll)
            lines.append(
                f"| {poll * 1000:g} ms | {fmt(p50, ' ms', 1)} | {fmt(p99, ' ms', 1)} "
                f"| {fmt(100 * idle, ' %', 1)} | {fmt(100 * busy, ' %', 1)} |"
            )
    return "\n".join(lines)
