"""chatlane producer: enqueue chat turns and follow them (Python client and HTTP API)."""

from chatlane.errors import (
    ChatlaneError,
    IdempotencyConflict,
    InvalidInput,
    QueueFull,
    RedisUnavailable,
    ReplicationTimeout,
    TextTooLong,
    TurnNotCancellable,
    TurnNotFound,
    WaitTimeout,
)
from chatlane.settings import Settings, get_settings
from chatlane.turns import TurnState, TurnStatus
from producer.client import ChatProducer, Enqueued

__all__ = [
    "ChatProducer",
    "ChatlaneError",
    "Enqueued",
    "IdempotencyConflict",
    "InvalidInput",
    "QueueFull",
    "RedisUnavailable",
    "ReplicationTimeout",
    "Settings",
    "TextTooLong",
    "TurnNotCancellable",
    "TurnNotFound",
    "TurnState",
    "TurnStatus",
    "WaitTimeout",
    "get_settings",
]
