"""Fleet-wide provider budgets, against a local OpenAI-compatible stub that counts requests in
flight, tokens, and can answer 429 with Retry-After."""

from __future__ import annotations

import asyncio
import signal
import time

from redis.asyncio import Redis

from devkit import faults
from devkit.check import check
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid, wait_async

OPENAI = {"model": "openai:gpt-4o-mini"}


def model_env(stub: OpenAIStub) -> dict[str, str]:
    return {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"}


async def test_concurrency_cap_holds_across_the_fleet(fleet: Fleet, producer: ChatProducer, raw_redis: Redis) -> None:
    with OpenAIStub(delay_s=0.3, chunks=4) as stub:
        workers = fleet.start(4, raw_env=model_env(stub), model_max_concurrency=3, **OPENAI)
        await faults.wait_registered(raw_redis, producer.keys, [w.pid for w in workers])
        sent = {sid("cap"): [] for _ in range(50)}  # type: dict[str, list[str]]
        for s in sent:
            for i in range(2):
                sent[s].append((await producer.enqueue(s, f"{s} turn {i}")).turn_id)
        for tids in sent.values():
            for t in tids:
                await producer.wait(t, 90)
        report = await check(producer, sent)
    print(f"\nmax requests in flight at the stub: {stub.max_total_in_flight} (cap 3)")
    assert report.ok and report.completed == 100, report.violations
    assert stub.max_total_in_flight <= 3
    assert stub.max_total_in_flight == 3  # the cap is used, not just respected
    assert all(st.attempts == 1 for st in report.statuses.values())  # waiting never costs an attempt


async def test_tpm_budget_bounds_tokens_per_minute_and_uses_it(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    tpm, burst_s = 6000, 2.0  # 100 tokens/s, at most 200 at once
    with OpenAIStub() as stub:
        workers = fleet.start(
            2, raw_env=model_env(stub), model_tpm=tpm, budget_burst_s=burst_s, budget_reply_tokens=10, **OPENAI
        )
        await faults.wait_registered(raw_redis, producer.keys, [w.pid for w in workers])
        sessions = [sid("tpm") for _ in range(10)]
        t0 = time.monotonic()
        for s in sessions:
            for i in range(30):
                await producer.enqueue(s, f"{s} asks question number {i}")
        await asyncio.sleep(12.0)
        window = [(t, n) for t, n in stub.tokens if t0 + 2 <= t < t0 + 12]
    used = sum(n for _, n in window)
    budget = tpm / 60 * 10
    print(f"\ntokens in 10 s: {used} against a budget of {budget:.0f} (+{tpm / 60 * burst_s:.0f} burst)")
    assert used <= budget + tpm / 60 * burst_s
    assert used >= 0.9 * budget


async def test_a_429_pauses_the_whole_fleet_and_costs_no_attempt(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    with OpenAIStub(delay_s=0.05) as stub:
        workers = fleet.start(2, raw_env=model_env(stub), **OPENAI)
        await faults.wait_registered(raw_redis, producer.keys, [w.pid for w in workers])
        stub.rate_limit_next, stub.retry_after = 1, "2"
        sent = {sid("429"): [] for _ in range(6)}  # type: dict[str, list[str]]
        for s in sent:
            for i in range(3):
                sent[s].append((await producer.enqueue(s, f"{s} turn {i}")).turn_id)
        for tids in sent.values():
            for t in tids:
                await producer.wait(t, 60)
        report = await check(producer, sent)
    (limited_at,) = stub.rate_limited
    # The pause is recorded a few ms after the 429 left the stub (the worker reads it first); a call
    # granted in between is already on its way. Past that, nobody in the fleet calls until it ends.
    race_s = 0.1
    during = [t - limited_at for t in stub.received_at_monotonic if limited_at + race_s < t < limited_at + 2.0 - 0.05]
    after = min(t for t in stub.received_at_monotonic if t > limited_at + race_s) - limited_at
    print(f"\nrequests during the pause: {len(during)}; the next one came {after:.2f}s after the 429 (Retry-After: 2)")
    assert report.ok and report.completed == 18 and report.failed == 0, report.violations
    assert during == []
    assert all(st.attempts == 1 for st in report.statuses.values())
    stats = await faults.stats(raw_redis, producer.keys)
    assert stats.get("provider_pauses") == 1


async def test_a_dead_workers_concurrency_slot_frees_itself(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    ttl_ms = 1500
    with OpenAIStub(delay_s=6.0, chunks=60) as stub:
        (a,) = fleet.start(1, raw_env=model_env(stub), model_max_concurrency=1, lease_ttl_ms=ttl_ms, **OPENAI)
        await faults.wait_registered(raw_redis, producer.keys, [a.pid])
        s = sid("slot")
        first = await producer.enqueue(s, f"{s} long")
        slots = producer.keys.budget("openai:gpt-4o-mini").slots
        assert await wait_async(lambda: stub.total_in_flight == 1, 15)
        assert await raw_redis.zcard(slots) == 1
        a.signal(signal.SIGKILL)
        killed = time.monotonic()

        async def freed() -> bool:
            now_ms = int(time.time() * 1000)
            return await raw_redis.zcount(slots, now_ms, "+inf") == 0

        assert await wait_async(freed, 10)
        print(f"\nslot free {time.monotonic() - killed:.2f}s after the SIGKILL (lease TTL {ttl_ms} ms)")
        assert time.monotonic() - killed <= ttl_ms / 1000 + 0.5
        stub.delay_s = 0.05
        fleet.start(1, raw_env=model_env(stub), model_max_concurrency=1, lease_ttl_ms=ttl_ms, **OPENAI)
        st = await producer.wait(first.turn_id, 20)
        assert st.state is TurnState.completed and st.attempts == 2
