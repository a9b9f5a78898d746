"""Per-process state of a worker: connections, scripts, model, and the shutdown flag."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
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
        return cls(s, Keys(s.key_prefix), redis, Scripts.load(redis), build_model(s), worker_id, StreamWriter(redis))

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

    def hook_signals(self) -> None:
        """Set ``stopping`` on SIGTERM/SIGINT, then let arq's own handler run.

        arq's handler stops picking jobs and waits ``job_completion_wait`` before cancelling;
        ``stopping`` lets a drain hand its session back at the next turn boundary instead of
        starting new turns it might not finish. arq offers no hook, so we chain onto the
        handler it registered on the loop.
        """
        loop = asyncio.get_running_loop()
        handlers = getattr(loop, "_signal_handlers", {})
        for sig in (signal.SIGTERM, signal.SIGINT):
            prev = handlers.get(sig)
            if prev is None:
                continue
            callback, args = prev._callback, prev._args

            def on_signal(cb: Any = callback, a: Any = args) -> None:
                self.stopping.set()
                cb(*a)

            loop.add_signal_handler(sig, on_signal)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            await self.redis.zrem(self.keys.workers, self.worker_id)
        except Exception as e:
            log.debug("could not deregister: %s", e)
        await self.redis.aclose()
