"""Deleting a session (racing a running drain) leaves nothing behind; an export round-trips, and
re-imports into an empty session, which then goes on from it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.errors import SessionNotEmpty
from chatlane.export import SessionExport
from chatlane.messages import decode_messages
from devkit.agent_example import HANDLER as AGENT
from devkit.api_server import ServedApp
from producer import ChatProducer, TurnNotFound, TurnState
from producer.api import create_app
from tests.conftest import Fleet, keys_with_prefix, sid, wait_async
from tests.ops.test_cli import cli, cli_json


async def session_keys(raw: Redis, prefix: str, session_id: str, turn_ids: list[str]) -> set[str]:
    return {k for k in await keys_with_prefix(raw, prefix) if f"{{{session_id}}}" in k or any(t in k for t in turn_ids)}


async def test_delete_racing_a_running_drain_leaves_nothing(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    # Renewals every 2 s: the running turn (1 s) reaches its commit before any renewal could tell
    # its holder the lease is gone, so the commit itself meets the fence.
    fleet.start(1, lease_ttl_ms=6000)
    s = sid("del")
    first = await producer.enqueue(s, "hello", idempotency_key="k1")
    assert (await producer.wait(first.turn_id, 20)).state is TurnState.completed
    running = await producer.enqueue(s, "!delay=1000 second", idempotency_key="k2")
    queued = await producer.enqueue(s, "third", idempotency_key="k3")
    ids = [first.turn_id, running.turn_id, queued.turn_id]
    stream = producer.keys.stream(running.turn_id)

    async def generating() -> bool:
        return (await producer.status(running.turn_id)).state is TurnState.running and bool(
            await raw_redis.exists(stream)
        )

    assert await wait_async(generating, 20)
    assert await session_keys(raw_redis, fleet.prefix, s, ids)  # there is something to delete
    rejected = int(await raw_redis.hget(producer.keys.stats, "stale_commits_rejected") or 0)  # type: ignore[misc]

    deleted = await producer.delete_session(s)

    assert (deleted.turns, deleted.cancelled, deleted.messages) == (3, 2, 2)
    assert await session_keys(raw_redis, fleet.prefix, s, ids) == set()

    async def commit_refused() -> bool:
        now = int(await raw_redis.hget(producer.keys.stats, "stale_commits_rejected") or 0)  # type: ignore[misc]
        return now > rejected

    assert await wait_async(commit_refused, 10), fleet.logs()
    assert "lease lost" in fleet.logs()
    # Past the holder's end and its last chunks: still nothing came back.
    assert await session_keys(raw_redis, fleet.prefix, s, ids) == set()
    assert not await raw_redis.sismember(producer.keys.pending, s)
    for t in ids:
        with pytest.raises(TurnNotFound):
            await producer.status(t)
    # The session's idempotency keys went too: the same key is a new turn in a new session.
    again = await producer.submit(s, "hello", idempotency_key="k1")
    assert again.created and again.status.turn_id != first.turn_id
    assert (await producer.wait(again.status.turn_id, 20)).state is TurnState.completed
    assert len(await producer.history(s)) == 2


async def test_export_round_trips_and_delete_over_http_and_cli(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1, max_attempts=1)
    s = sid("exp")
    turns = [await producer.enqueue(s, text) for text in ("one", "two", "!fail three")]
    states = [(await producer.wait(t.turn_id, 20)).state for t in turns]
    assert states == [TurnState.completed, TurnState.completed, TurnState.failed]

    exp = await producer.export_session(s)
    assert [t.turn_id for t in exp.turns] == [t.turn_id for t in turns]  # in enqueue order
    assert len(exp.history) == 4
    # Round trip: the JSON reads back into the same export, and its history into the same messages.
    back = SessionExport.model_validate_json(exp.model_dump_json())
    assert back == exp
    assert decode_messages(json.dumps(m) for m in back.history) == await producer.history(s)

    with ServedApp(create_app(fleet.settings.model_copy(update={"auth": "none"}))) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            r = await http.get(f"/v1/sessions/{s}/export")
            assert r.status_code == 200 and SessionExport.model_validate(r.json()).turns == exp.turns
            assert r.json()["history"] == exp.history
            # CLI: the same export, then the delete.
            code, out, err = await cli(fleet, "export-session", s)
            assert code == 0, err
            assert SessionExport.model_validate_json(out).history == exp.history
            r = await http.delete(f"/v1/sessions/{s}")
            assert r.status_code == 200
            assert r.json() == {"session_id": s, "turns": 3, "cancelled": 0, "messages": 4}
            assert (await http.delete(f"/v1/sessions/{s}")).json()["turns"] == 0
            assert (await http.delete("/v1/sessions/bad%20id")).status_code == 422
            empty = (await http.get(f"/v1/sessions/{s}/export")).json()
            assert empty["history"] == [] and empty["turns"] == []

    s2 = sid("exp")
    t = await producer.enqueue(s2, "four")
    await producer.wait(t.turn_id, 20)
    assert await cli_json(fleet, "delete-session", s2) == {"session_id": s2, "turns": 1, "cancelled": 0, "messages": 2}
    code, out, _ = await cli(fleet, "delete-session", s2)
    assert code == 0 and out.startswith(f"deleted session {s2}: 0 turn(s)")


async def test_a_delivery_result_after_the_delete_writes_nothing(producer: ChatProducer, raw_redis: Redis) -> None:
    from chatlane.scripts.webhooks import WebhookResult

    turn_id = "b" * 32
    await raw_redis.zadd(producer.keys.webhooks_due, {turn_id: 1})
    result = WebhookResult(raw_redis, producer.keys)
    assert await result(turn_id=turn_id, entry="{}", ok=False, retry_ms=1000, span_ms=60_000) == "gone"
    assert not await raw_redis.exists(producer.keys.turn(turn_id), producer.keys.webhook_log(turn_id))
    assert await raw_redis.zscore(producer.keys.webhooks_due, turn_id) is None


async def test_export_delete_import_round_trips_and_the_session_goes_on(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis
) -> None:
    fleet.start(1, handler=AGENT)
    s = sid("imp")
    for text in ("one", 'two !tool=add:{"a": 2, "b": 3}', "three"):
        t = await producer.enqueue(s, text)
        assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed
    # A summary and a trimmed front, as retention and the summarize strategy leave them.
    sk = producer.keys.session(s)
    await raw_redis.set(sk.trimmed, 40)
    await raw_redis.hset(sk.summary, mapping={"upto": 30, "text": "they met", "at": 1})
    first = await producer.export_session(s)
    assert first.history_start == 40 and first.summary is not None and first.summary.upto == 30
    assert len(first.history) == 2 + 4 + 2

    # Into a session with history: refused, nothing written.
    with pytest.raises(SessionNotEmpty):
        await producer.import_session(first)
    await producer.delete_session(s)
    done = await producer.import_session(first)
    assert (done.messages, done.trimmed) == (8, 0)
    again = await producer.export_session(s)
    assert again.history == first.history and again.history_start == 40 and again.summary == first.summary
    assert again.turns == []  # turn records are not imported (chatlane/export.py says why)
    page = await producer.history_page(s, limit=2)
    assert (page.first, page.start, page.total) == (40, 46, 48)  # indexes as they were

    # The imported session goes on: the next turn answers from the imported history.
    t = await producer.enqueue(s, "four")
    reply = (await producer.wait(t.turn_id, 20)).reply or ""
    assert "I can see 3 earlier message(s)" in reply and "'three'" in reply
    assert len(await producer.history(s)) == 10
    # Now it has turns and history: a second import is refused.
    with pytest.raises(SessionNotEmpty):
        await producer.import_session(first)

    # Over HTTP: into a new id; 409 when not empty, 422 for an entry that is not a message.
    s2 = sid("imp")
    with ServedApp(create_app(fleet.settings.model_copy(update={"auth": "none"}))) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            body = first.model_dump(mode="json")
            r = await http.post(f"/v1/sessions/{s2}/import", json=body)
            assert r.status_code == 200, r.text
            assert r.json() == {"session_id": s2, "messages": 8, "trimmed": 0}
            assert (await http.get(f"/v1/sessions/{s2}/export")).json()["history"] == body["history"]
            r = await http.post(f"/v1/sessions/{s2}/import", json=body)
            assert r.status_code == 409 and r.json()["code"] == "session_not_empty"
            bad = {**body, "history": [*body["history"], {"type": "nonsense", "data": {}}]}
            s3 = sid("imp")
            r = await http.post(f"/v1/sessions/{s3}/import", json=bad)
            assert r.status_code == 422 and "history[8]" in r.json()["message"]
            assert (await http.get(f"/v1/sessions/{s3}/export")).json()["history"] == []


async def test_an_import_respects_the_history_bound(fleet: Fleet, raw_redis: Redis) -> None:
    fleet.start(1, handler=AGENT)
    s = sid("imp")
    async with ChatProducer(settings=fleet.settings) as producer:
        for text in ("one", 'two !tool=add:{"a": 2, "b": 3}', "three"):
            t = await producer.enqueue(s, text)
            assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed
        exp = await producer.export_session(s)
    bounded = fleet.settings.model_copy(update={"history_max_messages": 5})
    async with ChatProducer(settings=bounded) as producer:
        s2 = sid("imp")
        done = await producer.import_session(exp, s2)
        assert (done.messages, done.trimmed) == (2, 6)  # whole turns: the last one (2) fits in 5
        again = await producer.export_session(s2)
        assert again.history_start == 6 and again.history == exp.history[6:]


async def test_cli_export_then_import_round_trips_and_bad_input_writes_nothing(
    fleet: Fleet, producer: ChatProducer, raw_redis: Redis, tmp_path: Path
) -> None:
    fleet.start(1, handler=AGENT)
    s = sid("cliimp")
    for text in ("one", 'two !tool=add:{"a": 2, "b": 3}'):
        t = await producer.enqueue(s, text)
        assert (await producer.wait(t.turn_id, 20)).state is TurnState.completed
    code, out, err = await cli(fleet, "export-session", s)
    assert code == 0, err
    saved = tmp_path / "export.json"
    saved.write_text(out)
    exported = SessionExport.model_validate_json(out)

    # Into a new session id; the same history comes back out.
    s2 = sid("cliimp")
    done = await cli_json(fleet, "import-session", str(saved), "--session-id", s2)
    assert done == {"session_id": s2, "messages": len(exported.history), "trimmed": 0}
    assert (await producer.export_session(s2)).history == exported.history
    # Into the exported id once it is deleted, in text form.
    assert (await cli_json(fleet, "import-session", str(saved), rc=1))["error"] == "session_not_empty"
    await producer.delete_session(s)
    code, out, err = await cli(fleet, "import-session", str(saved))
    assert code == 0 and out.strip() == f"imported {len(exported.history)} message(s) into session {s} (0 trimmed)"
    assert (await producer.export_session(s)).history == exported.history

    # Bad input: a clear error, exit 1, and nothing written.
    before = await keys_with_prefix(raw_redis, fleet.prefix)
    s3 = sid("cliimp")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(saved.read_text()[:100])
    err = await cli_json(fleet, "import-session", str(truncated), "--session-id", s3, rc=1)
    assert err["error"] == "invalid_input" and "not a chatlane session export" in err["message"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**json.loads(saved.read_text()), "history": [{"type": "human"}]}))
    err = await cli_json(fleet, "import-session", str(wrong), "--session-id", s3, rc=1)
    assert err["error"] == "invalid_input" and "history[0]" in err["message"]
    err = await cli_json(fleet, "import-session", str(saved), "--session-id", "bad id!", rc=1)
    assert err["error"] == "invalid_input"
    code, _, usage = await cli(fleet, "import-session", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in usage
    assert await keys_with_prefix(raw_redis, fleet.prefix) == before
