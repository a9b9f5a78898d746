"""arq ``WorkerSettings``: start a worker with ``python -m worker`` (see ``worker.runner``).

Values come from ``producer.Settings`` (env ``CHATLANE_*``) when this module is imported.
arq reads only the class's own ``__dict__``, so do not subclass it to override; set env vars.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from arq import cron, func
from arq.connections import RedisSettings

from producer.jobs import DRAIN, job_deserializer, job_serializer
from producer.keys import Keys
from producer.settings import get_settings
from worker.drain import drain
from worker.runner import RESILIENT
from worker.runtime import RUNTIME, Runtime
from worker.sweep import sweep

_s = get_settings()
log = logging.getLogger("chatlane.worker")


async def startup(ctx: dict[str, Any]) -> None:
    rt = Runtime.create(_s)
    ctx[RUNTIME] = rt
    rt.tasks.append(asyncio.create_task(rt.heartbeat()))
    # Everything loaded so far (LangChain, the model client, arq) lives as long as the process:
    # keep it out of the collector's full passes, which otherwise stall the loop for ~40 ms at
    # random turns (bench B3/B4 tails).
    gc.freeze()
    log.info("chatlane worker %s up (model=%s, max_jobs=%d)", rt.worker_id, _s.model, _s.max_jobs)
    if not ctx.get(RESILIENT):
        log.warning(
            "started by plain arq: the first Redis outage will end this process, and SIGTERM cancels "
            "turns in flight instead of finishing them; run `python -m worker`"
        )


async def shutdown(ctx: dict[str, Any]) -> None:
    rt: Runtime | None = ctx.get(RUNTIME)
    if rt is not None:
        await rt.close()


class WorkerSettings:
    functions = [func(drain, name=DRAIN, max_tries=1_000_000)]
    cron_jobs = [
        cron(
            sweep,
            name="chatlane-sweep",
            second=set(range(0, 60, _s.sweep_interval_s)),
            unique=True,
            run_at_startup=True,
            timeout=60,
            max_tries=1,
        )
    ]
    redis_settings = RedisSettings.from_dsn(_s.redis_url)
    queue_name = Keys(_s.key_prefix).queue
    job_serializer = job_serializer
    job_deserializer = job_deserializer
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = _s.max_jobs
    poll_delay = _s.poll_delay_s
    job_timeout = _s.job_timeout_s
    # Results are not used; not storing them saves a write and memory per job.
    keep_result = 0
    # Claimed drains leave the queue (claim.lua), so it holds only waiting jobs; read them all.
    queue_read_limit = max(1000, 10 * _s.max_jobs)
    job_completion_wait = _s.shutdown_grace_s
    health_check_interval = 10
    # A drain's retries are the turn's attempts, counted in Redis, not arq's job tries.
    max_tries = 1_000_000
