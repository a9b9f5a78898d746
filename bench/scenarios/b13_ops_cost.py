"""B13 what metrics and traces cost on the hot path: worker CPU per turn with them and without.

One workload (B1b's shape: a few sessions with many turns each, fake model delay 0, so chatlane's
own per-turn work is all there is) drained by three workers in turn, each alone while the
others are stopped, sides taking turns going first:

- off: the Prometheus metrics are no-ops (``bench.worker_variant``, BENCH_WORKER_METRICS=off) and
  tracing is off: the reference;
- metrics: as shipped, metrics recorded, served on CHATLANE_METRICS_PORT and scraped every second
  during the drain;
- metrics + traces: the same with CHATLANE_TRACING=on, every span exported (batch processor) to
  a file by ``devkit.span_file`` (queue_wait, drain, model, commit per turn; the enqueue span is
  the producer's, not measured here).

CPU per turn is the worker process's user + system time over the drain (SIGCONT to the last
commit) divided by the turns; the ratios are per repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx

from bench.cpu import CpuMeter
from bench.env import Bench, Side, Spec, paused
from bench.load import backlog, chatlane_spans, enqueue_chatlane, wait_chatlane
from bench.report import Row, Sample, fmt, times
from bench.worker_variant import SWITCH
from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import free_port
from devkit.span_file import PATH_ENV
from producer import ChatProducer, Settings

ID = "B13"
SIDES = ("off", "metrics", "traced")


def shape(quick: bool) -> tuple[int, int]:
    """(sessions, turns each)."""
    return (3, 40) if quick else (20, 100)


class VariantProcess(WorkerProcess):
    """A chatlane worker run as ``python -m bench.worker_variant``."""

    def start(self) -> VariantProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker_variant"],
                env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self


def side_env(name: str, bench: Bench, metrics_port: int) -> dict[str, str]:
    if name == "off":
        return {SWITCH: "off"}
    env = {"CHATLANE_METRICS_PORT": str(metrics_port)}
    if name == "traced":
        spans = bench.log_dir / "b13-spans.jsonl"
        env |= {"CHATLANE_TRACING": "on", "OTEL_TRACES_EXPORTER": "chatlane_file", PATH_ENV: str(spans)}
    return env


@contextlib.asynccontextmanager
async def started(bench: Bench) -> AsyncIterator[dict[str, tuple[Side, int]]]:
    """One worker per side, each on its own key prefix: {name: (side, metrics port)}."""
    sides: dict[str, tuple[Side, int]] = {}
    try:
        for name in SIDES:
            spec: Spec = bench.chatlane(f"b13{name[0]}")
            port = free_port()
            env = worker_env(bench.server.url, spec.prefix, side_env(name, bench, port))
            proc = VariantProcess(env, bench.log_dir / f"b13-{name}-{spec.prefix}.log").start()
            sides[name] = (Side(spec, Settings(redis_url=bench.server.url, key_prefix=spec.prefix), [proc]), port)
        await bench._ready([s for s, _ in sides.values()], 60)
        yield sides
    finally:
        for side, _ in sides.values():
            side.procs[0].stop(timeout=10)


async def scrape(port: int, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{port}/metrics")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def drain_cpu_ms(bench: Bench, side: Side, port: int, scraped: bool, sessions: int, turns: int) -> float:
    """Worker CPU ms per turn over the drain of a fresh backlog."""
    n = sessions * turns
    async with ChatProducer(settings=side.settings) as producer:
        with paused(side):
            ids = await enqueue_chatlane(producer, backlog(sessions, turns, tag="b13"))
            worker = CpuMeter(side.pids[0])
        stop = asyncio.Event()
        scraper = asyncio.create_task(scrape(port, stop)) if scraped else None
        try:
            await wait_chatlane(bench.redis, side.keys, 60 + n / 20)
        finally:
            stop.set()
            if scraper is not None:
                await scraper
        cpu_ms = worker.seconds() * 1000 / n
    spans = await chatlane_spans(bench.redis, side.keys, [t for ts in ids.values() for t in ts])
    if any(not s.ok for s in spans):
        raise RuntimeError(f"B13: {sum(not s.ok for s in spans)} of {n} turns did not complete")
    return cpu_ms


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    sessions, turns = shape(bench.quick)
    samples: list[Sample] = []
    async with started(bench) as sides:
        for r in range(repeats):
            sample: Sample = {}
            for name in SIDES[r % 3 :] + SIDES[: r % 3]:
                side, port = sides[name]
                with paused(*(s for n, (s, _) in sides.items() if n != name)):
                    sample[name] = await drain_cpu_ms(bench, side, port, name != "off", sessions, turns)
            sample["metrics_ratio"] = sample["metrics"] / sample["off"]
            sample["traced_ratio"] = sample["traced"] / sample["metrics"]
            samples.append(sample)
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    sessions, turns = shape(quick)
    return [
        Row(
            ID,
            f"hot-path cost of Prometheus metrics: worker CPU per turn, {sessions} sessions × {turns} turns, "
            "fake model delay 0, metrics recorded and scraped every second",
            fmt(m["metrics"], " ms", 3),
            f"metrics as no-ops: {fmt(m['off'], ' ms', 3)}",
            times(m["metrics_ratio"]),
        ),
        Row(
            ID,
            "… and of OpenTelemetry traces (CHATLANE_TRACING=on, 4 spans per turn exported to a file), metrics on",
            fmt(m["traced"], " ms", 3),
            f"tracing off: {fmt(m['metrics'], ' ms', 3)}",
            times(m["traced_ratio"]),
        ),
    ]
