"""G1-G3, G5, G7 with real worker processes on a real redis-server."""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.asyncio import Redis

from devkit.check import check
from producer import (
    ChatProducer,
    IdempotencyConflict,
    InvalidInput,
    QueueFull,
    TextTooLong,
    TurnNotCancellable,
    TurnNotFound,
    TurnState,
)
from tests.conftest import Fleet, keys_with_prefix, sid


async def test_many_producers_many_sessions_three_workers(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(3, fake_delay_ms=40)
    sessions = [sid("user") for _ in range(24)]
    turns_per_session = 6
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    locks = {s: asyncio.Lock() for s in sessions}

    async def one_producer(seed: int) -> None:
        # Each producer sends to random sessions; a per-session lock records the enqueue order
        # exactly as Redis saw it (the order is what the guarantee is about).
        rng = random.Random(seed)
        for _ in range(len(sessions) * turns_per_session // 8):
            s = rng.choice(sessions)
            async with locks[s]:
                st = await producer.enqueue(s, f"message {len(sent[s])} for {s}")
                sent[s].append(st.turn_id)
            await asyncio.sleep(rng.random() * 0.01)

    await asyncio.gather(*(one_producer(i) for i in range(8)))
    total = sum(len(v) for v in sent.values())
    assert total == len(sessions) * turns_per_session
    for tids in sent.values():
        for t in tids:
            await producer.wait(t, timeout=60)

    report = await check(producer, {s: t for s, t in sent.items() if t})
    assert report.ok, report.violations
    assert report.completed == total
    # Each reply saw exactly the earlier turns of its own session, in order.
    for s, tids in sent.items():
        for i, t in enumerate(tids):
            assert report.statuses[t].reply is not None
            assert report.statuses[t].reply.startswith(f"Reply #{i + 1} to 'message {i} for {s}'")
    # Parallelism is real: different sessions generated at the same time.
    assert report.parallel_pairs > 0
    assert report.max_concurrency >= 3


async def test_duplicate_idempotency_key_returns_same_turn(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    results = await asyncio.gather(*(producer.submit(s, "pay invoice 42", idempotency_key="req-42") for _ in range(10)))
    ids = {r.status.turn_id for r in results}
    assert len(ids) == 1
    assert sum(r.created for r in results) == 1
    tid = ids.pop()
    st = await producer.wait(tid, 20)
    assert st.state is TurnState.completed
    again = await producer.submit(s, "pay invoice 42", idempotency_key="req-42")
    assert again.status.turn_id == tid and not again.created and again.status.state is TurnState.completed
    history = await producer.history(s)
    assert [m.type for m in history] == ["human", "ai"]
    # The same key with another text is a client bug, not a new turn.
    with pytest.raises(IdempotencyConflict):
        await producer.submit(s, "pay invoice 43", idempotency_key="req-42")
    # The same key in another session is another turn.
    other = await producer.submit(sid(), "pay invoice 42", idempotency_key="req-42")
    assert other.created and other.status.turn_id != tid


async def test_turn_status_fields(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    first = await producer.enqueue(s, "slow one !delay=1500")
    second = await producer.enqueue(s, "next")
    assert (first.position, second.position) == (0, 1)
    assert first.state is TurnState.queued and first.created_at is not None
    for _ in range(100):
        st = await producer.status(first.turn_id)
        if st.state is TurnState.running:
            break
        await asyncio.sleep(0.02)
    assert st.state is TurnState.running and st.position is None and st.attempts == 1
    assert (await producer.status(second.turn_id)).position == 1
    done = await producer.wait(second.turn_id, 20)
    first_done = await producer.status(first.turn_id)
    assert done.state is TurnState.completed and first_done.state is TurnState.completed
    assert first_done.started_at and first_done.finished_at and done.started_at and done.finished_at
    assert first_done.started_at < first_done.finished_at <= done.started_at < done.finished_at
    assert done.created_at.tzinfo is not None


async def test_status_unknown_turn(producer: ChatProducer) -> None:
    with pytest.raises(TurnNotFound):
        await producer.status("0" * 32)
    with pytest.raises(InvalidInput):
        await producer.status("not-a-turn-id")


async def test_model_fails_then_succeeds_and_always_fails(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1, max_attempts=3)
    s = sid()
    flaky = await producer.enqueue(s, "flaky !fail=2")
    broken = await producer.enqueue(s, "broken !fail")
    after = await producer.enqueue(s, "after the broken one")
    st_flaky = await producer.wait(flaky.turn_id, 20)
    st_broken = await producer.wait(broken.turn_id, 20)
    st_after = await producer.wait(after.turn_id, 20)
    assert st_flaky.state is TurnState.completed and st_flaky.attempts == 3
    assert st_broken.state is TurnState.failed and st_broken.attempts == 3
    assert st_broken.error and "injected failure" in st_broken.error
    assert st_after.state is TurnState.completed
    history = await producer.history(s)
    texts = [m.text for m in history if m.type == "human"]
    assert texts == ["flaky !fail=2", "after the broken one"]
    # The reply of the last turn saw the flaky turn but not the failed one.
    assert st_after.reply and "1 earlier message" in st_after.reply


async def test_midstream_failure_never_commits_partial_reply(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    t = await producer.enqueue(s, "half then fail !failmid=1")
    st = await producer.wait(t.turn_id, 20)
    assert st.state is TurnState.completed and st.attempts == 2
    ai = [m for m in await producer.history(s) if m.type == "ai"]
    assert len(ai) == 1 and ai[0].text == st.reply and st.reply.endswith(".")


async def test_bad_input_writes_nothing(producer: ChatProducer, raw_redis: Redis, fleet: Fleet) -> None:
    s = sid()
    before = await keys_with_prefix(raw_redis, fleet.prefix)
    cases = [
        (s, ""), (s, "   \n"), (s, "x" * (producer.settings.max_text_chars + 1)),
        ("bad session!", "hi"), ("", "hi"), ("a" * 129, "hi"), ("{tag}", "hi"),
    ]  # fmt: skip
    for session_id, text in cases:
        with pytest.raises(InvalidInput):
            await producer.enqueue(session_id, text)
    with pytest.raises(TextTooLong):
        await producer.enqueue(s, "x" * (producer.settings.max_text_chars + 1))
    with pytest.raises(InvalidInput):
        await producer.enqueue(s, "hi", idempotency_key="has space")
    assert await keys_with_prefix(raw_redis, fleet.prefix) == before
    assert await raw_redis.zcard(fleet.settings.key_prefix + ":queue") == 0


async def test_queue_full_is_atomic_and_writes_nothing(fleet: Fleet, raw_redis: Redis) -> None:
    settings = fleet.settings.model_copy(update={"max_queued_per_session": 5})
    async with ChatProducer(settings=settings) as p:
        s = sid()
        results = await asyncio.gather(*(p.enqueue(s, f"m{i}") for i in range(12)), return_exceptions=True)
        accepted = [r for r in results if not isinstance(r, BaseException)]
        rejected = [r for r in results if isinstance(r, QueueFull)]
        assert len(accepted) == 5 and len(rejected) == 7
        turn_keys = [k async for k in raw_redis.scan_iter(match=f"{fleet.prefix}:turn:*")]
        assert len(turn_keys) == 5
        assert await raw_redis.llen(fleet.settings.key_prefix + ":{" + s + "}:inbox") == 5


async def test_cancel_queued_turn_and_stop_running_turn(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1)
    s = sid()
    running = await producer.enqueue(s, "long !delay=3000")
    doomed = await producer.enqueue(s, "never mind")
    last = await producer.enqueue(s, "last")
    for _ in range(100):
        if (await producer.status(running.turn_id)).state is TurnState.running:
            break
        await asyncio.sleep(0.02)
    st = await producer.cancel(doomed.turn_id, reason="user withdrew it")
    assert st.state is TurnState.cancelled and st.error == st.reason == "user withdrew it" and st.finished_at
    assert (await producer.status(last.turn_id)).position == 1
    with pytest.raises(TurnNotCancellable):
        await producer.cancel(doomed.turn_id)
    with pytest.raises(TurnNotFound):
        await producer.cancel("f" * 32)
    # A running turn: the request is recorded at once; its holder ends it.
    asked = await producer.cancel(running.turn_id)
    assert asked.state in (TurnState.running, TurnState.interrupted) and asked.reason == "interrupted by the client"
    stopped = await producer.wait(running.turn_id, 10)
    assert stopped.state is TurnState.interrupted and stopped.reason == "interrupted by the client"
    with pytest.raises(TurnNotCancellable):
        await producer.cancel(running.turn_id)
    await producer.wait(last.turn_id, 20)
    report = await check(producer, {s: [running.turn_id, doomed.turn_id, last.turn_id]})
    assert report.ok and report.completed == 1 and report.interrupted == 1 and report.cancelled == 1, report.violations
    assert [m.text for m in await producer.history(s) if m.type == "human"] == ["long !delay=3000", "last"]


async def test_no_key_outlives_its_retention(fleet: Fleet, producer: ChatProducer, raw_redis: Redis) -> None:
    """Every key a finished turn leaves has a TTL, except the history and session bookkeeping."""
    fleet.start(1)
    s = sid()
    turns = [await producer.enqueue(s, f"m{i}", idempotency_key=f"k{i}") for i in range(3)]
    for t in turns:
        await producer.wait(t.turn_id, 20)
    no_ttl = {k for k in await keys_with_prefix(raw_redis, fleet.prefix) if await raw_redis.pttl(k) == -1}
    sk = producer.keys.session(s)
    # The session's own keys without a TTL are deleted by delete_session.lua.
    allowed = {sk.history, sk.fence, sk.turns, producer.keys.stats, producer.keys.workers, producer.keys.queue}
    assert no_ttl <= allowed, no_ttl


async def test_a_late_chunk_cannot_create_a_stream_without_ttl(producer: ChatProducer, raw_redis: Redis) -> None:
    """An ex-holder resuming after the turn ended and its stream expired still writes chunks, with
    a TTL; after its record is gone too (expired, or the session deleted) it writes nothing."""
    from worker.publish import ChunkPublisher, StreamWriter

    key = producer.keys.stream("a" * 32)
    writer = StreamWriter(raw_redis, ttl_ms=60_000)
    pub = ChunkPublisher(writer, key, attempt=1)
    pub.text("late token")
    await pub.aclose()
    assert not await raw_redis.exists(key)
    await raw_redis.hset(producer.keys.turn("a" * 32), "state", "completed")  # type: ignore[misc]
    pub = ChunkPublisher(writer, key, attempt=1)
    pub.text("late token")
    await pub.aclose()
    assert await raw_redis.xlen(key) == 1
    assert 0 < await raw_redis.pttl(key) <= 60_000
    await raw_redis.delete(producer.keys.turn("a" * 32), key)
