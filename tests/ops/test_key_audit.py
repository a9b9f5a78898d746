"""Every key chatlane writes has a TTL or an owner that deletes it (README "Retention").

A varied workload runs through real workers on a real Redis: completions, failures, cancels,
steering (interrupt, coalesce, reject), webhooks, queued-turn deadlines, summaries and trimming,
idempotency keys, a model budget, a delete and an import. Then every key under the test's prefix
(and every arq key) is listed: each must carry a TTL or be one of OWNED below, and once the
sessions have been idle for CHATLANE_SESSION_IDLE_TTL_S no key of any session is left.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from chatlane.errors import SessionBusy
from chatlane.keys import Keys
from chatlane.tenants import SessionRef
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, keys_with_prefix, sid, wait_async
from tests.test_webhooks import HOOK_ENV, SECRET, Receiver

IDLE_S = 2.0
TENANT = "acme"
MODEL = "fake"


def owned(k: Keys) -> dict[str, str]:
    """The keys that may live without a TTL, each with who deletes it or why it stays bounded.
    The README's "Retention" table says the same."""
    b = k.budget(MODEL)
    return {
        k.queue: "arq's queue: a job leaves it when a worker takes it (claim.lua removes a drain at once)",
        k.pending: "sessions with waiting turns: a session leaves at release (begin_head, handback, claim)",
        k.stats: "fleet counters: one hash, a fixed set of fields",
        k.workers: "live workers: each removes itself at shutdown; a dead one's entry is dropped after an hour",
        k.webhooks_due: "webhook outbox: a turn leaves it when delivered or given up (webhook_result.lua)",
        k.deadlines: "queued turns' deadlines: each leaves at its deadline (expire.lua) at the latest",
        b.bucket: "the model's token buckets: one hash per model, fixed fields",
        b.slots: "the model's concurrency slots: each expires by score with its holder's lease",
        b.waiters: "sessions waiting for a slot: one leaves when served or when it stops asking",
        b.seen: "when each waiter last asked: cleared with its waiter",
        **{
            k.tenant(t).active: "a tenant's queued and running turns: each leaves when its turn ends "
            "(end_turn.lua) or its session is deleted; an empty SET is no key"
            for t in ("default", TENANT)
        },
    }


@pytest.mark.timeout(120)
async def test_every_key_has_a_ttl_or_an_owner_and_idle_sessions_leave_nothing(fleet: Fleet, raw_redis: Redis) -> None:
    with Receiver([500]) as rx:
        fleet.start(
            2, **HOOK_ENV, session_idle_ttl_s=IDLE_S, history_max_messages=6, history_strategy="summarize",
            history_max_tokens=160, summary_refresh_messages=2, model_max_concurrency=2, model_rpm=6000,
            max_attempts=2, coalesce_window_ms=200, coalesce_max_wait_ms=400, fake_delay_ms=5,
        )  # fmt: skip
        settings = fleet.settings.model_copy(
            update={"webhook_secret": SecretStr(SECRET), "webhook_allow_hosts": "127.0.0.1", "history_max_messages": 6,
                    "tenant_max_queued": 100, "tenant_turns_per_min": 6000}
        )  # fmt: skip
        async with ChatProducer(settings=settings) as p:
            await workload(p, rx.url)
            await workload(p.for_tenant(TENANT), rx.url)  # the same in another tenant's namespace
            assert await wait_async(lambda: len(rx.calls) >= 2, 30)  # refused (500), then delivered

            keys = Keys(fleet.prefix)

            async def outbox_empty() -> bool:
                return await raw_redis.zcard(keys.webhooks_due) == 0

            assert await wait_async(outbox_empty, 30)
            await asyncio.sleep(IDLE_S + 1.0)  # every session idle longer than its TTL

            found = await keys_with_prefix(raw_redis, fleet.prefix)
            assert len(found) > 20  # the workload left turns, streams, logs, idempotency keys...
            allowed = owned(keys)
            unbounded = []
            for key in sorted(found):
                ttl = await raw_redis.pttl(key)
                if ttl == -1 and key not in allowed:
                    unbounded.append((key, await raw_redis.type(key)))
            assert unbounded == [], unbounded
            # Idle sessions are gone: what is left under a session's hash tag is turn-owned, with the
            # turn's TTL (idempotency keys), never the session's own state.
            session_state = re.compile(r"\{[^}]+\}:(inbox|history|lease|fence|drain|summary|turns|trimmed)$")
            assert [k for k in found if session_state.search(k)] == []
            # Every turn ended: no tenant holds a place in its quota any more.
            assert [await raw_redis.scard(keys.tenant(t).active) for t in ("default", TENANT)] == [0, 0]
            # arq's own keys (jobs, in-progress markers, retries) all expire.
            arq_keys = [k async for k in raw_redis.scan_iter(match="arq:*", count=1000)]
            assert [k for k in arq_keys if await raw_redis.pttl(k) == -1] == []


