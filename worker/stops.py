"""Stop requests for the turns this worker process generates, heard on one pub/sub subscription.

A client's stop (cancel, or an enqueue with on_busy interrupt/rollback) is recorded on the turn by
a script that also publishes the turn id on the channel of the lease holder's worker process
(chatlane/lua/stop_request.lua). Each process subscribes once, to its own channel, whatever the
number of sessions it serves; the drain watches the turn it generates and the message sets its
event within milliseconds (bench B10). Pub/sub is at most once: a message sent while the
subscription is down is lost, so after every (re)subscription the watched turns are checked once,
and each lease renewal checks the turn being generated (renew.lua) as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis

from chatlane.connection import REDIS_DOWN
from chatlane.keys import Keys
from chatlane.stream import ToolEvent
from worker.publish import ChunkPublisher

log = logging.getLogger("chatlane.stops")

# A message for a turn this process does not watch (yet) is kept this long: a stop recorded just
# after the begin script ran but before the drain started watching must not be lost.
UNMATCHED_KEEP_S = 30.0
# How long one read of the subscription waits (an idle read just returns; it is not a poll of Redis).
READ_S = 1.0
BACKOFF_S = (0.1, 2.0)


class TurnStopped(Exception):
    """A client asked to stop the turn: its model call was stopped (or never started)."""


class StopSignals:
    def __init__(self, redis: Redis, keys: Keys, worker_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.channel = keys.stop_channel(worker_id)
        self.subscribed = asyncio.Event()
        self._watched: dict[str, asyncio.Event] = {}
        self._unmatched: dict[str, float] = {}  # turn id -> monotonic time its message came

    def watch(self, turn_id: str) -> asyncio.Event:
        """The event set when the turn gets a stop request (until ``forget``)."""
        event = self._watched.setdefault(turn_id, asyncio.Event())
        if self._unmatched.pop(turn_id, None) is not None:
            event.set()
        return event

    def forget(self, turn_id: str) -> None:
        self._watched.pop(turn_id, None)

    def deliver(self, turn_id: str) -> None:
        event = self._watched.get(turn_id)
        if event is not None:
            event.set()
            return
        now = time.monotonic()
        self._unmatched[turn_id] = now
        for tid, at in list(self._unmatched.items()):
            if now - at > UNMATCHED_KEEP_S:
                del self._unmatched[tid]

    async def run(self) -> None:
        """The process's one subscription; resubscribes after Redis outages."""
        backoff = BACKOFF_S[0]
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._recheck()
                self.subscribed.set()
                backoff = BACKOFF_S[0]
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_S)
                    if msg is not None and msg.get("type") == "message":
                        self.deliver(str(msg["data"]))
            except Exception as e:  # Redis down, or anything else: resubscribe, never give up
                if isinstance(e, REDIS_DOWN):
                    if self.subscribed.is_set():
                        # Debug: the poll loop logs the outage once per process (worker/resilient.py).
                        log.debug("stop requests: subscription lost (%r); lease renewals check meanwhile", e)
                else:
                    log.exception("stop requests: subscription failed; resubscribing")
                self.subscribed.clear()
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_S[1], backoff * 2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _recheck(self) -> None:
        """Messages sent while we were not subscribed are lost: look at the watched turns once."""
        watched = list(self._watched)
        if not watched:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in watched:
                pipe.hexists(self.keys.turn(tid), "stop")
            found = await pipe.execute()
        for tid, stop in zip(watched, found, strict=True):
            if stop:
                self.deliver(tid)


class PartialReply:
    """The text one attempt of a turn has streamed so far, and where it went: the ``Emitter`` the
    turn's handler streams to (worker/turn.py), in front of the attempt's ``ChunkPublisher``. If a
    client stops the turn, this text is its partial reply, the same its stream readers saw."""

    def __init__(self, turn_id: str, pub: ChunkPublisher) -> None:
        self.turn_id = turn_id
        self.pub = pub
        self._parts: list[str] = []

    def text(self, text: str) -> None:
        self._parts.append(text)
        self.pub.text(text)

    def tool(self, event: ToolEvent) -> None:
        self.pub.tool(event)

    async def flushed(self) -> str:
        """The text so far, once the stream has every chunk of it (before the turn's end entry)."""
        await asyncio.shield(self.pub.aclose())
        return "".join(self._parts)
