"""The HTTP API end to end: real uvicorn, real worker processes, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.messages import turn_id_of
from devkit.check import check
from devkit.http_client import HttpApiError, HttpChatClient, SseEvent
from producer import ChatProducer, TurnState, TurnStatus
from tests.conftest import sid, wait_async
from tests.http.conftest import API_KEY, Api


async def poll(client: HttpChatClient, turn_id: str, timeout: float = 60) -> TurnStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await client.status(turn_id)
        if st.state.terminal or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


async def collect(client: HttpChatClient, turn_id: str, last_event_id: str | None = None) -> list[SseEvent]:
    return [ev async for ev in client.events(turn_id, last_event_id)]


def chunks(events: list[SseEvent]) -> list[SseEvent]:
    return [ev for ev in events if ev.event == "chunk"]


def text_of(events: list[SseEvent]) -> str:
    """The reply as a client following the stream sees it: a reset discards what came before."""
    parts: list[str] = []
    for ev in events:
        if ev.event == "reset":
            parts = []
        elif ev.event == "chunk":
            parts.append(json.loads(ev.data)["text"])
    return "".join(parts)


async def test_concurrent_http_clients_many_sessions_ordered_exactly_once(live: Api) -> None:
    sessions = [sid("http") for _ in range(16)]
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    locks = {s: asyncio.Lock() for s in sessions}

    async def one_client(seed: int) -> None:
        rng = random.Random(seed)
        async with HttpChatClient(live.url, API_KEY) as c:
            for _ in range(10):
                s = rng.choice(sessions)
                # The lock makes the recorded order the order the API accepted them in.
                async with locks[s]:
                    st = await c.enqueue(s, f"message {len(sent[s])} for {s}")
                    assert st.state is TurnState.queued and st.session_id == s
                    sent[s].append(st.turn_id)

    await asyncio.gather(*(one_client(i) for i in range(8)))
    total = sum(map(len, sent.values()))
    assert total == 80

    async with HttpChatClient(live.url, API_KEY) as c:
        final = {t: await poll(c, t) for ts in sent.values() for t in ts}
    async with ChatProducer(settings=live.settings) as producer:
        report = await check(producer, {s: ts for s, ts in sent.items() if ts})
        assert report.ok, report.violations
        assert report.completed == total
        for t, st in final.items():
            assert st == report.statuses[t]  # what HTTP reports is what Redis holds
        for s, ts in sent.items():
            for i, t in enumerate(ts):
                assert (final[t].reply or "").startswith(f"Reply #{i + 1} to 'message {i} for {s}'")
        # The history over HTTP, paged backwards 3 at a time, is the stored history.
        s = max(sessions, key=lambda x: len(sent[x]))
        stored = await producer.history(s)
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {API_KEY}"}) as h:
        pages: list[dict[str, object]] = []
        before: int | None = None
        while True:
            params = {"limit": 3, **({"before": before} if before is not None else {})}
            page = (await h.get(f"/v1/sessions/{s}/messages", params=params)).json()
            pages = page["messages"] + pages
            before = page["next_before"]
            if before is None:
                break
    assert page["total"] == len(stored) == 2 * len(sent[s])
    assert [m["index"] for m in pages] == list(range(len(stored)))
    assert [(m["role"], m["content"], m["turn_id"]) for m in pages] == [
        ({"human": "user", "ai": "assistant"}[m.type], m.text, turn_id_of(m)) for m in stored
    ]


async def test_sse_late_joiner_and_reconnect_get_the_whole_reply_exactly_once(live: Api) -> None:
    async with HttpChatClient(live.url, API_KEY) as c:
        st = await c.enqueue(sid("sse"), "tell me a story !delay=1600")
        tid = st.turn_id
        first = asyncio.create_task(collect(c, tid))

        async def partial_reply_exists() -> bool:
            return bool((await c.status(tid)).reply)

        # Join late: once the turn is running and part of the reply exists.
        assert await wait_async(partial_reply_exists, 20, interval=0.02)
        joined_at = await c.status(tid)
        late = asyncio.create_task(collect(c, tid))
        # Read three chunks, drop the connection, resume with Last-Event-ID.
        before_drop: list[SseEvent] = []
        async with contextlib.aclosing(c.events(tid)) as events:
            async for ev in events:
                before_drop.append(ev)
                if len(chunks(before_drop)) == 3:
                    break
        after_drop = await collect(c, tid, last_event_id=before_drop[-1].id)
        first_events, late_events = await first, await late
        final = await c.status(tid)

    assert final.state is TurnState.completed and final.reply
    assert joined_at.state is TurnState.running and joined_at.reply and joined_at.reply != final.reply
    for events in (first_events, late_events, before_drop + after_drop):
        ids = [ev.id for ev in chunks(events)]
        assert ids == [ev.id for ev in chunks(first_events)] and len(set(ids)) == len(ids)
        assert text_of(events) == final.reply
    assert len(chunks(first_events)) > 3
    for events in (first_events, late_events, after_drop):
        assert events[-1].event == "end"
        assert TurnStatus.model_validate_json(events[-1].data) == final


async def test_retry_is_announced_by_reset_and_stale_text_is_dropped(live: Api) -> None:
    async with HttpChatClient(live.url, API_KEY) as c:
        st = await c.enqueue(sid("retry"), "fails halfway once !failmid=1 !delay=300")
        events = await collect(c, st.turn_id)
        final = await c.status(st.turn_id)
        assert final.state is TurnState.completed and final.attempts == 2
        resets = [ev for ev in events if ev.event == "reset"]
        assert [json.loads(ev.data)["attempt"] for ev in resets] == [2]
        assert text_of(events) == final.reply
        # A client that saw only chunks of attempt 1 resumes into the reset and the new text.
        before_reset = events[: events.index(resets[0])]
        resumed = await collect(c, st.turn_id, before_reset[-1].id if before_reset else None)
        assert resumed[0].event == "reset"
        assert text_of(resumed) == final.reply


async def test_finished_turn_replays_then_ends_and_expired_stream_still_ends(live: Api, raw_redis: Redis) -> None:
    async with HttpChatClient(live.url, API_KEY) as c:
        st = await c.enqueue(sid("done"), "short one")
        final = await c.wait(st.turn_id, 30)
        assert final.state is TurnState.completed
        replay = await collect(c, st.turn_id)
        assert text_of(replay) == final.reply and replay[-1].event == "end"
        # What stream_ttl_s does after the turn ends: the stream key disappears.
        assert await raw_redis.delete(Keys(live.prefix).stream(st.turn_id)) == 1
        after_expiry = await collect(c, st.turn_id)
        assert [ev.event for ev in after_expiry] == ["end"]
        assert TurnStatus.model_validate_json(after_expiry[0].data) == final


async def test_wait_and_errors_through_the_http_client(live: Api) -> None:
    async with HttpChatClient(live.url, API_KEY) as c:
        first = await c.enqueue(sid("wait"), "hello", idempotency_key="k-1")
        again = await c.enqueue(first.session_id, "hello", idempotency_key="k-1")
        assert again.turn_id == first.turn_id
        done = await c.wait(first.turn_id, 30)
        assert done.state is TurnState.completed and done.reply
        with pytest.raises(HttpApiError) as err:
            await c.status("f" * 32)
        assert (err.value.status, err.value.code) == (404, "turn_not_found")
    async with HttpChatClient(live.url, "wrong-key") as bad:
        with pytest.raises(HttpApiError) as err:
            await bad.enqueue(sid(), "hi")
        assert (err.value.status, err.value.code) == (401, "unauthorized")


async def test_ready_when_redis_answers_and_workers_beat(live: Api) -> None:
    async with httpx.AsyncClient(base_url=live.url) as h:

        async def ready() -> bool:
            return (await h.get("/readyz")).status_code == 200

        assert await wait_async(ready, 15, interval=0.1)
        r = await h.get("/readyz")
        assert r.json() == {"status": "ready", "workers": 2}
