"""The history window a drain feeds the model: the stored tail, trimmed to a token budget."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from redis.asyncio import Redis

from chatlane.messages import decode_messages

# History entries read first; claim.lua returns them together with the lease.
FIRST_BATCH = 32


class Window:
    """The newest messages that fit ``max_tokens``, opening on a user message (never on an
    orphaned assistant reply): what ``trim_messages(strategy="last", start_on="human")`` keeps.

    Each message's tokens are counted once, when it enters. Re-trimming the whole window with
    ``trim_messages`` after every turn re-counted it many times over (a binary search over
    prefixes): a third of a busy worker's CPU in bench B1b.
    """

    def __init__(self, max_tokens: int, counted: Iterable[tuple[BaseMessage, int]] = ()) -> None:
        self.max_tokens = max_tokens
        self._items: deque[tuple[BaseMessage, int]] = deque()
        self._tokens = 0
        for item in counted:
            self._push(item)
        self._fit()

    @property
    def messages(self) -> list[BaseMessage]:
        return [m for m, _ in self._items]

    def extend(self, messages: Iterable[BaseMessage]) -> None:
        for m in messages:
            self._push((m, count_tokens_approximately([m])))
        self._fit()

    def _push(self, item: tuple[BaseMessage, int]) -> None:
        self._items.append(item)
        self._tokens += item[1]

    def _fit(self) -> None:
        while self._items and (self._tokens > self.max_tokens or self._items[0][0].type != "human"):
            self._tokens -= self._items.popleft()[1]


async def load_window(redis: Redis, key: str, max_tokens: int, newest: list[str] | None = None) -> Window:
    """Read the history from its end, in growing batches, until the budget is covered.

    ``newest``: the last ``FIRST_BATCH`` entries, if the caller has them already. Messages are
    decoded newest first and only while they fit, so the cost depends on the window, not on the
    length of the history (decoding everything a batch read was 1.3× the turn latency with a
    long history, bench B5).
    """
    newest_first: list[tuple[BaseMessage, int]] = []
    tokens, loaded, batch = 0, 0, FIRST_BATCH
    raw = newest
    while True:
        if raw is None:
            raw = await redis.lrange(key, -(loaded + batch), -(loaded + 1))  # type: ignore[misc]
        for entry in reversed(raw):
            (msg,) = decode_messages([entry])
            n = count_tokens_approximately([msg])
            if tokens + n > max_tokens:
                return Window(max_tokens, reversed(newest_first))
            newest_first.append((msg, n))
            tokens += n
        if len(raw) < batch:
            return Window(max_tokens, reversed(newest_first))
        loaded += len(raw)
        # Read about as many more as the budget still needs at the size seen so far (a fixed
        # x4 growth read ~90 KB to use ~8 KB with chat-sized messages, bench B5), never fewer
        # than 8 nor more than 4x the last batch.
        needed = (max_tokens - tokens) * loaded / max(tokens, 1)
        batch = max(8, min(batch * 4, int(needed * 1.25) + 1))
        raw = None
