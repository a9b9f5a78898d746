"""G1 under a network partition, checked where it matters: at the model.

A worker reaches Redis through a proxy that is then made to blackhole (it forwards nothing and
closes nothing) while the worker streams a long reply from a local OpenAI-compatible stub that
it still reaches. Another worker takes the session over once the lease expires. The stub counts
generations in flight per conversation; the checker reads every attempt's start and end.

The same scenario runs against a deliberately broken build (holders ignore lease loss): there
both witnesses must report two generations at once, which shows the checks can fail.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from chatlane.keys import Keys
from devkit import faults
from devkit.blackhole import BlackholeProxy
from devkit.check import check
from devkit.openai_stub import OpenAIStub
from devkit.redis_server import RedisServer
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid, wait_async

TTL_MS = 1500
REPLY_S = 5.0  # long enough that a holder ignoring its loss is still generating when B starts


@pytest.mark.parametrize("broken", [False, True], ids=["holder-stops", "mutation-ignores-lease-loss"])
async def test_partitioned_holder_stops_generating_before_its_lease_expires(
    broken: bool, fleet: Fleet, producer: ChatProducer, raw_redis: Redis, redis_server: RedisServer
) -> None:
    keys = Keys(fleet.prefix)
    with OpenAIStub(delay_s=REPLY_S, chunks=100) as stub:
        async with BlackholeProxy(redis_server.port) as proxy:
            model_env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"}
            settings = {"model": "openai:gpt-4o-mini", "lease_ttl_ms": TTL_MS, "model_timeout_s": 30}
            cut_off_env = {**model_env, "CHATLANE_REDIS_URL": proxy.url}
            if broken:
                cut_off_env["CHATLANE_FAULT_IGNORE_LEASE_LOSS"] = "true"
            (a,) = fleet.start(1, raw_env=cut_off_env, **settings)
            await faults.wait_registered(raw_redis, keys, [a.pid])

            s = sid("part")
            conversation = f"{s}: tell me a long story"
            first = await producer.enqueue(s, conversation)
            second = await producer.enqueue(s, "and another one")
            assert await wait_async(lambda: stub.in_flight(conversation) == 1, 15), "A never called the model"
            token = await raw_redis.get(keys.session(s).lease)
            assert faults.worker_pid(token) == a.pid

            (b,) = fleet.start(1, raw_env=model_env, **settings)
            await faults.wait_registered(raw_redis, keys, [b.pid])
            await asyncio.sleep(0.3)
            cut_at = time.monotonic()
            proxy.cut()

            done = await producer.wait(first.turn_id, 40)  # served by B
            proxy.heal()
            assert (await producer.wait(second.turn_id, 40)).state is TurnState.completed

            # The cut-off holder records its attempt's end once it reaches Redis again.
            async def a_recorded() -> bool:
                return await raw_redis.hget(keys.turn(first.turn_id), "a1e") is not None

            assert await wait_async(a_recorded, 15), "the cut-off holder never recorded its attempt's end"
            report = await check(producer, {s: [first.turn_id, second.turn_id]})

    spans = [sp for sp in stub.spans if sp.conversation == conversation]
    a_span, b_span = spans[0], spans[1]
    assert a_span.ended is not None
    print(
        f"\nbroken={broken}: A's model stream ended {a_span.ended - cut_at:.2f}s after the cut "
        f"(closed by A: {a_span.closed_by_client}); B's request came {b_span.received - cut_at:.2f}s after it; "
        f"max in flight {stub.max_in_flight[conversation]}; checker: {report.violations}"
    )
    if broken:
        assert stub.max_in_flight[conversation] >= 2
        assert report.overlapping >= 1, report.violations
        return
    assert stub.max_in_flight[conversation] == 1
    # A stopped before its lease could have expired, so before anyone else could start.
    assert a_span.closed_by_client and a_span.ended - cut_at < TTL_MS / 1000
    assert b_span.received > a_span.ended
    assert report.ok and report.overlapping == 0 and report.unrecorded_ends == 0, report.violations
    assert done.state is TurnState.completed and done.attempts == 2
    # Nothing of A's reached the history: B's attempt is the one committed, exactly once.
    assert [m.type for m in await producer.history(s)] == ["human", "ai"] * 2
    # Resumed within lease TTL + sweep interval (+ poll delay and a margin for a loaded machine).
    assert b_span.received - cut_at < TTL_MS / 1000 + 1 + 1.5
