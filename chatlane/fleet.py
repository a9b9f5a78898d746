"""The fleet as Redis sees it: workers alive, queued drain jobs, pending sessions, the counters.

Read by the API's /metrics (producer/metrics.py) and ``chatlane status`` (producer/cli.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.keys import WORKER_HEARTBEAT_S, Keys

# Five missed heartbeats mean a worker is gone (the same rule as the API's /readyz).
ALIVE_WITHIN_S = 5 * WORKER_HEARTBEAT_S


@dataclass(frozen=True)
class FleetStatus:
    workers_alive: int
    queue_depth: int  # jobs in arq's queue (drains waiting for a slot, delayed hand-backs, sweeps)
    sessions_pending: int  # sessions that may have waiting turns
    counters: dict[str, int]  # the ``stats`` hash: stale_commits_rejected, sweep_requeued, ...


async def read_fleet(redis: Redis, keys: Keys) -> FleetStatus:
    since_ms = int((time.time() - ALIVE_WITHIN_S) * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.workers, since_ms, "+inf")
        pipe.zcard(keys.queue)
        pipe.scard(keys.pending)
        pipe.hgetall(keys.stats)
        alive, depth, pending, stats = await pipe.execute()
    return FleetStatus(int(alive), int(depth), int(pending), {str(k): int(v) for k, v in sorted(stats.items())})
