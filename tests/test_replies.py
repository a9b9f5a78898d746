"""Nothing a model returns can make a session unreadable: empty replies, content blocks and tool
calls without results are stored as they are, the session goes on, and /messages answers 200.
An entry that cannot be decoded fails only the turns that read it."""

from __future__ import annotations

import json

import httpx
from redis.asyncio import Redis

from chatlane.messages import encode_message
from devkit.api_server import ServedApp
from devkit.check import check
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer, TurnState
from producer.api import create_app
from tests.conftest import Fleet, sid

ODD_REPLIES = [
    "say nothing !empty",
    "after the empty one",
    "answer in blocks !blocks",
    "after the blocks",
    'call a tool nobody runs !tool=add:{"a": 1, "b": 2}',
    "after the tool calls",
    "and once more",
]


async def run_session(producer: ChatProducer, texts: list[str]) -> tuple[str, list[str]]:
    s = sid("odd")
    turns = [await producer.enqueue(s, t) for t in texts]
    for t in turns:
        st = await producer.wait(t.turn_id, 30)
        assert st.state is TurnState.completed, st
    return s, [t.turn_id for t in turns]


def messages_page(fleet: Fleet, s: str) -> dict[str, object]:
    with ServedApp(create_app(fleet.settings.model_copy(update={"auth": "none"}))) as api:
        resp = httpx.get(f"{api.base_url}/v1/sessions/{s}/messages", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    page: dict[str, object] = resp.json()
    return page


async def test_odd_replies_are_stored_whole_and_the_session_goes_on(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s, tids = await run_session(producer, ODD_REPLIES)
    report = await check(producer, {s: tids}, open_tool_calls=True)
    assert report.ok and report.completed == len(ODD_REPLIES), report.violations
    history = await producer.history(s)
    assert [m.type for m in history] == ["human", "ai"] * len(ODD_REPLIES)
    empty, blocks, calls = history[1], history[5], history[9]
    assert empty.content == ""
    assert isinstance(blocks.content, list) and blocks.text.startswith("Reply #3")
    assert calls.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": calls.tool_calls[0]["id"],  # type: ignore[attr-defined]
                                 "type": "tool_call"}]  # fmt: skip
    # Each later reply saw every earlier user message.
    assert history[-1].text.startswith(f"Reply #{len(ODD_REPLIES)} to 'and once more': I can see 6 earlier")
    page = messages_page(fleet, s)
    rows = page["messages"]
    assert isinstance(rows, list)
    assert [r["role"] for r in rows] == ["user", "assistant"] * len(ODD_REPLIES)
    assert rows[1]["content"] == "" and rows[5]["content"] == blocks.text
    assert rows[9]["tool_calls"] == [{"id": calls.tool_calls[0]["id"], "name": "add", "args": {"a": 1, "b": 2}}]  # type: ignore[attr-defined]


async def test_odd_replies_over_the_openai_stub(fleet: Fleet, producer: ChatProducer) -> None:
    """The tool calls nobody answered are stored, and never sent back to the API (it would 400)."""
    with OpenAIStub() as stub:
        env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"}
        fleet.start(1, raw_env=env, model="openai:gpt-4o-mini")
        texts = [t for t in ODD_REPLIES if "blocks" not in t]
        s, tids = await run_session(producer, texts)
        assert stub.rejected == []
        report = await check(producer, {s: tids}, open_tool_calls=True)
        assert report.ok, report.violations
        history = await producer.history(s)
        assert history[1].content == "" and history[2 * texts.index(ODD_REPLIES[4]) + 1].tool_calls  # type: ignore[attr-defined]
        last = stub.requests[-1]["messages"]
        assert all("tool_calls" not in m for m in last) and len([m for m in last if m["role"] == "user"]) == len(texts)
        assert messages_page(fleet, s)["total"] == 2 * len(texts)


async def test_an_unreadable_entry_fails_only_the_turns_that_read_it(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1)
    s, other = sid("broken"), sid("fine")
    first = await producer.enqueue(s, "first")
    assert (await producer.wait(first.turn_id, 20)).state is TurnState.completed
    history_key = producer.keys.session(s).history
    await raw_redis.rpush(history_key, '{"type": "ai", "data": {"content": "x", "tool_calls": "not a list"}}')
    failing = [await producer.enqueue(s, f"reads it {i}") for i in range(2)]
    elsewhere = await producer.enqueue(other, "another session")
    for t in failing:
        st = await producer.wait(t.turn_id, 20)
        assert st.state is TurnState.failed and st.attempts == 1, st
        assert st.error and st.error.startswith("history_entry_unreadable: history entry 2 cannot be decoded")
    assert (await producer.wait(elsewhere.turn_id, 20)).state is TurnState.completed
    page = messages_page(fleet, s)
    rows = page["messages"]
    assert isinstance(rows, list) and page["total"] == 3
    assert rows[2]["role"] == "unreadable" and "history entry 2 cannot be decoded" in rows[2]["error"]
    # Repaired by hand (LSET), the session goes on; an empty reply stored by an older chatlane
    # (no content at all) reads as an empty message.
    await raw_redis.lset(history_key, 2, json.dumps({"type": "ai", "data": {"id": f"{first.turn_id}:ai"}}))
    fixed = await producer.enqueue(s, "after the repair")
    assert (await producer.wait(fixed.turn_id, 20)).state is TurnState.completed
    assert (await producer.history(s))[2].content == ""
    assert encode_message((await producer.history(s))[2]).count('"content":""') == 1
