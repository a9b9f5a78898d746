"""The history window a drain feeds the model: the stored tail, trimmed to a token budget."""

from __future__ import annotations

from langchain_core.messages import BaseMessage, trim_messages
from langchain_core.messages.utils import count_tokens_approximately
from redis.asyncio import Redis

from producer.history import decode_messages

_FIRST_BATCH = 32


async def load_window(redis: Redis, key: str, max_tokens: int) -> list[BaseMessage]:
    """Read the history from its end, in growing batches, until the budget is covered.

    Cost depends on the window, not on the length of the history.
    """
    msgs: list[BaseMessage] = []
    loaded, batch = 0, _FIRST_BATCH
    while True:
        raw = await redis.lrange(key, -(loaded + batch), -(loaded + 1))  # type: ignore[misc]
        msgs = decode_messages(raw) + msgs
        loaded += len(raw)
        if len(raw) < batch or count_tokens_approximately(msgs) > max_tokens:
            return trim(msgs, max_tokens)
        batch *= 4


def trim(msgs: list[BaseMessage], max_tokens: int) -> list[BaseMessage]:
    # start_on="human": a window never opens with an orphaned assistant reply.
    return trim_messages(msgs, max_tokens=max_tokens, token_counter="approximate", strategy="last", start_on="human")
