"""Fault injection and recovery measurement, shared by the fault tests and the soak.

Everything here reads what chatlane itself keeps in Redis (lease tokens, the workers ZSET, the
stats hash), so a measurement needs no cooperation from the processes under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from redis.asyncio import Redis

from chatlane.jobs import job_key
from chatlane.keys import Keys
from producer import ChatProducer, RedisUnavailable, ReplicationTimeout, TurnStatus


def worker_pid(token_or_worker_id: str) -> int:
    """The pid in a lease token ``<fence>:<host>.<pid>.<hex>`` or a worker id ``<host>.<pid>.<hex>``."""
    worker_id = token_or_worker_id.split(":", 1)[-1]
    return int(worker_id.rsplit(".", 2)[1])


async def leases(redis: Redis, keys: Keys, sessions: Iterable[str]) -> dict[str, str]:
    """session -> lease token, for the given sessions that are held right now."""
    names = list(sessions)
    async with redis.pipeline(transaction=False) as pipe:
        for s in names:
            pipe.get(keys.session(s).lease)
        tokens = await pipe.execute()
    return {s: t for s, t in zip(names, tokens, strict=True) if t}


async def registered_pids(redis: Redis, keys: Keys) -> set[int]:
    """Pids of workers that have sent a heartbeat (dead ones linger; compare with live pids)."""
    return {worker_pid(w) for w in await redis.zrange(keys.workers, 0, -1)}


async def wait_registered(redis: Redis, keys: Keys, pids: Iterable[int], timeout: float = 30.0) -> None:
    """Until every pid has started its chatlane runtime (so it polls and can take over)."""
    want = set(pids)
    deadline = time.monotonic() + timeout
    while not want <= await registered_pids(redis, keys):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers {sorted(want)} did not come up within {timeout:g}s")
        await asyncio.sleep(0.05)


async def wait_resumed(
    redis: Redis,
    keys: Keys,
    held: dict[str, str],
    since: float,
    timeout: float,
    *,
    renewal_counts: bool = False,
    interval: float = 0.02,
) -> dict[str, float]:
    """For each session whose lease was ``held[session]`` when a fault hit, the seconds from
    ``since`` (``time.monotonic()``) until it is served again: another holder has the lease, or
    nothing is left to do, or (with ``renewal_counts``, for faults of Redis rather than of the
    holder) the same holder renewed the lease, so it is alive and at work.

    A session still waiting at ``timeout`` is reported with the time waited so far, so a caller's
    bound check fails rather than the measurement hanging.
    """
    waiting = dict(held)
    last_pttl: dict[str, int] = {}
    resumed: dict[str, float] = {}
    deadline = since + timeout
    while waiting:
        now = time.monotonic()
        async with redis.pipeline(transaction=False) as pipe:
            for s in waiting:
                sk = keys.session(s)
                pipe.get(sk.lease)
                pipe.llen(sk.inbox)
                pipe.pttl(sk.lease)
            res = await pipe.execute()
        for i, (s, old) in enumerate(list(waiting.items())):
            token, queued, pttl = res[3 * i : 3 * i + 3]
            renewed = renewal_counts and token == old and pttl > last_pttl.get(s, pttl)
            last_pttl[s] = pttl
            if (token and token != old) or queued == 0 or renewed or now >= deadline:
                resumed[s] = now - since
                del waiting[s]
        if waiting:
            await asyncio.sleep(interval)
    return resumed


async def lose_drain_job(redis: Redis, keys: Keys, session: str) -> bool:
    """Delete the session's queued drain job from arq's queue by hand (what a lost job looks like)."""
    job_id = await redis.get(keys.session(session).drain_job)
    if not job_id or not await redis.zrem(keys.queue, job_id):
        return False
    await redis.delete(job_key(job_id))
    return True


async def stats(redis: Redis, keys: Keys) -> dict[str, int]:
    raw: dict[str, str] = await redis.hgetall(keys.stats)  # type: ignore[misc]
    return {k: int(v) for k, v in raw.items()}


async def enqueue_until_acked(
    producer: ChatProducer, session: str, text: str, idempotency_key: str, timeout: float, retry_s: float = 0.2
) -> tuple[TurnStatus, int]:
    """Enqueue the way a careful client does through outages: retry with the same idempotency
    key until Redis acknowledges, so a turn whose enqueue ran but whose reply was lost is not
    sent twice. Returns the status and how many attempts failed (RedisUnavailable, or
    ReplicationTimeout: on the primary but not on enough replicas yet)."""
    deadline = time.monotonic() + timeout
    failures = 0
    while True:
        try:
            return (await producer.enqueue(session, text, idempotency_key=idempotency_key)), failures
        except (RedisUnavailable, ReplicationTimeout):
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(retry_s)
