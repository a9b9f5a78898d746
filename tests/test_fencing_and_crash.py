"""G4 fencing and G6 recovery after SIGKILL, with real workers and a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from langchain_core.messages import AIMessage
from redis.asyncio import Redis

from chatlane.errors import LeaseLost
from chatlane.jobs import job_key
from chatlane.messages import encode_message, turn_messages
from chatlane.scripts import Advance, Begun, Claim, Finish, Next, Released
from devkit.check import check
from devkit.faults import worker_pid
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid, wait_async


async def _running(producer: ChatProducer, turn_id: str, timeout: float = 10) -> bool:
    async def is_running() -> bool:
        return (await producer.status(turn_id)).state is TurnState.running

    return await wait_async(is_running, timeout, 0.02)


async def test_stale_token_cannot_commit(fleet: Fleet, producer: ChatProducer, raw_redis: Redis) -> None:
    """The commit script itself rejects a holder whose lease was taken over: nothing written."""
    s = sid()
    t = await producer.enqueue(s, "hello")
    keys, sk = producer.keys, producer.keys.session(s)
    settings = producer.settings.model_copy(update={"lease_ttl_ms": 10_000, "turn_ttl_s": 60, "stream_ttl_s": 60})
    claim, advance = Claim(raw_redis, keys, settings), Advance(raw_redis, keys, settings)
    job_id = await raw_redis.get(sk.drain_job)
    claimed = await claim(session_id=s, holder="old", job_id=job_id, tail_len=32)
    assert claimed is not None and claimed.tail == []
    assert isinstance(claimed.step, Begun) and claimed.step.turn_id == t.turn_id

    entries = tuple(encode_message(m) for m in turn_messages(t.turn_id, "hello", [AIMessage("hi")]))
    finish = Finish(t.turn_id, True, "hi", entries)
    # Another holder takes over (the old one was paused past its TTL).
    await raw_redis.set(sk.lease, "99:new-holder", px=10_000)
    with pytest.raises(LeaseLost):
        await advance(session_id=s, token=claimed.token, finish=finish, ended=None, next=Next.begin)
    assert await raw_redis.llen(sk.history) == 0
    assert await raw_redis.lrange(sk.inbox, 0, -1) == [t.turn_id]
    assert (await producer.status(t.turn_id)).state is TurnState.running
    assert await raw_redis.hget(keys.stats, "stale_commits_rejected") == "1"
    # The new holder commits exactly once.
    res = await advance(session_id=s, token="99:new-holder", finish=finish, ended=None, next=Next.begin)
    assert isinstance(res, Released)
    assert await raw_redis.llen(sk.history) == 2
    assert (await producer.status(t.turn_id)).state is TurnState.completed


async def test_taken_over_holder_stops_and_new_holder_commits_once(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1, lease_ttl_ms=1500)
    s = sid()
    t = await producer.enqueue(s, "long one !delay=2500")
    assert await _running(producer, t.turn_id)
    lease_key = producer.keys.session(s).lease
    # Simulate a takeover: another holder's token replaces ours for 4 s.
    await raw_redis.set(lease_key, "999999:intruder", px=4000)
    await asyncio.sleep(3.5)
    # The ousted holder neither committed nor finished the turn.
    assert await raw_redis.llen(producer.keys.session(s).history) == 0
    assert (await producer.status(t.turn_id)).state is not TurnState.completed
    st = await producer.wait(t.turn_id, 20)
    assert st.state is TurnState.completed and st.attempts == 2
    assert len(await producer.history(s)) == 2
    assert "lease" in fleet.logs() and "lost" in fleet.logs()


async def test_sigkill_mid_generation_recovers_in_order(fleet: Fleet, producer: ChatProducer, raw_redis: Redis) -> None:
    ttl_ms = 1500
    fleet.start(2, lease_ttl_ms=ttl_ms, sweep_interval_s=1)
    await asyncio.sleep(2.5)  # both workers up, so the survivor is ready to take over
    s = sid()
    first = await producer.enqueue(s, "interrupted !delay=3000")
    rest = [await producer.enqueue(s, f"after {i}") for i in range(3)]
    assert await _running(producer, first.turn_id)
    token = await raw_redis.get(producer.keys.session(s).lease)
    pid = worker_pid(token)
    victim = fleet.by_pid(pid)
    victim.signal(signal.SIGKILL)
    killed_at = time.time()
    st = await producer.wait(first.turn_id, 30)
    assert st.state is TurnState.completed and st.attempts == 2
    # Resumed within lease TTL + sweep interval (+ poll delay and a loaded-machine margin).
    assert st.started_at is not None
    resumed_after = st.started_at.timestamp() - killed_at
    assert resumed_after < ttl_ms / 1000 + 1 + 1.5, resumed_after
    for r in rest:
        await producer.wait(r.turn_id, 30)
    report = await check(producer, {s: [first.turn_id, *(r.turn_id for r in rest)]})
    assert report.ok and report.completed == 4, report.violations


async def test_lost_drain_job_is_recovered_by_sweep(fleet: Fleet, producer: ChatProducer, raw_redis: Redis) -> None:
    s = sid()
    t = await producer.enqueue(s, "my drain job will vanish")
    # Delete the queued drain job by hand before any worker runs.
    job_id = await raw_redis.get(producer.keys.session(s).drain_job)
    assert await raw_redis.zrem(producer.keys.queue, job_id) == 1
    await raw_redis.delete(job_key(job_id))
    fleet.start(1, sweep_interval_s=1)
    st = await producer.wait(t.turn_id, 15)
    assert st.state is TurnState.completed
    assert int(await raw_redis.hget(producer.keys.stats, "sweep_requeued") or 0) >= 1
