"""One Redis reader per API process for every open SSE stream, and the caps on open streams.

A stream used to hold its own Redis connection in a blocking XREAD, so N idle streams were N Redis
clients. Here the hub holds ONE pub/sub connection (PSUBSCRIBE ``Keys.stream_channels``: the
scripts that add chunks, tool events and the end to a turn's stream publish on a channel named like
the stream key; a retry's ``reset`` entry, written by begin_head.lua, goes out with the chunk or
end after it) and wakes the followers of that key. A follower then reads its new entries itself
with a non-blocking XRANGE on the shared pool, at most ``BATCH`` entries at a time, only when its
client took the previous batch (the ASGI ``send`` waits while the socket is full). So a slow reader costs at most one
batch, and the hub buffers nothing: a notification is a flag, not the data.

Nothing depends on a notification arriving: a follower reads once when it starts, again after
every wake-up and on every keepalive tick; the hub wakes every follower when its connection drops
(their reads then tell them whether Redis is gone) and again once it has subscribed anew (entries
written while nobody listened). Streams are replayable, so a reconnecting client loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from chatlane.cancelling import cancel_and_wait
from chatlane.connection import REDIS_DOWN
from chatlane.errors import RedisUnavailable, StreamLimit
from chatlane.keys import Keys
from chatlane.stream import StreamEvent

log = logging.getLogger("chatlane.api")

# Entries one follower reads per XRANGE: what a slow client can make the process hold for it.
BATCH = 100
# Follower reads in flight at once, process-wide: what bounds the pool connections streams use
# (one pub/sub connection + READERS), however many streams open or wake together.
READERS = 4
# A listen call returns None after this long with nothing heard. Not "wait forever": redis-py
# then reads with the socket timeout, and an idle pub/sub connection would fail every few seconds.
LISTEN_S = 5.0
RECONNECT_MAX_S = 2.0


@dataclass(eq=False)
class Follower:
    """One open stream's registration: ``woken`` is set when its stream may have new entries."""

    key: str
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, timeout: float) -> bool:
        """True when woken, False after ``timeout`` (a keepalive tick)."""
        try:
            async with asyncio.timeout(timeout):
                await self.woken.wait()
        except TimeoutError:
            return False
        return True


@dataclass(eq=False)
class Slot:
    """A place under the stream caps; ``release`` is idempotent (the stream's end and the
    response's background task both call it, whichever comes first)."""

    hub: StreamHub
    tenant: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.hub._free(self.tenant)


class StreamHub:
    def __init__(self, redis: Redis, keys: Keys, *, max_streams: int, max_per_tenant: int = 0) -> None:
        self.redis = redis
        self.keys = keys
        self.max_streams = max_streams
        self.max_per_tenant = max_per_tenant
        self.followers: dict[str, set[Follower]] = {}
        self.open_streams = 0
        self.per_tenant: Counter[str] = Counter()
        self.listening = asyncio.Event()  # subscribed now: a write from here on wakes its followers
        self.reconnects = 0
        self.notifications = 0
        self.readers = asyncio.Semaphore(READERS)
        self._task: asyncio.Task[None] | None = None

    # -- caps ---------------------------------------------------------------------------------

    def admit(self, tenant: str) -> Slot:
        """A slot for one more stream of ``tenant``, or StreamLimit (429) if a cap is reached."""
        if self.open_streams >= self.max_streams:
            raise StreamLimit(f"this server holds {self.max_streams} open streams (CHATLANE_MAX_STREAMS); retry later")
        if self.max_per_tenant and self.per_tenant[tenant] >= self.max_per_tenant:
            raise StreamLimit(
                f"{self.max_per_tenant} streams of this tenant are open on this server "
                "(CHATLANE_MAX_STREAMS_PER_TENANT); close one or retry later"
            )
        self.open_streams += 1
        self.per_tenant[tenant] += 1
        return Slot(self, tenant)

    def _free(self, tenant: str) -> None:
        self.open_streams -= 1
        self.per_tenant[tenant] -= 1
        if self.per_tenant[tenant] <= 0:
            del self.per_tenant[tenant]

    # -- followers ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def follow(self, key: str) -> AsyncIterator[Follower]:
        follower = Follower(key)
        follower.woken.set()  # read once at the start, whatever the hub heard before
        self.followers.setdefault(key, set()).add(follower)
        try:
            yield follower
        finally:
            mine = self.followers.get(key)
            if mine is not None:
                mine.discard(follower)
                if not mine:
                    del self.followers[key]

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Hold one of the READERS permits for a Redis call made for a stream."""
        async with self.readers:
            try:
                yield
            except REDIS_DOWN as e:
                # Not the exception's text: it names Redis's host and port, which is no client's business.
                raise RedisUnavailable("Redis is unavailable") from e

    async def read(self, follower: Follower, after: str) -> list[StreamEvent]:
        """Up to BATCH entries of the follower's stream after entry id ``after`` ("0-0": all)."""
        follower.woken.clear()  # before the read: a write landing during it wakes us again
        async with self.reading():
            raw = await self.redis.xrange(follower.key, min=f"({after}", count=BATCH)
        return [StreamEvent.parse(i, f) for i, f in raw]

    async def read_and_check(
        self, follower: Follower, after: str, record: str
    ) -> tuple[list[StreamEvent], str | None, int | None]:
        """``read``, plus the state and the start deadline (epoch ms) of the turn record ``record``
        (state None: the record is gone), in one round trip: what an idle stream costs per tick."""
        follower.woken.clear()
        async with self.reading(), self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(follower.key, min=f"({after}", count=BATCH)
            pipe.hmget(record, ["state", "expires"])
            raw, (state, expires) = await pipe.execute()
        return [StreamEvent.parse(i, f) for i, f in raw], state, int(expires) if expires else None

    def _wake(self, key: str) -> None:
        for f in self.followers.get(key, ()):
            f.woken.set()

    def _wake_all(self) -> None:
        for group in self.followers.values():
            for f in group:
                f.woken.set()

    # -- the one reader -------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatlane-stream-hub")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)  # its loop retries on Redis errors (chatlane/cancelling.py)
            self._task = None

    async def _run(self) -> None:
        delay = 0.05
        while True:
            pubsub: PubSub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.keys.stream_channels)
                if self.reconnects:
                    log.info("stream hub: listening again")
                self.listening.set()
                self._wake_all()  # anything written while nobody listened
                delay = 0.05
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_S)
                    if msg is not None and msg["type"] == "pmessage":
                        self.notifications += 1
                        self._wake(msg["channel"])
            except REDIS_DOWN as e:
                if self.listening.is_set():
                    log.warning("stream hub: lost its Redis connection (%s); reconnecting", type(e).__name__)
                self.listening.clear()
                self.reconnects += 1
                # Every follower reads now: if Redis is gone its stream ends with an error event
                # the client resumes from with Last-Event-ID.
                self._wake_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
