"""An agent's turns over HTTP: metadata in the request body, tool events on the SSE stream, tool
calls and results in /messages; bad metadata rejected with nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from redis.asyncio import Redis

from devkit.agent_example import HANDLER
from devkit.api_server import ServedApp
from devkit.http_client import HttpApiError, HttpChatClient
from producer import TurnState
from producer.api import create_app
from tests.conftest import Fleet, keys_with_prefix, sid
from tests.http.conftest import Api


async def test_agent_turn_over_http(fleet: Fleet) -> None:
    fleet.start(1, handler=HANDLER)
    s = sid("http-agent")
    with ServedApp(create_app(fleet.settings.model_copy(update={"auth": "none"}))) as api:
        async with HttpChatClient(api.base_url) as client:
            st = await client.enqueue(s, 'what is a lease? !tool=lookup:{"term": "lease"}', metadata={"user": "ann"})
            assert st.metadata == {"user": "ann"}
            events = [ev async for ev in client.events(st.turn_id)]
            done = await client.status(st.turn_id)
            async with httpx.AsyncClient(base_url=api.base_url) as http:
                page = (await http.get(f"/v1/sessions/{s}/messages")).json()
    assert done.state is TurnState.completed and done.metadata == {"user": "ann"}
    tools = [json.loads(ev.data) for ev in events if ev.event == "tool"]
    call_id = tools[0]["call_id"]
    assert tools == [
        {"name": "lookup", "call_id": call_id, "phase": "call", "attempt": 1},
        {"name": "lookup", "call_id": call_id, "phase": "result", "attempt": 1},
    ]
    kinds = [ev.event for ev in events]
    assert kinds.index("tool") < kinds.index("chunk") and kinds[-1] == "end"
    roles = [(m["role"], m["tool_calls"], m["tool_call_id"], m["name"]) for m in page["messages"]]
    assert roles == [
        ("user", None, None, None),
        ("assistant", [{"id": call_id, "name": "lookup", "args": {"term": "lease"}}], None, None),
        ("tool", None, call_id, "lookup"),
        ("assistant", None, None, None),
    ]
    # The tool saw the turn's metadata through the run's config.
    assert page["messages"][2]["content"].endswith("(asked by ann)")
    assert page["messages"][3]["content"] == done.reply


async def test_bad_metadata_over_http_writes_nothing(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve()
    async with HttpChatClient(api.url) as client:
        for metadata, status, code in [
            ({"blob": "x" * 5000}, 413, "metadata_too_large"),
            (["a", "list"], 422, "invalid_input"),
            ("text", 422, "invalid_input"),
        ]:
            try:
                await client.enqueue(sid(), "hello", metadata=metadata)  # type: ignore[arg-type]
            except HttpApiError as e:
                assert (e.status, e.code) == (status, code), e
            else:
                raise AssertionError(f"{metadata!r:.40} was accepted")
    assert await keys_with_prefix(raw_redis, api.prefix) == set()
