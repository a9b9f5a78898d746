"""Two tenants, the same session ids, concurrent traffic: each tenant sees, writes, cancels and
streams only its own; another tenant's turn is 404 (``turn_not_found``), exactly like one that does
not exist; and Redis, read back key by key, holds nothing of one tenant in another's namespace."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.errors import TurnNotFound
from chatlane.tenants import SCOPE_SEP, TENANT_PATTERN, SessionRef
from chatlane.turns import SESSION_ID_PATTERN
from producer import ChatProducer, TurnState
from tests.conftest import Fleet
from tests.tenants.conftest import as_tenant
from tests.tenants.scan import assert_namespaces_clean

SESSIONS = ("alice", "bob", "john.doe")
PER_SESSION = 4


async def cross_tenant_attempts(p: ChatProducer, turn_id: str) -> None:
    """Every read, cancel and stream of another tenant's turn answers TurnNotFound."""
    for call in (
        lambda: p.status(turn_id),
        lambda: p.cancel(turn_id),
        lambda: p.cancel(turn_id, keep_partial=False),
        lambda: p.wait(turn_id, 1),
        lambda: p.webhook_log(turn_id),
        lambda: p.redeliver_webhook(turn_id),
        lambda: anext(aiter(p.events(turn_id))),
    ):
        with pytest.raises(TurnNotFound):
            await call()


async def test_python_client_two_tenants_same_sessions(fleet: Fleet, raw_redis: Redis) -> None:
    fleet.start(2, handler="tests.handlers:echo", fake_delay_ms=5)
    async with ChatProducer(settings=fleet.settings, tenant="acme") as acme:
        tenants = {"acme": acme, "bravo": acme.for_tenant("bravo"), "default": acme.for_tenant("default")}
        others = {"acme": "bravo", "bravo": "default", "default": "acme"}
        turns: dict[str, list[str]] = {t: [] for t in tenants}

        async def traffic(tenant: str, session: str) -> None:
            mine, thief = tenants[tenant], tenants[others[tenant]]
            for i in range(PER_SESSION):
                # The same idempotency key in every tenant's session of the same name: still its own turn.
                enq = await mine.submit(session, f"{tenant}|{session}|{i}", idempotency_key=f"k{i}")
                assert enq.created and enq.status.session_id == session
                turns[tenant].append(enq.status.turn_id)
                # While it is queued or running, another tenant tries everything on it.
                await cross_tenant_attempts(thief, enq.status.turn_id)

        await asyncio.gather(*(traffic(t, s) for t in tenants for s in SESSIONS))
        for tenant, ids in turns.items():
            for tid in ids:
                st = await tenants[tenant].wait(tid, 30)
                # No cancel of another tenant reached it.
                assert st.state is TurnState.completed, st
                assert st.session_id in SESSIONS and "/" not in st.session_id
                await cross_tenant_attempts(tenants[others[tenant]], tid)

        for tenant, p in tenants.items():
            for s in SESSIONS:
                texts = [m.text for m in await p.history(s) if m.type == "human"]
                assert texts == [f"{tenant}|{s}|{i}" for i in range(PER_SESSION)]
                assert {t.turn_id for t in (await p.export_session(s)).turns} <= set(turns[tenant])
                assert await p.turns(s) == []

        # A write into "alice" with acme's producer goes into acme's alice, never bravo's.
        extra = await acme.enqueue("alice", "acme|alice|extra")
        await acme.wait(extra.turn_id, 30)
        assert len(await tenants["bravo"].history("alice")) == 2 * PER_SESSION
        assert len(await acme.history("alice")) == 2 * PER_SESSION + 2
        # Deleting acme's bob leaves bravo's and the default tenant's bob whole.
        deleted = await acme.delete_session("bob")
        assert deleted.turns == PER_SESSION and deleted.messages == 2 * PER_SESSION
        for t in ("bravo", "default"):
            assert len(await tenants[t].history("bob")) == 2 * PER_SESSION
            for tid in turns[t]:
                await tenants[t].status(tid)

    texts = await assert_namespaces_clean(raw_redis, fleet.prefix)
    assert texts["bravo"] == {s: [f"bravo|{s}|{i}" for i in range(PER_SESSION)] for s in SESSIONS}
    assert texts["acme"]["alice"][-1] == "acme|alice|extra" and "bob" not in texts["acme"]
    # The default tenant keeps the key layout from before tenants: a bare session id in the hash tag.
    assert await raw_redis.exists(fleet.settings.key_prefix + ":{alice}:history")
    assert await raw_redis.exists(fleet.settings.key_prefix + ":{bravo/alice}:history")


