"""Errors of chatlane; each carries a stable machine-readable ``code`` and the HTTP status the API answers with."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatlane.scripts.steps import Step


class ChatlaneError(Exception):
    code = "chatlane_error"
    http_status = 400


class InvalidInput(ChatlaneError, ValueError):
    code = "invalid_input"
    http_status = 422


class TextTooLong(InvalidInput):
    code = "text_too_long"
    http_status = 413


class WebhookNotAllowed(InvalidInput):
    code = "webhook_not_allowed"
    http_status = 422


class MetadataTooLarge(InvalidInput):
    code = "metadata_too_large"
    http_status = 413


class TurnNotFound(ChatlaneError, LookupError):
    code = "turn_not_found"
    http_status = 404

    def __init__(self, turn_id: str) -> None:
        super().__init__(f"no turn with id {turn_id!r} (unknown, or expired after it ended)")
        self.turn_id = turn_id


class IdempotencyConflict(ChatlaneError):
    code = "idempotency_conflict"
    http_status = 409

    def __init__(self, key: str, turn_id: str) -> None:
        super().__init__(f"idempotency key {key!r} already names turn {turn_id} with a different text")
        self.key = key
        self.turn_id = turn_id


class TurnNotCancellable(ChatlaneError):
    code = "turn_not_cancellable"
    http_status = 409

    def __init__(self, turn_id: str, state: str) -> None:
        super().__init__(f"turn {turn_id} is {state}; only queued or running turns can be cancelled")
        self.turn_id = turn_id
        self.state = state


class SessionBusy(ChatlaneError):
    """``on_busy="reject"`` and the session has a queued or running turn: nothing was written."""

    code = "session_busy"
    http_status = 409

    def __init__(self, session_id: str, waiting: int) -> None:
        super().__init__(f"session {session_id!r} is busy ({waiting} turn(s) queued or running); nothing was enqueued")
        self.session_id = session_id
        self.waiting = waiting


class QueueFull(ChatlaneError):
    code = "session_queue_full"
    http_status = 429

    def __init__(self, session_id: str, limit: int) -> None:
        super().__init__(f"session {session_id!r} already has {limit} waiting turns; retry later")
        self.session_id = session_id
        self.limit = limit


class TenantQuotaExceeded(ChatlaneError):
    """The tenant is at one of its quotas (CHATLANE_TENANT_MAX_QUEUED, CHATLANE_TENANT_TURNS_PER_MIN,
    or its key file override): nothing was written. ``retry_after_s``: when to try again (the API's
    Retry-After): when the bucket has a token again, or 1 s for max_queued (turns end at model speed)."""

    code = "tenant_quota"
    http_status = 429

    def __init__(self, tenant: str, which: str, limit: int, retry_after_ms: int) -> None:
        what = "turns queued or running" if which == "max_queued" else "new turns a minute"
        super().__init__(f"tenant {tenant!r} is at its quota of {limit} {what}; nothing was enqueued, retry later")
        self.tenant = tenant
        self.which = which  # "max_queued" | "turns_per_min"
        self.limit = limit
        self.retry_after_s = max(1, -(-retry_after_ms // 1000))


class WaitTimeout(ChatlaneError, TimeoutError):
    code = "wait_timeout"
    http_status = 504


class RedisUnavailable(ChatlaneError, ConnectionError):
    code = "redis_unavailable"
    http_status = 503


class ReplicationTimeout(ChatlaneError):
    """The Redis primary applied the write, but fewer than CHATLANE_REDIS_MIN_REPLICAS_ACK replicas
    confirmed it within CHATLANE_REDIS_WAIT_TIMEOUT_MS: not acknowledged. The write stays on the
    primary (Redis never rolls back) and a failover may still lose it, so the caller retries: an
    enqueue with the same idempotency key returns the same turn once it is replicated.

    Not a TimeoutError: that is an OSError, which chatlane reads as "Redis is down"."""

    code = "replication_timeout"
    http_status = 503

    def __init__(self, what: str, acked: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"{what}: applied by the Redis primary but confirmed by {acked} of the {wanted} replica(s) required "
            f"within {timeout_ms} ms; retry (with the same idempotency key for an enqueue)"
        )
        self.acked = acked
        self.wanted = wanted


class CommitNotReplicated(ReplicationTimeout):
    """A worker's fenced commit (advance.lua) ran on the primary, and began ``step``, but its
    replicas did not confirm it in time. Never reaches a client: the worker decides what to do."""

    def __init__(self, turn_id: str, step: Step, acked: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(f"commit of turn {turn_id}", acked, wanted, timeout_ms)
        self.turn_id = turn_id
        self.step = step


class HistoryEntryUnreadable(ChatlaneError):
    """A stored history entry is not a message chatlane can decode. It fails the turn that would
    read it (its status says which entry and why); reading the history over HTTP reports it."""

    code = "history_entry_unreadable"
    http_status = 500

    def __init__(self, index: int | None, reason: str) -> None:
        where = "a history entry" if index is None else f"history entry {index}"
        super().__init__(f"{where} cannot be decoded ({reason})")
        self.index = index
        self.reason = reason


class LeaseLost(Exception):
    """A fenced script found the session's lease held by someone else (or expired): nothing was
    written. Not a ChatlaneError: it never reaches a client, the drain handles it."""

    def __init__(self, lease_key: str) -> None:
        super().__init__(f"lease {lease_key} is no longer ours")
        self.lease_key = lease_key


class TurnNotRetryable(ChatlaneError):
    code = "turn_not_retryable"
    http_status = 409

    def __init__(self, turn_id: str, state: str) -> None:
        super().__init__(f"turn {turn_id} is {state}; only failed turns can be retried")
        self.turn_id = turn_id
        self.state = state


class SessionNotEmpty(ChatlaneError):
    """An import (``import_session``) into a session that has history, turns, or a running drain:
    nothing was written. Delete the session first to replace it."""

    code = "session_not_empty"
    http_status = 409

    def __init__(self, session_id: str, why: str) -> None:
        super().__init__(f"session {session_id!r} {why}; an import needs an empty session (nothing was written)")
        self.session_id = session_id
        self.why = why


class StreamLimit(ChatlaneError):
    """An API process holds as many open SSE streams as it may (CHATLANE_MAX_STREAMS, or
    CHATLANE_MAX_STREAMS_PER_TENANT for the caller's tenant): answered before the stream starts."""

    code = "stream_limit"
    http_status = 429
