"""The Redis a soak runs against, and the Redis faults it can suffer.

``Single``: one redis-server (the soak's original shape). ``Sentinel``: a Sentinel group (a
primary, one replica, three sentinels; ``devkit.sentinel_group``), where the same faults hit the
current primary and cause failovers, plus two faults of their own:

- ``failover``: the primary's replica link is cut, 300 ms later the primary is SIGKILLed (a host
  that dies with its last writes not yet sent); after the promotion it comes back as a replica.
- ``switch``: SENTINEL FAILOVER, a planned switch; the old primary lives on and is made a
  replica by Sentinel about 10 s later.

Every fault returns once Redis takes acknowledged writes again: for a Sentinel group with
MIN_REPLICAS_ACK >= 1 that is when the new primary has a replica in sync.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as SentinelClient
from redis.backoff import ExponentialBackoff

from chatlane.connection import FollowingPool
from devkit.redis_server import Fsync, RedisServer
from devkit.sentinel_group import MASTER_NAME, NODE_ARGS, SentinelGroup

PARTITION_S = 0.3
# The soak's own reads ride out the outages it causes.
RIDE_OUT: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 10,
    "retry": Retry(ExponentialBackoff(cap=1.0), 10),
    "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
}


class Single:
    kinds: tuple[str, ...] = ("partition",)

    def __init__(self, appendfsync: Fsync) -> None:
        self.server = RedisServer(appendfsync=appendfsync).start()

    def describe(self) -> str:
        return f"one redis-server, AOF {self.server.appendfsync}"

    def settings(self) -> dict[str, str]:
        return {"redis_url": self.server.url}

    def env(self) -> dict[str, str]:
        return {"CHATLANE_REDIS_URL": self.server.url}

    def raw_client(self) -> Redis:
        client: Redis = Redis.from_url(self.server.url, **RIDE_OUT)
        return client

    async def restart(self) -> None:
        self.server.kill()
        self.server.start()

    async def outage(self, down_s: float) -> None:
        self.server.kill()
        await asyncio.sleep(down_s)
        self.server.start()

    async def hang(self, hung_s: float) -> None:
        assert self.server.proc is not None
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(hung_s)
        finally:
            os.kill(self.server.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.server.close()


class Sentinel:
    kinds = ("failover", "switch")

    def __init__(self, appendfsync: Fsync, min_replicas_ack: int) -> None:
        self.min_replicas_ack = min_replicas_ack
        self.group = SentinelGroup(appendfsync=appendfsync, links=True).start()
        self.promotions: list[float] = []  # seconds from fault to promotion

    def describe(self) -> str:
        return f"Sentinel group (primary, 1 replica, 3 sentinels), AOF {self.group.appendfsync}, " + (
            f"MIN_REPLICAS_ACK {self.min_replicas_ack}"
        )

    def settings(self) -> dict[str, str]:
        return {
            "redis_sentinels": self.group.sentinel_list,
            "redis_sentinel_master": MASTER_NAME,
            "redis_min_replicas_ack": str(self.min_replicas_ack),
        }

    def env(self) -> dict[str, str]:
        return {**self.group.env(), "CHATLANE_REDIS_MIN_REPLICAS_ACK": str(self.min_replicas_ack)}

    def raw_client(self) -> Redis:
        sentinels = [("127.0.0.1", s.port) for s in self.group.sentinels]
        client: Redis = SentinelClient(sentinels, socket_timeout=2).master_for(  # type: ignore[no-untyped-call]
            MASTER_NAME, connection_pool_class=FollowingPool, **RIDE_OUT
        )
        return client

    async def _promoted_and_in_sync(self, old: RedisServer, t_fault: float, restart: bool) -> None:
        await self.group.wait_promoted(old.port, timeout=60)
        self.promotions.append(time.monotonic() - t_fault)
        if restart:
            self.group.restart_as_replica(old)
        await self.group.wait_replicas_in_sync(1, timeout=60)

    async def restart(self) -> None:
        """Killed and started again at once: back before the sentinels call it down, no failover."""
        old = self.group.kill_primary()
        old.extra_args = list(NODE_ARGS)  # as the primary it still is
        old.start()
        if self.group.primary_port() != old.port:  # the sentinels were quicker after all
            old.kill()
            self.group.restart_as_replica(old)
        await self.group.wait_replicas_in_sync(1, timeout=60)

    async def outage(self, down_s: float) -> None:
        t0 = time.monotonic()
        old = self.group.kill_primary()
        await self.group.wait_promoted(old.port, timeout=60)
        self.promotions.append(time.monotonic() - t0)
        await asyncio.sleep(max(0.0, t0 + down_s - time.monotonic()))
        self.group.restart_as_replica(old)
        await self.group.wait_replicas_in_sync(1, timeout=60)

    async def hang(self, hung_s: float) -> None:
        """The primary stops answering past the sentinels' down-after: they promote the replica,
        and the old primary wakes up still believing it is the primary, until they demote it."""
        old = self.group.primary()
        assert old.proc is not None
        os.kill(old.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            await self.group.wait_promoted(old.port, timeout=60)
            self.promotions.append(time.monotonic() - t0)
            await asyncio.sleep(max(0.0, t0 + hung_s - time.monotonic()))
        finally:
            os.kill(old.proc.pid, signal.SIGCONT)
        await self.group.wait_replicas_in_sync(1, timeout=60)

    async def failover(self) -> None:
        old = self.group.primary()
        self.group.cut_primary_links()
        await asyncio.sleep(PARTITION_S)
        t0 = time.monotonic()
        old.kill()
        await self._promoted_and_in_sync(old, t0, restart=True)

    async def switch(self) -> None:
        old = self.group.primary()
        t0 = time.monotonic()
        await self.group.switch()
        await self._promoted_and_in_sync(old, t0, restart=False)

    def close(self) -> None:
        self.group.close()


def down_time(rng: random.Random) -> float:
    """How long an outage or a hang lasts: past the sentinels' down-after (1 s) either way."""
    return rng.uniform(2, 4)
