"""The turn contract: states, the status model, and input validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from chatlane.errors import InvalidInput, MetadataTooLarge, TextTooLong
from chatlane.tenants import SessionRef

# What apps use as user ids (``john@example.com``, ``a+b@x.io``); never braces (a Redis Cluster
# hash tag inside a key), whitespace or "/" (a path segment over HTTP).
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:@+-]{1,128}$"
SESSION_ID_DESCRIPTION = "letters, digits and . _ : @ + -; 1-128 characters (e.g. john@example.com)"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"  # printable ASCII, no spaces
TURN_ID_PATTERN = r"^[0-9a-f]{32}$"
_SESSION_RE = re.compile(SESSION_ID_PATTERN)
_IDEM_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
_TURN_ID_RE = re.compile(TURN_ID_PATTERN)
# A queued turn's deadline can be at most this far off (30 days): longer is a mistake, not a deadline.
MAX_EXPIRES_AFTER_S = 30 * 86400
# A turn's metadata, as compact UTF-8 JSON, may take this many bytes.
MAX_METADATA_BYTES = 4096


class TurnState(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"  # stopped while running; its partial reply is in the history
    expired = "expired"  # not started within its expires_after_s

    @property
    def terminal(self) -> bool:
        return self not in (TurnState.queued, TurnState.running)


class OnBusy(StrEnum):
    """What an enqueue does while the session has a queued or running turn (README "Steering")."""

    enqueue = "enqueue"  # queue behind them
    reject = "reject"  # SessionBusy (409), nothing written
    interrupt = "interrupt"  # stop the running turn (ends interrupted, partial reply kept), cancel the queued
    rollback = "rollback"  # as interrupt, but the running turn ends cancelled, nothing in history
    coalesce = "coalesce"  # join the newest turn that has not started; else queue a new one


class TurnStatus(BaseModel):
    turn_id: str
    session_id: str
    state: TurnState
    position: int | None = Field(None, description="0-based place in the session inbox while queued")
    text: str = Field(description="the turn's (first) user message")
    texts: list[str] = Field(description="every user message the turn answers, in order: more than one when coalesced")
    coalesced: int = Field(0, description="texts that joined this turn after the first (on_busy=coalesce)")
    reply: str | None = Field(
        None, description="the reply; while running, the text generated so far; when interrupted, the partial reply"
    )
    error: str | None = Field(None, description="why it failed (also the reason of a cancelled turn)")
    reason: str | None = Field(
        None,
        description="what ended it and at whose request (failed, cancelled, interrupted, expired); while running, "
        "a stop that was requested and how the turn will end",
    )
    attempts: int = 0
    metadata: dict[str, Any] | None = Field(None, description="the JSON object given at enqueue, if any")
    created_at: datetime
    started_at: datetime | None = Field(None, description="start of the generation that was committed")
    finished_at: datetime | None = None

    @classmethod
    def from_record(
        cls, turn_id: str, rec: dict[str, str], position: int | None, partial: str | None = None
    ) -> TurnStatus:
        state = TurnState(rec["state"])
        reply = rec.get("reply")
        if reply is None and state is TurnState.running:
            reply = partial
        error = rec.get("error") or None
        return cls(
            turn_id=turn_id,
            # The record holds the scoped id; a caller only ever sees its own tenant's turns.
            session_id=SessionRef.parse(rec["session"]).session_id,
            state=state,
            position=position if state is TurnState.queued else None,
            text=rec["text"],
            texts=[rec["text"], *more_texts(rec.get("more"))],
            coalesced=int(rec.get("coalesced", 0)),
            reply=reply,
            error=error,
            reason=rec.get("reason") or (error if state is TurnState.failed else None),
            attempts=int(rec.get("attempts", 0)),
            metadata=json.loads(rec["metadata"]) if rec.get("metadata") else None,
            created_at=_ms(rec["created"]),
            started_at=_ms(rec["started"]) if rec.get("started") else None,
            finished_at=_ms(rec["finished"]) if rec.get("finished") else None,
        )


class WebhookAttempt(BaseModel):
    attempt: int
    at: datetime
    status: int | None = Field(None, description="the receiver's HTTP status; null if none answered")
    error: str = ""


class WebhookLog(BaseModel):
    state: str = Field(description="pending | delivered | retry | gave_up")
    next_at: datetime | None = Field(None, description="when the next attempt is due, while retrying")
    attempts: list[WebhookAttempt]

    @classmethod
    def from_record(cls, rec: dict[str, str], raw: list[str]) -> WebhookLog:
        attempts = [WebhookAttempt.model_validate({**(e := json.loads(r)), "at": _ms(e["at"])}) for r in raw]
        nxt = rec.get("webhook_next")
        return cls(state=rec.get("webhook_state") or "pending", next_at=_ms(nxt) if nxt else None, attempts=attempts)


def more_texts(raw: str | None) -> list[str]:
    """The texts that joined a turn after its first (the record's ``more``, a JSON array)."""
    texts: list[str] = json.loads(raw) if raw else []
    return texts


def _ms(ms: str | int) -> datetime:
    """Epoch milliseconds (from Redis TIME) to an aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def validate_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not _SESSION_RE.fullmatch(session_id):
        raise InvalidInput(f"session_id must match {SESSION_ID_PATTERN} (got {session_id!r:.60})")
    if session_id in (".", ".."):
        # URL clients normalise these path segments away: such a session could not be reached over HTTP.
        raise InvalidInput("session_id may not be '.' or '..'")
    return session_id


def validate_turn_id(turn_id: str) -> str:
    if not isinstance(turn_id, str) or not _TURN_ID_RE.fullmatch(turn_id):
        raise InvalidInput(f"turn_id must be 32 lowercase hex characters (got {turn_id!r:.60})")
    return turn_id


def is_turn_id(value: str) -> bool:
    """``value`` has the shape of a turn id (not: names a turn)."""
    return _TURN_ID_RE.fullmatch(value) is not None


def validate_text(text: str, max_chars: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text must be a non-empty string")
    if len(text) > max_chars:
        raise TextTooLong(f"text has {len(text)} characters; the limit is {max_chars}")
    return text


def validate_expires_after(seconds: float | None) -> int:
    """``expires_after_s`` in ms (0: no deadline)."""
    if seconds is None:
        return 0
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_EXPIRES_AFTER_S:
        raise InvalidInput(
            f"expires_after_s must be a number of seconds in (0, {MAX_EXPIRES_AFTER_S}] (got {seconds!r:.40})"
        )
    return max(1, int(seconds * 1000))


def validate_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not _IDEM_RE.fullmatch(key):
        raise InvalidInput(f"idempotency_key must match {IDEMPOTENCY_KEY_PATTERN} (1-200 printable ASCII)")
    return key


def validate_metadata(metadata: Any) -> str:
    """``metadata`` encoded as it is stored (compact JSON), or "" for None.

    It must be a JSON object of at most MAX_METADATA_BYTES encoded: anything else raises
    InvalidInput (MetadataTooLarge for the size), before anything is written.
    """
    if metadata is None:
        return ""
    if not isinstance(metadata, dict):
        raise InvalidInput(f"metadata must be a JSON object (got {type(metadata).__name__})")
    try:
        encoded = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"metadata must be JSON (strings, numbers, booleans, null, lists, objects): {e}") from e
    if json.loads(encoded) != metadata:
        # json.dumps turns a key 1 into "1" and a tuple into a list: the handler would not get
        # back what was sent.
        raise InvalidInput("metadata must be plain JSON: string keys, lists rather than tuples")
    size = len(encoded.encode())
    if size > MAX_METADATA_BYTES:
        raise MetadataTooLarge(f"metadata takes {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return encoded
