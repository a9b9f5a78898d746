"""Request and response bodies of the HTTP API (``TurnStatus`` itself comes from the core)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chatlane.turns import IDEMPOTENCY_KEY_PATTERN, MAX_EXPIRES_AFTER_S, OnBusy, TurnStatus
from chatlane.webhooks import MAX_URL_CHARS


class TurnRequest(BaseModel):
    # Unknown fields are errors: a misspelt "idempotency_key" must not silently enqueue twice.
    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        pattern=r"\S",
        description="the user's message: not blank, at most CHATLANE_MAX_TEXT_CHARS characters (else 413)",
    )
    idempotency_key: str | None = Field(
        None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="repeat it to get the same turn back (200) instead of a new one; scoped to the session",
    )
    webhook_url: str | None = Field(
        None,
        max_length=MAX_URL_CHARS,
        description="POSTed the final status when the turn ends (Standard Webhooks signature); its host "
        "must be in CHATLANE_WEBHOOK_ALLOW_HOSTS (else 422 `webhook_not_allowed`); default CHATLANE_WEBHOOK_URL",
    )
    on_busy: OnBusy | None = Field(
        None,
        description="while the session has a queued or running turn: `enqueue` behind them, `reject` (409 "
        "`session_busy`, nothing written), `interrupt` the running turn (it ends interrupted, its partial reply "
        "kept) and cancel the queued ones, `rollback` (as interrupt, but the running turn ends cancelled, nothing "
        "in history), or `coalesce` into the newest turn that has not started (200, the same turn, `coalesced` "
        "up); default CHATLANE_ON_BUSY",
    )
    expires_after_s: float | None = Field(
        None,
        gt=0,
        le=MAX_EXPIRES_AFTER_S,
        description="the turn ends `expired` if no worker has begun it this many seconds after it was accepted; "
        "default CHATLANE_QUEUED_TURN_TTL_S (unset: no deadline)",
    )


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_partial: bool = Field(
        True,
        description="for a running turn: end it `interrupted` with the reply so far in history (true), or "
        "`cancelled` with nothing in history (false)",
    )


class SessionTurns(BaseModel):
    session_id: str
    turns: list[TurnStatus] = Field(description="the session's live turns, in the order they run")


class Message(BaseModel):
    index: int = Field(description="0-based position in the session history; pass as `before` to page back")
    role: Literal["user", "assistant"]
    content: str
    turn_id: str | None = Field(description="the turn that wrote this message")


class MessagePage(BaseModel):
    session_id: str
    total: int = Field(description="messages in the whole history")
    messages: list[Message] = Field(description="oldest first")
    next_before: int | None = Field(description="`before` for the previous (older) page; null at the start")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    workers: int = Field(description="workers with a heartbeat in the readiness window")
