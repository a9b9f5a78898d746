"""An agent made with create_agent, with two tools, runs turns under every guarantee: its tool
calls, their results and its answer are committed together, in order, exactly once."""

from __future__ import annotations

import asyncio
import random
import signal

from langchain_core.messages import AIMessage, ToolMessage
from redis.asyncio import Redis

from chatlane.messages import turn_id_of
from chatlane.stream import EventType, ToolPhase
from devkit.check import check
from devkit.demo import AGENT, turn_text
from devkit.faults import worker_pid
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid, wait_async


async def enqueue_all(producer: ChatProducer, sessions: list[str], turns: int) -> dict[str, list[str]]:
    """Every session's turns, sent by four concurrent producers in a shuffled order."""
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    locks = {s: asyncio.Lock() for s in sessions}
    plan = [s for s in sessions for _ in range(turns)]
    random.Random(3).shuffle(plan)

    async def one(share: list[str]) -> None:
        for s in share:
            async with locks[s]:  # the order we record is the order Redis accepted
                st = await producer.enqueue(s, turn_text(s, len(sent[s]), agent=True))
                sent[s].append(st.turn_id)

    await asyncio.gather(*(one(plan[i::4]) for i in range(4)))
    for tids in sent.values():
        for t in tids:
            await producer.wait(t, 60)
    return sent


async def assert_agent_histories(producer: ChatProducer, sent: dict[str, list[str]]) -> None:
    report = await check(producer, sent)
    assert report.ok and report.completed == sum(map(len, sent.values())), report.violations
    for s, tids in sent.items():
        history = await producer.history(s)
        groups = [[m for m in history if turn_id_of(m) == t] for t in tids]
        for n, group in enumerate(groups):
            kinds = [m.type for m in group]
            if "!tool=" not in turn_text(s, n, agent=True):
                assert kinds == ["human", "ai"]
                continue
            # user -> AI(tool_calls) -> tool result -> AI answer, once each, in this order.
            assert kinds == ["human", "ai", "tool", "ai"], kinds
            call, result, answer = group[1], group[2], group[3]
            assert isinstance(call, AIMessage) and isinstance(result, ToolMessage) and isinstance(answer, AIMessage)
            assert [c["id"] for c in call.tool_calls] == [result.tool_call_id] and not answer.tool_calls
            if n % 3 == 0:
                assert result.text == f"{float(n + 7)}"  # the add tool really ran
            assert result.text in answer.text or "the tools said" in answer.text.lower()
    assert report.tool_calls == sum("!tool=" in turn_text(s, n, True) for s in sent for n in range(len(sent[s])))


async def test_agent_with_two_tools_many_sessions_three_workers(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(3, handler=AGENT, fake_delay_ms=10)
    sessions = [sid("agent") for _ in range(16)]
    sent = await enqueue_all(producer, sessions, turns=6)
    await assert_agent_histories(producer, sent)
    # The token stream shows the tool activity: the call, then its result, then the answer's text.
    first = sent[sessions[0]][0]
    events = [ev async for ev in producer.events(first)]
    tools = [(ev.tool.name, ev.tool.phase) for ev in events if ev.tool is not None]
    assert tools == [("add", ToolPhase.call), ("add", ToolPhase.result)]
    kinds = [ev.type for ev in events]
    assert kinds.index(EventType.tool) < kinds.index(EventType.chunk) < kinds.index(EventType.end)


async def test_agent_over_the_openai_stub_never_sends_a_request_the_api_rejects(
    fleet: Fleet, producer: ChatProducer
) -> None:
    with OpenAIStub() as stub:
        env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"}
        # A window so small it holds one or two turns: cut anywhere else, it would separate a tool
        # call from its result or open on a tool message, and the stub would answer 400.
        fleet.start(2, raw_env=env, handler=AGENT, model="openai:gpt-4o-mini", history_max_tokens=90)
        sessions = [sid("openai") for _ in range(6)]
        sent = await enqueue_all(producer, sessions, turns=6)
        assert stub.rejected == []
        await assert_agent_histories(producer, sent)
        bodies = [b["messages"] for b in stub.requests]
        assert any(m["role"] == "tool" for b in bodies for m in b)  # tool results were sent back
        # The window was cut: later requests no longer carry the session's first message.
        assert any(b[1]["role"] == "user" and "message 0:" not in b[1]["content"] and "message 1" not in b[1]["content"]
                   for b in bodies)  # fmt: skip


async def test_sigkill_between_tool_call_and_answer_commits_the_turn_once(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(2, handler="tests.handlers:slow_agent", lease_ttl_ms=1500)
    await asyncio.sleep(2.5)  # both workers up, so the survivor takes over
    s = sid("killed")
    slow = await producer.enqueue(s, 'take your time !tool=wait:{"ms": 2500}')
    after = await producer.enqueue(s, 'then add !tool=add:{"a": 1, "b": 2}')

    async def tool_is_running() -> bool:
        events = await producer._read_events(slow.turn_id, "-", block_ms=None)
        return any(ev.tool is not None and ev.tool.phase is ToolPhase.call for ev in events)

    assert await wait_async(tool_is_running, 15, 0.02)
    token = await raw_redis.get(producer.keys.session(s).lease)
    fleet.by_pid(worker_pid(token)).signal(signal.SIGKILL)
    assert await raw_redis.llen(producer.keys.session(s).history) == 0  # nothing of the turn yet
    done = await producer.wait(slow.turn_id, 40)
    assert done.state is TurnState.completed and done.attempts == 2, done
    assert (await producer.wait(after.turn_id, 20)).state is TurnState.completed
    history = await producer.history(s)
    assert [m.type for m in history] == ["human", "ai", "tool", "ai"] * 2
    assert history[2].text == "waited 2500 ms" and history[6].text == "3.0"
    report = await check(producer, {s: [slow.turn_id, after.turn_id]})
    assert report.ok and report.partial == 0, report.violations
    # The stream told readers to drop the first attempt's tool activity.
    assert any(ev.type is EventType.reset for ev in [ev async for ev in producer.events(slow.turn_id)])
