"""Steering a live session (issue 10): on_busy policies, stopping a running turn, coalescing rapid
texts, queued-turn deadlines and the session's live turns, with real workers on a real redis-server
and the fake model (whose reply says how many user messages it saw and quotes the last two)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chatlane.messages import is_interrupted, turn_id_of
from devkit import faults
from devkit.check import check
from producer import ChatProducer, OnBusy, SessionBusy, TurnNotCancellable, TurnState, TurnStatus
from tests.conftest import Fleet, keys_with_prefix, sid, wait_async

SLOW = "!delay=4000"  # a reply streamed over 4 s (8 chunks): long enough to stop mid-way


async def running_with_text(producer: ChatProducer, turn_id: str, timeout: float = 15) -> TurnStatus:
    """Once the turn runs and has streamed some of its reply."""
    st: TurnStatus | None = None

    async def ready() -> bool:
        nonlocal st
        st = await producer.status(turn_id)
        return st.state is TurnState.running and bool(st.reply)

    assert await wait_async(ready, timeout, 0.02), f"turn never streamed: {st}"
    assert st is not None
    return st


@pytest.fixture
async def quick_coalesce(fleet: Fleet) -> AsyncIterator[ChatProducer]:
    """A producer whose coalesce debounce is short (the window is the enqueue script's argument)."""
    settings = fleet.settings.model_copy(update={"coalesce_window_ms": 600, "coalesce_max_wait_ms": 3000})
    async with ChatProducer(settings=settings) as p:
        yield p


async def test_interrupt_keeps_the_partial_reply_and_supersedes_queued_turns(
    fleet: Fleet, producer: ChatProducer
) -> None:
    fleet.start(1)
    s = sid()
    u1 = await producer.enqueue(s, f"tell me a story {SLOW}")
    queued = await producer.enqueue(s, "and then?")
    partial_seen = (await running_with_text(producer, u1.turn_id)).reply
    u2 = await producer.submit(s, "stop, tell me a joke", on_busy=OnBusy.interrupt)
    assert u2.created and u2.status.position == 1  # behind the turn being stopped
    done = await producer.wait(u2.status.turn_id, 20)
    assert done.state is TurnState.completed

    first, skipped = await producer.status(u1.turn_id), await producer.status(queued.turn_id)
    assert first.state is TurnState.interrupted and first.reason == f"interrupted by {u2.status.turn_id}"
    assert skipped.state is TurnState.cancelled and skipped.reason == f"superseded by {u2.status.turn_id}"
    assert first.reply and partial_seen and first.reply.startswith(partial_seen)
    full = "Reply #1 to 'tell me a story !delay=4000': I can see 0 earlier message(s)."
    assert full.startswith(first.reply) and first.reply != full

    history = await producer.history(s)
    assert [(m.type, m.text) for m in history] == [
        ("human", "tell me a story !delay=4000"),
        ("ai", first.reply),
        ("human", "stop, tell me a joke"),
        ("ai", done.reply),
    ]
    assert is_interrupted(history[1]) and not is_interrupted(history[3])
    # The next reply saw the interrupted exchange, and nothing of the superseded turn.
    assert done.reply is not None and done.reply.startswith("Reply #2 to 'stop, tell me a joke'")
    report = await check(producer, {s: [u1.turn_id, queued.turn_id, u2.status.turn_id]})
    assert report.ok and (report.interrupted, report.cancelled, report.completed) == (1, 1, 1), report.violations


async def test_rollback_leaves_nothing_of_the_running_turn(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    u1 = await producer.enqueue(s, f"draft an email {SLOW}")
    await running_with_text(producer, u1.turn_id)
    u2 = await producer.enqueue(s, "no wait, a letter", on_busy="rollback")
    done = await producer.wait(u2.turn_id, 20)
    first = await producer.status(u1.turn_id)
    assert first.state is TurnState.cancelled and first.reason == f"rolled back by {u2.turn_id}"
    history = await producer.history(s)
    assert [(m.type, turn_id_of(m)) for m in history] == [("human", u2.turn_id), ("ai", u2.turn_id)]
    # The model never saw the rolled-back turn.
    assert done.reply == "Reply #1 to 'no wait, a letter': I can see 0 earlier message(s)."
    report = await check(producer, {s: [u1.turn_id, u2.turn_id]})
    assert report.ok and report.cancelled == 1, report.violations


async def test_reject_writes_nothing_while_busy(fleet: Fleet, producer: ChatProducer, raw_redis: Redis) -> None:
    s = sid()
    # Idle session: reject accepts.
    first = await producer.submit(s, "hello", idempotency_key="k1", on_busy="reject")
    assert first.created
    before = {k: await raw_redis.type(k) for k in await keys_with_prefix(raw_redis, fleet.prefix)}
    inbox = await raw_redis.lrange(producer.keys.session(s).inbox, 0, -1)
    with pytest.raises(SessionBusy) as e:
        await producer.submit(s, "anyone there?", idempotency_key="k2", on_busy="reject")
    assert e.value.code == "session_busy" and e.value.http_status == 409
    after = {k: await raw_redis.type(k) for k in await keys_with_prefix(raw_redis, fleet.prefix)}
    assert after == before and await raw_redis.lrange(producer.keys.session(s).inbox, 0, -1) == inbox
    # A repeated idempotency key is not a new turn: it answers with the turn, busy or not.
    again = await producer.submit(s, "hello", idempotency_key="k1", on_busy="reject")
    assert again.status.turn_id == first.status.turn_id and not again.created
    fleet.start(1)
    assert (await producer.wait(first.status.turn_id, 20)).state is TurnState.completed
    assert (await producer.submit(s, "anyone there?", idempotency_key="k2", on_busy="reject")).created


async def test_coalesce_three_texts_make_one_model_call_that_sees_them_all(
    fleet: Fleet, quick_coalesce: ChatProducer
) -> None:
    producer = quick_coalesce
    fleet.start(1)
    s = sid()
    a = await producer.submit(s, "hi", idempotency_key="ka", on_busy="coalesce")
    b = await producer.submit(s, "I need help", idempotency_key="kb", on_busy="coalesce")
    c = await producer.submit(s, "with my order", on_busy="coalesce")
    assert a.created and not a.joined
    assert b.joined and c.joined and not b.created and not c.created
    assert a.status.turn_id == b.status.turn_id == c.status.turn_id
    assert (b.status.coalesced, c.status.coalesced) == (1, 2) and c.status.texts == [
        "hi",
        "I need help",
        "with my order",
    ]
    # Each text keeps its idempotency key: a retry of "I need help" is the same turn, not a fourth text.
    retry = await producer.submit(s, "I need help", idempotency_key="kb", on_busy="coalesce")
    assert retry.status.turn_id == a.status.turn_id and retry.status.coalesced == 2 and not retry.joined

    done = await producer.wait(a.status.turn_id, 20)
    assert done.state is TurnState.completed and done.attempts == 1  # one model call
    assert done.reply == (
        "Reply #3 to 'with my order': I can see 2 earlier message(s). Before this you said 'I need help'."
    )
    history = await producer.history(s)
    assert [(m.type, m.text) for m in history] == [
        ("human", "hi"),
        ("human", "I need help"),
        ("human", "with my order"),
        ("ai", done.reply),
    ]
    # Debounced: it began no earlier than the window after its first text.
    assert done.started_at and (done.started_at - done.created_at).total_seconds() >= 0.6
    report = await check(producer, {s: [a.status.turn_id]})
    assert report.ok and report.completed == 1, report.violations


async def test_coalesce_joins_only_a_turn_that_has_not_begun(fleet: Fleet, quick_coalesce: ChatProducer) -> None:
    producer = quick_coalesce
    fleet.start(1)
    s = sid()
    running = await producer.submit(s, f"long one {SLOW}")
    await running_with_text(producer, running.status.turn_id)
    # The running turn cannot absorb: a new turn is queued, and the next texts join that one.
    x = await producer.submit(s, "also", on_busy="coalesce")
    y = await producer.submit(s, "and this", on_busy="coalesce")
    assert x.created and y.joined and y.status.turn_id == x.status.turn_id != running.status.turn_id
    # At most coalesce_max_texts texts per turn.
    capped = producer.settings.model_copy(update={"coalesce_max_texts": 2})
    async with ChatProducer(settings=capped) as p2:
        z = await p2.submit(s, "one more", on_busy="coalesce")
    assert z.created and z.status.turn_id != x.status.turn_id
    # The deadline of the debounce is never past max_wait after the first text.
    rec = await producer.redis.hgetall(producer.keys.turn(x.status.turn_id))
    assert int(rec["nb"]) <= int(rec["created"]) + 3000
    for t in (running.status.turn_id, x.status.turn_id, z.status.turn_id):
        await producer.wait(t, 30)
    report = await check(producer, {s: [running.status.turn_id, x.status.turn_id, z.status.turn_id]})
    assert report.ok and report.completed == 3, report.violations
    assert [m.text for m in await producer.history(s) if m.type == "human"][1:] == ["also", "and this", "one more"]


@pytest.mark.parametrize("keep_partial", [True, False], ids=["keep-partial", "discard"])
async def test_cancel_a_running_turn(keep_partial: bool, fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    u1 = await producer.enqueue(s, f"a long answer please {SLOW}")
    u2 = await producer.enqueue(s, "next question")
    await running_with_text(producer, u1.turn_id)
    asked = await producer.cancel(u1.turn_id, keep_partial=keep_partial)
    assert asked.reason == ("interrupted by the client" if keep_partial else "cancelled by the client")
    st = await producer.wait(u1.turn_id, 10)
    # Asking again changes nothing: the first request decided.
    with pytest.raises(TurnNotCancellable):
        await producer.cancel(u1.turn_id, keep_partial=not keep_partial)
    nxt = await producer.wait(u2.turn_id, 20)
    history = await producer.history(s)
    if keep_partial:
        assert st.state is TurnState.interrupted and st.reply
        assert [m.text for m in history[:2]] == ["a long answer please !delay=4000", st.reply]
        assert nxt.reply is not None and nxt.reply.startswith("Reply #2 to 'next question'")
    else:
        assert st.state is TurnState.cancelled and st.reply is None
        assert [turn_id_of(m) for m in history] == [u2.turn_id, u2.turn_id]
        assert nxt.reply is not None and nxt.reply.startswith("Reply #1 to 'next question'")
    report = await check(producer, {s: [u1.turn_id, u2.turn_id]})
    assert report.ok and report.overlapping == 0, report.violations


async def test_live_turns_in_order(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    ids = [(await producer.enqueue(s, f"t{i} {SLOW if i == 0 else ''}")).turn_id for i in range(3)]
    await running_with_text(producer, ids[0])
    live = await producer.turns(s)
    assert [t.turn_id for t in live] == ids
    assert [t.state for t in live] == [TurnState.running, TurnState.queued, TurnState.queued]
    assert [t.position for t in live] == [None, 1, 2]
    assert [t.turn_id for t in await producer.turns(s, states=["queued"])] == ids[1:]
    assert [t.turn_id for t in await producer.turns(s, states=("running",))] == ids[:1]
    with pytest.raises(ValueError):
        await producer.turns(s, states=["completed"])
    await producer.cancel(ids[0])
    await producer.wait(ids[2], 20)
    assert await producer.turns(s) == []


async def test_a_queued_turn_expires_without_any_worker(producer: ChatProducer) -> None:
    s = sid()
    t = await producer.enqueue(s, "anyone?", expires_after_s=0.3)
    assert t.state is TurnState.queued
    st = await producer.wait(t.turn_id, 5)  # no worker runs: the reader ends it
    assert st.state is TurnState.expired and st.reason == "not started within 0.3 s (expires_after_s)"
    assert [ev.type.value async for ev in producer.events(t.turn_id)] == ["end"]
    assert await producer.turns(s) == [] and await producer.history(s) == []
    # The default deadline comes from CHATLANE_QUEUED_TURN_TTL_S.
    with_default = producer.settings.model_copy(update={"queued_turn_ttl_s": 0.2})
    async with ChatProducer(settings=with_default) as p2:
        t2 = await p2.enqueue(sid(), "hello?")
        assert (await p2.wait(t2.turn_id, 5)).state is TurnState.expired
    with pytest.raises(ValueError):
        await producer.enqueue(s, "x", expires_after_s=0)


async def test_the_sweep_expires_a_turn_stuck_behind_a_long_one(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1)
    s = sid()
    long = await producer.enqueue(s, "!delay=4000 long")
    stuck = await producer.enqueue(s, "behind it", expires_after_s=0.5)
    tk = producer.keys.turn(stuck.turn_id)

    async def expired() -> bool:  # read raw: a producer's status() would expire it itself
        return await raw_redis.hget(tk, "state") == "expired"

    assert await wait_async(expired, 4), "the sweep did not expire the turn"
    assert await raw_redis.zscore(producer.keys.deadlines, stuck.turn_id) is None
    assert (await producer.wait(long.turn_id, 20)).state is TurnState.completed
    report = await check(producer, {s: [long.turn_id, stuck.turn_id]})
    assert report.ok and report.expired == 1, report.violations


async def test_a_stopped_turns_stream_ends_at_once_with_its_final_status(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    t = await producer.enqueue(s, f"stream me {SLOW}")
    await running_with_text(producer, t.turn_id)
    events: list[str] = []

    async def follow() -> None:
        async for ev in producer.events(t.turn_id):
            events.append(ev.type.value)

    reader = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await producer.cancel(t.turn_id)
    await asyncio.wait_for(reader, 10)
    # It ended because of the stop (a reply that ran to its end would be completed), with "end".
    assert events[-1] == "end" and "chunk" in events
    assert (await producer.status(t.turn_id)).state is TurnState.interrupted


async def test_a_missed_stop_message_is_caught_by_the_lease_renewal(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1)
    s = sid()
    t = await producer.enqueue(s, f"go on and on {SLOW}")
    await running_with_text(producer, t.turn_id)
    # The request as cancel.lua records it, but with its pub/sub message lost: nobody is told.
    await raw_redis.hset(producer.keys.turn(t.turn_id), mapping={"stop": "interrupt", "reason": "interrupted by ops"})
    st = await producer.wait(t.turn_id, 10)
    assert st.state is TurnState.interrupted and st.reason == "interrupted by ops"
    # Cut short by the holder's renewal (every 500 ms here), not found only at its commit after 4 s.
    full = "Reply #1 to 'go on and on !delay=4000': I can see 0 earlier message(s)."
    assert st.reply and full.startswith(st.reply) and st.reply != full


async def test_the_stop_subscription_comes_back_after_its_connection_is_killed(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    (w,) = fleet.start(1)
    await faults.wait_registered(raw_redis, producer.keys, [w.pid])
    (worker_id,) = await raw_redis.zrange(producer.keys.workers, 0, -1)
    channel = producer.keys.stop_channel(worker_id)

    async def subscribed() -> bool:
        return dict(await raw_redis.pubsub_numsub(channel)).get(channel, 0) == 1

    assert await wait_async(subscribed, 10)
    before = {c["id"] for c in await raw_redis.client_list(_type="pubsub")}
    await raw_redis.client_kill_filter(_type="pubsub")

    async def subscribed_anew() -> bool:
        now = {c["id"] for c in await raw_redis.client_list(_type="pubsub")}
        return bool(now - before) and await subscribed()

    assert await wait_async(subscribed_anew, 10), "the worker did not subscribe again"
    s = sid()
    t = await producer.enqueue(s, f"still listening? {SLOW}")
    await running_with_text(producer, t.turn_id)
    await producer.cancel(t.turn_id, keep_partial=False)
    assert (await producer.wait(t.turn_id, 10)).state is TurnState.cancelled


async def test_stopping_an_agent_mid_tool_call_leaves_no_dangling_call(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    """An agent turn stopped while its tool runs: the history gets its user message and the text
    streamed so far (none yet), never a tool call without its result; the next turn runs normally."""
    (w,) = fleet.start(1, handler="tests.handlers:slow_agent")
    await faults.wait_registered(raw_redis, producer.keys, [w.pid])
    s = sid("agent-stop")
    slow = await producer.enqueue(s, 'take your time !tool=wait:{"ms": 4000}')

    async def tool_is_running() -> bool:
        events = await producer._read_events(slow.turn_id, "-", block_ms=None)
        return any(ev.tool is not None for ev in events)

    assert await wait_async(tool_is_running, 15, 0.02)
    await producer.cancel(slow.turn_id)
    stopped = await producer.wait(slow.turn_id, 10)
    assert stopped.state is TurnState.interrupted and stopped.reply == ""
    after = await producer.enqueue(s, 'then add !tool=add:{"a": 1, "b": 2}')
    assert (await producer.wait(after.turn_id, 20)).state is TurnState.completed
    history = await producer.history(s)
    assert [m.type for m in history] == ["human", "ai", "human", "ai", "tool", "ai"]
    assert is_interrupted(history[1]) and not getattr(history[1], "tool_calls", None)
    report = await check(producer, {s: [slow.turn_id, after.turn_id]})
    assert report.ok and report.malformed_tool_groups == 0, report.violations
