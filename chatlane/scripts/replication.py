"""Acknowledged means replicated: a script's write, then ``WAIT n timeout``, on one connection.

Replication is asynchronous: a primary answers before any replica has the write, so a failover
can lose what it acknowledged. ``WAIT n timeout`` blocks until n replicas confirm everything the
*same connection* wrote before it, hence one pipeline (EVALSHA, then WAIT) on one connection: a
pooled client sends separate calls on whatever connection is free. The pipeline is not a
transaction; the script is atomic on its own.

A script that wrote nothing (an idempotent repeat answered "dup") would leave that connection's
write offset behind the original write, and WAIT would confirm at once even while the replica
still lacks it (measured: 1 replica "confirmed" with the replica stopped). So a PUBLISH to a
channel nobody reads sits between the two: Redis propagates every PUBLISH to replicas, which
moves the connection's offset to the end of the replication stream, and the stream is applied in
order, so WAIT then covers every write made before it, by any client. The same barrier confirms
a read (``confirm``): what was read is replicated once the barrier after it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from chatlane.errors import ReplicationTimeout
from chatlane.keys import Keys
from chatlane.settings import Settings


@dataclass(frozen=True)
class Replication:
    replicas: int  # CHATLANE_REDIS_MIN_REPLICAS_ACK; 0 = the primary's answer is enough
    timeout_ms: int
    channel: str

    @classmethod
    def of(cls, settings: Settings, keys: Keys) -> Replication:
        return cls(settings.redis_min_replicas_ack, settings.redis_wait_timeout_ms, keys.replication_barrier)

    async def run(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], *, wait: bool = True
    ) -> tuple[Any, int]:
        """The script's answer, and how many replicas confirmed it (0 without a WAIT)."""
        if not (self.replicas and wait):
            return await script(keys=keys, args=args), 0
        redis: Redis = script.registered_client
        for loaded in (False, True):
            async with redis.pipeline(transaction=False) as pipe:
                # evalsha, not script(client=pipe): that would send SCRIPT EXISTS first, every call.
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                res, acked = await self._barrier(pipe)
            if isinstance(res, redis_errors.NoScriptError) and not loaded:
                # A restarted or newly promoted primary has an empty script cache.
                script.sha = await redis.script_load(script.script)
                continue
            if isinstance(res, Exception):
                raise res
            return res, acked
        raise AssertionError("unreachable")

    async def confirm(self, redis: Redis) -> int:
        """How many replicas have everything written before this call (all of them without WAIT)."""
        if not self.replicas:
            return 0
        async with redis.pipeline(transaction=False) as pipe:
            _, acked = await self._barrier(pipe)
        return acked

    async def _barrier(self, pipe: Pipeline) -> tuple[Any, int]:
        pipe.publish(self.channel, "")
        pipe.wait(self.replicas, self.timeout_ms)
        *first, _, acked = await pipe.execute(raise_on_error=False)
        if isinstance(acked, redis_errors.ResponseError):
            # "WAIT cannot be used with replica instances": this server is no primary (any more).
            raise redis_errors.ReadOnlyError(str(acked))
        return (first[0] if first else None), int(acked)

    def short(self, acked: int) -> bool:
        return acked < self.replicas

    def require(self, acked: int, what: str) -> None:
        """Raises ReplicationTimeout for ``what`` if ``acked`` replicas are not enough."""
        if self.short(acked):
            raise ReplicationTimeout(what, acked, self.replicas, self.timeout_ms)
