"""CHATLANE_LOG_FORMAT: worker lines as text or JSON, each line about a turn with its ids; a
quiet sweep says nothing; a Redis outage is a few lines, however long, and no traceback."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from devkit.redis_server import RedisServer
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, new_prefix, sid, wait_async


async def test_turn_lines_carry_their_ids_as_json_and_text(fleet: Fleet, producer: ChatProducer) -> None:
    (worker,) = fleet.start(1, log_format="json")
    s = sid("log")
    turn = await producer.enqueue(s, "!fail=1 hello")  # attempt 1 fails, attempt 2 completes
    assert (await producer.wait(turn.turn_id, 20)).state is TurnState.completed
    worker.stop()
    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    (retry,) = [line for line in lines if "retrying" in line["msg"]]
    assert (retry["session_id"], retry["turn_id"], retry["attempt"]) == (s, turn.turn_id, 1)
    assert retry["level"] == "INFO" and retry["logger"] == "chatlane.drain"

    (text_worker,) = fleet.start(1)  # text, the default
    s2 = sid("log")
    turn2 = await producer.enqueue(s2, "!fail=1 hello")
    assert (await producer.wait(turn2.turn_id, 20)).state is TurnState.completed
    text_worker.stop()
    (line,) = [line for line in text_worker.log().splitlines() if "retrying" in line]
    assert line.endswith(f" session_id={s2} turn_id={turn2.turn_id} attempt=1"), line


async def test_every_line_logged_during_a_turn_carries_its_ids(fleet: Fleet, producer: ChatProducer) -> None:
    (worker,) = fleet.start(1, log_format="json", handler="tests.ops.log_handler:chatty")
    s = sid("ctx")
    turn = await producer.enqueue(s, "please fail once")
    assert (await producer.wait(turn.turn_id, 20)).state is TurnState.completed
    worker.stop()
    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    said = [line for line in lines if line["logger"] == "chatlane.test_handler"]
    # The handler passes no extra: the ids come from the turn the drain is serving, attempt by attempt.
    assert [(x["session_id"], x["turn_id"], x["attempt"]) for x in said] == [(s, turn.turn_id, 1), (s, turn.turn_id, 2)]
    # Outside a turn (start-up, shutdown) lines carry none of them.
    up = next(line for line in lines if " up (" in line["msg"])
    assert not {"session_id", "turn_id", "attempt"} & set(up)


async def test_a_quiet_fleets_sweep_writes_no_lines(fleet: Fleet) -> None:
    """Both workers sweep every second (one takes each interval's turn): with nothing to do, not
    one line in 4 intervals. A session whose drain job was lost gives the one line about it."""
    workers = fleet.start(2)
    await wait_async(lambda: all(" up (" in w.log() for w in workers), 20)
    marks = [len(w.log()) for w in workers]
    await asyncio.sleep(4.5)
    assert [w.log()[m:] for w, m in zip(workers, marks, strict=True)] == ["", ""]

    async with ChatProducer(settings=fleet.settings) as producer:
        for w in workers:
            w.signal(signal.SIGSTOP)
        s = sid("quiet")
        turn = await producer.enqueue(s, "hello")
        # Its drain job is lost (as if a worker died holding it): the sweep must queue another.
        await producer.redis.delete(producer.keys.queue, producer.keys.session(s).drain_job)
        for w in workers:
            w.signal(signal.SIGCONT)
        assert (await producer.wait(turn.turn_id, 10)).state is TurnState.completed
    said = "".join(w.log()[m:] for w, m in zip(workers, marks, strict=True))
    assert said.count("sweep: queued 1 drain job(s)") == 1, said


async def test_a_redis_outage_is_a_few_lines_and_no_traceback(tmp_path: Path) -> None:
    """Turns stream while Redis is down for 3 s (SIGKILL, then a restart from its AOF): what the
    workers log does not grow with the outage (nothing between its first second and its end), and
    holds no traceback. Replies take 5 s and leases outlive the outage (TTL 6 s), so all through
    it the drains' renewals and token streams keep failing, and the sweep, the webhook sender and
    arq's poll loop keep trying."""
    server = RedisServer(appendfsync="always").start()
    fleet = Fleet(server.url, new_prefix(), tmp_path)
    try:
        workers = fleet.start(2, lease_ttl_ms=6000, model_timeout_s=15)
        await wait_async(lambda: all(" up (" in w.log() for w in workers), 20)
        async with ChatProducer(settings=fleet.settings) as producer:
            turns = [await producer.enqueue(f"outage-{i}", f"!delay=5000 turn {j}") for i in range(8) for j in range(2)]
            await asyncio.sleep(1.0)  # the first turn of each session streams
            server.kill()
            await asyncio.sleep(1.0)
            marks = [len(w.log()) for w in workers]
            await asyncio.sleep(2.0)
            during = [w.log()[m:] for w, m in zip(workers, marks, strict=True)]
            server.start()
            for t in turns:
                assert (await producer.wait(t.turn_id, 30)).state is TurnState.completed
        logs = [w.log() for w in workers]
    finally:
        fleet.stop()
        server.close()
    assert during == ["", ""], during
    for log in logs:
        assert "Traceback" not in log
        # chatlane's per-job paths (drains, renewals, streams, sweep, webhooks) share one line per
        # outage and one for the recovery.
        assert log.count("chatlane.redis: Redis unavailable") <= 1
        assert log.count("chatlane.redis: Redis is back") == log.count("chatlane.redis: Redis unavailable")
    assert sum(log.count("chatlane.redis: Redis unavailable") for log in logs) >= 1
