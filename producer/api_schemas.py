"""Request and response bodies of the HTTP API (``TurnStatus`` itself comes from the core)."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field

from chatlane.errors import HistoryEntryUnreadable
from chatlane.messages import turn_id_of
from chatlane.turns import IDEMPOTENCY_KEY_PATTERN, MAX_EXPIRES_AFTER_S, MAX_METADATA_BYTES, OnBusy, TurnStatus
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
    metadata: dict[str, Any] | None = Field(
        None,
        description=f"any JSON object of at most {MAX_METADATA_BYTES} bytes encoded (else 413 "
        "`metadata_too_large`): kept on the turn and handed to the worker's handler",
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


class ToolCall(BaseModel):
    id: str | None = Field(description="the id a `tool` message answers with `tool_call_id`")
    name: str
    args: dict[str, Any]


Role = Literal["user", "assistant", "system", "tool", "unreadable"]


class Message(BaseModel):
    index: int = Field(
        description="absolute 0-based position in the session history (retention trims the oldest but never "
        "renumbers); pass as `before` to page back"
    )
    role: Role = Field(description="`unreadable`: a stored entry that cannot be decoded (see `error`)")
    content: str = Field(description="the message's text (the text blocks of a list-of-blocks content)")
    turn_id: str | None = Field(description="the turn that wrote this message")
    tool_calls: list[ToolCall] | None = Field(None, description="assistant messages that call tools")
    tool_call_id: str | None = Field(None, description="`tool` messages: the call this result answers")
    name: str | None = Field(None, description="`tool` messages: the tool's name")
    error: str | None = Field(None, description="`unreadable` entries: why it cannot be decoded")


_ROLES: dict[str, Role] = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


def message_of(index: int, m: BaseMessage | HistoryEntryUnreadable) -> Message:
    """A history entry as the API shows it."""
    if isinstance(m, HistoryEntryUnreadable):
        return Message(index=index, role="unreadable", content="", turn_id=None, error=str(m))
    role = _ROLES.get(m.type, "assistant")
    if isinstance(m, ChatMessage) and m.role in ("user", "assistant", "system", "tool"):
        role = m.role  # type: ignore[assignment]
    calls = None
    if isinstance(m, AIMessage) and (m.tool_calls or m.invalid_tool_calls):
        calls = [ToolCall(id=c["id"], name=c["name"], args=c["args"]) for c in m.tool_calls]
        calls += [ToolCall(id=c["id"], name=c["name"] or "", args={}) for c in m.invalid_tool_calls]
    tool = m if isinstance(m, ToolMessage) else None
    return Message(
        index=index,
        role=role,
        content=m.text,
        turn_id=turn_id_of(m),
        tool_calls=calls,
        tool_call_id=tool.tool_call_id if tool else None,
        name=tool.name if tool else None,
    )


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
