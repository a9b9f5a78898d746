"""The turn contract: states, the status model, and input validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from chatlane.errors import InvalidInput, MetadataTooLarge, TextTooLong

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"  # printable ASCII, no spaces
TURN_ID_PATTERN = r"^[0-9a-f]{32}$"
_SESSION_RE = re.compile(SESSION_ID_PATTERN)
_IDEM_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
_TURN_ID_RE = re.compile(TURN_ID_PATTERN)
# A turn's metadata, as compact UTF-8 JSON, may take this many bytes.
MAX_METADATA_BYTES = 4096


class TurnState(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TurnState.completed, TurnState.failed, TurnState.cancelled)


class TurnStatus(BaseModel):
    turn_id: str
    session_id: str
    state: TurnState
    position: int | None = Field(None, description="0-based place in the session inbox while queued")
    text: str
    reply: str | None = Field(None, description="the reply; while running, the text generated so far")
    error: str | None = None
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
        return cls(
            turn_id=turn_id,
            session_id=rec["session"],
            state=state,
            position=position if state is TurnState.queued else None,
            text=rec["text"],
            reply=reply,
            error=rec.get("error") or None,
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


def validate_text(text: str, max_chars: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text must be a non-empty string")
    if len(text) > max_chars:
        raise TextTooLong(f"text has {len(text)} characters; the limit is {max_chars}")
    return text


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
