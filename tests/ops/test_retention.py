"""Retention: the history bound trims whole turns (never a tool-call group) with indexes kept
absolute, and an idle session expires, never one with a queued or running turn."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime

import httpx
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from redis.asyncio import Redis

from chatlane.errors import LeaseLost
from chatlane.export import SessionExport
from chatlane.messages import decode_messages, encode_message, is_turn_start, turn_messages, user_messages
from chatlane.scripts import Advance, Claim, Finish, Next
from devkit.agent_example import HANDLER as AGENT
from devkit.api_server import ServedApp
from producer import ChatProducer, TurnState
from producer.api import create_app
from tests.conftest import Fleet, keys_with_prefix, sid, wait_async

PLAIN = "hello {n}"  # 2 entries: user, answer
ONE_TOOL = 'add please {n} !tool=add:{{"a": {n}, "b": 1}}'  # 4: user, call, result, answer
TWO_TOOLS = 'both {n} !tool=add:{{"a": {n}, "b": 2}} !tool=lookup:{{"term": "lease"}}'  # 5
SEEN = re.compile(r"I can see (\d+) earlier message")


def assert_no_split_group(msgs: list[BaseMessage]) -> None:
    """Every tool message answers a call of the AI message just before its run of tool messages,
    and every call made is answered: no group is cut, and the history opens on no tool result."""
    assert msgs and not isinstance(msgs[0], ToolMessage), msgs[:1]
    open_calls: set[str] = set()
    for m in msgs:
        if isinstance(m, ToolMessage):
            assert m.tool_call_id in open_calls, (m, msgs)
            open_calls.discard(m.tool_call_id)
            continue
        assert not open_calls, f"calls {open_calls} left unanswered before {m!r}"
        if isinstance(m, AIMessage):
            open_calls = {c["id"] or "" for c in m.tool_calls}
    assert not open_calls


async def stored(raw: Redis, producer: ChatProducer, s: str) -> tuple[int, list[BaseMessage]]:
    sk = producer.keys.session(s)
    trimmed = int(await raw.get(sk.trimmed) or 0)
    return trimmed, decode_messages(await raw.lrange(sk.history, 0, -1))  # type: ignore[misc]


def test_the_trim_script_reads_what_encode_message_writes() -> None:
    """trim_history.lua tells entries apart by their text: the shape encode_message writes."""
    (user,) = user_messages("t" * 32, "hi")
    assert is_turn_start(user)
    raw = encode_message(user)
    assert raw.startswith('{"type":"human",') and raw.endswith(':user"}}')
    (second,) = user_messages("t" * 32, ["a", "b"])[1:]
    assert not encode_message(second).endswith(':user"}}')  # a coalesced text does not open a turn
    assert encode_message(ToolMessage("4", tool_call_id="c1")).startswith('{"type":"tool",')


async def test_history_stays_bounded_whole_turns_never_a_split_tool_group(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    bound = 7
    fleet.start(1, handler=AGENT, history_max_messages=bound, fake_delay_ms=0)
    s = sid("bound")
    ids: list[str] = []  # every message id ever committed, by absolute index
    kinds = [PLAIN, ONE_TOOL, TWO_TOOLS, PLAIN, TWO_TOOLS, ONE_TOOL, PLAIN, PLAIN, ONE_TOOL, TWO_TOOLS, PLAIN, PLAIN]
    trimmed_ever = 0
    for n, kind in enumerate(kinds):
        _, before = await stored(raw_redis, producer, s)
        t = await producer.enqueue(s, kind.format(n=n))
        done = await producer.wait(t.turn_id, 20)
        assert done.state is TurnState.completed, done
        # The turn was shown exactly the user messages the bounded history kept, no trimmed one.
        seen = SEEN.search(done.reply or "")
        assert seen and int(seen.group(1)) == sum(isinstance(m, HumanMessage) for m in before), (done.reply, before)
        entries = int(await raw_redis.hget(producer.keys.turn(t.turn_id), "entries"))  # type: ignore[misc]
        trimmed, msgs = await stored(raw_redis, producer, s)
        ids.extend(m.id or "" for m in msgs[-entries:])
        assert len(msgs) <= bound
        assert trimmed + len(msgs) == len(ids)  # absolute: nothing trimmed is renumbered
        assert [m.id for m in msgs] == ids[trimmed:]
        # Every turn fits the bound, so the history is cut only before a turn's user message.
        assert is_turn_start(msgs[0]), msgs[0]
        assert_no_split_group(msgs)
        trimmed_ever = trimmed
    assert trimmed_ever > 20  # it did trim, many times

    # Turns queued together run in one drain, which keeps its window in memory between them: the
    # window drops what each commit trimmed (3 plain turns of 2 fit the bound of 7, never more).
    batch = [await producer.enqueue(s, PLAIN.format(n=n)) for n in range(6)]
    for t in batch:
        done = await producer.wait(t.turn_id, 20)
        assert done.state is TurnState.completed
        seen = SEEN.search(done.reply or "")
        assert seen and int(seen.group(1)) <= 3, done.reply
        entries = int(await raw_redis.hget(producer.keys.turn(t.turn_id), "entries"))  # type: ignore[misc]
        assert entries == 2
        ids.extend([f"{t.turn_id}:user", f"{t.turn_id}:1"])
    trimmed_ever, msgs = await stored(raw_redis, producer, s)
    assert [m.id for m in msgs] == ids[trimmed_ever:] and len(msgs) == 6

    # Paging by absolute index walks back from the newest to the oldest kept, then stops.
    page = await producer.history_page(s, limit=3)
    assert page.total == len(ids) and page.first == trimmed_ever
    walked: list[str] = []
    while True:
        walked[:0] = [m.id for m in page.messages if isinstance(m, BaseMessage) and m.id]
        if page.start == page.first:
            break
        page = await producer.history_page(s, limit=3, before=page.start)
    assert walked == ids[trimmed_ever:]
    gone = await producer.history_page(s, limit=5, before=trimmed_ever - 2)  # an index that was trimmed
    assert gone.messages == [] and gone.start == trimmed_ever
    with ServedApp(create_app(fleet.settings.model_copy(update={"auth": "none"}))) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            body = (await http.get(f"/v1/sessions/{s}/messages", params={"limit": 100})).json()
    assert body["total"] == len(ids) and body["next_before"] is None
    assert [m["index"] for m in body["messages"]] == list(range(trimmed_ever, len(ids)))


async def test_a_turn_longer_than_the_bound_is_cut_between_groups_only(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1, handler=AGENT, history_max_messages=3, fake_delay_ms=0)
    s = sid("tiny")
    for text, first_kind in [
        (ONE_TOOL, "call"),  # user, call, result, answer: the user message goes, the group stays
        (PLAIN, "user"),
        (TWO_TOOLS, "answer"),  # user, call x2, results x2, answer: only a whole group fits: the answer
    ]:
        t = await producer.enqueue(s, text.format(n=1))
        assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed
        _, msgs = await stored(raw_redis, producer, s)
        assert len(msgs) <= 3
        assert_no_split_group(msgs)
        head = msgs[0]
        calls = isinstance(head, AIMessage) and head.tool_calls
        kind = "user" if is_turn_start(head) else "call" if calls else "answer"
        assert kind == first_kind, msgs
    # A turn after that sees no fragment of a turn (the window takes whole turns only), and works.
    t = await producer.enqueue(s, "and now?")
    done = await producer.wait(t.turn_id, 20)
    assert done.state is TurnState.completed and "I can see 0 earlier" in (done.reply or "")


async def session_keys(raw: Redis, prefix: str, s: str) -> set[str]:
    return {k for k in await keys_with_prefix(raw, prefix) if f"{{{s}}}" in k}


async def test_an_idle_session_expires_one_with_a_queued_or_running_turn_never(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    idle_s = 1.0
    fleet.start(1, session_idle_ttl_s=idle_s)
    s = sid("idle")
    sk = producer.keys.session(s)
    first = await producer.enqueue(s, "remember me")
    assert (await producer.wait(first.turn_id, 20)).state is TurnState.completed
    keys = await session_keys(raw_redis, fleet.prefix, s)
    assert {sk.history, sk.fence, sk.turns} <= keys
    for k in keys:  # released: everything left of the session is on the idle clock
        assert 0 < await raw_redis.pttl(k) <= idle_s * 1000, k

    # Queued while no worker runs: nothing of the session expires, however long it waits.
    fleet.stop()
    second = await producer.enqueue(s, "!delay=2500 still there?")
    for k in (sk.history, sk.fence, sk.turns):
        assert await raw_redis.pttl(k) == -1, k
    await asyncio.sleep(2.5 * idle_s)
    assert len(await producer.history(s)) == 2
    assert (await producer.status(second.turn_id)).state is TurnState.queued

    # Running for longer than the idle TTL: nothing expires either.
    fleet.start(1, session_idle_ttl_s=idle_s)

    async def running() -> bool:
        return (await producer.status(second.turn_id)).state is TurnState.running

    assert await wait_async(running, 20)
    await asyncio.sleep(1.5 * idle_s)
    assert (await producer.status(second.turn_id)).state is TurnState.running
    assert await raw_redis.pttl(sk.history) == -1 and len(await producer.history(s)) == 2
    done = await producer.wait(second.turn_id, 20)
    assert done.state is TurnState.completed and "I can see 1 earlier" in (done.reply or "")

    # Idle again: every key of the session goes (the turn records keep their own TTL).
    async def gone() -> bool:
        return not await session_keys(raw_redis, fleet.prefix, s)

    assert await wait_async(gone, 10 * idle_s), await session_keys(raw_redis, fleet.prefix, s)
    assert (await producer.status(second.turn_id)).state is TurnState.completed
    # The same id then starts a new session (its fence counter restarts: the lease token's
    # random part keeps every token new, claim.lua), and it works.
    third = await producer.enqueue(s, "who are you?")
    done = await producer.wait(third.turn_id, 20)
    assert done.state is TurnState.completed and "I can see 0 earlier" in (done.reply or "")
    assert len(await producer.history(s)) == 2


async def test_the_turn_index_forgets_turns_whose_records_expired(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1, turn_ttl_s=1)
    s = sid("index")
    turns_key = producer.keys.session(s).turns
    old = [await producer.enqueue(s, f"old {n}") for n in range(3)]
    for t in old:
        assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed

    async def expired() -> bool:
        return not await raw_redis.exists(*(producer.keys.turn(t.turn_id) for t in old))

    assert await wait_async(expired, 10)
    assert await raw_redis.lrange(turns_key, 0, -1) == [t.turn_id for t in old]  # type: ignore[misc]
    new = []
    for n in range(2):  # each commit forgets up to two expired ids at the front
        new.append(await producer.enqueue(s, f"new {n}"))
        assert (await producer.wait(new[-1].turn_id, 20)).state is TurnState.completed
    assert await raw_redis.lrange(turns_key, 0, -1) == [t.turn_id for t in new]  # type: ignore[misc]


async def test_the_summary_goes_on_past_trimmed_messages_by_absolute_index(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(
        1, history_strategy="summarize", history_max_tokens=120, summary_refresh_messages=2, history_max_messages=8,
        fake_delay_ms=0,
    )  # fmt: skip
    s = sid("sum")
    sk = producer.keys.session(s)
    for n in range(16):
        t = await producer.enqueue(s, f"turn {n}: remember the number {n * 7} " + "and more words " * 5)
        assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed
    trimmed = int(await raw_redis.get(sk.trimmed) or 0)
    kept = await raw_redis.llen(sk.history)  # type: ignore[misc]
    upto = int(await raw_redis.hget(sk.summary, "upto") or 0)  # type: ignore[misc]
    assert trimmed + kept == 32 and kept <= 8
    # The summary covers messages up to an absolute index past everything trimmed: it went on
    # summarizing after the trimming began, and never asked for an index the history lacks.
    assert trimmed < upto <= trimmed + kept, (trimmed, upto, kept)
    assert "could not refresh its summary" not in fleet.logs()


def _export(s: str, turns: list[list[BaseMessage]]) -> SessionExport:
    msgs = [m for t in turns for m in t]
    history = [json.loads(encode_message(m)) for m in msgs]
    return SessionExport(session_id=s, exported_at=datetime.now(UTC), history=history, turns=[])


def _tool_turn(n: int, calls: int, answered: bool = True) -> list[BaseMessage]:
    tid = f"{n:032d}"
    ids = [f"call{n}_{c}" for c in range(calls)]
    call = AIMessage("", tool_calls=[{"name": "add", "args": {"a": c}, "id": i} for c, i in enumerate(ids)])
    added: list[BaseMessage] = [call, *(ToolMessage(str(c), tool_call_id=i) for c, i in enumerate(ids))]
    if answered:
        added.append(AIMessage(f"answer {n}"))
    return turn_messages(tid, f"user {n}", added)


def _plain_turn(n: int) -> list[BaseMessage]:
    return turn_messages(f"{n:032d}", f"user {n}", [AIMessage(f"answer {n}")])


async def test_the_trim_rule_case_by_case(fleet: Fleet) -> None:
    """trim_history.lua, through an import (no worker needed): whole turns first, then between
    groups inside the newest turn, and a group longer than the bound stays whole."""
    cases: list[tuple[int, list[list[BaseMessage]], int]] = [
        (4, [_plain_turn(1), _plain_turn(2), _plain_turn(3)], 2),  # whole turns: the first goes
        (5, [_plain_turn(1), _tool_turn(2, 2)], 2),  # the tool turn (5) fits: cut before its user message
        (4, [_tool_turn(1, 2)], 1),  # longer than the bound: its user message goes, the group stays
        (3, [_plain_turn(1), _tool_turn(2, 1)], 3),  # the call, its result and the answer remain
        (2, [_tool_turn(1, 3, answered=False)], 0),  # one group of 4 > 2: nothing can go
    ]
    for bound, turns, cut in cases:
        settings = fleet.settings.model_copy(update={"history_max_messages": bound})
        async with ChatProducer(settings=settings) as p:
            s = sid("rule")
            exp = _export(s, turns)
            done = await p.import_session(exp)
            assert done.trimmed == cut, (bound, [m["type"] for m in exp.history])
            kept = await p.history(s)
            assert [m.id for m in kept] == [m.id for t in turns for m in t][cut:]
            assert_no_split_group(kept)


async def test_a_fence_counter_that_expired_and_restarted_admits_no_stale_holder(
    producer: ChatProducer, raw_redis: Redis
) -> None:
    """The idle expiry can restart a session's fence counter: the same holder then gets the same
    fence number again, and still its old token cannot commit (the token's nonce, claim.lua)."""
    s = sid("fence")
    keys, sk = producer.keys, producer.keys.session(s)
    settings = producer.settings.model_copy(update={"lease_ttl_ms": 10_000})
    claim, advance = Claim(raw_redis, keys, settings), Advance(raw_redis, keys, settings)
    old = await producer.enqueue(s, "before")
    stale = await claim(session_id=s, holder="w1", job_id=await raw_redis.get(sk.drain_job), tail_len=8)
    assert stale is not None and stale.token.startswith("1:w1:")
    # The session goes away as an expiry would take it (lease released, every idle key gone)...
    await raw_redis.delete(sk.lease, sk.inbox, *sk.idle_keys)
    # ... and a new one under the same id is claimed by the same worker: fence 1 again.
    new = await producer.enqueue(s, "after")
    fresh = await claim(session_id=s, holder="w1", job_id=await raw_redis.get(sk.drain_job), tail_len=8)
    assert fresh is not None and fresh.token.startswith("1:w1:") and fresh.token != stale.token
    entries = tuple(encode_message(m) for m in turn_messages(old.turn_id, "before", [AIMessage("late")]))
    with pytest.raises(LeaseLost):
        await advance(
            session_id=s, token=stale.token, finish=Finish(old.turn_id, True, "late", entries), ended=None,
            next=Next.begin,
        )  # fmt: skip
    assert await raw_redis.llen(sk.history) == 0
    assert await raw_redis.lrange(sk.inbox, 0, -1) == [new.turn_id]
