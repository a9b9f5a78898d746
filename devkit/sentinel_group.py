"""A Redis Sentinel group of real processes on loopback: a primary, replicas and sentinels.

Each node is a ``RedisServer`` in a temporary directory of its own, on a free port. Tests and
``python -m devkit.failover`` use it to kill the primary and watch the sentinels promote a
replica. The killed node can be started again the way a deployment restarts it: as a replica of
whatever the sentinels now name as primary (a Sentinel-aware start-up script asks them first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from chatlane.connection import REDIS_DOWN
from devkit.link import Link
from devkit.redis_server import Fsync, RedisServer, redis_server_binary

MASTER_NAME = "chatlane"
# A node that rejoins after a failover needs a full sync (it has writes the new primary never
# got), and Redis delays a diskless full sync by repl-diskless-sync-delay (5 s by default) to
# wait for more replicas. With one replica there are none to wait for; the measured time for
# writes to be acknowledged again after a failover at MIN_REPLICAS_ACK=1 was ~5 s longer with it.
NODE_ARGS = ["--repl-diskless-sync-delay", "0"]


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel`` monitoring the primary at ``primary_port``."""

    def __init__(self, primary_port: int, *, quorum: int, down_after_ms: int, failover_timeout_ms: int) -> None:
        super().__init__()
        self.conf = self.dir / "sentinel.conf"
        # Sentinel rewrites its config file as it learns the group, so it must be writable.
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir / 'redis.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )

    def command(self) -> list[str]:
        return [redis_server_binary(), str(self.conf), "--sentinel"]