async def workload(p: ChatProducer, hook_url: str) -> None:
    async def done(turn_id: str) -> TurnState:
        return (await p.wait(turn_id, 30)).state

    plain, failing, cancels, steer, hooked, expiring, summed, deleted, imported = (sid(n) for n in (
        "plain", "fail", "cancel", "steer", "hook", "exp", "sum", "del", "imp"))  # fmt: skip

    # Completions with idempotency keys (and a duplicate), a failure, a summarized long session.
    firsts = [await p.enqueue(plain, f"hello {n}", idempotency_key=f"k{n}") for n in range(3)]
    await p.enqueue(plain, "hello 0", idempotency_key="k0")
    fail = await p.enqueue(failing, "!fail boom")
    long = [await p.enqueue(summed, f"turn {n}: remember the number {n * 7} " + "words " * 20) for n in range(10)]

    # Cancels: a queued turn, and a running one.
    running = await p.enqueue(cancels, "!delay=1500 long one")
    queued = await p.enqueue(cancels, "never runs")
    await p.cancel(queued.turn_id)
    assert await wait_async(lambda: _running(p, running.turn_id), 20)
    await p.cancel(running.turn_id)

    # Steering: interrupt, coalesce, reject.
    first = await p.enqueue(steer, "!delay=1500 first")
    assert await wait_async(lambda: _running(p, first.turn_id), 20)
    interrupting = await p.submit(steer, "instead", on_busy="interrupt")
    joined = [await p.submit(steer, f"and {n}", on_busy="coalesce") for n in range(3)]
    with pytest.raises(SessionBusy):
        await p.enqueue(steer, "!delay=500 busy?", on_busy="reject")

    # A webhook (first delivery refused, then delivered), and a deadline that passes in the queue.
    hook = await p.enqueue(hooked, "call me", webhook_url=hook_url)
    blocker = await p.enqueue(expiring, "!delay=1200 blocker")
    late = await p.enqueue(expiring, "too late", expires_after_s=0.3)

    # A delete while a turn runs, and an import.
    victim = await p.enqueue(deleted, "!delay=800 doomed")
    assert await wait_async(lambda: _running(p, victim.turn_id), 20)
    await p.delete_session(deleted)
    source = await p.export_session(plain) if await done(firsts[-1].turn_id) else None
    assert source is not None
    await p.import_session(source, imported)
    after_import = await p.enqueue(imported, "go on")

    states = {t.turn_id: await done(t.turn_id) for t in [*firsts, *long, hook, blocker, after_import]}
    assert set(states.values()) == {TurnState.completed}, states
    assert await done(fail.turn_id) is TurnState.failed
    assert await done(queued.turn_id) is TurnState.cancelled
    assert await done(running.turn_id) in (TurnState.interrupted, TurnState.cancelled)
    assert await done(first.turn_id) is TurnState.interrupted
    assert await done(interrupting.status.turn_id) is TurnState.completed
    assert [await done(j.status.turn_id) for j in joined] == [TurnState.completed] * len(joined)
    assert await done(late.turn_id) is TurnState.expired
    scoped = SessionRef(p.tenant, summed).scoped
    upto = await p.redis.hget(p.keys.session(scoped).summary, "upto")  # type: ignore[misc]
    assert upto and int(upto) > 0  # summaries were written
    assert int(await p.redis.get(p.keys.session(scoped).trimmed) or 0) > 0  # and the history trimmed


async def _running(p: ChatProducer, turn_id: str) -> bool:
    return (await p.status(turn_id)).state is TurnState.running
