"""Bring your own handler: what a handler gets (metadata, config), once-per-process factories, and
handlers that cannot work stopping the worker at start-up with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devkit.faults import wait_registered
from devkit.processes import worker_env
from devkit.redis_server import RedisServer
from producer import ChatProducer, InvalidInput, TurnState
from producer.client import HistoryPage
from tests.conftest import Fleet, keys_with_prefix, new_prefix, sid
from tests.handlers import FACTORY_LOG

ROOT = Path(__file__).resolve().parent.parent


async def test_handler_gets_window_user_message_metadata_and_config(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1, handler="tests.handlers:echo")
    s = sid()
    first = await producer.enqueue(s, "hello", metadata={"user": "ann", "plan": {"tier": 2}, "tags": ["a", "é"]})
    assert first.metadata == {"user": "ann", "plan": {"tier": 2}, "tags": ["a", "é"]}
    second = await producer.enqueue(s, "again", metadata={"turn_id": "not mine", "n": 1.5})
    done = await producer.wait(first.turn_id, 20)
    assert done.state is TurnState.completed and done.metadata == first.metadata
    seen = json.loads(done.reply or "")
    assert seen["metadata"] == first.metadata
    assert seen["config_metadata"] == {
        **first.metadata, "session_id": s, "tenant": "default", "turn_id": first.turn_id, "attempt": 1
    }  # fmt: skip
    assert (seen["thread_id"], seen["session_id"], seen["turn_id"], seen["attempt"]) == (s, s, first.turn_id, 1)
    assert (seen["window"], seen["user"]) == ([], "hello")
    later = json.loads((await producer.wait(second.turn_id, 20)).reply or "")
    assert later["window"] == ["human", "ai"] and later["user"] == "again"
    # chatlane's own keys win over a metadata key of the same name, in the config (not in the turn's).
    assert later["config_metadata"]["turn_id"] == second.turn_id and later["metadata"]["turn_id"] == "not mine"
    # The streamed text is the handler's chunks; the stored reply is the message it yielded.
    chunks = [ev.data async for ev in producer.events(first.turn_id) if ev.type.value == "chunk"]
    assert "".join(chunks) == "echo of "


async def test_a_factory_is_called_once_per_worker_process(
    fleet: Fleet, producer: ChatProducer, tmp_path: Path
) -> None:
    log = tmp_path / "factory.log"
    workers = fleet.start(2, handler="tests.handlers:counted_echo", raw_env={FACTORY_LOG: str(log)})
    await wait_registered(producer.redis, producer.keys, [w.pid for w in workers])
    turns = [await producer.enqueue(sid(), f"turn {i}") for i in range(12)]
    for t in turns:
        assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed
    assert sorted(int(pid) for pid in log.read_text().split()) == sorted(w.pid for w in workers)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tests.no_such_module:agent", "cannot import tests.no_such_module (ModuleNotFoundError"),
        ("tests.handlers:no_such_name", "tests.handlers has no attribute 'no_such_name'"),
        ("tests.handlers", "expected the form package.module:attr"),
        ("tests.handlers:not_a_handler", "got int 42"),
        ("tests.handlers:takes_arguments", "got a callable that takes arguments"),
        ("tests.handlers:returns_instead_of_yielding", "an async function that returns"),
        ("tests.handlers:broken_factory", "the factory raised RuntimeError: no credentials for the model"),
        ("tests.handlers:graph_without_messages", "the graph's state has no `messages` key"),
    ],
)
def test_an_unusable_handler_stops_the_worker_with_one_line(redis_server: RedisServer, spec: str, says: str) -> None:
    env = worker_env(redis_server.url, new_prefix(), {"CHATLANE_HANDLER": spec})
    proc = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"chatlane worker: CHATLANE_HANDLER={spec}") and says in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("metadata", "error", "code"),
    [
        ({"blob": "x" * 4090}, "metadata takes 4101 bytes as JSON; the limit is 4096", "metadata_too_large"),
        ({"é": "é" * 2045}, "the limit is 4096", "metadata_too_large"),
        (["not", "an", "object"], "metadata must be a JSON object (got list)", "invalid_input"),
        ("text", "metadata must be a JSON object (got str)", "invalid_input"),
        ({"n": float("nan")}, "metadata must be JSON", "invalid_input"),
        ({"k": (1, 2)}, "metadata must be plain JSON", "invalid_input"),
        ({"nested": {1: "int key"}}, "metadata must be plain JSON", "invalid_input"),
    ],
)
async def test_bad_metadata_is_rejected_and_nothing_written(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis, metadata: object, error: str, code: str
) -> None:
    with pytest.raises(InvalidInput) as e:
        await producer.enqueue(sid(), "hello", metadata=metadata)  # type: ignore[arg-type]
    assert error in str(e.value) and e.value.code == code
    assert await keys_with_prefix(raw_redis, fleet.prefix) == set()


async def test_metadata_of_exactly_the_limit_is_accepted(producer: ChatProducer) -> None:
    st = await producer.enqueue(sid(), "hello", metadata={"blob": "x" * 4085})
    assert st.metadata is not None and len(json.dumps(st.metadata, separators=(",", ":"))) == 4096
    assert (await producer.status(st.turn_id)).metadata == st.metadata


async def test_history_page_reports_an_unreadable_entry_in_its_place(producer: ChatProducer, raw_redis: Redis) -> None:
    s = sid()
    await raw_redis.rpush(
        producer.keys.session(s).history, '{"type":"human","data":{"content":"hi","id":"x:user"}}', "{"
    )
    page: HistoryPage = await producer.history_page(s, limit=10)
    assert page.messages[0].content == "hi"  # type: ignore[union-attr]
    assert "history entry 1 cannot be decoded" in str(page.messages[1])
