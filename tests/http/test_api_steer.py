"""Steering over HTTP: on_busy in the enqueue body, cancel with keep_partial, a session's live
turns, queued-turn deadlines; every refusal answers its status and code and writes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from redis.asyncio import Redis

from chatlane.keys import Keys
from devkit.http_client import HttpChatClient, parse_sse
from producer import TurnState
from tests.conftest import sid, wait_async
from tests.http.conftest import API_KEY, Api
from tests.http.test_api_contract import TURN, client, rejected


async def test_policies_listing_and_refusals_without_workers(serve: Callable[..., Api], raw_redis: Redis) -> None:
    api = serve()  # no workers: turns stay queued
    s = sid()
    async with client(api) as h:
        first = await h.post(TURN.format(s), json={"text": "hi", "on_busy": "reject"})
        assert first.status_code == 202
        tid = first.json()["turn_id"]
        busy = await rejected(
            raw_redis, api, lambda: h.post(TURN.format(s), json={"text": "again", "on_busy": "reject"}), 409,
            "session_busy",
        )  # fmt: skip
        assert s in busy.json()["message"]
        for bad in ({"text": "x", "on_busy": "later"}, {"text": "x", "expires_after_s": 0},
                    {"text": "x", "expires_after_s": -1}, {"text": "x", "expires_after_s": "soon"}):  # fmt: skip
            await rejected(raw_redis, api, lambda b=bad: h.post(TURN.format(s), json=b), 422, "invalid_input")
        # Coalesce joins the queued turn: the same turn, 200, `coalesced` up.
        joined = await h.post(TURN.format(s), json={"text": "are you there?", "on_busy": "coalesce"})
        assert joined.status_code == 200 and joined.json()["turn_id"] == tid
        assert joined.json()["coalesced"] == 1 and joined.json()["texts"] == ["hi", "are you there?"]
        assert joined.headers["location"] == f"/v1/turns/{tid}"
        second = (await h.post(TURN.format(s), json={"text": "next"})).json()["turn_id"]

        live = (await h.get(f"/v1/sessions/{s}/turns")).json()
        assert live["session_id"] == s and [t["turn_id"] for t in live["turns"]] == [tid, second]
        assert [t["position"] for t in live["turns"]] == [0, 1]
        assert (await h.get(f"/v1/sessions/{s}/turns", params={"state": "running"})).json()["turns"] == []
        for bad_state in ("completed", "queued,", "", "queued;running"):
            await rejected(raw_redis, api, lambda st=bad_state: h.get(f"/v1/sessions/{s}/turns", params={"state": st}),
                           422, "invalid_input")  # fmt: skip
        allow = await rejected(raw_redis, api, lambda: h.delete(TURN.format(s)), 405, "method_not_allowed")
        assert allow.headers["allow"] == "GET, POST"

        # A queued turn cancels at once, whatever keep_partial says: 200 and its final status.
        resp = await h.post(f"/v1/turns/{tid}/cancel", json={"keep_partial": False})
        assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
        await rejected(raw_redis, api, lambda: h.post(f"/v1/turns/{second}/cancel", json={"keep": 1}), 422,
                       "invalid_input")  # fmt: skip
        assert [t["turn_id"] for t in (await h.get(f"/v1/sessions/{s}/turns")).json()["turns"]] == [second]


async def test_a_queued_turns_stream_ends_when_it_expires_with_no_worker(serve: Callable[..., Api]) -> None:
    api = serve()
    async with client(api) as h:
        tid = (await h.post(TURN.format(sid()), json={"text": "hello?", "expires_after_s": 0.5})).json()["turn_id"]
        async with h.stream("GET", f"/v1/turns/{tid}/stream") as resp:
            events = [ev async for ev in parse_sse(resp.aiter_lines())]
    assert [ev.event for ev in events] == ["end"]
    final = json.loads(events[0].data)
    assert final["state"] == "expired" and final["reason"] == "not started within 0.5 s (expires_after_s)"


async def test_stop_a_running_turn_over_http(live: Api, raw_redis: Redis) -> None:
    s = sid()
    async with HttpChatClient(live.url, API_KEY) as c:
        t = await c.enqueue(s, "a long one !delay=4000")
        assert await wait_async(lambda: _running(c, t.turn_id), 15)
        events = asyncio.create_task(c.wait(t.turn_id, 20))
        await asyncio.sleep(0.1)
        async with client(live, API_KEY) as h:
            resp = await h.post(f"/v1/turns/{t.turn_id}/cancel")  # no body: keep_partial
        assert resp.status_code in (200, 202) and resp.json()["reason"] == "interrupted by the client"
        final = await events  # the stream's `end` event
        assert final.state is TurnState.interrupted and final.reply
        # Interrupt through the enqueue body.
        u1 = await c.enqueue(s, "another long one !delay=4000")
        assert await wait_async(lambda: _running(c, u1.turn_id), 15)
        u2 = await c.enqueue(s, "never mind", on_busy="interrupt")
        assert (await c.wait(u2.turn_id, 20)).state is TurnState.completed
        assert (await c.status(u1.turn_id)).state is TurnState.interrupted
    history = [json.loads(m) for m in await raw_redis.lrange(Keys(live.prefix).session(s).history, 0, -1)]
    assert [m["type"] for m in history] == ["human", "ai"] * 3
    assert [m["data"].get("response_metadata", {}).get("interrupted", False) for m in history[1::2]] == [
        True, True, False,
    ]  # fmt: skip


async def _running(c: HttpChatClient, turn_id: str) -> bool:
    st = await c.status(turn_id)
    return st.state is TurnState.running and bool(st.reply)
