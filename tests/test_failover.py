"""Failover: Sentinel, replicas and WAIT (CHATLANE_REDIS_MIN_REPLICAS_ACK), against real
redis-server and redis-sentinel processes on loopback and real worker processes.

The long measurement, with and without WAIT and for three kinds of failover, is
``python -m devkit.failover`` (``make failover``); this is its fast version, with the goal
asserted: with MIN_REPLICAS_ACK=1 a failover loses no acknowledged enqueue, duplicates nothing,
takes back no turn end a client has seen, and every session is served again.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from chatlane.cancelling import cancel_and_wait
from chatlane.connection import connect
from chatlane.keys import Keys
from chatlane.scripts import Advance, Claim, Handback, Renew, SaveSummary
from devkit import faults
from devkit.failover import Options, measure
from devkit.link import Link
from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import RedisServer
from producer import ChatProducer, RedisUnavailable, ReplicationTimeout, Settings
from tests.conftest import TEST_WORKER_ENV, new_prefix, sid, wait_async
from tests.test_faults import checked, running_holder
from worker.lease import Lease, LeasePolicy, LeaseScripts
from worker.queue_pool import arq_redis_settings


def test_sentinel_settings_parse_and_check() -> None:
    s = Settings(redis_sentinels="10.0.0.1:26379, sentinel-b:26380,[::1]:26381", redis_sentinel_master="main")
    assert s.sentinel_addresses == [("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    for bad in ("10.0.0.1", "host:", ":26379", "host:port", "host:70000"):
        with pytest.raises(ValidationError):
            Settings(redis_sentinels=bad)
    # WAIT blocks its connection: a timeout past the socket timeout would read as "Redis down".
    with pytest.raises(ValidationError):
        Settings(redis_min_replicas_ack=1, redis_wait_timeout_ms=5000, redis_timeout_s=2)
    # Plain `arq worker.WorkerSettings` gets arq's own Sentinel settings from the same variables.
    arq = arq_redis_settings(s.model_copy(update={"redis_password": SecretStr("pw")}))
    assert arq.sentinel and arq.host == s.sentinel_addresses and arq.sentinel_master == "main"
    assert arq.password == "pw"


# -- a primary and one replica, no sentinels ---------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and its replica, in sync."""
    primary = RedisServer(appendfsync="always").start()
    replica = RedisServer(appendfsync="always", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        yield primary, replica
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT) if replica.proc and replica.proc.poll() is None else None
        replica.close()
        primary.close()


async def in_sync(primary: RedisServer, timeout: float = 10) -> None:
    async with Redis(port=primary.port, decode_responses=True) as r:
        deadline = time.monotonic() + timeout
        while (await r.execute_command("WAIT", 1, 100)) < 1:
            assert time.monotonic() < deadline, "replica never in sync"


