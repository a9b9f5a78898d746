"""The model's fleet-wide budget as a drain uses it: take before a call, give back after it,
and pause the whole fleet when the provider says 429.

A turn that must wait hands its session back with a "not before" (``BudgetWait``): it keeps its
place at the head of its inbox and holds no job slot meanwhile, and its attempt is not counted.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts import BudgetAcquire, BudgetPause, BudgetRelease, Granted, Limits, Wait, Wake
from chatlane.settings import Settings, ms

log = logging.getLogger("chatlane.budget")


class BudgetWait(Exception):
    """The turn must wait ``ms`` for budget; its session is handed back until then."""

    def __init__(self, wait_ms: int, why: str) -> None:
        super().__init__(f"waiting {wait_ms} ms for the model's budget ({why})")
        self.ms = wait_ms
        self.why = why


def limits_for(settings: Settings, model: str) -> Limits:
    """The model's limits: its entry in CHATLANE_BUDGETS_FILE, else the CHATLANE_MODEL_* settings."""
    s = settings
    if s.budgets_file:
        table: dict[str, dict[str, Any]] = json.loads(Path(s.budgets_file).read_text(encoding="utf-8"))
        if model in table:
            e = table[model]
            return Limits(int(e.get("max_concurrency", 0)), int(e.get("rpm", 0)), int(e.get("tpm", 0)),
                          float(e.get("burst_s", s.budget_burst_s)))  # fmt: skip
    return Limits(s.model_max_concurrency, s.model_rpm, s.model_tpm, s.budget_burst_s)


@dataclass
class Taken:
    slot: str | None
    est_tokens: int


def retry_after_ms(exc: BaseException) -> int | None:
    """Milliseconds a provider's 429 asks us to wait (Retry-After seconds or retry-after-ms)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1.0), ("retry-after", 1000.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0, int(float(value) * scale))
            except ValueError:
                return None
    return None


def is_rate_limited(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 429 or type(exc).__name__ == "RateLimitError"


class ModelBudget:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings, model: str) -> None:
        self.model = model
        self.limits = limits_for(settings, model)
        self.settings = settings
        self._acquire = BudgetAcquire(redis, keys)
        self._release = BudgetRelease(redis, keys)
        self._pause = BudgetPause(redis, keys)
        self._wake = Wake(redis, keys)
        self.slots_key = keys.budget(model).slots

    def estimate(self, messages: list[BaseMessage]) -> int:
        return count_tokens_approximately(messages) + self.settings.budget_reply_tokens

    async def take(self, session_id: str, messages: list[BaseMessage]) -> Taken | None:
        """Budget for one call (None when the model has no limits); raises BudgetWait."""
        if not self.limits.any:
            return None
        est = self.estimate(messages)
        got = await self._acquire(
            model=self.model, limits=self.limits, member=uuid.uuid4().hex, session_id=session_id,
            slot_ttl_ms=self.settings.lease_ttl_ms, est_tokens=est,
        )  # fmt: skip
        if isinstance(got, Wait):
            raise BudgetWait(got.ms, got.why)
        assert isinstance(got, Granted)
        return Taken(got.slot, est)

    async def give_back(self, taken: Taken, used_tokens: int | None) -> None:
        """Free the slot, settle the estimate, and wake the session first in line for a slot."""
        unused = 0 if used_tokens is None else taken.est_tokens - used_tokens
        first = await self._release(model=self.model, limits=self.limits, slot=taken.slot, unused_tokens=unused)
        if first is not None:
            await self._wake(session_id=first)

    async def pause_for(self, exc: BaseException) -> int | None:
        """After a provider 429: pause the model for the fleet; the pause in ms (None: not a 429)."""
        if not is_rate_limited(exc):
            return None
        wait = retry_after_ms(exc)
        pause = await self._pause(model=self.model, pause_ms=wait if wait else ms(self.settings.provider_backoff_s))
        log.warning("model %s answered 429: the fleet leaves it alone for %.1fs", self.model, pause / 1000)
        return pause
