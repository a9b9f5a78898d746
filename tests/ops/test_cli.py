"""The ``chatlane`` console script against a real Redis and real workers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid, wait_async

CLI = str(Path(sys.executable).parent / "chatlane")


async def cli(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "CHATLANE_REDIS_URL": fleet.redis_url, "CHATLANE_KEY_PREFIX": fleet.prefix}
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli_json(fleet: Fleet, *args: str, rc: int = 0) -> Any:
    code, out, err = await cli(fleet, *args, "--json")
    assert code == rc, (code, out, err)
    return json.loads(out)


async def test_cli_status_session_failed_retry(fleet: Fleet, producer: ChatProducer) -> None:
    (failing,) = fleet.start(1, fake_fail_rate=1, max_attempts=1)
    session = sid("cli")
    bad = [await producer.enqueue(session, f"q{i}") for i in range(2)]
    for t in bad:
        assert (await producer.wait(t.turn_id, 30)).state is TurnState.failed

    listed = await cli_json(fleet, "failed")
    assert [t["turn_id"] for t in listed] == [t.turn_id for t in bad]
    assert all(t["state"] == "failed" and t["error"] for t in listed)
    assert len(await cli_json(fleet, "failed", "--since", "1h")) == 2
    code, out, _ = await cli(fleet, "failed")
    assert code == 0 and out.startswith("2 failed turn(s)") and bad[0].turn_id in out

    failing.stop()
    fleet.start(1, fake_delay_ms=4000)  # 4 s per turn: long enough to watch it run
    again = await cli_json(fleet, "retry", bad[0].turn_id)
    assert again["created"] and again["retry_of"] == bad[0].turn_id
    new = again["turn"]
    assert new["session_id"] == session and new["text"] == "q0" and new["turn_id"] != bad[0].turn_id
    # A repeated retry is the same new turn, not another one.
    repeat = await cli_json(fleet, "retry", bad[0].turn_id)
    assert not repeat["created"] and repeat["turn"]["turn_id"] == new["turn_id"]

    async def running() -> Any:
        view = await cli_json(fleet, "session", session)
        return view if view["lease_holder"] else None

    assert await wait_async(running, 20)
    view = await running()
    assert view and view["inbox"][0]["turn_id"] == new["turn_id"] and view["inbox"][0]["state"] == "running"
    assert view["lease_holder"].count(".") >= 2 and 0 < view["lease_ttl_ms"] <= 1500

    assert (await producer.wait(new["turn_id"], 30)).state is TurnState.completed
    view = await cli_json(fleet, "session", session)
    assert view["lease_holder"] is None and view["inbox"] == [] and view["history_messages"] == 2
    assert [t["turn_id"] for t in view["recent"]] == [new["turn_id"]]

    # Only failed turns can be retried; bad input is a clear error and writes nothing.
    err = await cli_json(fleet, "retry", new["turn_id"], rc=1)
    assert err["error"] == "turn_not_retryable"
    assert (await cli_json(fleet, "retry", "nope", rc=1))["error"] == "invalid_input"
    assert (await cli_json(fleet, "session", "bad id!", rc=1))["error"] == "invalid_input"
    code, _, usage = await cli(fleet, "failed", "--since", "soon")
    assert code == 2 and "duration" in usage

    status = await cli_json(fleet, "status")
    assert status["workers_alive"] == 1 and status["sessions_pending"] == 0 and status["queue_depth"] == 0
    assert isinstance(status["counters"], dict)
    code, out, _ = await cli(fleet, "status")
    assert code == 0 and "workers_alive: 1" in out


async def test_cli_with_a_malformed_redis_url_says_so_in_one_line() -> None:
    env = {**os.environ, "CHATLANE_REDIS_URL": "user:s3cret@localhost:6379"}
    proc = await asyncio.create_subprocess_exec(
        CLI, "status", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    lines = err.decode().splitlines()
    assert proc.returncode == 2 and out == b"", (proc.returncode, out, err)
    assert len(lines) == 1 and lines[0].startswith("chatlane status: ") and "not a Redis URL" in lines[0], lines
    assert "s3cret" not in lines[0] and "Traceback" not in err.decode()


async def test_cli_failed_lists_one_tenant_or_every_tenant(fleet: Fleet, producer: ChatProducer) -> None:
    fleet.start(1, max_attempts=1)
    acme = producer.for_tenant("acme")
    s = sid("cli-tenants")  # the same session id under both tenants: two sessions
    mine = await producer.enqueue(s, "mine !fail")
    assert (await producer.wait(mine.turn_id, 20)).state is TurnState.failed
    theirs = await acme.enqueue(s, "theirs !fail")
    assert (await acme.wait(theirs.turn_id, 20)).state is TurnState.failed

    assert [t["turn_id"] for t in await cli_json(fleet, "failed")] == [mine.turn_id]
    assert [t["turn_id"] for t in await cli_json(fleet, "failed", "--tenant", "acme")] == [theirs.turn_id]
    every = await cli_json(fleet, "failed", "--all-tenants")
    assert [(t["tenant"], t["turn_id"], t["session_id"]) for t in every] == [
        ("default", mine.turn_id, s), ("acme", theirs.turn_id, s),
    ]  # fmt: skip
    code, out, _ = await cli(fleet, "failed", "--all-tenants")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "2 failed turn(s), every tenant"
    assert lines[1].split()[:2] == ["default", mine.turn_id] and lines[2].split()[:2] == ["acme", theirs.turn_id]
    # The tenant then retries its own turn.
    again = await cli_json(fleet, "retry", theirs.turn_id, "--tenant", "acme")
    assert again["created"] and again["turn"]["session_id"] == s
    code, _, usage = await cli(fleet, "failed", "--all-tenants", "--tenant", "acme")
    assert code == 2 and "exclude each other" in usage
