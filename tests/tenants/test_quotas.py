"""Per-tenant quotas, enforced inside enqueue.lua: several producers (each its own Redis pool, as
separate API processes would be) hammer one tenant past its limit at once; exactly the quota gets
in, every other enqueue is TenantQuotaExceeded (429 ``tenant_quota`` with Retry-After) and writes nothing,
another tenant is unaffected meanwhile, and capacity comes back as turns end, however they end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.errors import TenantQuotaExceeded
from chatlane.tenants import TenantQuota
from producer import ChatProducer, TurnState, TurnStatus
from tests.conftest import Fleet, keys_with_prefix, wait_async
from tests.tenants.conftest import as_tenant

ACME, BRAVO = "acme", "bravo"


async def hammer(
    producers: Sequence[ChatProducer], n: int, sessions: int, **kw: object
) -> list[TurnStatus | TenantQuotaExceeded]:
    async def one(i: int) -> TurnStatus | TenantQuotaExceeded:
        p = producers[i % len(producers)]
        try:
            return await p.enqueue(f"s{i % sessions}", f"{p.tenant}|s{i % sessions}|{i}", **kw)  # type: ignore[arg-type]
        except TenantQuotaExceeded as e:
            return e

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def split(results: list[TurnStatus | TenantQuotaExceeded]) -> tuple[list[TurnStatus], list[TenantQuotaExceeded]]:
    return [r for r in results if isinstance(r, TurnStatus)], [r for r in results if isinstance(r, TenantQuotaExceeded)]


async def records_of(r: Redis, prefix: str, tenant: str) -> set[str]:
    """Turn ids of every turn record of ``tenant`` in Redis."""
    out = set()
    for k in await keys_with_prefix(r, prefix):
        record = k.startswith(f"{prefix}:turn:") and len(k) == len(prefix) + 6 + 32
        if record and await r.hget(k, "tenant") == tenant:  # type: ignore[misc]
            out.add(k[-32:])
    return out


async def test_max_queued_holds_across_producers_and_frees_on_every_ending(fleet: Fleet, raw_redis: Redis) -> None:
    settings = fleet.settings.model_copy(update={"tenant_max_queued": 5})
    active = fleet.settings.key_prefix + f":tenant:{ACME}:active"
    # No worker yet: every accepted turn stays queued.
    acme = [ChatProducer(settings=settings, tenant=ACME) for _ in range(4)]
    bravo = ChatProducer(settings=settings, tenant=BRAVO)
    p = acme[0]
    try:
        results, other = await asyncio.gather(hammer(acme, 40, 7), hammer([bravo], 5, 5))
        accepted, refused = split(results)
        assert len(accepted) == 5 and len(refused) == 35
        assert all(e.which == "max_queued" and e.limit == 5 and e.retry_after_s == 1 for e in refused)
        assert all((e.http_status, e.code) == (429, "tenant_quota") for e in refused)
        assert len(split(other)[0]) == 5  # the other tenant, at the same time, at its own limit
        # Nothing written for the refused: records, inboxes and the active set hold exactly the accepted.
        ids = {t.turn_id for t in accepted}
        assert await records_of(raw_redis, fleet.prefix, ACME) == ids
        assert await raw_redis.smembers(active) == ids
        assert sum([len(await p.turns(f"s{i}")) for i in range(7)]) == 5

        async def room() -> int:
            ok, no = split(await hammer(acme, 4, 7))
            assert all(e.which == "max_queued" for e in no)
            accepted.extend(ok)
            return len(ok)

        # cancel -> one place back
        await p.cancel(accepted[0].turn_id)
        assert await room() == 1
        # expiry -> one place back (the expired turn ends when read past its deadline)
        await p.cancel(accepted[1].turn_id)
        short = await p.enqueue("s-exp", f"{ACME}|s-exp|0", expires_after_s=0.2)
        assert await room() == 0
        await asyncio.sleep(0.4)
        assert (await p.status(short.turn_id)).state is TurnState.expired
        assert await room() == 1
        # delete_session -> its turns' places back
        queued_in_s0 = len(await p.turns("s0"))
        assert queued_in_s0 > 0
        await p.delete_session("s0")
        assert await raw_redis.scard(active) == 5 - queued_in_s0
        # completion -> everything back
        fleet.start(1, fake_delay_ms=500)  # slow enough that none ends during the hammer below
        for t in accepted:
            if t.turn_id in await raw_redis.smembers(active):
                await p.wait(t.turn_id, 30)
        assert await raw_redis.scard(active) == 0 and not await raw_redis.exists(active)
        again, no = split(await hammer(acme, 8, 3))
        assert len(again) == 5 and len(no) == 3
        for t in again:
            assert (await p.wait(t.turn_id, 30)).state is TurnState.completed
        assert await raw_redis.scard(active) == 0
    finally:
        for c in [*acme, bravo]:
            await c.close()


async def test_turns_per_min_holds_across_producers(fleet: Fleet, raw_redis: Redis) -> None:
    settings = fleet.settings.model_copy(update={"tenant_turns_per_min": 6})
    acme = [ChatProducer(settings=settings, tenant=ACME) for _ in range(3)]
    bravo = ChatProducer(settings=settings, tenant=BRAVO)
    try:
        keyed = await acme[0].submit("k", f"{ACME}|k|0", idempotency_key="same")
        results, other = await asyncio.gather(hammer(acme, 30, 4), hammer([bravo], 6, 6))
        accepted, refused = split(results)
        assert len(accepted) == 5 and len(refused) == 25
        # 6 a minute: one token every 10 s.
        assert all(e.which == "turns_per_min" and e.limit == 6 and 1 <= e.retry_after_s <= 10 for e in refused)
        assert len(split(other)[0]) == 6
        ids = {t.turn_id for t in accepted} | {keyed.status.turn_id}
        assert await records_of(raw_redis, fleet.prefix, ACME) == ids
        # An idempotent repeat is not a new turn: answered although the bucket is empty.
        repeat = await acme[1].submit("k", f"{ACME}|k|0", idempotency_key="same")
        assert not repeat.created and repeat.status.turn_id == keyed.status.turn_id
        # After Retry-After, one token is back: exactly one more gets in.
        wait_s = max(e.retry_after_s for e in split(await hammer(acme, 1, 1))[1])
        await asyncio.sleep(wait_s + 0.2)
        more, no = split(await hammer(acme, 5, 2))
        assert len(more) == 1 and len(no) == 4
    finally:
        for c in [*acme, bravo]:
            await c.close()


async def test_repeats_and_joins_take_no_quota(fleet: Fleet, raw_redis: Redis) -> None:
    settings = fleet.settings.model_copy(update={"tenant_max_queued": 1, "tenant_turns_per_min": 2})
    async with ChatProducer(settings=settings, tenant=ACME) as p:
        first = await p.submit("s", f"{ACME}|s|0", idempotency_key="k0", on_busy="coalesce")
        assert first.created
        for i in (1, 2):
            joined = await p.submit("s", f"{ACME}|s|{i}", on_busy="coalesce")
            assert joined.joined and joined.status.turn_id == first.status.turn_id
        repeat = await p.submit("s", f"{ACME}|s|0", idempotency_key="k0")
        assert not repeat.created and repeat.status.turn_id == first.status.turn_id
        try:
            await p.enqueue("t", f"{ACME}|t|0")
            raise AssertionError("a second new turn passed max_queued=1")
        except TenantQuotaExceeded as e:
            assert e.which == "max_queued"
        # Without the max_queued limit (an override), the bucket still has its second token: the
        # joins and the repeat took none.
        unlimited = p.for_tenant(ACME, quota=TenantQuota(max_queued=0))
        await unlimited.enqueue("t", f"{ACME}|t|1")
        try:
            await unlimited.enqueue("t", f"{ACME}|t|2")
            raise AssertionError("a third new turn passed turns_per_min=2")
        except TenantQuotaExceeded as e:
            assert e.which == "turns_per_min"


async def test_http_429_tenant_quota_with_retry_after_across_two_api_servers(
    fleet: Fleet, raw_redis: Redis, tenant_api: Callable[..., str]
) -> None:
    settings = fleet.settings.model_copy(update={"tenant_max_queued": 3})
    # The key file says bravo may queue 6.
    overrides = {BRAVO: TenantQuota(max_queued=6)}
    urls = [tenant_api(settings, tenant_quotas=overrides), tenant_api(settings, tenant_quotas=overrides)]
    clients = [as_tenant(u, t) for u in urls for t in (ACME, BRAVO)]
    try:

        async def post(c: httpx.AsyncClient, i: int) -> httpx.Response:
            tenant = c.headers["X-Test-Tenant"]
            return await c.post(f"/v1/sessions/s{i % 3}/turns", json={"text": f"{tenant}|s{i % 3}|{i}"})

        resps = await asyncio.gather(*(post(clients[i % 4], i) for i in range(48)))
        by_tenant: dict[str, list[httpx.Response]] = {ACME: [], BRAVO: []}
        for r in resps:
            by_tenant[r.request.headers["X-Test-Tenant"]].append(r)
        for tenant, limit in ((ACME, 3), (BRAVO, 6)):
            codes = sorted(r.status_code for r in by_tenant[tenant])
            assert codes == [202] * limit + [429] * (24 - limit), (tenant, codes)
            for r in by_tenant[tenant]:
                if r.status_code == 429:
                    assert r.json()["code"] == "tenant_quota" and r.headers["Retry-After"] == "1"
        # A refused request writes nothing.
        before = await keys_with_prefix(raw_redis, fleet.prefix)
        r = await post(clients[0], 100)
        assert r.status_code == 429 and await keys_with_prefix(raw_redis, fleet.prefix) == before
    finally:
        for c in clients:
            await c.aclose()

    per_min = tenant_api(
        fleet.settings.model_copy(update={"tenant_turns_per_min": 1, "key_prefix": "q" + fleet.prefix})
    )
    async with as_tenant(per_min, ACME) as c:
        assert (await c.post("/v1/sessions/s/turns", json={"text": "one"})).status_code == 202
        r = await c.post("/v1/sessions/s/turns", json={"text": "two"})
        assert r.status_code == 429 and r.json()["code"] == "tenant_quota"
        assert 50 <= int(r.headers["Retry-After"]) <= 60


async def test_every_ending_gives_the_place_back(fleet: Fleet, raw_redis: Redis) -> None:
    settings = fleet.settings.model_copy(update={"tenant_max_queued": 100})
    active = fleet.settings.key_prefix + f":tenant:{ACME}:active"
    fleet.start(1, max_attempts=1)
    async with ChatProducer(settings=settings, tenant=ACME) as p:
        completed = await p.enqueue("ok", "fine")
        failed = await p.enqueue("boom", "boom !fail")
        slow = {s: await p.enqueue(s, "long !delay=5000") for s in ("interrupt", "cancel", "rollback")}
        queued = await p.enqueue("rollback", "waits behind the slow one")
        for t in slow.values():
            assert await wait_async(lambda t=t: _running(p, t.turn_id), 20)  # type: ignore[misc]
        # Counted while queued or running.
        assert {t.turn_id for t in slow.values()} | {queued.turn_id} <= await raw_redis.smembers(active)
        await p.cancel(slow["interrupt"].turn_id, keep_partial=True)
        await p.cancel(slow["cancel"].turn_id, keep_partial=False)
        newer = await p.enqueue("rollback", "start over", on_busy="rollback")
        endings = {
            completed.turn_id: TurnState.completed,
            failed.turn_id: TurnState.failed,
            slow["interrupt"].turn_id: TurnState.interrupted,
            slow["cancel"].turn_id: TurnState.cancelled,
            slow["rollback"].turn_id: TurnState.cancelled,  # superseded while running
            queued.turn_id: TurnState.cancelled,  # superseded while queued
            newer.turn_id: TurnState.completed,
        }
        for tid, state in endings.items():
            assert (await p.wait(tid, 30)).state is state, tid
        assert await raw_redis.scard(active) == 0


async def _running(p: ChatProducer, turn_id: str) -> bool:
    return (await p.status(turn_id)).state is TurnState.running


async def test_a_turn_lost_without_an_ending_does_not_hold_the_quota(fleet: Fleet, raw_redis: Redis) -> None:
    settings = fleet.settings.model_copy(update={"tenant_max_queued": 2})
    async with ChatProducer(settings=settings, tenant=ACME) as p:
        kept = await p.enqueue("s", f"{ACME}|s|0")
        lost = await p.enqueue("s", f"{ACME}|s|1")
        # Deleted by hand: no script ended it, so it is still in the tenant's active SET.
        await raw_redis.delete(p.keys.turn(lost.turn_id))
        assert await raw_redis.scard(p.keys.tenant(ACME).active) == 2
        # At the limit, the enqueue drops it and gets in: the limit counts live turns only.
        third = await p.enqueue("t", f"{ACME}|t|0")
        assert await raw_redis.smembers(p.keys.tenant(ACME).active) == {kept.turn_id, third.turn_id}
        try:
            await p.enqueue("t", f"{ACME}|t|1")
            raise AssertionError("a third live turn passed max_queued=2")
        except TenantQuotaExceeded as e:
            assert e.which == "max_queued"


async def test_at_its_limit_a_tenant_can_still_interrupt_its_own_queued_turns(raw_redis: Redis, fleet: Fleet) -> None:
    """interrupt / rollback cancel the session's queued turns in the enqueue script itself: their
    places count as free, so a user at the tenant's limit can still double-text. Nothing runs here
    (no worker), so every turn stays queued until superseded."""
    settings = fleet.settings.model_copy(update={"tenant_max_queued": 3})
    active = fleet.settings.key_prefix + f":tenant:{ACME}:active"
    async with ChatProducer(settings=settings, tenant=ACME) as p:
        first = [await p.enqueue("chat", f"text {n}") for n in range(2)]
        other = await p.enqueue("elsewhere", "holds the third place")
        with pytest.raises(TenantQuotaExceeded):
            await p.enqueue("chat", "a plain enqueue at the limit")
        for policy in ("interrupt", "rollback"):
            newer = await p.enqueue("chat", f"{policy}: start over", on_busy=policy)
            assert (await p.status(newer.turn_id)).state is TurnState.queued
        for t in first:
            assert (await p.status(t.turn_id)).state is TurnState.cancelled
        assert await raw_redis.smembers(active) == {other.turn_id, newer.turn_id}
        # Superseding frees only the session's own queued turns: with one queued turn in "chat" and
        # one elsewhere, a third session's interrupt has nothing to cancel and is refused.
        await p.enqueue("third", "fills the limit")
        with pytest.raises(TenantQuotaExceeded):
            await p.enqueue("fourth", "nothing to supersede", on_busy="interrupt")
