"""chatlane producer: enqueue chat turns and follow them (Python client and HTTP API)."""

from chatlane.errors import (
    ChatlaneError,
    IdempotencyConflict,
    InvalidInput,
    QueueFull,
    RedisUnavailable,
    ReplicationTimeout,
    SessionBusy,
    TenantQuotaExceeded,
    TextTooLong,
    TurnNotCancellable,
    TurnNotFound,
    WaitTimeout,
)
from chatlane.settings import Settings, get_settings
from chatlane.turns import OnBusy, TurnState, TurnStatus
from producer.client import ChatProducer, Enqueued

__all__ = [
    "ChatProducer",
    "ChatlaneError",
    "Enqueued",
    "IdempotencyConflict",
    "InvalidInput",
    "OnBusy",
    "QueueFull",
    "RedisUnavailable",
    "ReplicationTimeout",
    "SessionBusy",
    "Settings",
    "TenantQuotaExceeded",
    "TextTooLong",
    "TurnNotCancellable",
    "TurnNotFound",
    "TurnState",
    "TurnStatus",
    "WaitTimeout",
    "get_settings",
]
