"""Delivers webhooks from the outbox (``Keys.webhooks_due``), off every session's path.

A turn that ends with a webhook URL enters the outbox in the same script that ends it. Each
worker process runs a sender task: it claims due entries (with a visibility timeout, so a
worker that dies mid-delivery leaves the entry to be taken again: at least once), POSTs the
turn's final status signed per Standard Webhooks (``webhook-id`` stable per turn, so receivers
can dedupe), logs the attempt on the turn and schedules a retry with exponential backoff until
the retry span runs out. Deliveries run as tasks of their own, at most
``CHATLANE_WEBHOOK_CONCURRENCY`` per process: they never take an arq job slot from a drain, and
a slow or failing receiver delays nothing but its own retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import UTC, datetime

import httpx
from redis.asyncio import Redis
from standardwebhooks import Webhook

from chatlane.connection import REDIS_DOWN
from chatlane.keys import Keys
from chatlane.logs import REDIS_OUTAGE, turn_fields
from chatlane.scripts.webhooks import Delivery, WebhookClaim, WebhookResult
from chatlane.settings import Settings, ms
from chatlane.tenants import SessionRef
from chatlane.turns import TurnStatus
from chatlane.webhooks import allowed_hosts, check_webhook_url

log = logging.getLogger("chatlane.webhooks")
POLL_S = 0.2


def message_id(turn_id: str) -> str:
    return f"msg_{turn_id}"


class WebhookSender:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.s = settings
        self._claim = WebhookClaim(redis, keys)
        self._result = WebhookResult(redis, keys)
        secret = settings.webhook_secret.get_secret_value()
        self._signer = Webhook(secret) if secret else None
        self._allow = allowed_hosts(settings.webhook_allow_hosts)
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._busy: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.s.webhook_timeout_s, follow_redirects=False) as client:
            while True:
                try:
                    free = self.s.webhook_concurrency - len(self._busy)
                    due: list[str] = []
                    if free > 0:
                        due = await self.redis.zrangebyscore(
                            self.keys.webhooks_due, "-inf", int(time.time() * 1000), start=0, num=free
                        )
                    for turn_id in due:
                        if turn_id not in self._busy:
                            self._busy[turn_id] = asyncio.create_task(self._deliver(client, turn_id))
                    REDIS_OUTAGE.ok()
                except REDIS_DOWN as e:
                    REDIS_OUTAGE.failed("the webhook sender", e)
                await asyncio.sleep(POLL_S)

    async def _deliver(self, client: httpx.AsyncClient, turn_id: str) -> None:
        try:
            async with self._slots:
                visibility = ms(self.s.webhook_timeout_s + 5)
                d = await self._claim(turn_id=turn_id, visibility_ms=visibility)
                if d is not None:
                    await self._send(client, d)
        except REDIS_DOWN as e:  # the entry reappears after its visibility timeout
            REDIS_OUTAGE.failed("a webhook delivery", e)
        except Exception as e:
            log.warning("webhook of turn %s: %r; it will be retried", turn_id, e, extra=turn_fields(turn_id=turn_id))
        finally:
            self._busy.pop(turn_id, None)

    async def _send(self, client: httpx.AsyncClient, d: Delivery) -> None:
        rec: dict[str, str] = await self.redis.hgetall(self.keys.turn(d.turn_id))  # type: ignore[misc]
        status_code: int | None = None
        error = ""
        if not rec:
            return
        try:
            check_webhook_url(d.url, self._allow)  # the allow-list may have changed since enqueue
            if self._signer is None:
                raise RuntimeError("CHATLANE_WEBHOOK_SECRET is not set: refusing to send unsigned webhooks")
            st = TurnStatus.from_record(d.turn_id, rec, None)
            # The tenant beside the status: two tenants' sessions may share a name (and a receiver).
            tenant = SessionRef.parse(rec["session"]).tenant
            body = json.dumps(
                {"type": f"turn.{st.state.value}", "timestamp": datetime.now(UTC).isoformat(), "tenant": tenant,
                 "data": json.loads(st.model_dump_json())},
                separators=(",", ":"), ensure_ascii=False,
            )  # fmt: skip
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id(d.turn_id),
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": self._signer.sign(message_id(d.turn_id), now, body),
            }
            resp = await client.post(d.url, content=body.encode(), headers=headers)
            status_code = resp.status_code
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:300]
        ok = status_code is not None and 200 <= status_code < 300
        backoff = min(self.s.webhook_backoff_max_s, self.s.webhook_backoff_s * 2 ** (d.attempt - 1))
        retry_ms = ms(backoff * random.uniform(0.9, 1.1))
        entry = json.dumps({"attempt": d.attempt, "at": int(time.time() * 1000), "status": status_code, "error": error})
        span_ms = ms(min(self.s.webhook_retry_span_s, self.s.turn_ttl_s))
        outcome = await self._result(turn_id=d.turn_id, entry=entry, ok=ok, retry_ms=retry_ms, span_ms=span_ms)
        if not ok:
            log.info(
                "webhook of turn %s attempt %d: %s -> %s", d.turn_id, d.attempt, status_code or error, outcome,
                extra=turn_fields(rec.get("session"), d.turn_id, int(rec.get("attempts") or 0)),
            )  # fmt: skip
