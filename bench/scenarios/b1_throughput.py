"""B1 throughput with a zero-delay fake model, one worker process per side.

(a) many sessions with one turn each, (b) few sessions with many turns each. Every side gets
the same backlog while its worker is stopped, then drains it alone (the other sides stay
stopped); its rate comes from its own start/finish timestamps (chatlane: the turn records; arq:
the job results). Sides take turns going first, since a noisy machine drifts during a run.
"""

from __future__ import annotations

from bench.cpu import CpuMeter
from bench.env import Bench, Side, paused
from bench.load import (
    arq_pool,
    arq_results,
    arq_spans,
    backlog,
    chatlane_spans,
    enqueue_arq,
    enqueue_arq_jobs,
    enqueue_chatlane,
    wait_arq,
    wait_chatlane,
)
from bench.report import Row, Sample, Target, fmt, plural, times
from bench.stats import rate
from producer import ChatProducer

ID = "B1"
SIDES = ("chatlane", "turn", "noop")  # chatlane; arq, one job per turn; arq, no-op job


def shapes(quick: bool) -> dict[str, tuple[int, int]]:
    """(sessions, turns each) per shape."""
    if quick:
        return {"a": (60, 1), "b": (3, 20)}
    return {"a": (1000, 1), "b": (10, 100)}


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    specs = [bench.chatlane("b1c"), bench.bare_arq("b1t"), bench.bare_arq("b1n")]
    samples: list[Sample] = []
    async with bench.run(*specs) as sides:
        by_name = dict(zip(SIDES, sides, strict=True))
        for r in range(repeats):
            sample: Sample = {}
            for shape, (sessions, turns) in shapes(bench.quick).items():
                for name in SIDES[r % 3 :] + SIDES[: r % 3]:
                    with paused(*(s for n, s in by_name.items() if n != name)):
                        figures = await _drain(bench, name, by_name[name], sessions, turns)
                    sample |= {f"{shape}.{name}.{k}": v for k, v in figures.items()}
                sample[f"{shape}.vs_turn"] = sample[f"{shape}.chatlane.rate"] / sample[f"{shape}.turn.rate"]
                sample[f"{shape}.vs_noop"] = sample[f"{shape}.chatlane.rate"] / sample[f"{shape}.noop.rate"]
                sample[f"{shape}.cpu_vs_turn"] = sample[f"{shape}.chatlane.cpu_ms"] / sample[f"{shape}.turn.cpu_ms"]
            samples.append(sample)
    return samples


async def _drain(bench: Bench, name: str, side: Side, sessions: int, turns: int) -> dict[str, float]:
    """Write the backlog with the side's worker stopped, let it drain: turns/s, and CPU ms per
    turn of the worker and of Redis."""
    work = backlog(sessions, turns, tag=name)
    n = sessions * turns
    timeout = 60 + n / 20
    if name == "chatlane":
        async with ChatProducer(settings=side.settings) as producer:
            with paused(side):
                ids = await enqueue_chatlane(producer, work)
            worker, redis = CpuMeter(side.pids[0]), CpuMeter(bench.redis_pid)
            await wait_chatlane(bench.redis, side.keys, timeout)
        spans = await chatlane_spans(bench.redis, side.keys, [t for ts in ids.values() for t in ts])
    else:
        pool = await arq_pool(side)
        try:
            with paused(side):
                if name == "noop":
                    jobs = await enqueue_arq_jobs(pool, "noop", [() for _ in range(n)])
                else:
                    jobs = [j for pairs in (await enqueue_arq(pool, "turn", work)).values() for j, _ in pairs]
            worker, redis = CpuMeter(side.pids[0]), CpuMeter(bench.redis_pid)
            await wait_arq(bench.redis, jobs, timeout)
        finally:
            await pool.aclose()
        spans = arq_spans(await arq_results(bench.redis, jobs))
    bad = sum(not s.ok for s in spans)
    if bad:
        raise RuntimeError(f"B1 {name}: {bad} of {n} turns did not complete")
    return {
        "rate": rate(n, ((s.started, s.finished) for s in spans)),
        "cpu_ms": worker.seconds() * 1000 / n,
        "redis_ms": redis.seconds() * 1000 / n,
    }


def rows(m: Sample, quick: bool) -> list[Row]:
    out = []
    for shape, (sessions, turns) in shapes(quick).items():
        goal = Target(">=", 1.0, "≥ 1.0× job-per-turn") if shape == "a" else Target(">=", 4.0, "≥ 4× job-per-turn")

        def cpu(side: str, s: str = shape) -> str:
            return f"{fmt(m[f'{s}.{side}.cpu_ms'], ' ms', 2)} (Redis {fmt(m[f'{s}.{side}.redis_ms'], ' ms', 2)})"

        out += [
            Row(
                f"B1{shape}",
                f"throughput, {sessions:,} {plural(sessions, 'session')} × {turns} {plural(turns, 'turn')}, "
                "fake model delay 0, 1 worker",
                fmt(m[f"{shape}.chatlane.rate"], " turns/s"),
                f"arq job per turn: {fmt(m[f'{shape}.turn.rate'], ' turns/s')}",
                times(m[f"{shape}.vs_turn"]),
                goal,
                m[f"{shape}.vs_turn"],
            ),
            Row(
                f"B1{shape}",
                "… against the bare-arq floor",
                fmt(m[f"{shape}.chatlane.rate"], " turns/s"),
                f"arq no-op job: {fmt(m[f'{shape}.noop.rate'], ' jobs/s')}",
                times(m[f"{shape}.vs_noop"]),
            ),
            Row(
                f"B1{shape}",
                "… CPU per turn, worker (Redis)",
                cpu("chatlane"),
                f"job per turn {cpu('turn')}; no-op {cpu('noop')}",
                times(m[f"{shape}.cpu_vs_turn"]),
            ),
        ]
    return out
