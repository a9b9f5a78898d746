"""CHATLANE_TRACING=on: an HTTP request's trace continues in the worker that answers its turn.

A real uvicorn API process and a real worker process, each exporting its spans to its own file
(devkit/span_file.py, OTEL_TRACES_EXPORTER=chatlane_file); the request carries a W3C traceparent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chatlane.keys import Keys
from devkit.processes import worker_env
from devkit.redis_server import RedisServer, free_port
from devkit.span_file import PATH_ENV, read_spans
from producer import ChatProducer
from tests.conftest import Fleet, sid

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def otel_env(path: Path) -> dict[str, str]:
    # A short batch delay so spans reach the file soon; the processes also flush at shutdown.
    return {"OTEL_TRACES_EXPORTER": "chatlane_file", PATH_ENV: str(path), "OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def api_process(redis_server: RedisServer, fleet: Fleet, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``uvicorn producer.api:app`` in its own process with tracing on: (base URL, span file)."""
    spans = tmp_path / "api-spans.jsonl"
    port = free_port()
    env = worker_env(redis_server.url, fleet.prefix, {"CHATLANE_TRACING": "on", **otel_env(spans)})
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "producer.api:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API did not start:\n" + (tmp_path / "api.log").read_text())
            time.sleep(0.05)
        yield url, spans
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def spans_of(path: Path, trace_id: str, names: set[str], timeout: float = 15) -> dict[str, dict[str, Any]]:
    """The spans named ``names`` of trace ``trace_id`` in ``path``, once all are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = {s["name"]: s for s in read_spans(str(path)) if s["trace_id"] == trace_id}
        if names <= set(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_an_http_requests_trace_continues_in_the_worker(
    fleet: Fleet, api_process: tuple[str, Path], raw_redis: Redis, tmp_path: Path
) -> None:
    url, api_spans = api_process
    worker_spans = tmp_path / "worker-spans.jsonl"
    (worker,) = fleet.start(1, tracing="on", raw_env=otel_env(worker_spans))
    s = sid("trace")
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.post(
            f"/v1/sessions/{s}/turns", json={"text": "!fail=1 hello"},  # attempt 1 fails: two model spans
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        )  # fmt: skip
        assert r.status_code == 202, r.text
        turn_id = r.json()["turn_id"]
        for _ in range(200):
            state = (await client.get(f"/v1/turns/{turn_id}")).json()["state"]
            if state != "queued" and state != "running":
                break
            await asyncio.sleep(0.05)
        assert state == "completed"

    # The turn record carries the enqueue span's context: the trace id of the request.
    stored = await raw_redis.hget(Keys(fleet.prefix).turn(turn_id), "trace")
    assert stored is not None and stored.startswith(f"00-{TRACE_ID}-"), stored

    server_name = "POST /v1/sessions/{session_id}/turns"
    api = await spans_of(api_spans, TRACE_ID, {server_name, "chatlane.enqueue"})
    server, enqueue = api[server_name], api["chatlane.enqueue"]
    assert (server["kind"], server["parent_id"], server["service"]) == ("SERVER", CALLER_SPAN, "chatlane-api")
    assert enqueue["kind"] == "PRODUCER" and enqueue["attributes"]["chatlane.turn_id"] == turn_id
    assert stored == f"00-{TRACE_ID}-{enqueue['span_id']}-01"

    names = {"chatlane.queue_wait", "chatlane.drain", "chatlane.model", "chatlane.commit"}
    await spans_of(worker_spans, TRACE_ID, names)
    worker.stop()  # flushes what is still buffered
    spans = [x for x in read_spans(str(worker_spans)) if x["trace_id"] == TRACE_ID]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert {x["service"] for x in spans} == {"chatlane-worker"}
    (drain,), (wait,), (commit,) = by_name["chatlane.drain"], by_name["chatlane.queue_wait"], by_name["chatlane.commit"]
    # The worker's spans hang under the API's enqueue span, and the parent chain goes on through the
    # request's server span (FastAPI's own spans may sit between) to the caller's span.
    assert drain["parent_id"] == wait["parent_id"] == enqueue["span_id"]
    every = {x["span_id"]: x for x in [*read_spans(str(api_spans)), *spans] if x["trace_id"] == TRACE_ID}
    chain, at = [], drain
    while at["parent_id"] in every:
        at = every[at["parent_id"]]
        chain.append(at["name"])
    assert at["parent_id"] == CALLER_SPAN and chain[0] == "chatlane.enqueue" and chain[-1] == server_name, chain
    assert drain["attributes"]["chatlane.turn_id"] == turn_id
    assert drain["attributes"]["chatlane.outcome"] == "completed"
    assert commit["parent_id"] == drain["span_id"]
    models = sorted(by_name["chatlane.model"], key=lambda x: x["start_ns"])
    assert [m["attributes"]["chatlane.attempt"] for m in models] == [1, 2]
    assert all(m["parent_id"] == drain["span_id"] for m in models)
    # The wait is the turn's created time to its start: it ends before the model call begins.
    assert wait["start_ns"] <= wait["end_ns"] <= models[0]["start_ns"] + 5_000_000  # Redis and worker clocks: one host


async def test_without_tracing_the_turn_stores_no_trace(producer: ChatProducer, raw_redis: Redis) -> None:
    assert os.environ.get("CHATLANE_TRACING", "off") == "off"
    turn = await producer.enqueue(sid("notrace"), "hello")
    assert not await raw_redis.hexists(producer.keys.turn(turn.turn_id), "trace")
