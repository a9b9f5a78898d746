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

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def otel_env(path: Path) -> dict[str, str]:
    # A short batch delay so spans reach the file soon; the processes also flush at shutdown.
    return {"OTEL_TRACES_EXPORTER": "chatlane_file", PATH_ENV: str(path), "OTEL_BSP_SCHEDULE_DELAY": "100"}


API_KEY = "trace-key"


@pytest.fixture
def api_process(redis_server: RedisServer, fleet: Fleet, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``uvicorn producer.api:app`` in its own process with tracing on: (base URL, span file)."""
    spans = tmp_path / "api-spans.jsonl"
    port = free_port()
    env = worker_env(
        redis_server.url, fleet.prefix, {"CHATLANE_TRACING": "on", "CHATLANE_API_KEYS": API_KEY, **otel_env(spans)}
    )
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "producer.api:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
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
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
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


CLIENT = """
import asyncio, sys
from opentelemetry import trace
from producer import ChatProducer

async def main() -> None:
    async with ChatProducer() as producer:  # CHATLANE_TRACING=on: it installs the tracer provider
        with trace.get_tracer("app").start_as_current_span("app.handle") as span:
            turn = await producer.enqueue(sys.argv[1], "hello")
        ctx = span.get_span_context()
        print(turn.turn_id, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")

asyncio.run(main())
"""


async def test_a_python_clients_span_continues_in_the_worker(
    redis_server: RedisServer, fleet: Fleet, producer: ChatProducer, tmp_path: Path
) -> None:
    """ChatProducer in a service of its own (its own process, tracing on): the worker's spans join
    the trace of the span that was current when the service enqueued."""
    client_spans, worker_spans = tmp_path / "client-spans.jsonl", tmp_path / "worker-spans.jsonl"
    fleet.start(1, tracing="on", raw_env=otel_env(worker_spans))
    env = worker_env(redis_server.url, fleet.prefix, {"CHATLANE_TRACING": "on", **otel_env(client_spans)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, sid("client"), env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    turn_id, trace_id, app_span = out.decode().split()
    assert (await producer.wait(turn_id, 20)).state.value == "completed"

    # The client process has exited: the SDK's provider flushes its spans at exit.
    client = await spans_of(client_spans, trace_id, {"app.handle", "chatlane.enqueue"})
    enqueue = client["chatlane.enqueue"]
    assert (enqueue["parent_id"], enqueue["service"]) == (app_span, "chatlane-producer")
    worker = await spans_of(worker_spans, trace_id, {"chatlane.drain", "chatlane.model", "chatlane.commit"})
    assert worker["chatlane.drain"]["parent_id"] == enqueue["span_id"]
    assert (
        worker["chatlane.model"]["parent_id"]
        == worker["chatlane.commit"]["parent_id"]
        == worker["chatlane.drain"]["span_id"]
    )
