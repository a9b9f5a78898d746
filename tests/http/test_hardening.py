"""What the API gives away and what it accepts: no Redis location in any answer, 404 for any turn
id that names no turn, session ids as apps write user ids, ids with an encoded "/" answered as
the ids they are, and a bounded, named pool of Redis connections.

Paths with percent-escapes are sent as raw HTTP (http.client), so no client library normalises them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.turns import SESSION_ID_PATTERN
from devkit.api_server import ServedApp
from devkit.http_client import parse_sse
from devkit.redis_server import RedisServer, free_port
from producer import Settings, api_errors
from producer.api import create_app
from tests.conftest import keys_with_prefix, sid
from tests.http.conftest import API_KEY, Api

PASSWORD = f"pw-{uuid.uuid4().hex}"


def raw(api: Api, method: str, path: str, key: str | None = None, body: Any = None) -> tuple[int, dict[str, Any]]:
    """One request with ``path`` sent byte for byte; the status and the JSON body."""
    host, _, port = api.url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        assert resp.getheader("content-type") == "application/json", (method, path, resp.status)
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# -- nothing internal in answers -------------------------------------------------------------


def test_503_answers_name_no_redis_location_and_the_log_does(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log's throttle is per process: start from a clean one, as a new API process does.
    monkeypatch.setattr(api_errors, "_outage_log", api_errors._OutageLog())
    dead = free_port()
    settings = Settings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{dead}/7", key_prefix="dead", auth="none")
    s, t = sid(), "a" * 32
    requests = [
        ("POST", f"/v1/sessions/{s}/turns", {"text": "hi"}),
        ("GET", f"/v1/sessions/{s}/turns", None),
        ("GET", f"/v1/sessions/{s}/messages", None),
        ("GET", f"/v1/sessions/{s}/export", None),
        ("DELETE", f"/v1/sessions/{s}", None),
        ("GET", f"/v1/turns/{t}", None),
        ("POST", f"/v1/turns/{t}/cancel", None),
        ("GET", f"/v1/turns/{t}/stream", None),
        ("GET", f"/v1/turns/{t}/webhook", None),
        ("POST", f"/v1/turns/{t}/webhook/redeliver", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
    ]
    caplog.set_level(logging.WARNING, logger="chatlane.api")
    with ServedApp(create_app(settings)) as server:
        api = Api(server.base_url, settings)
        for method, path, body in requests:
            status, answer = raw(api, method, path, body=body)
            assert status == 503 and answer["code"] == "redis_unavailable", (path, answer)
            text = json.dumps(answer)
            for internal in (str(dead), "127.0.0.1", "/7", PASSWORD):
                assert internal not in text, (path, text)
    logged = [r.getMessage() for r in caplog.records if "answered redis_unavailable" in r.getMessage()]
    assert len(logged) == 1, logged  # one line for the outage, not one per answer
    assert f"127.0.0.1:{dead}/7" in logged[0]  # the operator still learns where
    assert PASSWORD not in caplog.text


async def test_a_stream_cut_by_redis_ends_with_an_error_that_names_no_location() -> None:
    with RedisServer() as redis_server:
        settings = Settings(redis_url=redis_server.url, key_prefix="cut", auth="none")
        with ServedApp(create_app(settings)) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as h:
                tid = (await h.post(f"/v1/sessions/{sid()}/turns", json={"text": "hi"})).json()["turn_id"]
                async with h.stream("GET", f"/v1/turns/{tid}/stream") as resp:
                    assert resp.status_code == 200
                    await asyncio.sleep(0.2)  # the server now waits on the turn's stream
                    redis_server.kill()
                    events = [ev async for ev in parse_sse(resp.aiter_lines())]
    assert [ev.event for ev in events] == ["error"]
    error = json.loads(events[0].data)
    assert error["code"] == "redis_unavailable"
    assert str(redis_server.port) not in error["message"] and "127.0.0.1" not in error["message"]


# -- turn ids ------------------------------------------------------------------------------

TURN_ROUTES = [
    ("GET", "/v1/turns/{}"),
    ("POST", "/v1/turns/{}/cancel"),
    ("GET", "/v1/turns/{}/stream"),
    ("GET", "/v1/turns/{}/webhook"),
    ("POST", "/v1/turns/{}/webhook/redeliver"),
    ("POST", "/v1/turns/{}/retry"),
]
NO_TURN_IDS = [
    "does-not-exist",
    "0" * 32,  # the shape of a turn id, no turn
    "A" * 32,
    "a" * 31,
    "a" * 33,
    "x" * 500,
    "%20",
    "%C3%BC",
    "a%2Fb",
    "%2F..%2F",
    ".",
    "..",
    "@",
    "a+b",
    "%7Bx%7D",
]


async def test_any_turn_id_that_names_no_turn_is_404_on_every_turn_route(
    serve: Callable[..., Api], raw_redis: Redis
) -> None:
    api = serve()
    before = await keys_with_prefix(raw_redis, api.prefix)
    for method, route in TURN_ROUTES:
        for turn_id in NO_TURN_IDS:
            status, answer = await asyncio.to_thread(raw, api, method, route.format(turn_id))
            assert (status, answer["code"]) == (404, "turn_not_found"), (method, route, turn_id, answer)
    assert await keys_with_prefix(raw_redis, api.prefix) == before


def test_the_openapi_document_says_so(serve: Callable[..., Api]) -> None:
    doc = httpx.get(f"{serve().url}/openapi.json").json()
    turn_paths = {p: ops for p, ops in doc["paths"].items() if p.startswith("/v1/turns/{turn_id}")}
    assert len(turn_paths) == len(TURN_ROUTES)
    for path, ops in turn_paths.items():
        for op in ops.values():
            (param,) = [p for p in op["parameters"] if p["name"] == "turn_id"]
            assert "pattern" not in param["schema"], path
            assert "404" in op["responses"], path
    # Only a body, a header or a webhook rule can make these 422 now.
    assert "422" not in doc["paths"]["/v1/turns/{turn_id}"]["get"]["responses"]
    assert "422" not in doc["paths"]["/v1/turns/{turn_id}/webhook"]["get"]["responses"]
    session_params = [
        p
        for path, ops in doc["paths"].items()
        for op in ops.values()
        for p in op.get("parameters", [])
        if p["name"] == "session_id"
    ]
    assert session_params and all(p["schema"]["pattern"] == SESSION_ID_PATTERN for p in session_params)
    assert all("@" in p["description"] and "+" in p["description"] for p in session_params)


# -- session ids ---------------------------------------------------------------------------


async def test_session_ids_like_user_ids_work_and_their_escapes_name_the_same_session(live: Api) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=30) as h:
        for session_id in (f"john.{tag}@example.com", f"a+{tag}@x.io"):
            resp = await h.post(f"/v1/sessions/{session_id}/turns", json={"text": "hello"})
            assert resp.status_code == 202, resp.text
            assert resp.json()["session_id"] == session_id
            tid = resp.json()["turn_id"]
            for _ in range(300):
                if (await h.get(f"/v1/turns/{tid}")).json()["state"] == "completed":
                    break
                await asyncio.sleep(0.05)
            escaped = session_id.replace("@", "%40").replace("+", "%2B")
            status, page = await asyncio.to_thread(raw, live, "GET", f"/v1/sessions/{escaped}/messages", API_KEY)
            assert status == 200 and page["session_id"] == session_id
            assert [m["role"] for m in page["messages"]] == ["user", "assistant"]


BAD_SESSION_PATHS = [
    ("POST", "/v1/sessions/%7Ba%7D/turns"),  # braces: a Redis Cluster hash tag
    ("POST", "/v1/sessions/a%20b/turns"),
    ("POST", "/v1/sessions/a%09b/turns"),
    ("POST", "/v1/sessions/a%2Fb/turns"),
    ("POST", "/v1/sessions/a%2fb/turns"),
    ("POST", "/v1/sessions/%2F/turns"),
    ("GET", "/v1/sessions/x%2Fturns"),  # decoded, this is session x's turns
    ("GET", "/v1/sessions/a%2Fb/messages"),
    ("GET", "/v1/sessions/a%2Fb/export"),
    ("GET", "/v1/sessions/a%2Fb/turns"),
    ("DELETE", "/v1/sessions/a%2Fb"),
    ("DELETE", "/v1/sessions/x%2Fturns"),
]


async def test_a_session_id_with_braces_whitespace_or_an_encoded_slash_is_422_with_the_pattern(
    serve: Callable[..., Api], raw_redis: Redis
) -> None:
    api = serve()
    before = await keys_with_prefix(raw_redis, api.prefix)
    for method, path in BAD_SESSION_PATHS:
        body = {"text": "hi"} if method == "POST" else None
        status, answer = await asyncio.to_thread(raw, api, method, path, None, body)
        assert (status, answer["code"]) == (422, "invalid_input"), (method, path, answer)
        assert SESSION_ID_PATTERN in json.dumps(answer), answer
    assert await keys_with_prefix(raw_redis, api.prefix) == before


async def test_an_encoded_slash_tells_a_caller_without_a_key_nothing(serve: Callable[..., Api]) -> None:
    api = serve(api_keys="k-one")
    for path in ("/v1/sessions/a%2Fb/turns", "/v1/turns/a%2Fb"):
        status, answer = await asyncio.to_thread(raw, api, "GET", path)
        assert (status, answer["code"]) == (401, "unauthorized")


# -- the pool ------------------------------------------------------------------------------


async def test_the_api_holds_at_most_its_pool_of_named_redis_connections() -> None:
    """40 enqueues at once through a pool of 3: each waits for a connection instead of opening
    its own or failing, and CLIENT LIST shows the API's connections by name."""
    with RedisServer() as redis_server:
        settings = Settings(redis_url=redis_server.url, key_prefix="pool", redis_max_connections=3, auth="none")
        with ServedApp(create_app(settings)) as server:
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as h:
                answers = await asyncio.gather(
                    *(h.post(f"/v1/sessions/{sid()}/turns", json={"text": "hi"}) for _ in range(40))
                )
                assert [r.status_code for r in answers] == [202] * 40
                async with Redis.from_url(redis_server.url, decode_responses=True) as r:
                    names = [c["name"] for c in await r.client_list()]
    assert 1 <= names.count("chatlane-api") <= 3, names
    assert all(name in ("chatlane-api", "") for name in names), names
