"""Stopping a running turn, checked where it matters: at the model. A local OpenAI-compatible stub
records when each request arrived and when the client closed its connection; the real
langchain-openai client streams from it. How fast the close follows the request is benchmark B10
(``python -m bench --only B10``); these tests check what must hold however fast it is.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import pytest
from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.messages import is_interrupted
from devkit import faults
from devkit.check import check
from devkit.openai_stub import OpenAIStub, Span
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid
from tests.test_steer import running_with_text

MODEL = {"model": "openai:gpt-4o-mini", "model_timeout_s": 30}


def model_env(stub: OpenAIStub) -> dict[str, str]:
    return {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test-key"}


def serial(spans: list[Span]) -> None:
    """G1 at the model: each request arrived after the previous one's connection had ended."""
    assert all(sp.ended is not None for sp in spans), spans
    for before, after in itertools.pairwise(spans):
        assert before.ended is not None and after.received > before.ended, (before, after)


@pytest.mark.parametrize("how", ["interrupt", "rollback", "cancel", "cancel-discard"])
async def test_stop_closes_the_model_call_before_the_next_turn_calls(
    how: str, fleet: Fleet, producer: ChatProducer
) -> None:
    with OpenAIStub(delay_s=6.0, chunks=120) as stub:
        fleet.start(1, raw_env=model_env(stub), **MODEL)
        s = sid("model")
        story = f"{s}: tell me a long story"
        u1 = await producer.enqueue(s, story)
        seen = await running_with_text(producer, u1.turn_id)
        asked = time.monotonic()
        if how in ("interrupt", "rollback"):
            u2 = await producer.enqueue(s, "stop, a joke instead", on_busy=how)
        else:
            await producer.cancel(u1.turn_id, keep_partial=how == "cancel")
            u2 = await producer.enqueue(s, "stop, a joke instead")
        done = await producer.wait(u2.turn_id, 30)
        first = await producer.status(u1.turn_id)

    assert done.state is TurnState.completed
    spans = stub.spans
    assert len(spans) == 2 and stub.max_total_in_flight == 1
    serial(spans)
    assert spans[0].closed_by_client and spans[0].ended is not None
    print(f"\n{how}: model connection closed {1000 * (spans[0].ended - asked):.1f} ms after the request was sent")
    keep = how in ("interrupt", "cancel")
    assert first.state is (TurnState.interrupted if keep else TurnState.cancelled)
    history = await producer.history(s)
    second_request = [(m["role"], m["content"]) for m in stub.requests[1]["messages"]]
    if keep:
        assert first.reply and seen.reply and first.reply.startswith(seen.reply)
        assert f"stub reply 1 to: {story}".startswith(first.reply)
        assert [m.text for m in history] == [story, first.reply, "stop, a joke instead", done.reply]
        assert is_interrupted(history[1])
        # The next call saw the interrupted exchange as it is in history.
        assert second_request[1:] == [("user", story), ("assistant", first.reply), ("user", "stop, a joke instead")]
    else:
        assert first.reply is None and [m.text for m in history] == ["stop, a joke instead", done.reply]
        assert second_request[1:] == [("user", "stop, a joke instead")]
    report = await check(producer, {s: [u1.turn_id, u2.turn_id]})
    assert report.ok and report.overlapping == 0, report.violations


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_ms", [-1, 0, 3, 20], ids=["never-heard", "0ms", "3ms", "20ms"])
async def test_interrupt_racing_a_sigkill_of_the_holder(
    kill_after_ms: int, fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    """The holder dies while it stops: before hearing the request (-1: it is frozen with SIGSTOP
    first, so the next holder's begin finds the request and takes the partial reply from the
    stream), while stopping, or after its commit. One outcome, and G1 at the model."""
    keys = Keys(fleet.prefix)
    with OpenAIStub(delay_s=6.0, chunks=120) as stub:
        workers = fleet.start(2, raw_env=model_env(stub), **MODEL)
        await faults.wait_registered(raw_redis, keys, [w.pid for w in workers])
        s = sid("crash")
        story = f"{s}: tell me a long story"
        u1 = await producer.enqueue(s, story)
        await running_with_text(producer, u1.turn_id)
        holder = fleet.by_pid(faults.worker_pid(await raw_redis.get(keys.session(s).lease)))
        if kill_after_ms < 0:
            holder.signal(signal.SIGSTOP)
            await asyncio.sleep(0.2)  # chunks it had sent are in the stream; it sends no more
        u2 = await producer.enqueue(s, "stop, a joke instead", on_busy="interrupt")
        await asyncio.sleep(max(0, kill_after_ms) / 1000)
        holder.signal(signal.SIGKILL)
        done = await producer.wait(u2.turn_id, 30)
        first = await producer.status(u1.turn_id)

    assert done.state is TurnState.completed
    assert first.state is TurnState.interrupted and first.reason == f"interrupted by {u2.turn_id}"
    assert first.reply and f"stub reply 1 to: {story}".startswith(first.reply)
    history = await producer.history(s)
    assert [m.text for m in history] == [story, first.reply, "stop, a joke instead", done.reply]
    assert is_interrupted(history[1]) and not is_interrupted(history[3])
    # Every request of the session (the killed holder's, then the next holder's) one after another.
    assert stub.max_total_in_flight == 1
    serial(stub.spans)
    report = await check(producer, {s: [u1.turn_id, u2.turn_id]})
    assert report.ok and report.overlapping == 0, report.violations
