"""CHATLANE_LOG_FORMAT: worker lines as text or JSON, each line about a turn with its ids."""

from __future__ import annotations

import json

from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid


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
