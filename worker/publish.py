"""Publishes generations' chunks to their turns' Redis Streams without slowing the model loop.

One ``StreamWriter`` per worker process writes for every generation in flight: the chunks that
arrive while one write is under way go out together in the next pipeline, one entry per stream.
A fast model thus costs one command per burst rather than one per chunk (per-chunk XADDs were a
tenth of a worker's CPU in bench B1), and many sessions streaming at once share one round trip
(one XADD round trip per chunk was 15 % of the worker's samples in bench B2, 100 sessions).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from chatlane.scripts.publish import PublishChunks

log = logging.getLogger("chatlane.publish")


class StreamWriter:
    def __init__(self, redis: Redis, ttl_ms: int) -> None:
        self._publish = PublishChunks(redis)
        # Every write also sets the stream's TTL, so no stream outlives its turn for good: an
        # ex-holder that resumes after the turn ended and its stream expired would otherwise
        # re-create the key without one. The end script later cuts it to the retention.
        self.ttl_ms = ttl_ms
        self._pending: dict[tuple[str, int], list[str]] = {}  # (stream key, attempt) -> texts
        self._written: asyncio.Future[None] | None = None  # resolves when the pending batch is written
        self._flushing: asyncio.Task[None] | None = None

    def put(self, key: str, attempt: int, text: str) -> asyncio.Future[None]:
        """Queue a chunk; the future resolves once the batch holding it was written (or failed)."""
        self._pending.setdefault((key, attempt), []).append(text)
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        written = self._written
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return written

    def drop(self, key: str, attempt: int) -> None:
        """Forget a generation's chunks that are not written yet."""
        self._pending.pop((key, attempt), None)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            written, self._written = self._written, None
            try:
                # One script per batch: it skips turns whose record is gone (a deleted session).
                await self._publish({k: "".join(texts) for k, texts in batch.items()}, self.ttl_ms)
            except Exception as e:
                # Streaming is a view; the committed reply in the turn record is the truth.
                log.warning("could not publish chunks to %d stream(s): %s", len(batch), e)
            finally:
                if written is not None and not written.done():
                    written.set_result(None)


class ChunkPublisher:
    """The chunks of one generation attempt, written through the worker's ``StreamWriter``."""

    def __init__(self, writer: StreamWriter, key: str, attempt: int) -> None:
        self.writer = writer
        self.key = key
        self.attempt = attempt
        self._last: asyncio.Future[None] | None = None

    def put(self, text: str) -> None:
        self._last = self.writer.put(self.key, self.attempt, text)

    async def aclose(self) -> None:
        """Wait until every chunk is written (so they precede the turn's end entry)."""
        if self._last is not None:
            await asyncio.shield(self._last)

    def cancel(self) -> None:
        self.writer.drop(self.key, self.attempt)
