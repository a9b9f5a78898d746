"""What a runner knows of its session's history while it holds the lease: the window, and with
``CHATLANE_HISTORY_STRATEGY=summarize`` the summary of what left it.

The runner is the session's only writer, so it keeps both in memory between turns and only adds
what each commit wrote. An entry that cannot be decoded fails each turn that would read it (with
that error), not the drain: the runner goes on, and reads again for the next turn.
"""

from __future__ import annotations

import asyncio
import logging

from langchain_core.messages import BaseMessage
from redis.asyncio import Redis

from chatlane.errors import HistoryEntryUnreadable, LeaseLost
from chatlane.keys import SessionKeys
from worker.lease import Lease
from worker.summary import READ_AT_MOST, Summarizer, Summary
from worker.turn import run_config
from worker.window import Window, load_window

log = logging.getLogger("chatlane.history")


class SessionHistory:
    def __init__(
        self, redis: Redis, keys: SessionKeys, max_tokens: int, summarizer: Summarizer | None, refresh_messages: int,
        timeout_s: float, max_entries: int = 0,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.keys = keys
        self.max_tokens = max_tokens
        self.summarizer = summarizer
        self.refresh_messages = refresh_messages
        self.timeout_s = timeout_s
        self.max_entries = max_entries  # CHATLANE_HISTORY_MAX_MESSAGES (0: none)
        self.window: Window | None = None
        self.error: HistoryEntryUnreadable | None = None
        self.summary = Summary()
        # Absolute indexes (keys.py, SessionKeys.trimmed), kept only with a summarizer: entries ever
        # stored, and how many of the oldest were trimmed (as last read; commits may trim more).
        self.total = 0
        self.trimmed = 0

    async def load(self, lease: Lease, tail: list[str] | None) -> None:
        """Read the summary (if summarizing) and the window; an unreadable entry is kept as ``error``."""
        if self.summarizer is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self.keys.summary, ["upto", "text"])
                pipe.llen(self.keys.history)
                pipe.get(self.keys.trimmed)
                (upto, text), stored, trimmed = await lease.guard(pipe.execute())
            self.trimmed = int(trimmed or 0)
            self.total = self.trimmed + stored
            self.summary = Summary(int(upto or 0), text or "")
        budget = self.max_tokens - self.summary.tokens
        try:
            self.window = await lease.guard(load_window(self.redis, self.keys.history, budget, tail, self.max_entries))
            self.error = None
        except HistoryEntryUnreadable as e:
            self.window, self.error = None, e

    async def window_for(self, lease: Lease, session_id: str, turn_id: str) -> list[BaseMessage]:
        """The messages a turn answers from: the summary (if any), then the window. Refreshes the
        summary first when it is due. Raises HistoryEntryUnreadable."""
        if self.window is None:
            await self.load(lease, None)  # perhaps repaired since
        if self.error is not None or self.window is None:
            raise self.error or HistoryEntryUnreadable(None, "no window")
        if self.summarizer is not None and self._uncovered() >= self.refresh_messages:
            await self._refresh(lease, session_id, turn_id)
        summary = self.summary.message()
        return [summary, *self.window.messages] if summary else self.window.messages

    def committed(self, messages: list[BaseMessage]) -> None:
        """A turn's entries were appended to the history."""
        self.total += len(messages)
        if self.window is not None:
            self.window.extend(messages)

    def _uncovered(self) -> int:
        """Entries that left the window and are not in the summary yet (nor trimmed: those are gone)."""
        assert self.window is not None
        return self.total - self.window.entries - max(self.summary.upto, self.trimmed)

    async def _refresh(self, lease: Lease, session_id: str, turn_id: str) -> None:
        assert self.summarizer is not None and self.window is not None
        start = self.total - self.window.entries  # absolute index of the window's first entry
        try:
            # The runner is the session's only writer: nothing trims between this read and the next.
            self.trimmed = int(await lease.guard(self.redis.get(self.keys.trimmed)) or 0)
            # Entries trimmed before the summary reached them are gone: it goes on after them.
            first = max(self.summary.upto, self.trimmed)
            if first >= start:
                return
            entries: list[str] = await lease.guard(
                self.redis.lrange(
                    self.keys.history, first - self.trimmed, min(start, first + READ_AT_MOST) - self.trimmed - 1
                )  # type: ignore[arg-type]
            )
            config = run_config(session_id=session_id, turn_id=turn_id, attempt=0, metadata={"chatlane": "summary"})
            old = Summary(first, self.summary.text)
            folded = await lease.guard(asyncio.wait_for(self.summarizer.fold(old, entries, config), self.timeout_s))
            if folded is None:
                return
            summary, _ = folded
            if await lease.save_summary(summary.upto, summary.text):
                self.summary = summary
                self.window.resize(self.max_tokens - summary.tokens)
        except LeaseLost:
            raise
        except Exception as e:  # the turn goes on with the summary it has; the next one tries again
            log.warning("session %s: could not refresh its summary (%s: %s)", session_id, type(e).__name__, e)
