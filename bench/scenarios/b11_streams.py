"""B11 streams at scale: 5,000 open SSE streams on one API process.

One ``uvicorn producer.api:app`` process (as the Procfile runs it) and, in this process, raw
asyncio sockets as its SSE clients. No worker runs: the turns stay queued and this process plays
the model, writing each chunk with the worker's own script (``PublishChunks``, publish_chunks.lua),
so "chunk written" and "SSE client received it" share one clock.

1. One measured stream open alone: latency of chunks written at random moments (the reference).
2. 5,000 more streams open on other turns and stay idle; the same measured stream again.
   Meanwhile: the Redis connections the API process holds (CLIENT LIST entries whose address is
   one of the process's own sockets), and its RSS before and after the idle streams opened.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from redis.asyncio import Redis

from bench.env import Bench, new_prefix
from bench.report import Row, Sample, Target, fmt
from bench.stats import percentile
from chatlane.scripts.publish import PublishChunks
from chatlane.stream import chunk_fields
from devkit.processes import worker_env
from devkit.redis_server import free_port
from producer import ChatProducer, Settings

ID = "B11"
KEY = "bench-key"
OPEN_AT_ONCE = 100  # connection attempts in flight while the idle streams open


def shape(quick: bool) -> tuple[int, int]:
    """(idle streams, latency samples per phase)."""
    return (200, 40) if quick else (5000, 400)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(f"B11 needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the process's open sockets."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def local_ports(pid: int) -> set[int]:
    """TCP ports of the process's own end of its sockets (IPv4 and IPv6)."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


async def redis_clients_of(redis: Redis, pid: int) -> int:
    """Clients Redis lists (CLIENT LIST) whose address is one of the process's sockets."""
    ports = local_ports(pid)
    clients = await redis.client_list()
    return sum(1 for c in clients if int(c["addr"].rsplit(":", 1)[1]) in ports)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Api:
    """``uvicorn producer.api:app`` in its own process, with room for every stream."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "producer.api:app", "--host", "127.0.0.1", "--port", str(self.port),
               "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2",
               "--backlog", "4096"]  # fmt: skip
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as h:
            while True:
                try:
                    if (await h.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("uvicorn did not come up")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def open_stream(port: int, turn_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw SSE request; returns once the 200 and its headers arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(
        f"GET /v1/turns/{turn_id}/stream HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {KEY}\r\n"
        f"Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if head[9:12] != b"200":
        raise RuntimeError(f"stream refused: {head[:200]!r}")
    return reader, writer


async def latencies(
    publish: PublishChunks, stream_key: str, reader: asyncio.StreamReader, samples: int, tag: str
) -> list[float]:
    """ms from a chunk's write (the script call starts) to the client reading its frame."""
    out: list[float] = []
    for i in range(samples):
        await asyncio.sleep(random.uniform(0.002, 0.01))
        marker = f"{tag}-{i}".encode()
        t0 = time.perf_counter()
        await publish({stream_key: [chunk_fields(1, marker.decode())]}, 600_000)
        while True:
            line = await reader.readline()
            if not line:
                raise RuntimeError("the measured stream closed")
            if line.startswith(b"data:") and marker in line:
                break
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def open_many(port: int, turns: list[str]) -> list[asyncio.StreamWriter]:
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    conns: list[asyncio.StreamWriter] = []

    async def one(turn: str) -> None:
        async with gate:
            _, w = await open_stream(port, turn)
            conns.append(w)

    try:
        await asyncio.gather(*(one(t) for t in turns))
    except BaseException:
        for w in conns:
            w.close()
        raise
    return conns


