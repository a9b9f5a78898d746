"""Typed caller of ``publish_chunks.lua``: write a batch of token chunks to their turns' streams."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register


class PublishChunks:
    def __init__(self, redis: Redis) -> None:
        self._script = register(redis, "publish_chunks")

    async def __call__(self, chunks: Mapping[tuple[str, int], str], ttl_ms: int) -> int:
        """``chunks``: (stream key, attempt) -> text. Returns how many streams were written (a
        stream whose turn record is gone is skipped)."""
        keys: list[str] = []
        args: list[str | int] = [ttl_ms]
        for (stream, attempt), text in chunks.items():
            keys += [stream, stream.removesuffix(Keys.stream_suffix)]
            args += [attempt, text]
        return int(await self._script(keys=keys, args=args))
