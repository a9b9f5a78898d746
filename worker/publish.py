"""Publishes a generation's chunks to the turn's Redis Stream without slowing the model loop.

Chunks are buffered and written by at most one flush task at a time; the chunks that arrived
during one write go out as one entry, so a fast model costs one command per burst rather than
one per chunk (per-chunk XADDs were a tenth of a worker's CPU with a fast model, bench B1).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from producer.stream import chunk_fields

log = logging.getLogger("chatlane.publish")


class ChunkPublisher:
    def __init__(self, redis: Redis, key: str, attempt: int) -> None:
        self.redis = redis
        self.key = key
        self.attempt = attempt
        self._buf: list[str] = []
        self._flushing: asyncio.Task[None] | None = None

    def put(self, text: str) -> None:
        self._buf.append(text)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._buf:
            batch, self._buf = self._buf, []
            try:
                await self.redis.xadd(self.key, chunk_fields(self.attempt, "".join(batch)))  # type: ignore[arg-type]
            except Exception as e:
                # Streaming is a view; the committed reply in the turn record is the truth.
                log.warning("could not publish %d chunk(s) to %s: %s", len(batch), self.key, e)

    async def aclose(self) -> None:
        """Wait until every chunk is written (so they precede the turn's end entry)."""
        if self._flushing is not None:
            await self._flushing

    def cancel(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
