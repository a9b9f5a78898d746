"""Fences that survive a counter rollback, drain jobs scored by Redis' clock, and recovery that
never waits for a free job slot."""

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
from chatlane.scripts import Advance, Begun, Claim, Finish, Next
from devkit import faults
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid


async def test_lease_tokens_never_repeat_after_the_fence_counter_rolls_back(
    producer: ChatProducer, raw_redis: Redis
) -> None:
    """A failover to a lagging replica (or AOF everysec losing a second) can roll the fence
    counter back: the same holder claiming again must still get a token the old one is not."""
    s = sid()
    t = await producer.enqueue(s, "hello")
    keys, sk = producer.keys, producer.keys.session(s)
    claim, advance = Claim(raw_redis, keys, producer.settings), Advance(raw_redis, keys, producer.settings)
    old = await claim(session_id=s, holder="host.1.abc", job_id=await raw_redis.get(sk.drain_job), tail_len=8)
    assert old is not None and isinstance(old.step, Begun)
    # The rollback: the counter and the lease go back to before that claim.
    await raw_redis.set(sk.fence, 0)
    await raw_redis.delete(sk.lease)
    new = await claim(session_id=s, holder="host.1.abc", job_id="another-job", tail_len=8)
    assert new is not None
    assert old.token.split(":")[0] == new.token.split(":")[0] == "1"  # the counter did repeat
    assert new.token != old.token
    entries = tuple(encode_message(m) for m in turn_messages(t.turn_id, "hello", [AIMessage("stale")]))
    with pytest.raises(LeaseLost):
        await advance(session_id=s, token=old.token, finish=Finish(t.turn_id, True, "stale", entries), ended=None,
                      next=Next.begin)  # fmt: skip
    assert await raw_redis.llen(sk.history) == 0
    assert await raw_redis.lrange(sk.inbox, 0, -1) == [t.turn_id]


async def test_a_producer_clock_minutes_fast_neither_delays_nor_strands_its_sessions(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 180)  # this producer runs 3 minutes fast
    s = sid("skew")
    t = await producer.enqueue(s, "hello from the future")
    monkeypatch.setattr(time, "time", real)
    job_id = await raw_redis.get(producer.keys.session(s).drain_job)
    score = await raw_redis.zscore(producer.keys.queue, job_id)
    secs, micros = await raw_redis.time()
    assert abs(score - (secs * 1000 + micros // 1000)) < 2000, "the drain job is scored by the producer's clock"
    fleet.start(1)
    st = await producer.wait(t.turn_id, 15)
    assert st.state is TurnState.completed


async def test_recovery_does_not_wait_for_a_free_job_slot(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    """Both job slots are busy with long drains; a session whose drain job was lost is found by
    the sweep (a worker task, not a job) and served once a drain yields its slot, which it does
    after drain_yield_after_s at its next turn boundary, not after drain_max_seconds."""
    yield_after_s, turn_s = 2.0, 0.5
    (worker,) = fleet.start(1, max_jobs=2, drain_yield_after_s=yield_after_s, drain_max_seconds=120)
    await faults.wait_registered(raw_redis, producer.keys, [worker.pid])
    hogs = [sid("hog") for _ in range(2)]
    for h in hogs:
        for i in range(40):
            await producer.enqueue(h, f"busy {i} !delay={int(turn_s * 1000)}")
    await asyncio.sleep(1.0)  # both slots now hold a drain
    s = sid("starved")
    t = await producer.enqueue(s, "am I served?")
    # Lose its drain job: only the sweep can recover it.
    job_id = await raw_redis.get(producer.keys.session(s).drain_job)
    await raw_redis.zrem(producer.keys.queue, job_id)
    await raw_redis.delete(job_key(job_id))
    lost_at = time.monotonic()
    st = await producer.wait(t.turn_id, 60)
    waited = time.monotonic() - lost_at
    print(f"\nserved {waited:.2f}s after its drain job was lost, with both slots busy")
    assert st.state is TurnState.completed
    # sweep interval + yield_after + one turn + poll, with a margin for a loaded machine
    assert waited < 1 + yield_after_s + turn_s + 2.0
    assert int(await raw_redis.hget(producer.keys.stats, "drains_yielded") or 0) >= 1


async def test_no_stale_sweep_jobs_pile_up_across_a_restart(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    (first,) = fleet.start(1)
    await faults.wait_registered(raw_redis, producer.keys, [first.pid])
    await asyncio.sleep(2.5)  # a few sweep intervals
    first.signal(signal.SIGTERM)
    assert first.wait(15) is not None
    await asyncio.sleep(2.0)
    assert await raw_redis.zcard(producer.keys.queue) == 0  # nothing left queued behind it
    (second,) = fleet.start(1)
    await faults.wait_registered(raw_redis, producer.keys, [second.pid])
    t = await producer.enqueue(sid(), "still served")
    assert (await producer.wait(t.turn_id, 15)).state is TurnState.completed
    assert await raw_redis.zcard(producer.keys.queue) == 0
