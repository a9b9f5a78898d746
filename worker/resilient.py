"""arq's ``Worker`` made to outlive Redis outages; ``python -m worker`` runs one.

arq's poll loop lets any Redis error escape ``Worker.main``, which ends the process: one Redis
restart or network blip stops every worker for good (python-arq/arq#435, #498; redis-py's own
retries do not cover taking a connection from the pool, so ``RedisSettings.retry`` cannot fix
it). Here a poll iteration that fails for want of Redis is logged and retried with capped
backoff; running drains meanwhile fail on their own, and what they leave behind (a lease
nobody renews, a drain job nobody finishes) is what the lease TTL and the sweep recover from.
Any other error still ends the worker, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
from signal import Signals
from typing import Any

from arq.logs import default_log_config
from arq.worker import Worker, get_kwargs
from redis import exceptions as redis_errors

from chatlane.connection import REDIS_DOWN, where
from chatlane.logs import REDIS_OUTAGE, formatter_config
from chatlane.settings import Settings
from worker.arq_settings import worker_settings
from worker.queue_pool import queue_pool
from worker.runtime import RESILIENT, RUNTIME, Runtime
from worker.startup import prepare

log = logging.getLogger("chatlane.worker")


class ChatlaneWorker(Worker):
    backoff_s = 0.1
    backoff_max_s = 2.0

    def __init__(self, *, settings: Settings | None = None, **kwargs: Any) -> None:
        """``settings``: connect to the queue with ``worker.queue_pool`` (Sentinel-aware, with
        timeouts, waits for Redis at start-up) instead of arq's ``redis_settings``."""
        super().__init__(**kwargs)
        self.ctx[RESILIENT] = True
        self._settings = settings
        self._redis_failures = 0
        if settings is not None:
            REDIS_OUTAGE.location = where(settings)

    async def main(self) -> None:
        if self._pool is None and self._settings is not None:
            self._pool = await queue_pool(self._settings, self.queue_name)
        await super().main()

    def handle_sig(self, signum: Signals) -> None:
        self._stopping()
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        # arq now stops picking jobs and waits job_completion_wait (the shutdown grace) before
        # cancelling; `stopping` makes each drain hand its session back at the next turn
        # boundary instead of starting turns it might not finish.
        self._stopping()
        super().handle_sig_wait_for_completion(signum)

    def _stopping(self) -> None:
        rt: Runtime | None = self.ctx.get(RUNTIME)
        if rt is not None:
            rt.stopping.set()

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as e:
            self._redis_failures += 1
            await self._drop_idle_connections()
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (self._redis_failures - 1))
            # One line per outage for the whole process (REDIS_OUTAGE: the drains, the sweep and
            # webhooks share it), one when it ends; the retries at debug, so a long outage does
            # not flood the log.
            REDIS_OUTAGE.failed("the worker's poll loop", e)
            log.debug("polling again in %.1fs", delay)
            await asyncio.sleep(delay)
            return
        self._redis_failures = 0
        REDIS_OUTAGE.ok()

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_DOWN as e:
            # arq's own bookkeeping for the job (its start and finish pipelines) met an outage.
            # Left to escape, the error would surface in a later poll iteration (arq re-raises
            # finished tasks' errors there), one failed job per poll, each read as a new outage
            # and followed by a backoff: seconds of idling after Redis is back. The drain's
            # session is recovered by lease expiry and the sweep, as after a crash.
            REDIS_OUTAGE.failed(f"arq's bookkeeping of job {job_id}", e)

    async def _drop_idle_connections(self) -> None:
        """Close the idle connections of arq's pool and of the runtime's.

        After a Redis restart every pooled connection is dead, and redis-py finds that out one
        failed command at a time: the poll loop would fail once per dead connection, backing off
        each time, and stay down for seconds after Redis was back. Closed connections reconnect
        on their next use. Connections in use fail (and close) on their own.
        """
        pools = [self.pool.connection_pool]
        rt: Runtime | None = self.ctx.get(RUNTIME)
        if rt is not None:
            pools.append(rt.redis.connection_pool)
        for pool in pools:
            # Closing can time out too (a connection whose unsent bytes Redis is not reading): seen
            # in `make bench`, where that error escaped the poll loop and ended the worker with its
            # backlog undrained. redis-py has tried every connection of the pool by then and raises
            # the first error; the poll loop's backoff and retry are the answer, as for any outage.
            with contextlib.suppress(*REDIS_DOWN):
                await pool.disconnect(inuse_connections=False)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except (*REDIS_DOWN, redis_errors.WatchError) as e:  # type: ignore[misc]
            # arq takes a job slot (semaphore + counter) before its Redis round trips for the
            # job, and gives it back only on the errors it expects: a connection error there
            # would leak the slot for good, and enough outages would leave no slot to run on.
            self.job_counter -= 1
            self.sem.release()
            if isinstance(e, redis_errors.WatchError):
                # A WATCH conflict proper is handled inside arq; one that escapes is redis-py
                # reporting a connection lost between WATCH and EXEC.
                raise redis_errors.ConnectionError(str(e)) from e
            raise


def log_config(log_format: str = "text") -> dict[str, Any]:
    """arq's logging, with chatlane's loggers beside arq's, as text or JSON (CHATLANE_LOG_FORMAT)."""
    config: dict[str, Any] = default_log_config(verbose=False)
    config["formatters"]["arq.standard"] = formatter_config(log_format)
    config["loggers"]["chatlane"] = {"handlers": ["arq.standard"], "level": "INFO", "propagate": False}
    return config


# Connections a drain job may use at once: its own commands, its lease renewal, its chunk flush.
PER_JOB_CONNECTIONS = 3
# The heartbeat, the sweep, the stop-signal subscription, the webhook poll, arq's poll, and spare.
BACKGROUND_CONNECTIONS = 8


def worker_pool(settings: Settings) -> Settings:
    """A worker's pools are large enough that it never waits on itself: a lease renewal queued
    behind its own drains' commands could lose the lease. What bounds a worker's connections is
    CHATLANE_MAX_JOBS; CHATLANE_REDIS_MAX_CONNECTIONS raises it further, never lowers it."""
    needed = PER_JOB_CONNECTIONS * settings.max_jobs + settings.webhook_concurrency + BACKGROUND_CONNECTIONS
    if settings.redis_max_connections >= needed:
        return settings
    return settings.model_copy(update={"redis_max_connections": needed})


def run_worker(settings: Settings, handler: object | None = None) -> None:
    """``handler``: an object to run turns with (see worker/handler_loader.py); default: the
    settings' ``handler`` (CHATLANE_HANDLER), else the chat model CHATLANE_MODEL names. A
    configuration mistake ends the process with one line (worker/startup.py)."""
    settings = worker_pool(settings.with_role("worker"))  # its Redis connections: chatlane-worker
    logging.config.dictConfig(log_config(settings.log_format))
    turn_handler = prepare(settings, handler)
    kwargs: dict[str, Any] = get_kwargs(worker_settings(settings, turn_handler))
    ChatlaneWorker(settings=settings, **kwargs).run()
