"""arq's settings for a chatlane worker, built from ``chatlane.Settings`` by ``worker_settings``.

``python -m worker`` (``worker.resilient``) runs them; ``arq worker.WorkerSettings`` does too,
with arq's plain worker. arq reads only a class's own ``__dict__``, so the class is built whole
here rather than subclassed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from arq import func

from chatlane.jobs import DRAIN, job_deserializer, job_serializer
from chatlane.keys import Keys
from chatlane.settings import Settings
from chatlane.tracing import configure_tracing, shutdown_tracing
from worker import metrics
from worker.drain import drain
from worker.handler_loader import load_handler
from worker.handlers import TurnHandler
from worker.queue_pool import arq_redis_settings
from worker.runtime import RESILIENT, RUNTIME, Runtime
from worker.sweep import sweeper

log = logging.getLogger("chatlane.worker")


def worker_settings(s: Settings, handler: TurnHandler | None = None) -> type:
    """``handler``: what runs the turns, already loaded (``python -m worker`` loads it before arq
    starts, to fail in one line); without it the start-up hook loads it."""

    async def startup(ctx: dict[str, Any]) -> None:
        rt = Runtime.create(s, handler or load_handler(s))
        ctx[RUNTIME] = rt
        background = (rt.heartbeat(), sweeper(rt), rt.evidence.run(), rt.webhooks.run(), rt.stops.run())
        rt.tasks.extend(asyncio.create_task(coro) for coro in background)
        # Everything loaded so far (LangChain, the model client, arq) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise stall the loop for ~40 ms at
        # random turns (bench B3/B4 tails).
        gc.freeze()
        metrics.serve(s.metrics_port)
        configure_tracing(s, "chatlane-worker")
        log.info("chatlane worker %s up (%s, max_jobs=%d)", rt.worker_id, s.handler or f"model={s.model}", s.max_jobs)
        if not ctx.get(RESILIENT):
            log.warning(
                "started by plain arq: the first Redis outage will end this process, and SIGTERM cancels "
                "turns in flight instead of finishing them; run `python -m worker`"
            )

    async def shutdown(ctx: dict[str, Any]) -> None:
        rt: Runtime | None = ctx.get(RUNTIME)
        if rt is not None:
            await rt.close()
        shutdown_tracing()  # export the spans still buffered

    settings: dict[str, Any] = {
        "functions": [func(drain, name=DRAIN, max_tries=1_000_000)],
        "redis_settings": arq_redis_settings(s),
        "queue_name": Keys(s.key_prefix).queue,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": s.max_jobs,
        "poll_delay": s.poll_delay_s,
        "job_timeout": s.job_timeout_s,
        # Results are not used; not storing them saves a write and memory per job.
        "keep_result": 0,
        # Claimed drains leave the queue (claim.lua), so it holds only waiting jobs; read them all.
        "queue_read_limit": max(1000, 10 * s.max_jobs),
        "job_completion_wait": s.shutdown_grace_s,
        "health_check_interval": 10,
        # A drain's retries are the turn's attempts, counted in Redis, not arq's job tries.
        "max_tries": 1_000_000,
    }
    return type("WorkerSettings", (), settings)
