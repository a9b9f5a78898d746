"""B11 streams at scale: 5,000 open SSE streams on one API process.

Two ``uvicorn producer.api:app`` processes (as the Procfile runs it) on one Redis and, in this
process, raw asyncio sockets as their SSE clients. No worker runs: the turns stay queued and this
process plays the model, writing each chunk with the worker's own script (``PublishChunks``,
publish_chunks.lua), so "chunk written" and "SSE client received it" share one clock.

- "crowd" holds 5,000 idle streams on other turns besides its measured stream: the Redis
  connections it holds (CLIENT LIST entries whose address is one of the process's own sockets),
  and its RSS before and after the idle streams opened.
- "alone" serves only its measured stream: the reference. Latency samples alternate between the
  two measured streams in random order, chunks written at random moments, so the machine's other
  load hits both sides alike.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import socket
import time
from pathlib import Path

from redis.asyncio import Redis

from bench.cpu import CpuMeter
from bench.env import Bench, new_prefix
from bench.report import Row, Sample, Target, fmt
from bench.stats import percentile
from chatlane.scripts.publish import PublishChunks
from chatlane.stream import chunk_fields
from devkit.processes import worker_env
from devkit.uvicorn_process import UvicornProcess
from producer import ChatProducer, Settings

ID = "B11"
KEY = "bench-key"
OPEN_AT_ONCE = 100  # connection attempts in flight while the idle streams open


def shape(quick: bool) -> tuple[int, int]:
    """(idle streams, latency samples per phase)."""
    return (200, 50) if quick else (5000, 1000)


def idle_s(quick: bool) -> float:
    """How long the idle CPU is measured: one keepalive interval (15 s), every stream ticks once."""
    return 2.0 if quick else 15.0


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


def api_process(env: dict[str, str], log: Path) -> UvicornProcess:
    """The API with room for every stream."""
    return UvicornProcess(env, log, extra_args=("--backlog", "4096"))


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


async def latency(publish: PublishChunks, stream_key: str, reader: asyncio.StreamReader, marker: str) -> float:
    """ms from a chunk's write (the script call starts) to the client reading its frame."""
    t0 = time.perf_counter()
    await publish({stream_key: [chunk_fields(1, marker)]}, 600_000)
    while True:
        line = await reader.readline()
        if not line:
            raise RuntimeError("the measured stream closed")
        if line.startswith(b"data:") and marker.encode() in line:
            return (time.perf_counter() - t0) * 1000


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
    """Two API processes side by side: one serves only the measured stream, the other ``idle``
    open streams besides its measured one. Samples alternate between the two (in random order),
    so whatever else the machine does at a moment hits both sides alike."""
    prefix = new_prefix("b11")
    env = worker_env(bench.server.url, prefix, {"CHATLANE_API_KEYS": KEY, "CHATLANE_MAX_STREAMS": str(idle + 100)})
    alone = api_process(env, bench.log_dir / f"b11-uvicorn-{r}-alone.log")
    crowd = api_process(env, bench.log_dir / f"b11-uvicorn-{r}-crowd.log")
    writers: list[asyncio.StreamWriter] = []
    try:
        await alone.ready()
        await crowd.ready()
        pid = crowd.proc.pid
        async with ChatProducer(settings=Settings(redis_url=bench.server.url, key_prefix=prefix)) as producer:
            publish = PublishChunks(producer.redis)
            turns: list[str] = []
            for start in range(0, idle, 500):
                batch = range(start, min(idle, start + 500))
                turns += [t.turn_id for t in await asyncio.gather(*(producer.enqueue(f"s{i}", "hi") for i in batch))]
            sides = {}
            for name, api in (("one", alone), ("many", crowd)):
                measured = (await producer.enqueue(f"{prefix}-{name}", "hello")).turn_id
                reader, writer = await open_stream(api.port, measured)
                writers.append(writer)
                sides[name] = (producer.keys.stream(measured), reader)
            for k in range(20):  # warm-up
                for name, (key, reader) in sides.items():
                    await latency(publish, key, reader, f"warm-{name}-{k}")
            clients_one = await redis_clients_of(bench.redis, pid)
            rss_before = rss_bytes(pid)
            began = time.monotonic()
            writers += await open_many(crowd.port, turns)
            opened_s = time.monotonic() - began
            clients_opened = await redis_clients_of(bench.redis, pid)
            await asyncio.sleep(1.0)  # let the openings' garbage go
            rss_after = rss_bytes(pid)
            # Idle: what the open streams cost with nothing to send (keepalive ticks, each a frame
            # and one round trip), against the process serving one stream.
            idle_cpu = {name: CpuMeter(api.proc.pid) for name, api in (("one", alone), ("many", crowd))}
            await asyncio.sleep(idle_s(bench.quick))
            cpu = {name: m.share() for name, m in idle_cpu.items()}
            got: dict[str, list[float]] = {"one": [], "many": []}
            for k in range(n):
                for name in random.sample(list(sides), 2):
                    await asyncio.sleep(random.uniform(0.001, 0.005))
                    key, reader = sides[name]
                    got[name].append(await latency(publish, key, reader, f"{name}-{k}"))
            clients_many = await redis_clients_of(bench.redis, pid)
    finally:
        for w in writers:
            w.close()
        alone.stop()
        crowd.stop()
    single, many = got["one"], got["many"]
    return {
        "idle": float(idle),
        "clients.one": float(clients_one),
        "clients.many": float(max(clients_opened, clients_many)),
        "rss.before": rss_before / 1e6,
        "rss.after": rss_after / 1e6,
        "per_stream_kb": (rss_after - rss_before) / idle / 1024,
        "open_s": opened_s,
        "cpu.one": cpu["one"] * 100,
        "cpu.many": cpu["many"] * 100,
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
            f"before the streams opened: {fmt(m['clients.one'])}",
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
            "… CPU of that process while its streams sit idle (a keepalive frame and one XRANGE + HMGET per "
            f"stream every 15 s), over {fmt(idle_s(quick))} s",
            f"{fmt(m['cpu.many'], ' % of a core', 1)}",
            f"the process serving one stream: {fmt(m['cpu.one'], ' %', 1)}",
            "",
        ),
        Row(
            ID,
            f"… chunk written (publish_chunks.lua) → the SSE client reads it, with the streams open "
            f"({n} chunks at random moments)",
            f"p99 {ms(m['many.p99'])} (p50 {ms(m['many.p50'])})",
            f"another API process serving only its measured stream, samples interleaved: "
            f"p99 {ms(m['one.p99'])} (p50 {ms(m['one.p50'])})",
            f"p99 {m['p99.delta']:+.2f} ms",
            Target("<=", 2.0, "p99 ≤ one stream's + 2 ms"),
            m["p99.delta"],
        ),
    ]
