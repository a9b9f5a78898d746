"""A turn's token stream as Server-Sent Events.

Events, in order (``id:`` is the Redis Stream entry id, so ``Last-Event-ID`` resumes exactly):

- ``chunk``  ``{"text": str, "attempt": int}``: append ``text`` to the reply.
- ``tool``   ``{"name", "call_id", "phase": "call" | "result", "attempt"}``: the model asked for a
  tool call (``call``), or the tool's answer came back (``result``).
- ``reset``  ``{"attempt": int}``: attempt ``attempt`` starts over (a retry): discard the text
  received so far. Chunks of an older attempt that reach Redis later are never sent.
- ``end``    the final ``TurnStatus`` JSON; its ``reply`` is authoritative. The stream closes.
  Sent also when the turn's stream has already expired (then without ``id:``).
- ``error``  ``{"code", "message"}``: the server cannot go on (e.g. Redis unreachable); the
  stream closes and the client may reconnect with ``Last-Event-ID``.

A ``: keepalive`` comment goes out while nothing else does, so proxies keep the connection and
the server notices a client that went away.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import AsyncIterator

from chatlane.errors import ChatlaneError, InvalidInput, TurnNotFound
from chatlane.stream import EventType, Replay, StreamEvent
from producer.api_errors import public_message
from producer.client import ChatProducer
from producer.stream_hub import BATCH, Slot, StreamHub

_ID = r"[0-9]{1,20}-[0-9]{1,20}"
# An empty Last-Event-ID means "from the start", as if the header were absent.
LAST_EVENT_ID_PATTERN = rf"^(?:{_ID})?$"
_EVENT_ID_RE = re.compile(rf"^{_ID}$")
KEEPALIVE = ": keepalive\n\n"


def entry_id(value: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (ids compare numerically, not as text)."""
    if not _EVENT_ID_RE.fullmatch(value):
        raise InvalidInput(f"Last-Event-ID must look like '1718000000000-0' (got {value!r:.40})")
    ms, seq = value.split("-")
    return int(ms), int(seq)


# JSON leaves these unescaped, but many line readers (Python's splitlines, httpx's aiter_lines)
# end a line at them; they can only occur inside JSON strings, where the escapes mean the same.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def frame(event: str, data: str, event_id: str | None = None) -> str:
    """One SSE event; ``data`` is JSON, so one line (JSON escapes CR and LF)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data.translate(_LINE_BREAKS)}\n\n"


async def turn_events(
    producer: ChatProducer,
    hub: StreamHub,
    turn_id: str,
    last_event_id: str | None,
    keepalive_s: float,
    slot: Slot | None = None,
    ended: bool = True,
) -> AsyncIterator[str]:
    """SSE frames for one turn, from just after ``last_event_id`` (or the start) to its end.

    ``ended``: False if the caller just saw the turn not ended yet; then an empty stream at the
    first read cannot be one that expired after the end (that saves a status read per stream).

    The stream's entries are read in batches of at most BATCH, the next batch only once the
    client has taken the frames of this one (see producer/stream_hub.py)."""
    cursor = entry_id(last_event_id) if last_event_id else (0, 0)
    # The stream is read from the start even on a resume: which attempt is current depends on
    # entries before the cursor, and a turn's stream is short.
    replay = Replay()
    try:
        async with hub.follow(producer.keys.stream(turn_id)) as follower:
            last = "0-0"
            check = first = True  # check: the first read and every tick; is the turn still there?
            due: float | None = None  # epoch s a queued turn expires if no worker starts it
            first_wait = True
            while True:
                if check:
                    events, state, expires_ms = await hub.read_and_check(follower, last, producer.keys.turn(turn_id))
                    if state is None:  # gone (its session was deleted)
                        raise TurnNotFound(turn_id)
                    due = expires_ms / 1000 if state == "queued" and expires_ms else None
                    if not events and ((first and ended) or (due is not None and time.time() >= due)):
                        # Nothing yet: the turn may have ended long ago (its stream expired), or be
                        # past its start deadline with no worker to expire it (status does then).
                        async with hub.reading():
                            st = await producer.status(turn_id)
                            gone = st.state.terminal and not await producer.redis.exists(follower.key)
                        if gone:
                            yield frame("end", st.model_dump_json())
                            return
                        if due is not None and time.time() >= due:
                            due = time.time() + 1.0  # Redis's clock decides (expire.lua): ask again in 1 s
                    first = False
                else:
                    events = await hub.read(follower, last)
                    if not events:
                        # Woken with nothing new: the stream's turn may have been deleted
                        # (delete_session.lua announces that too); read again with the check.
                        check = True
                        continue
                for ev in events:
                    eid = entry_id(ev.id)
                    fresh = eid > cursor
                    if ev.type is EventType.end:
                        async with hub.reading():
                            status = await producer.status(turn_id)
                        # An expired stream yields a synthetic end that repeats an id already seen.
                        yield frame("end", status.model_dump_json(), ev.id if fresh else None)
                        return
                    if not replay.accept(ev) or not fresh:
                        continue
                    cursor = eid
                    yield event_frame(ev)
                if events:
                    last = events[-1].id
                    if len(events) == BATCH:
                        check = False
                        continue  # more to read: at the client's pace, never ahead of it
                # The first tick comes at a random point of the interval: streams opened together
                # (a reconnect storm, a benchmark) would otherwise tick together for good, and each
                # tick's read and write, all at once, stall every other stream of the process.
                wait_s = keepalive_s * random.uniform(0.5, 1.0) if first_wait else keepalive_s
                first_wait = False
                if due is not None:
                    wait_s = min(wait_s, max(0.0, due - time.time()) + 0.01)
                check = not await follower.wait(wait_s)
                if check:
                    # A tick: also notices a client that went away; the read catches a missed notification.
                    yield KEEPALIVE
    except ChatlaneError as e:
        yield frame("error", json.dumps({"code": e.code, "message": public_message(e)}))
    finally:
        if slot is not None:
            slot.release()


def event_frame(ev: StreamEvent) -> str:
    """The frame of a chunk, tool or reset entry the reader accepted."""
    if ev.type is EventType.chunk:
        return frame("chunk", json.dumps({"text": ev.data, "attempt": ev.attempt}, ensure_ascii=False), ev.id)
    if ev.tool is not None:
        tool = {"name": ev.tool.name, "call_id": ev.tool.call_id, "phase": ev.tool.phase.value, "attempt": ev.attempt}
        return frame("tool", json.dumps(tool, ensure_ascii=False), ev.id)
    return frame("reset", json.dumps({"attempt": ev.attempt}), ev.id)
