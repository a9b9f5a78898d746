"""The benchmark's processes: one private redis-server for the whole run, and arq worker
processes started per scenario (chatlane's, or the bare-arq baselines of ``bench.baselines``).

Every side of a comparison is configured through the same ``CHATLANE_*`` settings, so a
baseline gets exactly the knobs (poll delay, max_jobs, fake model) chatlane gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from chatlane.keys import Keys
from devkit.processes import CHATLANE_APP, WorkerProcess, worker_env
from devkit.redis_server import RedisServer
from producer import Settings

CHATLANE = CHATLANE_APP
BARE_ARQ = "bench.baselines.WorkerSettings"
# arq writes this key on its first poll: a worker that wrote it is consuming its queue.
_HEALTH_SUFFIX = ":health-check"


@dataclass(frozen=True)
class Spec:
    """What to start: ``count`` processes of arq settings class ``app`` on key prefix ``prefix``."""

    app: str
    prefix: str
    settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    count: int = 1


@dataclass
class Side:
    """One implementation under test: its worker processes and the settings they run with."""

    spec: Spec
    settings: Settings
    procs: list[WorkerProcess]

    @property
    def keys(self) -> Keys:
        return Keys(self.spec.prefix)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def new_prefix(tag: str) -> str:
    return f"b{tag}{uuid.uuid4().hex[:6]}"


class Bench:
    def __init__(self, log_dir: Path, *, quick: bool) -> None:
        self.quick = quick
        self.log_dir = log_dir
        self.server = RedisServer()
        self.redis: Redis = None  # type: ignore[assignment]  # set in __aenter__
        self._started = 0

    async def __aenter__(self) -> Bench:
        self.server.start()
        self.redis = Redis.from_url(self.server.url, decode_responses=True)
        return self

    @property
    def redis_pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    async def __aexit__(self, *exc: object) -> None:
        await self.redis.aclose()
        self.server.close()

    def chatlane(self, tag: str, *, env: dict[str, str] | None = None, count: int = 1, **settings: Any) -> Spec:
        return Spec(CHATLANE, new_prefix(tag), settings, env or {}, count)

    def bare_arq(self, tag: str, *, count: int = 1, **settings: Any) -> Spec:
        return Spec(BARE_ARQ, new_prefix(tag), settings, {}, count)

    @contextlib.asynccontextmanager
    async def run(self, *specs: Spec, timeout: float = 60.0) -> AsyncIterator[list[Side]]:
        """Start every spec's processes at once, wait until all consume their queues, stop them on exit."""
        sides: list[Side] = []
        try:
            for spec in specs:
                extra = {f"CHATLANE_{k.upper()}": str(v) for k, v in spec.settings.items()} | spec.env
                env = worker_env(self.server.url, spec.prefix, extra)
                settings = Settings(redis_url=self.server.url, key_prefix=spec.prefix, **spec.settings)
                await self.redis.delete(Keys(spec.prefix).queue + _HEALTH_SUFFIX)
                procs = []
                for _ in range(spec.count):
                    self._started += 1
                    log = self.log_dir / f"{self._started:03d}-{spec.prefix}.log"
                    procs.append(WorkerProcess(env, log, app=spec.app).start())
                sides.append(Side(spec, settings, procs))
            await self._ready(sides, timeout)
            yield sides
        finally:
            for side in sides:
                for p in side.procs:
                    p.signal(signal.SIGCONT)
                    p.signal(signal.SIGTERM)
            for side in sides:
                for p in side.procs:
                    p.stop(timeout=10)

    async def _ready(self, sides: list[Side], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for side in sides:
            # Every process registers in the workers ZSET at startup; arq writes the health key
            # on its first poll of the queue.
            health = side.keys.queue + _HEALTH_SUFFIX
            while await self.redis.zcard(side.keys.workers) < len(side.procs) or not await self.redis.exists(health):
                dead = [p for p in side.procs if not p.alive()]
                if dead or time.monotonic() > deadline:
                    log = (dead or side.procs)[0].log()[-3000:]
                    raise RuntimeError(f"worker for {side.spec.prefix} did not start:\n{log}")
                await asyncio.sleep(0.05)


@contextlib.contextmanager
def paused(*sides: Side) -> Iterator[None]:
    """Stop the workers (SIGSTOP) while a backlog is written, so every side starts from the same
    full queue and its rate is the worker's alone, not the enqueuer's."""
    procs = [p for s in sides for p in s.procs]
    for p in procs:
        p.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for p in procs:
            p.signal(signal.SIGCONT)
