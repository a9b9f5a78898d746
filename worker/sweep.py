"""Cron job that recovers sessions nobody is serving (dead holder, lost drain job)."""

from __future__ import annotations

import logging
from typing import Any

from worker.runtime import RUNTIME, Runtime

log = logging.getLogger("chatlane.sweep")
_BATCH = 500


async def sweep(ctx: dict[str, Any]) -> int:
    """Queue a drain for every pending session that has no lease and no live drain job."""
    rt: Runtime = ctx[RUNTIME]
    keys = rt.keys
    requeued = 0
    cursor = 0
    while True:
        cursor, sessions = await rt.redis.sscan(keys.pending, cursor, count=_BATCH)
        if sessions:
            async with rt.redis.pipeline(transaction=False) as pipe:
                for sid in sessions:
                    pipe.exists(keys.session(sid).lease)
                    pipe.get(keys.session(sid).drain_job)
                res = await pipe.execute()
            for i, sid in enumerate(sessions):
                held, job_id = res[2 * i], res[2 * i + 1]
                if not held:
                    requeued += await rt.sweep(session_id=sid, observed_job_id=job_id)
        if cursor == 0:
            break
    if requeued:
        log.info("sweep: queued %d drain job(s) for unserved sessions", requeued)
        await rt.redis.hincrby(keys.stats, "sweep_requeued", requeued)  # type: ignore[misc]
    return requeued