def stopped(server: RedisServer, stop: bool) -> None:
    """SIGSTOP / SIGCONT: a replica that hears but does not answer (GC, disk, network stall)."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP if stop else signal.SIGCONT)


async def test_enqueue_not_replicated_in_time_is_an_error_and_retry_safe(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = pair
    await in_sync(primary)
    settings = Settings(
        redis_url=primary.url, key_prefix=new_prefix(), redis_min_replicas_ack=1, redis_wait_timeout_ms=300
    )
    s = sid("wait")
    async with ChatProducer(settings=settings) as p:
        first = await p.submit(s, "acknowledged at once", idempotency_key="k-0")
        assert first.created
        stopped(replica, True)
        try:
            with pytest.raises(ReplicationTimeout) as err:
                await p.submit(s, "while the replica is stalled", idempotency_key="k-1")
            assert err.value.code == "replication_timeout" and err.value.http_status == 503
            # The retry answers "dup" and writes nothing: WAIT on its own would then confirm at
            # once on a fresh connection, although the replica lacks the turn. It must not.
            async with ChatProducer(settings=settings) as fresh:
                with pytest.raises(ReplicationTimeout):
                    await fresh.submit(s, "while the replica is stalled", idempotency_key="k-1")
        finally:
            stopped(replica, False)
        again = await p.submit(s, "while the replica is stalled", idempotency_key="k-1")
        assert not again.created  # the turn the first attempt wrote
        assert await p.redis.llen(p.keys.session(s).inbox) == 2


async def test_turn_end_is_reported_only_once_replicated(pair: tuple[RedisServer, RedisServer], tmp_path: Path) -> None:
    """A worker's commit waits for the replica, and holds the session (the next turn does not
    start) until it has it; a client is not told the turn ended before that either."""
    primary, replica = pair
    await in_sync(primary)
    prefix = new_prefix()
    ack = {"redis_min_replicas_ack": 1, "redis_wait_timeout_ms": 300}
    settings = Settings(redis_url=primary.url, key_prefix=prefix, **ack)  # type: ignore[arg-type]
    env = {**TEST_WORKER_ENV, **{f"CHATLANE_{k.upper()}": str(v) for k, v in ack.items()}}
    worker = WorkerProcess(worker_env(primary.url, prefix, env), tmp_path / "worker.log").start()
    s = sid("hold")
    try:
        async with ChatProducer(settings=settings) as p, Redis.from_url(primary.url, decode_responses=True) as raw:
            await faults.wait_registered(raw, p.keys, [worker.pid])
            first = await p.enqueue(s, "first !delay=600")
            second = await p.enqueue(s, "second")
            await running_holder(p, raw, s, first.turn_id)
            stopped(replica, True)
            try:
                await asyncio.sleep(1.5)  # the commit came and found no replica to confirm it
                rec = await raw.hgetall(p.keys.turn(first.turn_id))
                assert rec["state"] == "completed"  # on the primary
                with pytest.raises(ReplicationTimeout):
                    await p.status(first.turn_id)  # but not reported
                assert (await raw.hget(p.keys.turn(second.turn_id), "state")) == "running"  # begun by the commit...
                assert not await raw.exists(p.keys.stream(second.turn_id))  # ...yet not generating
            finally:
                stopped(replica, False)
            report = await checked(p, {s: [first.turn_id, second.turn_id]}, timeout=20)
            assert report.completed == 2
            assert [report.statuses[t].attempts for t in (first.turn_id, second.turn_id)] == [1, 1]
            assert (await faults.stats(raw, p.keys)).get("commits_held_for_replicas", 0) >= 1
    finally:
        worker.stop()
    assert "holding the session until they do" in worker.log()


async def test_a_lease_keeper_stops_when_asked_while_its_renewals_meet_a_demoted_primary(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    """A drain ends by stopping its lease keeper. Against a demoted primary every renewal is
    answered READONLY and retried, and on Python 3.11 redis-py drops about one cancel in three
    that land during a command (chatlane/cancelling.py). A keeper that missed its stop renewed a
    finished drain's lease for ever: the session was never served again. Every stop must end it."""
    primary, replica = pair
    await in_sync(primary)
    s = Settings(redis_url=replica.url, key_prefix=new_prefix())
    redis, keys = connect(s), Keys(s.key_prefix)
    scripts = LeaseScripts(
        claim=Claim(redis, keys, s), renew=Renew(redis, keys), advance=Advance(redis, keys, s),
        handback=Handback(redis, keys, s.session_idle_ttl_ms), save_summary=SaveSummary(redis, keys),
    )  # fmt: skip
    policy = LeasePolicy(ttl_ms=60_000, renew_ms=1, margin_ms=0)  # renewing all the time
    stopped_ok = 0
    try:
        for _ in range(200):
            lease = Lease(scripts, "s", keys.session("s").lease, "token", policy, time.monotonic())
            lease.start()
            await asyncio.sleep(random.uniform(0, 0.005))
            try:
                async with asyncio.timeout(5):  # a stop takes milliseconds; a missed one, for ever
                    await lease.stop()
            except TimeoutError:
                break
            stopped_ok += 1
    finally:
        for task in asyncio.all_tasks():
            if task.get_name().startswith("lease:"):
                await cancel_and_wait(task)
        await redis.aclose()
    assert stopped_ok == 200, f"stop {stopped_ok + 1} left its keeper renewing"


