"""Cron job that recovers sessions nobody is serving (dead holder, lost drain job)."""

from __future__ import annotations

import logging
from typing import Any

from producer.jobs import DrainJob, in_progress_key
from worker.runtime import RUNTIME, Runtime

log = logging.getLogger("chatlane.sweep")
_BATCH = 500


async def sweep(ctx: dict[str, Any]) -> int:
    """Queue a drain for every pending session that has no lease and no live drain job."""
    rt: Runtime = ctx[RUNTIME]
    keys, s = rt.keys, rt.settings
    # arq keeps a started job's in-progress key for job_timeout + 10 s.
    in_progress_ttl_ms = int((s.job_timeout_s + 10) * 1000)
    presumed_dead_ms = s.lease_ttl_ms
    requeued = 0
    cursor = 0
    while True:
        cursor, sessions = await rt.redis.sscan(keys.pending, cursor, count=_BATCH)
        if sessions:
            async with rt.redis.pipeline(transaction=False) as pipe:
                for sid in sessions:
                    pipe.exists(keys.session(sid).lease)
                    pipe.get(keys.session(sid).drain)
                res = await pipe.execute()
            for i, sid in enumerate(sessions):
                held, flag = res[2 * i], res[2 * i + 1]
                if held:
                    continue
                sk, job = keys.session(sid), DrainJob.new(sid)
                requeued += await rt.scripts.sweep(
                    keys=[sk.lease, sk.inbox, sk.drain, keys.pending, job.key, keys.queue,
                          in_progress_key(flag or job.job_id)],
                    args=[sid, flag or "", *job.argv(), in_progress_ttl_ms, presumed_dead_ms],
                )  # fmt: skip
        if cursor == 0:
            break
    if requeued:
        log.info("sweep: queued %d drain job(s) for unserved sessions", requeued)
        await rt.redis.hincrby(keys.stats, "sweep_requeued", requeued)  # type: ignore[misc]
    return requeued