class SentinelGroup:
    """``replicas`` replicas of one primary, watched by ``sentinels`` sentinels (quorum: a majority).

    ``down_after_ms`` is how long the primary must be unreachable before a sentinel calls it down;
    a failover then takes about one more second to elect a leader and promote a replica.

    With ``links`` every replica reaches its primary through a ``devkit.link.Link``, so
    ``cut_primary_links`` can leave the primary serving clients while its replicas hear nothing
    more from it (what they would see if its host lost its network, or died before its last
    writes left it). Sentinel would "fix" a replica that names another address than the
    primary's after ``failover_timeout_ms``, so that is long with links.
    """

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        appendfsync: Fsync | None = "always",
        down_after_ms: int = 1000,
        failover_timeout_ms: int | None = None,
        links: bool = False,
    ) -> None:
        self.appendfsync = appendfsync
        self.use_links = links
        self.links: dict[int, Link] = {}  # replica port -> its link to its primary
        self.nodes: list[RedisServer] = [RedisServer(appendfsync=appendfsync, extra_args=NODE_ARGS)]
        primary = self.nodes[0].port
        self.nodes += [RedisServer(appendfsync=appendfsync) for _ in range(replicas)]
        for n in self.nodes[1:]:
            n.extra_args = self._replica_args(n, primary)
        if failover_timeout_ms is None:
            failover_timeout_ms = 300_000 if links else 10_000
        self.sentinels = [
            SentinelServer(
                primary, quorum=sentinels // 2 + 1, down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms
            )
            for _ in range(sentinels)
        ]

    # -- addresses ---------------------------------------------------------------------------

    @property
    def sentinel_list(self) -> str:
        """The value of CHATLANE_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        """What a worker or producer process needs to find the group."""
        return {"CHATLANE_REDIS_SENTINELS": self.sentinel_list, "CHATLANE_REDIS_SENTINEL_MASTER": MASTER_NAME}

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        for s in self.sentinels:
            if not (s.proc and s.proc.poll() is None):
                continue
            with SyncRedis(port=s.port, socket_timeout=1, decode_responses=True) as r:
                addr = r.sentinel_get_master_addr_by_name(MASTER_NAME)
                if addr:
                    return int(addr[1])
        raise RuntimeError("no sentinel names a primary")

    def primary(self) -> RedisServer:
        return self.node(self.primary_port())

    # -- life cycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        for n in self.nodes:
            n.start()
        deadline = time.monotonic() + timeout
        for n in self.nodes[1:]:
            _until(partial(_link_up, n.port), deadline, f"replica {n.port} in sync")
        for s in self.sentinels:
            s.start()
        # Every sentinel has found every replica and every other sentinel: only then can they
        # agree on a failover.
        want_replicas, want_peers = len(self.nodes) - 1, len(self.sentinels) - 1

        def settled() -> bool:
            for s in self.sentinels:
                with SyncRedis(port=s.port, socket_timeout=1, decode_responses=True) as r:
                    m = r.sentinel_master(MASTER_NAME)
                if int(m["num-slaves"]) < want_replicas or int(m["num-other-sentinels"]) < want_peers:
                    return False
            return True

        _until(settled, deadline, "sentinels to know the whole group")
        return self

    async def switch(self) -> None:
        """A planned failover (SENTINEL FAILOVER): the primary lives on and becomes a replica."""
        async with Redis(port=self.sentinels[0].port, socket_timeout=2, decode_responses=True) as r:
            await r.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)  # type: ignore[no-untyped-call]

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (a crash: whatever its replicas had not received is gone)."""
        node = self.primary()
        node.kill()
        return node

    async def wait_promoted(self, old_port: int, timeout: float = 30.0) -> RedisServer:
        """Until a majority of sentinels name a new primary and that node says it is one."""
        deadline = time.monotonic() + timeout
        while True:
            ports = [p for p in [await _named_primary(s.port) for s in self.sentinels] if p]
            for port in set(ports):
                if port != old_port and ports.count(port) > len(self.sentinels) // 2 and await _is_primary(port):
                    return self.node(port)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica was promoted within {timeout:g}s")
            await asyncio.sleep(0.02)

    def _replica_args(self, node: RedisServer, primary_port: int) -> list[str]:
        if self.use_links:
            old = self.links.pop(node.port, None)
            if old is not None:
                old.close()
            self.links[node.port] = Link(primary_port).start()
            primary_port = self.links[node.port].port
        return [*NODE_ARGS, "--replicaof", "127.0.0.1", str(primary_port)]

    def cut_primary_links(self) -> None:
        """The primary's replicas hear nothing more from it (and it from them); clients still do."""
        primary = self.primary_port()
        for link in self.links.values():
            if link.target_port == primary:
                link.cut()

    def restart_as_replica(self, node: RedisServer) -> None:
        """Start a dead node again as a replica of the current primary, keeping its data dir."""
        node.extra_args = self._replica_args(node, self.primary_port())
        node.start()

    async def wait_replicas_in_sync(self, count: int, timeout: float = 30.0) -> None:
        """Until the primary has ``count`` replicas online (synced, streaming: what WAIT counts)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                port = self.primary_port()
                async with Redis(port=port, decode_responses=True, socket_timeout=1) as r:
                    info = await r.info("replication")
                online = [k for k, v in info.items() if k.startswith("slave") and v.get("state") == "online"]
                if info.get("role") == "master" and len(online) >= count:
                    return
            except (*REDIS_DOWN, RuntimeError):  # type: ignore[misc]
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the primary did not get {count} replica(s) within {timeout:g}s")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        for n in self.nodes:
            n.close()
        for link in self.links.values():
            link.close()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs(self) -> str:
        out = []
        for s in [*self.nodes, *self.sentinels]:
            log = Path(s.dir) / "redis.log"
            if log.exists():
                out.append(f"--- {type(s).__name__} {s.port}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


def _link_up(port: int) -> bool:
    with SyncRedis(port=port, socket_timeout=1, decode_responses=True) as r:
        return bool(r.info("replication").get("master_link_status") == "up")


def _until(cond: Callable[[], bool], deadline: float, what: str) -> None:
    while True:
        try:
            if cond():
                return
        except REDIS_DOWN:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def _named_primary(sentinel_port: int) -> int | None:
    try:
        async with Redis(port=sentinel_port, socket_timeout=1, decode_responses=True) as r:
            addr = await r.sentinel_get_master_addr_by_name(MASTER_NAME)  # type: ignore[no-untyped-call]
    except REDIS_DOWN:
        return None
    return int(addr[1]) if addr else None


async def _is_primary(port: int) -> bool:
    try:
        async with Redis(port=port, socket_timeout=1, decode_responses=True) as r:
            return bool((await r.info("replication")).get("role") == "master")
    except REDIS_DOWN:
        return False
