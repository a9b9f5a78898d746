"""Publishes generations' chunks and tool events to their turns' Redis Streams without slowing the
model loop.

One ``StreamWriter`` per worker process writes for every generation in flight: the chunks that
arrive while one write is under way go out together in the next pipeline, consecutive chunks of a
stream as one entry (a tool event is an entry of its own, in its place).
A fast model thus costs one command per burst rather than one per chunk (per-chunk XADDs were a
tenth of a worker's CPU in bench B1), and many sessions streaming at once share one round trip
(one XADD round trip per chunk was 15 % of the worker's samples in bench B2, 100 sessions).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from chatlane.connection import REDIS_DOWN
from chatlane.logs import REDIS_OUTAGE
from chatlane.scripts.publish import PublishChunks
from chatlane.stream import ToolEvent, chunk_fields

log = logging.getLogger("chatlane.publish")


class StreamWriter:
    def __init__(self, redis: Redis, ttl_ms: int) -> None:
        self._publish = PublishChunks(redis)
        # Every write also sets the stream's TTL, so no stream outlives its turn for good: an
        # ex-holder that resumes after the turn ended and its stream expired would otherwise
        # re-create the key without one. The end script later cuts it to the retention.
        self.ttl_ms = ttl_ms
        # stream key -> entries to add, in order: (attempt, texts of consecutive chunks, or a tool event)
        self._pending: dict[str, list[tuple[int, list[str] | ToolEvent]]] = {}
        self._written: asyncio.Future[None] | None = None  # resolves when the pending batch is written
        self._flushing: asyncio.Task[None] | None = None

    def put(self, key: str, attempt: int, text: str) -> asyncio.Future[None]:
        """Queue a chunk; the future resolves once the batch holding it was written (or failed)."""
        entries = self._pending.setdefault(key, [])
        last = entries[-1] if entries else None
        if last is not None and last[0] == attempt and isinstance(last[1], list):
            last[1].append(text)
        else:
            entries.append((attempt, [text]))
        return self._schedule()

    def put_tool(self, key: str, attempt: int, event: ToolEvent) -> asyncio.Future[None]:
        """Queue a tool event, after the chunks queued before it."""
        self._pending.setdefault(key, []).append((attempt, event))
        return self._schedule()

    def _schedule(self) -> asyncio.Future[None]:
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        written = self._written
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return written

    def drop(self, key: str, attempt: int) -> None:
        """Forget a generation's chunks and tool events that are not written yet."""
        kept = [e for e in self._pending.get(key, []) if e[0] != attempt]
        if kept:
            self._pending[key] = kept
        else:
            self._pending.pop(key, None)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            written, self._written = self._written, None
            try:
                # One script per batch: it skips turns whose record is gone (a deleted session).
                entries = {
                    key: [chunk_fields(attempt, "".join(what)) if isinstance(what, list) else what.fields(attempt)
                          for attempt, what in items]
                    for key, items in batch.items()
                }  # fmt: skip
                await self._publish(entries, self.ttl_ms)
            except REDIS_DOWN as e:
                REDIS_OUTAGE.failed("the token streams", e)  # one line per outage, not one per batch
            except Exception as e:
                # Streaming is a view; the committed reply in the turn record is the truth.
                log.warning("could not publish chunks to %d stream(s): %s", len(batch), e)
            finally:
                if written is not None and not written.done():
                    written.set_result(None)


class ChunkPublisher:
    """The chunks and tool events of one generation attempt, written through the worker's
    ``StreamWriter``. It is the ``Emitter`` a turn handler streams to (worker/turn.py)."""

    def __init__(self, writer: StreamWriter, key: str, attempt: int) -> None:
        self.writer = writer
        self.key = key
        self.attempt = attempt
        self._last: asyncio.Future[None] | None = None

    def text(self, text: str) -> None:
        self._last = self.writer.put(self.key, self.attempt, text)

    def tool(self, event: ToolEvent) -> None:
        self._last = self.writer.put_tool(self.key, self.attempt, event)

    async def aclose(self) -> None:
        """Wait until every chunk is written (so they precede the turn's end entry)."""
        if self._last is not None:
            await asyncio.shield(self._last)

    def cancel(self) -> None:
        self.writer.drop(self.key, self.attempt)