async def test_endpoint_that_moves_to_a_new_primary_is_followed(tmp_path: Path) -> None:
    """A failover behind one address (a managed Redis' DNS name or proxy): open connections still
    reach the old primary, now a replica, and get READONLY. Producers and workers must treat that
    as "Redis down", reconnect, and carry on against the new primary without a restart."""
    old = RedisServer(appendfsync="always").start()
    new = RedisServer(appendfsync="always", extra_args=["--replicaof", "127.0.0.1", str(old.port)]).start()
    endpoint = Link(old.port).start()
    url = f"redis://127.0.0.1:{endpoint.port}/0"
    prefix = new_prefix()
    workers = [
        WorkerProcess(worker_env(url, prefix, TEST_WORKER_ENV), tmp_path / f"worker{i}.log").start() for i in range(2)
    ]
    sessions = [sid("moved") for _ in range(4)]
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    try:
        await in_sync(old)
        async with ChatProducer(settings=Settings(redis_url=url, key_prefix=prefix)) as p:
            await faults.wait_registered(p.redis, p.keys, [w.pid for w in workers])
            refused = 0

            async def produce(s: str, n: int) -> None:
                nonlocal refused
                for i in range(n):
                    st, failed = await faults.enqueue_until_acked(p, s, f"{s} turn {i} !delay=30", f"{s}-{i}", 30)
                    sent[s].append(st.turn_id)
                    refused += failed
                    await asyncio.sleep(0.05)

            load = asyncio.gather(*(produce(s, 30) for s in sessions))
            await asyncio.sleep(1.0)
            # Redis' own planned failover: pause writes, let the replica catch up, swap roles.
            async with Redis(port=old.port, decode_responses=True) as r:
                await r.execute_command("FAILOVER", "TO", "127.0.0.1", new.port)

                async def demoted() -> bool:
                    return bool((await r.info("replication"))["role"] == "slave")

                assert await wait_async(demoted, 10, interval=0.01)
            endpoint.retarget(new.port)
            await load
            report = await checked(p, sent, timeout=60)
            assert report.completed == report.accepted == 120
        async with Redis(port=new.port, decode_responses=True) as r:
            assert (await r.info("replication"))["role"] == "master"
        assert all(w.alive() for w in workers)  # followed it without a restart
        logs = "".join(w.log() for w in workers)
        assert "the server is a replica now" in logs  # they did meet the demoted primary
        print(f"\n{refused} enqueue attempts refused while the endpoint moved")
    finally:
        for w in workers:
            w.stop()
        endpoint.close()
        old.close()
        new.close()


async def test_producer_with_sentinels_and_none_answering_fails_fast() -> None:
    settings = Settings(redis_sentinels="127.0.0.1:1,127.0.0.1:2", redis_timeout_s=1, key_prefix=new_prefix())
    async with ChatProducer(settings=settings) as p:
        t0 = time.monotonic()
        with pytest.raises(RedisUnavailable, match="sentinel master"):
            await p.enqueue(sid(), "hello")
        assert time.monotonic() - t0 < 2


# -- a Sentinel group under load -----------------------------------------------------------------


@pytest.mark.slow
async def test_failover_under_load_with_min_replicas_ack_1_loses_nothing(tmp_path: Path) -> None:
    """The hard case: the primary's replica link is cut 300 ms before the primary is SIGKILLed
    (a host that died, or a replica 300 ms behind), while producers and workers run. Without WAIT
    that loses acknowledged writes (``make failover`` measures it); with MIN_REPLICAS_ACK=1 none."""
    opts = Options(min_replicas_ack=1, fault="partition", partition_ms=300, failovers=1, sessions=8, load_s=2.5)
    out = await measure(opts, tmp_path)
    print(
        f"\nacknowledged {out.acked}, lost {out.lost_enqueues}, duplicated {out.report.duplicated}, ends seen "
        f"{out.seen_ended}, taken back {out.commits_lost}; promotion {out.promotion_s[0]:.2f}s; "
        f"sessions served again {max(out.resume_s, default=-1):.2f}s after it"
    )
    assert out.report.accepted > 50 and out.seen_ended > 20  # there was load on both sides of the failover
    assert out.ok, out.problems[:10]
    assert out.report.ok, out.report.violations[:10]
    # Every session was served again, within lease TTL + sweep + the replica's full sync.
    assert max(out.resume_s) < 10, out.resume_s
