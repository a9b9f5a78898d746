"""HTTP API numbers: ``python -m bench.http_api [--quick]``.

Starts its own redis-server and one uvicorn process running ``producer.api:app`` (as the
Procfile does, one uvicorn worker), then measures:

1. requests/s of ``POST /v1/sessions/{s}/turns`` (every request a new session, so every enqueue
   also queues a drain job) against ``GET /healthz`` of the same process in the same run: the
   ratio is what enqueueing costs over FastAPI+uvicorn's own floor. No worker runs in this part,
   so the server's CPU is not shared with turns being answered. The load comes from raw
   keep-alive sockets (an HTTP client library would be slower than the server it measures).
2. the latency from the model's last chunk to an SSE client receiving it: a worker answers with
   langchain-openai against devkit's OpenAI stub in this process, so the stub's "last chunk
   sent" and the client's "chunk received" share one clock. Path: stub -> worker -> Redis
   Stream -> API (XREAD) -> SSE -> client.

Every socket has TCP_NODELAY (asyncio and uvloop set it; the stub and the client set it
explicitly), so no Nagle/delayed-ACK stall (~40 ms on loopback) hides in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_sync

from bench.cpu import CpuMeter
from bench.stats import percentile
from devkit.http_client import HttpChatClient
from devkit.openai_stub import OpenAIStub
from devkit.processes import WorkerProcess, worker_env
from devkit.redis_server import RedisServer
from devkit.uvicorn_process import UvicornProcess

KEY = "bench-key"
PREFIX = "httpbench"


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def load(port: int, make_request: object, connections: int, seconds: float) -> tuple[float, list[float]]:
    """Requests/s over ``seconds`` from ``connections`` keep-alive sockets, and each latency (s)."""
    latencies: list[float] = []
    errors: list[int] = []
    stop_at = time.perf_counter() + seconds

    async def one(conn: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        i = 0
        while (t0 := time.perf_counter()) < stop_at:
            writer.write(make_request(conn, i))  # type: ignore[operator]
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status >= 300:
                errors.append(status)
            i += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(connections)))
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. HTTP {errors[0]}")
    return len(latencies) / elapsed, latencies


def healthz_request(_conn: int, _i: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"


def enqueue_request(conn: int, i: int) -> bytes:
    body = json.dumps({"text": f"hello {i}"}).encode()
    return (
        f"POST /v1/sessions/b{conn}-{i}/turns HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def throughput(api: UvicornProcess, seconds: float, connections: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    rates: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    for name, req in (("GET /healthz", healthz_request), ("POST /v1/sessions/{s}/turns", enqueue_request)):
        await load(api.port, req, connections, min(1.0, seconds / 3))  # warm-up
        cpu = CpuMeter(api.proc.pid)
        rate, lat = await load(api.port, req, connections, seconds)
        rates[name] = rate
        # CPU per request holds up on a shared box, where requests/s moves with the neighbours.
        cpu_ms[name] = cpu.seconds() * 1e3 / len(lat)
        rows += [
            (f"{name}: requests/s ({connections} connections)", f"{rate:,.0f}"),
            (f"{name}: latency p50 / p99 (ms)", f"{percentile(lat, 50) * 1e3:.2f} / {percentile(lat, 99) * 1e3:.2f}"),
            (f"{name}: uvicorn CPU (cores)", f"{cpu.share():.2f}"),
            (f"{name}: uvicorn CPU per request (ms)", f"{cpu_ms[name]:.3f}"),
        ]
    enq, health = "POST /v1/sessions/{s}/turns", "GET /healthz"
    rows.append(("enqueue / healthz requests/s", f"{rates[enq] / rates[health]:.2f}"))
    rows.append(("healthz / enqueue CPU per request", f"{cpu_ms[health] / cpu_ms[enq]:.2f}"))
    return rows


async def sse_latency(api: UvicornProcess, stub: OpenAIStub, turns: int, warmup: int = 3) -> list[tuple[str, str]]:
    gaps: list[float] = []
    async with HttpChatClient(api.url, KEY) as client:
        for i in range(warmup + turns):
            st = await client.enqueue(f"sse-{i % 10}", f"question {i}")
            last_chunk_at = 0.0
            async for ev in client.events(st.turn_id):
                if ev.event == "chunk":
                    last_chunk_at = time.perf_counter()
                elif ev.event == "end":
                    assert json.loads(ev.data)["state"] == "completed", ev.data
            # The stub answers one request at a time, in order: its newest finish is this turn's.
            assert len(stub.finished_at) == i + 1
            if i >= warmup:
                gaps.append(last_chunk_at - stub.finished_at[-1])
    return [
        (f"last model chunk -> SSE client, p50 / p99 (ms, {turns} turns)",
         f"{percentile(gaps, 50) * 1e3:.2f} / {percentile(gaps, 99) * 1e3:.2f}"),
        ("  max (ms)", f"{max(gaps) * 1e3:.2f}"),
    ]  # fmt: skip


def render(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = f"+-{'-' * width}-+-{'-' * 14}-+"
    body = [f"| {k:<{width}} | {v:>14} |" for k, v in rows]
    return "\n".join([line, *body, line])


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.http_api", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    p.add_argument("--seconds", type=float, default=None, help="load duration per endpoint (default 5, quick 1)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--turns", type=int, default=None, help="turns for the SSE latency (default 200, quick 20)")
    args = p.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    turns = args.turns or (20 if args.quick else 200)
    logs = Path(tempfile.mkdtemp(prefix="chatlane-httpbench-"))

    with RedisServer() as redis, OpenAIStub(delay_s=0.05) as stub:
        env = worker_env(redis.url, PREFIX, {"CHATLANE_API_KEYS": KEY})
        api = UvicornProcess(env, logs / "uvicorn.log")
        worker: WorkerProcess | None = None
        try:
            api.wait_ready()
            rows = await throughput(api, seconds, args.connections)
            # The worker must not start on the thousands of turns the load just queued.
            with redis_sync.Redis.from_url(redis.url) as r:
                r.flushdb()
            model_env = {"CHATLANE_MODEL": "openai:gpt-4o-mini", "OPENAI_BASE_URL": stub.base_url,
                         "OPENAI_API_KEY": "bench", "CHATLANE_POLL_DELAY_S": "0.01"}  # fmt: skip
            worker = WorkerProcess(worker_env(redis.url, PREFIX, model_env), logs / "worker.log").start()
            rows += await sse_latency(api, stub, turns)
        finally:
            if worker is not None:
                worker.stop()
            api.stop()
    cpus = os.cpu_count()
    print(f"chatlane HTTP API, one uvicorn worker, {cpus} CPU(s); logs in {logs}")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
