"""Request and response bodies of the HTTP API (``TurnStatus`` itself comes from the core)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chatlane.turns import IDEMPOTENCY_KEY_PATTERN
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


class SessionDeleted(BaseModel):
    session_id: str
    turns: int = Field(description="turn records removed")
    cancelled: int = Field(description="of them, turns that were queued or running")
    messages: int = Field(description="history messages removed")
