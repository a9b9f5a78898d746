"""chatlane producer: enqueue chat turns and follow them (Python client and HTTP API)."""

from producer.client import ChatProducer, Enqueued
from producer.errors import (
    ChatlaneError,
    IdempotencyConflict,
    InvalidInput,
    QueueFull,
    RedisUnavailable,
    TextTooLong,
    TurnNotCancellable,
    TurnNotFound,
    WaitTimeout,
)
from producer.models import TurnState, TurnStatus
from producer.settings import Settings, get_settings

__all__ = [
    "ChatProducer",
    "ChatlaneError",
    "Enqueued",
    "IdempotencyConflict",
    "InvalidInput",
    "QueueFull",
    "RedisUnavailable",
    "Settings",
    "TextTooLong",
    "TurnNotCancellable",
    "TurnNotFound",
    "TurnState",
    "TurnStatus",
    "WaitTimeout",
    "get_settings",
]
