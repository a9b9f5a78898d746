"""Errors raised by the producer API; each carries a stable machine-readable ``code``."""

from __future__ import annotations


class ChatlaneError(Exception):
    code = "chatlane_error"


class InvalidInput(ChatlaneError, ValueError):
    code = "invalid_input"


class TextTooLong(InvalidInput):
    code = "text_too_long"


class TurnNotFound(ChatlaneError, LookupError):
    code = "turn_not_found"

    def __init__(self, turn_id: str) -> None:
        super().__init__(f"no turn with id {turn_id!r} (unknown, or expired after it ended)")
        self.turn_id = turn_id


class IdempotencyConflict(ChatlaneError):
    code = "idempotency_conflict"

    def __init__(self, key: str, turn_id: str) -> None:
        super().__init__(f"idempotency key {key!r} already names turn {turn_id} with a different text")
        self.key = key
        self.turn_id = turn_id


class TurnNotCancellable(ChatlaneError):
    code = "turn_not_cancellable"

    def __init__(self, turn_id: str, state: str) -> None:
        super().__init__(f"turn {turn_id} is {state}; only queued turns can be cancelled")
        self.turn_id = turn_id
        self.state = state


class QueueFull(ChatlaneError):
    code = "session_queue_full"

    def __init__(self, session_id: str, limit: int) -> None:
        super().__init__(f"session {session_id!r} already has {limit} waiting turns; retry later")
        self.session_id = session_id
        self.limit = limit


class WaitTimeout(ChatlaneError, TimeoutError):
    code = "wait_timeout"


class RedisUnavailable(ChatlaneError, ConnectionError):
    code = "redis_unavailable"
