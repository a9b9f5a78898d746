from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import RedisServer
from producer import ChatProducer, Settings

# Fast but realistic defaults for test workers; tests override per case.
TEST_WORKER_ENV = {
    "CHATLANE_LEASE_TTL_MS": "1500",
    "CHATLANE_SWEEP_INTERVAL_S": "1",
    "CHATLANE_RETRY_BACKOFF_S": "0.05",
    "CHATLANE_MAX_ATTEMPTS": "3",
    "CHATLANE_POLL_DELAY_S": "0.01",
    "CHATLANE_FAKE_DELAY_MS": "20",
    "CHATLANE_MODEL_TIMEOUT_S": "5",
    "CHATLANE_SHUTDOWN_GRACE_S": "5",
}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def sid(name: str = "s") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Fleet:
    """Worker processes for one test, all on one key prefix."""

    def __init__(self, redis_url: str, prefix: str, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []
        self.settings = Settings(redis_url=redis_url, key_prefix=prefix)

    def start(self, n: int = 1, raw_env: dict[str, str] | None = None, **env: object) -> list[WorkerProcess]:
        """Start ``n`` workers; keyword settings become ``CHATLANE_<NAME>`` variables."""
        extra = {**TEST_WORKER_ENV, **{f"CHATLANE_{k.upper()}": str(v) for k, v in env.items()}, **(raw_env or {})}
        new = [
            WorkerProcess(
                worker_env(self.redis_url, self.prefix, extra), self.log_dir / f"worker{len(self.workers) + i}.log"
            )
            for i in range(n)
        ]
        for w in new:
            w.start()
        self.workers.extend(new)
        return new

    def by_pid(self, pid: int) -> WorkerProcess:
        return next(w for w in self.workers if w.pid == pid)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-4000:]}" for w in self.workers)


@pytest.fixture
def fleet_factory(
    redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Fleet]]:
    fleets: list[Fleet] = []

    def make() -> Fleet:
        f = Fleet(redis_server.url, new_prefix(), tmp_path / f"fleet{len(fleets)}")
        fleets.append(f)
        return f

    yield make
    for f in fleets:
        f.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for f in fleets:
            print(f.logs())


@pytest.fixture
def fleet(fleet_factory: Callable[[], Fleet]) -> Fleet:
    return fleet_factory()


@pytest.fixture
async def producer(fleet: Fleet) -> AsyncIterator[ChatProducer]:
    async with ChatProducer(settings=fleet.settings) as p:
        yield p


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_server.url, decode_responses=True)
    yield r
    await r.aclose()


async def keys_with_prefix(r: Redis, prefix: str) -> set[str]:
    return {k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)}


async def wait_async(cond: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = cond()
        if hasattr(res, "__await__"):
            res = await res  # type: ignore[misc]
        if res:
            return True
        await asyncio.sleep(interval)
    return False


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


__all__ = ["Fleet", "keys_with_prefix", "sid", "wait_async"]
