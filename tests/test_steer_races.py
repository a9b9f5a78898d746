"""Steering under concurrency: many sessions, mixed on_busy policies and stops, several workers;
and a cancel racing the commit. After all of it, every session's history must be a conversation
that happened: each reply is exactly what the model answers to the history before it (the fake
model's reply is a function of the messages it saw), an interrupted one a prefix of it; and no
two generations of a session ever overlapped (the checker reads every attempt's start and end).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections import Counter

from langchain_core.messages import BaseMessage
from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.messages import is_interrupted
from devkit import faults
from devkit.check import check
from devkit.openai_stub import OpenAIStub, Span
from producer import ChatProducer, OnBusy, SessionBusy, TurnNotCancellable, TurnState
from tests.conftest import Fleet, sid, wait_async
from worker.fake_model import FakeChatModel

POLICIES = [OnBusy.enqueue, OnBusy.enqueue, OnBusy.interrupt, OnBusy.rollback, OnBusy.coalesce, OnBusy.reject]


def replies_follow_their_history(history: list[BaseMessage]) -> list[str]:
    """Problems: replies that are not what the model says to the messages before them."""
    model = FakeChatModel()
    problems = []
    for i, m in enumerate(history):
        if m.type != "ai":
            continue
        expected = model.reply_for(history[:i])
        ok = expected.startswith(m.text) if is_interrupted(m) else m.text == expected
        if not ok:
            problems.append(f"entry {i}: {m.text!r} is not what the model says after {i} messages: {expected!r}")
    return problems


async def mixed_load(
    producer: ChatProducer, sessions: list[str], producers: int, texts_each: int, delays: tuple[int, ...]
) -> tuple[dict[str, list[str]], Counter[str]]:
    """Producers sending to random sessions with random policies, and now and then a cancel of a
    random turn; the turns each session was sent, in the order Redis accepted them."""
    sent: dict[str, list[str]] = {s: [] for s in sessions}
    locks = {s: asyncio.Lock() for s in sessions}
    outcomes: Counter[str] = Counter()

    async def one_producer(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(texts_each):
            s = rng.choice(sessions)
            policy = rng.choice(POLICIES)
            text = f"{s} m{seed}.{n} !delay={rng.choice(delays)}"
            async with locks[s]:  # the order recorded is the order Redis accepted
                try:
                    enq = await producer.submit(s, text, on_busy=policy)
                except SessionBusy:
                    outcomes["rejected"] += 1
                    continue
                if enq.created:
                    sent[s].append(enq.status.turn_id)
                outcomes["joined" if enq.joined else policy.value] += 1
            if rng.random() < 0.15 and sent[s]:
                try:
                    await producer.cancel(rng.choice(sent[s]), keep_partial=rng.random() < 0.5)
                    outcomes["cancel asked"] += 1
                except TurnNotCancellable:
                    outcomes["cancel too late"] += 1
            await asyncio.sleep(rng.random() * 0.05)

    await asyncio.gather(*(one_producer(i) for i in range(producers)))
    for tids in sent.values():
        for t in tids:
            await producer.wait(t, 60)
    return sent, outcomes


async def test_mixed_policies_many_sessions_three_workers(fleet: Fleet, raw_redis: Redis) -> None:
    workers = fleet.start(3)
    await faults.wait_registered(raw_redis, Keys(fleet.prefix), [w.pid for w in workers])
    settings = fleet.settings.model_copy(update={"coalesce_window_ms": 150, "coalesce_max_wait_ms": 600})
    sessions = [sid("mix") for _ in range(16)]
    async with ChatProducer(settings=settings) as producer:
        sent, outcomes = await mixed_load(producer, sessions, 8, 16, (30, 80, 200))
        report = await check(producer, {s: t for s, t in sent.items() if t})
        print(f"\n{dict(outcomes)}; " + ", ".join(f"{k} {v}" for k, v in report.rows()))
        assert report.ok and report.overlapping == 0 and report.unfinished == 0, report.violations
        assert report.interrupted and report.cancelled and report.completed
        for s in sessions:
            assert replies_follow_their_history(await producer.history(s)) == [], s
        assert outcomes["joined"] and outcomes["rejected"]


async def test_mixed_policies_at_the_model(fleet: Fleet, raw_redis: Redis) -> None:
    """The same load through the real OpenAI client and the stub: no session ever has two
    requests open at the model (every text names its session, so each request does too)."""
    with OpenAIStub(delay_s=0.15, chunks=10) as stub:
        env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"}
        workers = fleet.start(2, raw_env=env, model="openai:gpt-4o-mini", model_timeout_s=30)
        await faults.wait_registered(raw_redis, Keys(fleet.prefix), [w.pid for w in workers])
        settings = fleet.settings.model_copy(update={"coalesce_window_ms": 150, "coalesce_max_wait_ms": 600})
        sessions = [sid("stub") for _ in range(8)]
        async with ChatProducer(settings=settings) as producer:
            sent, outcomes = await mixed_load(producer, sessions, 6, 12, (0,))
            report = await check(producer, {s: t for s, t in sent.items() if t})
            histories = {s: await producer.history(s) for s in sessions}
    print(f"\n{dict(outcomes)}; " + ", ".join(f"{k} {v}" for k, v in report.rows()))
    assert report.ok and report.overlapping == 0, report.violations
    assert report.interrupted and report.completed
    by_session: dict[str, list[Span]] = {}
    for span in stub.spans:
        by_session.setdefault(span.conversation.split(" ", 1)[0], []).append(span)
    assert set(by_session) <= set(sessions) and by_session
    for s, spans in by_session.items():
        spans.sort(key=lambda sp: sp.received)
        for before, after in itertools.pairwise(spans):
            assert before.ended is not None and after.received > before.ended, (s, before, after)
    for s, history in histories.items():  # each reply answers the user message just before it
        for i, m in enumerate(history):
            if m.type == "ai":
                # The stub answers "stub reply <request number> to: <last user message>".
                said = re.sub(r"^(stub reply )\d+", r"\1N", m.text)
                full = f"stub reply N to: {history[i - 1].text}"
                ok = full.startswith(said) if is_interrupted(m) else said == full
                assert ok, (s, [(x.type, x.text, x.response_metadata) for x in history[max(0, i - 2) : i + 1]])


async def test_cancel_racing_the_commit_has_exactly_one_outcome(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    """Cancels aimed at the moment a turn's reply ends: each either stops the turn (it ends
    interrupted or cancelled, as asked) or finds it completed (409); never both."""
    workers = fleet.start(2)
    await faults.wait_registered(raw_redis, Keys(fleet.prefix), [w.pid for w in workers])
    sessions = [sid("race") for _ in range(8)]
    rng = random.Random(11)
    results: dict[str, tuple[bool, bool]] = {}  # turn -> (keep_partial, the cancel was accepted)
    sent: dict[str, list[str]] = {s: [] for s in sessions}

    async def race(turn_id: str) -> None:
        async def running() -> bool:
            return (await producer.status(turn_id)).state is not TurnState.queued

        await wait_async(running, 30, 0.005)
        await asyncio.sleep(rng.uniform(0.02, 0.08))  # the reply takes ~50 ms
        keep = rng.random() < 0.5
        try:
            await producer.cancel(turn_id, keep_partial=keep)
            results[turn_id] = (keep, True)
        except TurnNotCancellable:
            results[turn_id] = (keep, False)

    tasks = []
    for s in sessions:
        for i in range(6):
            t = await producer.enqueue(s, f"{s} turn {i} !delay=50")
            sent[s].append(t.turn_id)
            tasks.append(asyncio.create_task(race(t.turn_id)))
    await asyncio.gather(*tasks)
    counts: Counter[str] = Counter()
    for tids in sent.values():
        for t in tids:
            st = await producer.wait(t, 30)
            keep, accepted = results[t]
            if accepted:
                assert st.state is (TurnState.interrupted if keep else TurnState.cancelled), st
            else:
                assert st.state is TurnState.completed, st
            counts[st.state.value] += 1
    report = await check(producer, sent)
    print(f"\noutcomes: {dict(counts)}")
    assert report.ok and report.overlapping == 0, report.violations
    for s in sessions:
        assert replies_follow_their_history(await producer.history(s)) == [], s
    # Both sides of the race happened.
    assert counts["completed"] and counts["interrupted"] + counts["cancelled"]
