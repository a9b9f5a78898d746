"""Typed caller of ``publish_chunks.lua``: write a batch of stream entries to their turns' streams."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register

Fields = Mapping[str, str | int]


class PublishChunks:
    def __init__(self, redis: Redis) -> None:
        self._script = register(redis, "publish_chunks")

    async def __call__(self, batch: Mapping[str, Sequence[Fields]], ttl_ms: int) -> int:
        """``batch``: stream key -> its entries, in order. Returns how many streams were written
        (a stream whose turn record is gone is skipped)."""
        keys: list[str] = []
        args: list[str | int] = [ttl_ms]
        for stream, entries in batch.items():
            keys += [stream, stream.removesuffix(Keys.stream_suffix)]
            flat = [[str(x) for kv in e.items() for x in kv] for e in entries]
            args.append(json.dumps(flat, separators=(",", ":"), ensure_ascii=False))
        return int(await self._script(keys=keys, args=args))
