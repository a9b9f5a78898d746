"""Per-process state of a worker: connections, scripts, model, and the shutdown flag."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from producer.client import connect
from producer.keys import WORKER_HEARTBEAT_S, Keys
from producer.scripts import register
from producer.settings import Settings, get_settings
from worker.llm import build_model
from worker.publish import StreamWriter

log = logging.getLogger("chatlane.worker")
# The key under which the worker's arq ctx carries its Runtime.
RUNTIME = "chatlane"
WORKER_FORGET_MS = 3600_000


@dataclass(frozen=True)
class Scripts:
    claim: AsyncScript
    renew: AsyncScript
    advance: AsyncScript
    handback: AsyncScript
    sweep: AsyncScript

    @classmethod
    def load(cls, redis: Redis) -> Scripts:
        return cls(**{name: register(redis, "worker", name) for name in cls.__dataclass_fields__})


@dataclass
class Runtime:
    settings: Settings
    keys: Keys
    redis: Redis
    scripts: Scripts
    model: BaseChatModel
    worker_id: str
    streams: StreamWriter
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings | None = None) -> Runtime:
        s = settings or get_settings()
        redis = connect(s)
        worker_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        # A running attempt writes at least once per model timeout; the end script shortens it.
        stream_ttl_ms = int((s.stream_ttl_s + s.model_timeout_s) * 1000)
        return cls(
            s,
            Keys(s.key_prefix),
            redis,
            Scripts.load(redis),
            build_model(s),
            worker_id,
            StreamWriter(redis, stream_ttl_ms),
        )

    async def heartbeat(self) -> None:
        """Keeps this worker in the ``workers`` ZSET (read by the HTTP API's /readyz)."""
        while True:
            now_ms = int(time.time() * 1000)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self.keys.workers, {self.worker_id: now_ms})
                    # Workers killed without a goodbye would otherwise stay forever.
                    pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms - WORKER_FORGET_MS)
                    await pipe.execute()
            except Exception as e:  # keep beating through a Redis outage
                log.debug("heartbeat failed: %s", e)
            await asyncio.sleep(WORKER_HEARTBEAT_S)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            await self.redis.zrem(self.keys.workers, self.worker_id)
        except Exception as e:
            log.debug("could not deregister: %s", e)
        await self.redis.aclose()