async def one_repeat(bench: Bench, r: int, idle: int, n: int) -> Sample:
    """Single stream, then with ``idle`` more open, then single again once they closed: the
    reference is both single phases together, so drift on a shared machine hits both sides."""
    prefix = new_prefix("b11")
    env = worker_env(bench.server.url, prefix, {"CHATLANE_API_KEYS": KEY, "CHATLANE_MAX_STREAMS": str(idle + 100)})
    api = Api(env, bench.log_dir / f"b11-uvicorn-{r}.log")
    writers: list[asyncio.StreamWriter] = []
    try:
        await api.ready()
        pid = api.proc.pid
        async with ChatProducer(settings=Settings(redis_url=bench.server.url, key_prefix=prefix)) as producer:
            publish = PublishChunks(producer.redis)
            measured = (await producer.enqueue(f"{prefix}-measured", "hello")).turn_id
            turns: list[str] = []
            for start in range(0, idle, 500):
                batch = range(start, min(idle, start + 500))
                turns += [t.turn_id for t in await asyncio.gather(*(producer.enqueue(f"s{i}", "hi") for i in batch))]
            reader, writer = await open_stream(api.port, measured)
            writers.append(writer)
            key = producer.keys.stream(measured)
            await latencies(publish, key, reader, 20, "warm")
            single = await latencies(publish, key, reader, n // 2, "one")
            clients_one = await redis_clients_of(bench.redis, pid)
            rss_before = rss_bytes(pid)
            began = time.monotonic()
            idle_conns = await open_many(api.port, turns)
            writers += idle_conns
            opened_s = time.monotonic() - began
            clients_opened = await redis_clients_of(bench.redis, pid)
            await asyncio.sleep(1.0)  # let the openings' garbage go
            rss_after = rss_bytes(pid)
            many = await latencies(publish, key, reader, n, "many")
            clients_many = await redis_clients_of(bench.redis, pid)
            for w in idle_conns:
                w.close()
            await asyncio.sleep(1.0)
            single += await latencies(publish, key, reader, n - n // 2, "again")
    finally:
        for w in writers:
            w.close()
        api.stop()
    return {
        "idle": float(idle),
        "clients.one": float(clients_one),
        "clients.many": float(max(clients_opened, clients_many)),
        "rss.before": rss_before / 1e6,
        "rss.after": rss_after / 1e6,
        "per_stream_kb": (rss_after - rss_before) / idle / 1024,
        "open_s": opened_s,
        "one.p50": percentile(single, 50),
        "one.p99": percentile(single, 99),
        "many.p50": percentile(many, 50),
        "many.p99": percentile(many, 99),
        "p99.delta": percentile(many, 99) - percentile(single, 99),
    }


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    idle, n = shape(bench.quick)
    raise_fd_limit(idle * 2 + 1000)
    return [await one_repeat(bench, r, idle, n) for r in range(repeats)]


def rows(m: Sample, quick: bool) -> list[Row]:
    _, n = shape(quick)

    def ms(v: float) -> str:
        return fmt(v, " ms", 2)

    return [
        Row(
            ID,
            f"{fmt(m['idle'])} open SSE streams on one API process (uvicorn): Redis connections the process holds "
            "(CLIENT LIST ∩ its sockets)",
            f"{fmt(m['clients.many'])} connections",
            f"one open stream: {fmt(m['clients.one'])}",
            "",
            Target("<=", 10.0, "≤ 10"),
            m["clients.many"],
        ),
        Row(
            ID,
            f"… memory per idle stream (RSS delta / streams; {fmt(m['idle'])} opened in {fmt(m['open_s'], ' s', 1)})",
            f"{fmt(m['per_stream_kb'], ' KiB', 1)}",
            f"RSS {fmt(m['rss.before'], ' MB', 1)} → {fmt(m['rss.after'], ' MB', 1)}",
            "",
        ),
        Row(
            ID,
            f"… chunk written (publish_chunks.lua) → the SSE client reads it, with the streams open "
            f"({n} chunks at random moments)",
            f"p99 {ms(m['many.p99'])} (p50 {ms(m['many.p50'])})",
            f"the stream open alone, before and after: p99 {ms(m['one.p99'])} (p50 {ms(m['one.p50'])})",
            f"p99 {m['p99.delta']:+.2f} ms",
            Target("<=", 2.0, "p99 ≤ one stream's + 2 ms"),
            m["p99.delta"],
        ),
    ]
