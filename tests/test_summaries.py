"""CHATLANE_HISTORY_STRATEGY=summarize: every model request stays inside the window, the summary is
written under the fence, and the whole history stays readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chatlane.errors import LeaseLost
from chatlane.scripts import SaveSummary
from devkit.check import check
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid
from worker.summary import HEADING, INSTRUCTIONS

BUDGET = 600
REFRESH = 20
TURNS = 500


@pytest.mark.timeout(240)
async def test_500_turns_with_summaries_stay_inside_the_window(fleet: Fleet, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    fleet.start(
        1, history_strategy="summarize", history_max_tokens=BUDGET, summary_refresh_messages=REFRESH,
        fake_delay_ms=0, fake_request_log=log, max_queued_per_session=TURNS,
    )  # fmt: skip
    settings = fleet.settings.model_copy(update={"max_queued_per_session": TURNS})
    s = sid("long")
    async with ChatProducer(settings=settings) as producer:
        turns = [await producer.enqueue(s, f"turn {i}: remember the number {i * 7}") for i in range(TURNS)]
        for t in turns:
            assert (await producer.wait(t.turn_id, 60)).state is TurnState.completed
        report = await check(producer, {s: [t.turn_id for t in turns]})
        assert report.ok and report.completed == TURNS, report.violations
        history = await producer.history(s)  # the full history, every message
        assert len(history) == 2 * TURNS and history[0].text == "turn 0: remember the number 0"
        upto, text = await producer.redis.hmget(producer.keys.session(s).summary, ["upto", "text"])

    requests = [json.loads(line) for line in log.read_text().splitlines()]
    summaries = [r for r in requests if r["first"] == INSTRUCTIONS[:40]]
    answers = [r for r in requests if r not in summaries]
    assert len(answers) == TURNS
    for r in answers:  # the history part: all but the system prompt before and the new message after
        assert r["types"][0] == "system" and r["types"][-1] == "human"
        assert sum(r["tokens"][1:-1]) <= BUDGET, r
    for r in summaries:  # a summarizing request carries no more than the window's budget either
        assert sum(r["tokens"]) <= BUDGET, r
    # Summaries are refreshed once REFRESH messages have left the window uncovered, not on every
    # turn (a refresh folds in as many of them as one request within the budget carries), and are
    # fed as a system message right before the window once there is one.
    assert 2 * TURNS // (2 * REFRESH) < len(summaries) <= TURNS // 5
    assert sum(r["types"][1] == "system" for r in answers) >= TURNS - 40
    assert int(upto) > 2 * TURNS - 2 * BUDGET // 20 and text


async def test_the_summary_is_fenced(producer: ChatProducer, raw_redis: Redis) -> None:
    s = sid()
    sk = producer.keys.session(s)
    await raw_redis.rpush(sk.history, *[json.dumps({"type": "human", "data": {"content": str(i)}}) for i in range(4)])
    await raw_redis.set(sk.lease, "7:holder:abc", px=10_000)
    save = SaveSummary(raw_redis, producer.keys)
    with pytest.raises(LeaseLost):
        await save(session_id=s, token="6:ex-holder:def", upto=2, text="stale")
    assert not await raw_redis.exists(sk.summary)
    assert await save(session_id=s, token="7:holder:abc", upto=2, text="the first two")
    assert not await save(session_id=s, token="7:holder:abc", upto=1, text="older")  # only forward
    assert await raw_redis.hmget(sk.summary, ["upto", "text"]) == ["2", "the first two"]
    assert HEADING.startswith("Summary")
