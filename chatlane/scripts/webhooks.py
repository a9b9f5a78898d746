"""Typed callers of the webhook outbox scripts: ``webhook_claim.lua``, ``webhook_result.lua`` and
``webhook_redeliver.lua`` (one class each, each its script's only caller)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.errors import TurnNotFound, WebhookNotAllowed
from chatlane.keys import Keys
from chatlane.scripts.loader import register


@dataclass(frozen=True)
class Delivery:
    turn_id: str
    url: str
    attempt: int


class WebhookClaim:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "webhook_claim")
        self._keys = keys

    async def __call__(self, *, turn_id: str, visibility_ms: int) -> Delivery | None:
        res = await self._script(
            keys=[self._keys.webhooks_due, self._keys.turn(turn_id)], args=[turn_id, visibility_ms]
        )
        return Delivery(str(res[0]), str(res[1]), int(res[2])) if res else None


class WebhookResult:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "webhook_result")
        self._keys = keys

    async def __call__(self, *, turn_id: str, entry: str, ok: bool, retry_ms: int, span_ms: int) -> str:
        """ "delivered", "retry", "gave_up", or "gone" (the turn was deleted meanwhile)."""
        k = self._keys
        res = await self._script(
            keys=[k.webhooks_due, k.turn(turn_id), k.webhook_log(turn_id)],
            args=[turn_id, entry, "1" if ok else "0", retry_ms, span_ms],
        )
        return str(res)


class WebhookRedeliver:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "webhook_redeliver")
        self._keys = keys

    async def __call__(self, *, turn_id: str, session_id: str = "") -> None:
        """Raises TurnNotFound, or WebhookNotAllowed when the turn has no webhook or has not ended."""
        res = await self._script(keys=[self._keys.webhooks_due, self._keys.turn(turn_id)], args=[session_id])
        if res == "missing":
            raise TurnNotFound(turn_id)
        if res == "no_webhook":
            raise WebhookNotAllowed(f"turn {turn_id} was enqueued without a webhook")
        if res == "not_ended":
            raise WebhookNotAllowed(f"turn {turn_id} has not ended yet; its webhook goes out when it does")
