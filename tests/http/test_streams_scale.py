"""Streams at scale: one Redis reader per API process, caps on open streams, bounded slow readers.

The API runs as its own uvicorn process where a test counts what the process holds (its Redis
connections, its memory); the clients are raw sockets. No worker runs: the turns stay queued and
the test writes their chunks with the worker's own script (publish_chunks.lua) and ends them with
a cancel (end_turn.lua), the two scripts that announce a stream's new entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.scenarios.b11_streams import open_stream, redis_clients_of, rss_bytes, socket_inodes
from chatlane.scripts.publish import PublishChunks
from chatlane.stream import chunk_fields
from devkit.api_server import ServedApp
from devkit.http_client import parse_sse
from devkit.processes import worker_env
from devkit.redis_server import RedisServer
from devkit.uvicorn_process import UvicornProcess
from producer import ChatProducer, Settings
from producer.api import create_app
from tests.conftest import new_prefix, sid
from tests.http.conftest import Api

KEY = "bench-key"  # the key bench.scenarios.b11_streams.open_stream sends
TTL_MS = 600_000


@dataclass
class Event:
    event: str
    data: str
    id: str | None


async def sse_events(reader: asyncio.StreamReader) -> AsyncIterator[Event]:
    """Events of a raw SSE response body (chunked transfer framing lines are skipped: every frame
    of ours is one chunk whose size line never starts with ``event:``/``data:``/``id:``)."""
    event, data, eid = "", "", None
    while True:
        line = await reader.readline()
        if not line:
            return
        text = line.decode().rstrip("\r\n")
        if text.startswith("event: "):
            event = text[7:]
        elif text.startswith("data: "):
            data = text[6:]
        elif text.startswith("id: "):
            eid = text[4:]
        elif text == "" and event:
            yield Event(event, data, eid)
            event, data, eid = "", "", None


@contextlib.contextmanager
def uvicorn_api(redis: RedisServer, prefix: str, tmp: str, **env: str) -> Iterator[UvicornProcess]:
    extra = {"CHATLANE_API_KEYS": KEY, **{f"CHATLANE_{k.upper()}": v for k, v in env.items()}}
    api = UvicornProcess(worker_env(redis.url, prefix, extra), log=Path(tmp) / "uvicorn.log")
    try:
        yield api
    finally:
        api.stop()


async def test_many_open_streams_hold_few_redis_connections_and_each_gets_every_chunk(
    redis_server: RedisServer, tmp_path: object
) -> None:
    prefix = new_prefix()
    n = 200
    with uvicorn_api(redis_server, prefix, str(tmp_path)) as api:
        await api.ready()
        async with ChatProducer(settings=Settings(redis_url=redis_server.url, key_prefix=prefix)) as producer:
            turns = [(await producer.enqueue(sid(), f"hi {i}")).turn_id for i in range(n)]
            streams = await asyncio.gather(*(open_stream(api.port, t) for t in turns))
            # Every stream is open and its follower has read once (the 200 came after the status read).
            held = await redis_clients_of(producer.redis, api.proc.pid)
            assert len(socket_inodes(api.proc.pid)) > n  # the count below really looks at the process's sockets
            assert held <= 10, f"{held} Redis connections for {n} open streams"

            publish = PublishChunks(producer.redis)
            parts = [f"part {k} " for k in range(5)]
            for part in parts:
                await publish({producer.keys.stream(t): [chunk_fields(1, f"{t[:6]} {part}")] for t in turns}, TTL_MS)
            for t in turns:
                await producer.cancel(t)

            async def until_end(i: int) -> list[Event]:
                got: list[Event] = []
                reader, writer = streams[i]
                async for ev in sse_events(reader):
                    got.append(ev)
                    if ev.event == "end":
                        break
                writer.close()
                return got

            # The client's timeout is the hang detector, not a performance claim.
            results = await asyncio.wait_for(asyncio.gather(*(until_end(i) for i in range(n))), 60)
            for t, events in zip(turns, results, strict=True):
                assert [ev.event for ev in events] == ["chunk"] * len(parts) + ["end"], events
                assert [json.loads(ev.data)["text"] for ev in events[:-1]] == [f"{t[:6]} {p}" for p in parts]
                assert json.loads(events[-1].data)["state"] == "cancelled"
            assert await redis_clients_of(producer.redis, api.proc.pid) <= 10


async def test_a_write_wakes_an_idle_stream_without_waiting_for_its_keepalive_tick(serve: Callable[..., Api]) -> None:
    """The notification path itself: with a keepalive far beyond the client's patience, only the
    PUBLISH of publish_chunks.lua / end_turn.lua can deliver the chunk and the end in time."""
    api = serve()
    api_settings = api.settings
    slow_tick = ServedApp(create_app(api_settings, keepalive_s=300)).start()
    try:
        async with (
            ChatProducer(settings=api_settings) as producer,
            httpx.AsyncClient(base_url=slow_tick.base_url, timeout=20) as h,
        ):
            tid = (await producer.enqueue(sid(), "hello")).turn_id
            async with h.stream("GET", f"/v1/turns/{tid}/stream") as resp:
                assert resp.status_code == 200
                lines = resp.aiter_lines()
                await asyncio.sleep(0.3)  # the follower has read once and now waits
                await PublishChunks(producer.redis)({producer.keys.stream(tid): [chunk_fields(1, "woken")]}, TTL_MS)
                got = []
                async with asyncio.timeout(20):
                    async for line in lines:
                        if line.startswith("data: "):
                            got.append(json.loads(line[6:]))
                            if len(got) == 1:
                                await producer.cancel(tid)
                            else:
                                break
            assert got[0]["text"] == "woken" and got[1]["state"] == "cancelled"
    finally:
        slow_tick.stop()


async def test_deleting_the_session_ends_its_open_stream_at_once(serve: Callable[..., Api]) -> None:
    """delete_session.lua announces the streams it deletes: an open stream ends with 404
    turn_not_found now, not at its next keepalive tick (300 s here)."""
    api = serve()
    slow_tick = ServedApp(create_app(api.settings, keepalive_s=300)).start()
    try:
        async with (
            ChatProducer(settings=api.settings) as producer,
            httpx.AsyncClient(base_url=slow_tick.base_url, timeout=20) as h,
        ):
            session = sid()
            tid = (await producer.enqueue(session, "hello")).turn_id
            async with h.stream("GET", f"/v1/turns/{tid}/stream") as resp:
                assert resp.status_code == 200
                lines = resp.aiter_lines()
                await asyncio.sleep(0.3)  # the follower has read once and now waits
                await producer.delete_session(session)
                async with asyncio.timeout(10):
                    events = [line async for line in lines if line.startswith(("event: ", "data: "))]
            assert events[0] == "event: error" and json.loads(events[1][6:])["code"] == "turn_not_found", events
    finally:
        slow_tick.stop()


TENANT_KEYS = "a=key-a,b=key-b,c=key-c,d=key-d"


def as_tenant(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-{tenant}"}


async def refused(h: httpx.AsyncClient, tid: str, tenant: str = "a") -> httpx.Response:
    resp = await h.get(f"/v1/turns/{tid}/stream", headers=as_tenant(tenant))
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["code"] == "stream_limit" and resp.headers["retry-after"]
    return resp


@contextlib.asynccontextmanager
async def opened(h: httpx.AsyncClient, tid: str, tenant: str = "a") -> AsyncIterator[httpx.Response]:
    async with h.stream("GET", f"/v1/turns/{tid}/stream", headers=as_tenant(tenant)) as resp:
        assert resp.status_code == 200
        yield resp


async def eventually_open(h: httpx.AsyncClient, tid: str, tenant: str = "a", timeout: float = 10.0) -> None:
    """A slot is freed when the server notices the close: poll until a stream is admitted again."""
    deadline = time.monotonic() + timeout
    while True:
        async with h.stream("GET", f"/v1/turns/{tid}/stream", headers=as_tenant(tenant)) as resp:
            if resp.status_code == 200:
                return
            assert resp.status_code == 429
        assert time.monotonic() < deadline, "the closed stream's slot was never freed"
        await asyncio.sleep(0.05)


@pytest.fixture
def capped(redis_server: RedisServer) -> Iterator[Callable[..., tuple[str, Settings]]]:
    servers: list[ServedApp] = []

    def start(**overrides: object) -> tuple[str, Settings]:
        settings = Settings(
            **{"redis_url": redis_server.url, "key_prefix": new_prefix(), "api_keys": TENANT_KEYS, **overrides}
        )  # type: ignore[arg-type]
        server = ServedApp(create_app(settings, keepalive_s=0.2)).start()
        servers.append(server)
        return server.base_url, settings

    yield start
    for s in servers:
        s.stop()


async def test_process_stream_cap_answers_429_before_the_stream_and_a_closed_stream_frees_its_slot(
    capped: Callable[..., tuple[str, Settings]],
) -> None:
    url, settings = capped(max_streams=3)
    async with ChatProducer(settings=settings) as producer, httpx.AsyncClient(base_url=url, timeout=20) as h:
        # Each tenant streams a turn of its own (another tenant's turn is a 404).
        tids = {t: (await producer.for_tenant(t).enqueue(sid(), "hi")).turn_id for t in "abcd"}
        async with opened(h, tids["a"]), opened(h, tids["b"], "b"):
            async with opened(h, tids["c"], "c"):
                await refused(h, tids["a"])
                await refused(h, tids["d"], "d")  # every tenant: the cap is the process's
            await eventually_open(h, tids["a"])
            # At the cap, an unknown turn is still a 404.
            assert (await h.get(f"/v1/turns/{'0' * 32}/stream", headers=as_tenant("a"))).status_code == 404


async def test_tenant_stream_cap_answers_429_to_that_tenant_only(
    capped: Callable[..., tuple[str, Settings]],
) -> None:
    url, settings = capped(max_streams=10, max_streams_per_tenant=2)
    async with ChatProducer(settings=settings) as producer, httpx.AsyncClient(base_url=url, timeout=20) as h:
        tids = {t: (await producer.for_tenant(t).enqueue(sid(), "hi")).turn_id for t in "ab"}
        async with opened(h, tids["a"], "a"), opened(h, tids["a"], "a"):
            msg = (await refused(h, tids["a"], "a")).json()["message"]
            assert "CHATLANE_MAX_STREAMS_PER_TENANT" in msg
            async with opened(h, tids["b"], "b"), opened(h, tids["b"], "b"):
                await refused(h, tids["b"], "b")
        await eventually_open(h, tids["a"], "a")


async def test_a_slow_reader_does_not_make_the_server_buffer_its_stream(
    redis_server: RedisServer, tmp_path: object
) -> None:
    """32 MB of chunks written while the client reads 1 KiB every 50 ms: the API process's memory
    stays far below what was written (it reads the stream only as fast as the client takes it);
    then the client reads on at full speed and gets every chunk, in order, and the end."""
    prefix = new_prefix()
    chunks, size = 8000, 4096
    with uvicorn_api(redis_server, prefix, str(tmp_path)) as api:
        await api.ready()
        async with ChatProducer(settings=Settings(redis_url=redis_server.url, key_prefix=prefix)) as producer:
            tid = (await producer.enqueue(sid(), "write me a very long story")).turn_id
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little for us
            sock.connect(("127.0.0.1", api.port))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
            writer.write(
                f"GET /v1/turns/{tid}/stream HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n"))[9:12] == b"200"
            rss_before = rss_bytes(api.proc.pid)

            publish = PublishChunks(producer.redis)
            key = producer.keys.stream(tid)

            async def model() -> None:
                for start in range(0, chunks, 100):
                    entries = [chunk_fields(1, f"{i:08d}".ljust(size, "x")) for i in range(start, start + 100)]
                    await publish({key: entries}, TTL_MS)
                    await asyncio.sleep(0.01)

            writing = asyncio.create_task(model())
            peak = rss_before
            while not writing.done():
                await reader.read(1024)  # a very slow reader
                peak = max(peak, rss_bytes(api.proc.pid))
                await asyncio.sleep(0.05)
            await writing
            for _ in range(20):  # the server had time to buffer everything it would
                await reader.read(1024)
                peak = max(peak, rss_bytes(api.proc.pid))
                await asyncio.sleep(0.05)
            written = chunks * size
            grown = peak - rss_before
            assert grown < written / 4, f"the API grew by {grown / 1e6:.1f} MB while {written / 1e6:.0f} MB waited"

            await producer.cancel(tid)
            seen: list[int] = []
            # The rest of the body, at full speed: resynchronise on the next frame boundary first.
            async with asyncio.timeout(120):
                async for ev in sse_events(reader):
                    if ev.event == "chunk":
                        with contextlib.suppress(ValueError):
                            seen.append(int(json.loads(ev.data)["text"][:8]))
                    elif ev.event == "end":
                        break
            writer.close()
            # The bytes read slowly were skipped above; from there on every chunk, in order.
            assert seen and seen == list(range(seen[0], chunks)), (seen[:3], seen[-3:], len(seen))
            assert seen[0] < chunks // 2


async def test_after_a_redis_restart_streams_resume_from_last_event_id_and_the_hub_listens_again(
    tmp_path: Path,
) -> None:
    """Redis restarts (with its data, appendonly): a stream cut by the outage ends with an error
    event; the client resumes with Last-Event-ID and gets exactly the entries after it, live. The
    keepalive is far beyond the client's patience, so the live ones can only come through the
    hub's new subscription."""
    with RedisServer(appendfsync="always") as redis:
        settings = Settings(redis_url=redis.url, key_prefix=new_prefix(), auth="none")
        app = create_app(settings, keepalive_s=300)
        with ServedApp(app) as server:
            async with (
                ChatProducer(settings=settings) as producer,
                httpx.AsyncClient(base_url=server.base_url, timeout=20) as h,
            ):
                tid = (await producer.enqueue(sid(), "hello")).turn_id
                key = producer.keys.stream(tid)
                publish = PublishChunks(producer.redis)
                seen: list[tuple[str, str | None]] = []

                async def follow(last: str | None, until: str) -> None:
                    headers = {"Last-Event-ID": last} if last else {}
                    async with h.stream("GET", f"/v1/turns/{tid}/stream", headers=headers) as resp:
                        assert resp.status_code == 200
                        async for ev in parse_sse(resp.aiter_lines()):
                            seen.append((ev.event, ev.data if ev.event != "chunk" else json.loads(ev.data)["text"]))
                            ids.append(ev.id)
                            if len(seen) == 2:
                                two_seen.set()
                            if ev.event == until or ev.event == "error":
                                return

                ids: list[str | None] = []
                two_seen = asyncio.Event()
                first = asyncio.create_task(follow(None, "error"))
                await asyncio.sleep(0.3)
                for text in ("one ", "two "):
                    await publish({key: [chunk_fields(1, text)]}, TTL_MS)
                await asyncio.wait_for(two_seen.wait(), 20)
                redis.stop()
                redis.start()
                await asyncio.wait_for(first, 20)
                assert [e for e, _ in seen] == ["chunk", "chunk", "error"], seen
                hub = app.state.stream_hub
                resumed = asyncio.create_task(follow(ids[1], "end"))
                await asyncio.sleep(0.3)
                for text in ("three ", "four "):
                    await publish({key: [chunk_fields(1, text)]}, TTL_MS)
                await producer.cancel(tid)
                await asyncio.wait_for(resumed, 20)
                assert [d for e, d in seen if e == "chunk"] == ["one ", "two ", "three ", "four "]
                assert seen[-1][0] == "end" and json.loads(str(seen[-1][1]))["state"] == "cancelled"
                assert hub.reconnects >= 1 and hub.listening.is_set()
