"""Recovers sessions nobody is serving (dead holder, lost drain job), from every worker process,
and ends queued turns past their deadline (worker/expiry.py).

The sweep runs as a task of the worker process, not as an arq job: a job would need a free job
slot, so with every slot busy recovery waited for one (up to drain_max_seconds, about 60 s), and
arq's cron left stale sweep jobs queued across restarts (21 after one SIGTERM, all run at once by
the next worker). Each interval one worker takes the turn (SET NX PX), so the fleet sweeps once
per interval whatever its size.
"""

from __future__ import annotations

import asyncio
import logging

from chatlane.connection import REDIS_DOWN
from chatlane.logs import REDIS_OUTAGE
from chatlane.scripts import Expire
from chatlane.settings import ms
from worker.expiry import expire_due
from worker.runtime import Runtime

log = logging.getLogger("chatlane.sweep")
_BATCH = 500


async def sweep_once(rt: Runtime) -> int:
    """Queue a drain for every pending session that has no lease and no live drain job."""
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


async def sweeper(rt: Runtime) -> None:
    """Sweep every ``sweep_interval_s`` when it is this worker's turn. Silent unless it did
    something (re-queued sessions, expired turns); an outage is one line (``REDIS_OUTAGE``)."""
    every = rt.settings.sweep_interval_s
    expire = Expire(rt.redis, rt.keys, rt.settings)
    while True:
        try:
            if await rt.redis.set(rt.keys.sweep_turn, rt.worker_id, nx=True, px=ms(every)):
                await sweep_once(rt)
                await expire_due(rt, expire)
            REDIS_OUTAGE.ok()
        except REDIS_DOWN as e:
            REDIS_OUTAGE.failed("the sweep", e)
        await asyncio.sleep(every)