async def test_http_two_tenants_same_sessions(fleet: Fleet, raw_redis: Redis, tenant_api: Callable[..., str]) -> None:
    fleet.start(2, handler="tests.handlers:echo", fake_delay_ms=5)
    url = tenant_api(fleet.settings)
    async with as_tenant(url, "acme") as a, as_tenant(url, "bravo") as b:
        clients = {"acme": a, "bravo": b}
        thief = {"acme": b, "bravo": a}
        turns: dict[str, list[str]] = {"acme": [], "bravo": []}

        async def not_found(resp: httpx.Response) -> None:
            assert resp.status_code == 404, resp.text
            assert resp.json()["code"] == "turn_not_found"

        async def cross(c: httpx.AsyncClient, tid: str) -> None:
            await not_found(await c.get(f"/v1/turns/{tid}"))
            await not_found(await c.post(f"/v1/turns/{tid}/cancel", json={"keep_partial": False}))
            await not_found(await c.get(f"/v1/turns/{tid}/stream"))
            await not_found(await c.get(f"/v1/turns/{tid}/webhook"))
            await not_found(await c.post(f"/v1/turns/{tid}/webhook/redeliver"))

        async def traffic(tenant: str, session: str) -> None:
            for i in range(PER_SESSION):
                resp = await clients[tenant].post(
                    f"/v1/sessions/{session}/turns",
                    json={"text": f"{tenant}|{session}|{i}", "idempotency_key": f"k{i}"},
                )
                assert resp.status_code == 202, resp.text
                st = resp.json()
                assert st["session_id"] == session
                turns[tenant].append(st["turn_id"])
                await cross(thief[tenant], st["turn_id"])
                # The same answer as for a turn that never existed.
                await not_found(await thief[tenant].get(f"/v1/turns/{uuid.uuid4().hex}"))

        await asyncio.gather(*(traffic(t, s) for t in clients for s in SESSIONS))
        for tenant, ids in turns.items():
            for tid in ids:
                async with clients[tenant].stream("GET", f"/v1/turns/{tid}/stream") as resp:
                    assert resp.status_code == 200
                    body = "".join([line async for line in resp.aiter_lines()])
                assert "event: end" in body and '"state":"completed"' in body
                await cross(thief[tenant], tid)

        for tenant, c in clients.items():
            for s in SESSIONS:
                page = (await c.get(f"/v1/sessions/{s}/messages", params={"limit": 100})).json()
                human = [m["content"] for m in page["messages"] if m["role"] == "user"]
                assert human == [f"{tenant}|{s}|{i}" for i in range(PER_SESSION)]
                live = (await c.get(f"/v1/sessions/{s}/turns")).json()
                assert live == {"session_id": s, "turns": []}
                export = (await c.get(f"/v1/sessions/{s}/export")).json()
                assert {t["turn_id"] for t in export["turns"]} <= set(turns[tenant])

        deleted = (await a.delete("/v1/sessions/alice")).json()
        assert deleted["turns"] == PER_SESSION
        assert (await b.get("/v1/sessions/alice/messages")).json()["total"] == 2 * PER_SESSION

    texts = await assert_namespaces_clean(raw_redis, fleet.prefix)
    assert texts["bravo"] == {s: [f"bravo|{s}|{i}" for i in range(PER_SESSION)] for s in SESSIONS}
    assert set(texts["acme"]) == set(SESSIONS) - {"alice"}
    assert "default" not in texts


def test_scoped_ids_are_unambiguous() -> None:
    # The separator can be in neither part, or "a/b" of the default tenant would be b of tenant a.
    for pattern in (SESSION_ID_PATTERN, TENANT_PATTERN):
        assert not re.fullmatch(pattern, f"a{SCOPE_SEP}b") and not re.fullmatch(pattern, SCOPE_SEP)
    for ref in (SessionRef("default", "alice"), SessionRef("acme", "alice"), SessionRef("acme", "a:b.c-d")):
        assert SessionRef.parse(ref.scoped) == ref
    assert SessionRef("default", "alice").scoped == "alice"
    assert SessionRef("acme", "alice").scoped == "acme/alice"
