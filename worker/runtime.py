"""Per-process state of a worker: connections, scripts, the turn handler, and the shutdown flag."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from chatlane.cancelling import cancel_and_wait
from chatlane.connection import connect
from chatlane.keys import WORKER_HEARTBEAT_S, Keys
from chatlane.scripts import Advance, AttemptEnded, Claim, Handback, Renew, SaveSummary, Sweep
from chatlane.settings import Settings, ms
from worker.budget import ModelBudget
from worker.evidence import EvidenceLog
from worker.handlers import ChatModelHandler, TurnHandler
from worker.lease import LeasePolicy, LeaseScripts
from worker.llm import build_model
from worker.publish import StreamWriter
from worker.stops import StopSignals
from worker.summary import Summarizer
from worker.webhooks import WebhookSender

log = logging.getLogger("chatlane.worker")
# The key under which the worker's arq ctx carries its Runtime.
RUNTIME = "chatlane"
# ctx flag the startup hook checks, so a worker started under plain ``arq`` says what it lacks.
RESILIENT = "chatlane_resilient_worker"
WORKER_FORGET_MS = 3600_000


@dataclass
class Runtime:
    settings: Settings
    keys: Keys
    redis: Redis
    lease_scripts: LeaseScripts
    lease_policy: LeasePolicy
    sweep: Sweep
    evidence: EvidenceLog
    budget: ModelBudget
    webhooks: WebhookSender
    handler: TurnHandler
    summarizer: Summarizer | None  # with CHATLANE_HISTORY_STRATEGY=summarize
    worker_id: str
    streams: StreamWriter
    stops: StopSignals
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def create(cls, s: Settings, handler: TurnHandler) -> Runtime:
        redis = connect(s)
        keys = Keys(s.key_prefix)
        worker_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        # A running attempt writes at least once per model timeout; the end script shortens it.
        stream_ttl_ms = ms(s.stream_ttl_s + s.model_timeout_s)
        lease_scripts = LeaseScripts(
            claim=Claim(redis, keys, s),
            renew=Renew(redis, keys),
            advance=Advance(redis, keys, s),
            handback=Handback(redis, keys, s.session_idle_ttl_ms),
            save_summary=SaveSummary(redis, keys),
        )
        summarizer = None
        if s.history_strategy == "summarize":
            # The handler's own model when it is one; an agent's is out of reach, CHATLANE_MODEL's is not.
            model = handler.model if isinstance(handler, ChatModelHandler) else build_model(s)
            summarizer = Summarizer(model, s.history_max_tokens)
        return cls(
            s,
            keys,
            redis,
            lease_scripts,
            LeasePolicy(s.lease_ttl_ms, s.lease_renew_ms, s.lease_safety_ms, s.fault_ignore_lease_loss),
            Sweep(redis, keys, s),
            EvidenceLog(AttemptEnded(redis, keys)),
            ModelBudget(redis, keys, s, s.model),
            WebhookSender(redis, keys, s),
            handler,
            summarizer,
            worker_id,
            StreamWriter(redis, stream_ttl_ms),
            StopSignals(redis, keys, worker_id),
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
        # Each loop retries on Redis errors: one cancel may not end it (chatlane/cancelling.py).
        await asyncio.gather(*(cancel_and_wait(t) for t in self.tasks))
        try:
            await self.redis.zrem(self.keys.workers, self.worker_id)
        except Exception as e:
            log.debug("could not deregister: %s", e)
        await self.redis.aclose()
