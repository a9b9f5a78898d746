"""arq's connection to its queue, on chatlane's terms.

``arq_redis_settings`` is what plain ``arq worker.WorkerSettings`` connects with (Sentinel
included: arq's RedisSettings takes a list of sentinels). ``python -m worker`` instead gives arq
a client made by ``chatlane.connection.connect``: in Sentinel mode arq's own ``create_pool``
passes no socket timeouts (a primary that hangs or drops off the network would block the poll
loop for good, with no error to recover from) and no sentinel password.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from arq.connections import ArqRedis, RedisSettings

from chatlane.connection import REDIS_DOWN, connect, where
from chatlane.jobs import job_deserializer, job_serializer
from chatlane.settings import Settings

log = logging.getLogger("chatlane.worker")

# While Redis is away at start-up, try again this often, for as long as it takes: exiting would
# hand recovery to a process manager's restart backoff, often minutes.
STARTUP_RETRY_S = 1.0


def arq_redis_settings(s: Settings) -> RedisSettings:
    if not s.redis_sentinels:
        return RedisSettings.from_dsn(s.redis_url)
    return RedisSettings(
        host=s.sentinel_addresses,
        sentinel=True,
        sentinel_master=s.redis_sentinel_master,
        password=s.redis_password.get_secret_value() or None,
    )


async def queue_pool(s: Settings, queue_name: str) -> ArqRedis:
    """arq's client (it reads bytes), once Redis answers."""
    pool = cast(ArqRedis, connect(s, redis_class=ArqRedis, decode_responses=False))
    # What arq's create_pool sets; arq itself enqueues its cron jobs through this client.
    pool.job_serializer = job_serializer
    pool.job_deserializer = job_deserializer
    pool.default_queue_name = queue_name
    failures = 0
    while True:
        try:
            await pool.ping()
            return pool
        except REDIS_DOWN as e:
            failures += 1
            if failures == 1:
                log.warning("Redis at %s unavailable at start-up (%s); waiting for it", where(s), e)
            await asyncio.sleep(STARTUP_RETRY_S)
