"""Auth, validation, limits, idempotency and failure answers of the HTTP API (no workers needed).

Every rejected request must answer with its status and stable error code and write nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.stream import EventType, chunk_fields
from devkit.api_server import ServedApp
from devkit.http_client import parse_sse
from devkit.redis_server import RedisServer, free_port
from producer import Settings
from producer.api import create_app
from tests.conftest import keys_with_prefix, sid
from tests.http.conftest import Api

TURN = "/v1/sessions/{}/turns"


def client(api: Api, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10)


async def rejected(raw_redis: Redis, api: Api, request: Callable[[], Any], status: int, code: str) -> httpx.Response:
    """Send ``request``; assert status, error code, JSON body, and that Redis holds nothing new."""
    before = await keys_with_prefix(raw_redis, api.prefix)
    resp: httpx.Response = await request()
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["code"] == code and body["message"]
    assert await keys_with_prefix(raw_redis, api.prefix) == before
    return resp


async def test_api_keys_guard_every_v1_route(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve(api_keys="k-one, k-two")
    s = sid()
    async with client(api) as anon, client(api, "k-wrong") as wrong, client(api, "k-two") as good:
        for req in (
            lambda: anon.post(TURN.format(s), json={"text": "hi"}),
            lambda: wrong.post(TURN.format(s), json={"text": "hi"}),
            lambda: anon.post(TURN.format(s), headers={"Authorization": "Basic k-one"}, json={"text": "hi"}),
            lambda: anon.post(TURN.format(s), headers={"Authorization": "Bearer"}, json={"text": "hi"}),
            # Auth is checked before the body is read: a broken body still gets 401.
            lambda: anon.post(TURN.format(s), content=b"{not json"),
            lambda: anon.get(f"/v1/turns/{'a' * 32}"),
            lambda: anon.get(f"/v1/turns/{'a' * 32}/stream"),
            lambda: anon.get(f"/v1/sessions/{s}/messages"),
            lambda: anon.get("/v1/nowhere"),
        ):
            resp = await rejected(raw_redis, api, req, 401, "unauthorized")
            assert resp.headers["www-authenticate"] == "Bearer"
        assert (await good.post(TURN.format(s), json={"text": "hi"})).status_code == 202
        assert (await anon.get("/healthz")).status_code == 200
        assert (await anon.get("/openapi.json")).status_code == 200
        spec = (await anon.get("/openapi.json")).json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        for path, operations in spec["paths"].items():
            secured = [op.get("security") == [{"bearer": []}] for op in operations.values()]
            assert all(secured) if path.startswith("/v1/") else not any(secured), path


async def test_no_api_keys_logs_a_warning_at_start(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(redis_url=redis_server.url, key_prefix="unused"))
    with caplog.at_level(logging.WARNING, logger="chatlane.api"), ServedApp(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as h:
            assert (await h.get("/healthz")).json() == {"status": "ok"}
    assert any("no API keys configured" in r.getMessage() for r in caplog.records)


async def test_invalid_requests_are_rejected_without_writes(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve(max_text_chars=50)
    s = sid()

    async def chunked(n: int) -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(n):
            yield b"x" * 1024
        yield b'"}'

    async with client(api) as h:
        cases: list[tuple[Callable[[], Any], int, str]] = [
            (lambda: h.post(TURN.format("bad id"), json={"text": "hi"}), 422, "invalid_input"),
            (lambda: h.post(TURN.format("x" * 129), json={"text": "hi"}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), json={"text": ""}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), json={"text": " \n\t "}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), json={}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), json={"text": 5}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), json={"text": "hi", "idempotencyKey": "k"}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), json={"text": "hi", "idempotency_key": "has space"}), 422, "invalid_input"),
            (lambda: h.post(TURN.format(s), content=b"{not json", headers={"content-type": "application/json"}), 422,
             "invalid_input"),
            (lambda: h.post(TURN.format(s), json={"text": "x" * 51}), 413, "text_too_long"),
            (lambda: h.post(TURN.format(s), json={"text": "x" * 100_000}), 413, "body_too_large"),
            (lambda: h.post(TURN.format(s), content=chunked(100)), 413, "body_too_large"),
            (lambda: h.get("/v1/turns/not-a-turn-id"), 404, "turn_not_found"),
            (lambda: h.get(f"/v1/turns/{'a' * 32}/stream", headers={"Last-Event-ID": "soon"}), 422, "invalid_input"),
            (lambda: h.get(f"/v1/sessions/{s}/messages", params={"limit": 0}), 422, "invalid_input"),
            (lambda: h.get(f"/v1/sessions/{s}/messages", params={"limit": 1001}), 422, "invalid_input"),
            (lambda: h.get(f"/v1/turns/{'a' * 32}"), 404, "turn_not_found"),
            (lambda: h.get(f"/v1/turns/{'a' * 32}/stream"), 404, "turn_not_found"),
            (lambda: h.get("/v1/nowhere"), 404, "not_found"),
            (lambda: h.delete(TURN.format(s)), 405, "method_not_allowed"),
        ]  # fmt: skip
        for request, status, code in cases:
            resp = await rejected(raw_redis, api, request, status, code)
            if status == 422 and "detail" in resp.json():
                assert all({"loc", "msg", "type"} == set(d) for d in resp.json()["detail"])
        # The limits are exact: 50 characters pass, and an empty history is an empty page.
        assert (await h.post(TURN.format(s), json={"text": "é" * 50})).status_code == 202
        page = (await h.get(f"/v1/sessions/{sid()}/messages")).json()
        assert page == {"session_id": page["session_id"], "total": 0, "messages": [], "next_before": None}


async def test_backpressure_429_with_retry_after_and_nothing_written(
    serve: Callable[..., Api], raw_redis: Redis
) -> None:
    api = serve(max_queued_per_session=3)
    s = sid()
    async with client(api) as h:
        for i in range(3):
            assert (await h.post(TURN.format(s), json={"text": f"t{i}"})).status_code == 202
        resp = await rejected(raw_redis, api, lambda: h.post(TURN.format(s), json={"text": "one too many"}), 429,
                              "session_queue_full")  # fmt: skip
        assert int(resp.headers["retry-after"]) >= 1
        assert await raw_redis.llen(Keys(api.prefix).session(s).inbox) == 3
        # Another session is not affected.
        assert (await h.post(TURN.format(sid()), json={"text": "hi"})).status_code == 202


async def test_idempotency_key_returns_the_same_turn(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve()
    s = sid()
    body = {"text": "pay invoice 42", "idempotency_key": "req-42"}
    async with client(api) as h:
        responses = await asyncio.gather(*(h.post(TURN.format(s), json=body) for _ in range(10)))
        assert sorted(r.status_code for r in responses) == [200] * 9 + [202]
        ids = {r.json()["turn_id"] for r in responses}
        assert len(ids) == 1
        tid = ids.pop()
        assert {r.headers["location"] for r in responses} == {f"/v1/turns/{tid}"}
        assert (await h.get(f"/v1/turns/{tid}")).json()["text"] == body["text"]
        assert await raw_redis.llen(Keys(api.prefix).session(s).inbox) == 1
        # A repeat writes nothing.
        before = await keys_with_prefix(raw_redis, api.prefix)
        repeat = await h.post(TURN.format(s), json=body)
        assert (repeat.status_code, repeat.json()["turn_id"]) == (200, tid)
        assert await keys_with_prefix(raw_redis, api.prefix) == before
        # The same key with another text is a conflict, not a silent second turn.
        await rejected(raw_redis, api, lambda: h.post(TURN.format(s), json={**body, "text": "other"}), 409,
                       "idempotency_conflict")  # fmt: skip
        # The same key in another session is another turn.
        other = await h.post(TURN.format(sid()), json=body)
        assert other.status_code == 202 and other.json()["turn_id"] != tid


async def test_stream_follows_the_latest_attempt_across_a_resume(serve: Callable[..., Api], raw_redis: Redis) -> None:
    """A chunk of an older attempt that lands after a reset (a worker that lost its lease and has
    not noticed yet) is never sent, also not to a client that resumes after the reset. Text with
    U+2028 or U+0085 arrives intact through a reader that splits lines like str.splitlines()."""
    api = serve()
    new = "new\u2028text\x85that splitlines() would cut"  # line breaks only to naive line readers
    async with client(api) as h:
        tid = (await h.post(TURN.format(sid()), json={"text": "hi"})).json()["turn_id"]
        keys = Keys(api.prefix)
        stream = keys.stream(tid)
        ids = [
            await raw_redis.xadd(stream, chunk_fields(1, "old ")),  # type: ignore[arg-type]
            await raw_redis.xadd(stream, {"t": EventType.reset.value, "a": 2}),
            await raw_redis.xadd(stream, chunk_fields(1, "stale ")),  # type: ignore[arg-type]
            await raw_redis.xadd(stream, chunk_fields(2, new)),  # type: ignore[arg-type]
        ]
        await raw_redis.hset(keys.turn(tid), mapping={"state": "completed", "reply": new, "attempts": 2})
        await raw_redis.xadd(stream, {"t": EventType.end.value, "s": "completed"})

        async def events(last: str | None = None) -> list[tuple[str, str, str | None]]:
            headers = {"Last-Event-ID": last} if last else {}
            async with h.stream("GET", f"/v1/turns/{tid}/stream", headers=headers) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                return [(ev.event, ev.data, ev.id) async for ev in parse_sse(resp.aiter_lines())]

        full = await events()
        assert [(e, json.loads(d).get("text"), i) for e, d, i in full[:-1]] == [
            ("chunk", "old ", ids[0]),
            ("reset", None, ids[1]),
            ("chunk", new, ids[3]),
        ]
        assert full[-1][0] == "end" and json.loads(full[-1][1])["reply"] == new
        resumed = await events(last=ids[1])
        assert [(e, i) for e, _, i in resumed[:-1]] == [("chunk", ids[3])] and resumed[-1][0] == "end"
        # A client that already saw the end gets it again, and nothing else.
        assert [e for e, _, _ in await events(last=full[-1][2])] == ["end"]


async def test_queued_turn_stream_sends_keepalives(serve: Callable[..., Api]) -> None:
    api = serve()  # keepalive every 0.5 s, no workers: the turn stays queued
    async with client(api) as h:
        tid = (await h.post(TURN.format(sid()), json={"text": "hi"})).json()["turn_id"]
        async with h.stream("GET", f"/v1/turns/{tid}/stream") as resp:
            lines = resp.aiter_lines()
            assert await asyncio.wait_for(anext(lines), 10) == ": keepalive"


async def test_redis_down_answers_503_quickly_never_a_stack_trace(redis_server: RedisServer) -> None:
    dead = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="dead", auth="none")
    with ServedApp(create_app(dead)) as server:
        # The client's timeout is the hang detector, not a performance claim.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as h:
            requests = [
                h.post(TURN.format(sid()), json={"text": "hi"}),
                h.get(f"/v1/turns/{'a' * 32}"),
                h.get(f"/v1/turns/{'a' * 32}/stream"),
                h.get(f"/v1/sessions/{sid()}/messages"),
                h.get("/readyz"),
            ]
            for resp in await asyncio.gather(*requests):
                assert resp.status_code == 503, resp.text
                assert resp.json()["code"] == "redis_unavailable"
                assert "Redis" in resp.json()["message"] and "Traceback" not in resp.text
                assert resp.headers["retry-after"]
            assert (await h.get("/healthz")).status_code == 200


async def test_redis_dying_mid_stream_ends_the_stream_with_an_error_event() -> None:
    with RedisServer() as redis:
        api_settings = Settings(redis_url=redis.url, key_prefix="mid", auth="none")
        with ServedApp(create_app(api_settings)) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as h:
                tid = (await h.post(TURN.format(sid()), json={"text": "hi"})).json()["turn_id"]
                async with h.stream("GET", f"/v1/turns/{tid}/stream") as resp:
                    assert resp.status_code == 200
                    await asyncio.sleep(0.2)  # the server is now blocked reading the turn's stream
                    redis.kill()
                    events = [ev async for ev in parse_sse(resp.aiter_lines())]
                assert [ev.event for ev in events] == ["error"]
                assert json.loads(events[0].data)["code"] == "redis_unavailable"
                assert (await h.get(f"/v1/turns/{tid}")).status_code == 503


async def test_cancel_queued_turn_over_http(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve()  # no workers: turns stay queued
    s = sid()
    async with client(api) as c:
        first = (await c.post(TURN.format(s), json={"text": "one"})).json()
        second = (await c.post(TURN.format(s), json={"text": "two"})).json()
        resp = await c.post(f"/v1/turns/{first['turn_id']}/cancel")
        assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
        assert (await c.get(f"/v1/turns/{second['turn_id']}")).json()["position"] == 0
        # Cancelling again: not queued any more -> 409, nothing written.
        await rejected(
            raw_redis, api, lambda: c.post(f"/v1/turns/{first['turn_id']}/cancel"), 409, "turn_not_cancellable"
        )
        await rejected(raw_redis, api, lambda: c.post(f"/v1/turns/{'0' * 32}/cancel"), 404, "turn_not_found")
        # The stream of a cancelled turn ends at once with its final status.
        async with c.stream("GET", f"/v1/turns/{first['turn_id']}/stream") as resp:
            events = [ev async for ev in parse_sse(resp.aiter_lines())]
        assert [ev.event for ev in events] == ["end"]
        assert json.loads(events[0].data)["state"] == "cancelled"


async def test_dot_session_ids_are_rejected(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve()
    async with client(api) as c:
        for bad in ("%2E", "%2E%2E"):
            await rejected(
                raw_redis,
                api,
                lambda b=bad: c.post(f"/v1/sessions/{b}/turns", json={"text": "x"}),
                422,
                "invalid_input",
            )


async def test_replication_timeout_answers_503_and_a_retry_with_the_key_stays_one_turn(
    serve: Callable[..., Api], raw_redis: Redis
) -> None:
    """MIN_REPLICAS_ACK=1 against a Redis without replicas: every write times out waiting for one.
    The turn is on the primary but not acknowledged; retrying with the key never makes a second."""
    api = serve(redis_min_replicas_ack=1, redis_wait_timeout_ms=100)
    s = sid()
    body = {"text": "hello", "idempotency_key": "k-1"}
    async with client(api) as h:
        for _ in range(2):
            resp = await h.post(TURN.format(s), json=body)
            assert resp.status_code == 503, resp.text
            assert resp.json()["code"] == "replication_timeout"
            assert "same idempotency key" in resp.json()["message"]
            assert int(resp.headers["retry-after"]) >= 1
    keys = Keys(api.prefix)
    assert await raw_redis.llen(keys.session(s).inbox) == 1
    assert await raw_redis.get(keys.idempotency(s, "k-1"))
