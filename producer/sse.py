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

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import TypeVar

from chatlane.errors import ChatlaneError, InvalidInput
from chatlane.stream import EventType, Replay
from producer.api_errors import public_message
from producer.client import ChatProducer

T = TypeVar("T")

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
    producer: ChatProducer, turn_id: str, last_event_id: str | None, keepalive_s: float
) -> AsyncIterator[str]:
    """SSE frames for one turn, from just after ``last_event_id`` (or the start) to its end."""
    cursor = entry_id(last_event_id) if last_event_id else (0, 0)
    # The stream is read from the start even on a resume: which attempt is current depends on
    # entries before the cursor, and a turn's stream is short.
    replay = Replay()
    try:
        async for ev in with_keepalive(producer.events(turn_id), keepalive_s):
            if ev is None:
                yield KEEPALIVE
                continue
            eid = entry_id(ev.id)
            fresh = eid > cursor
            if ev.type is EventType.end:
                status = await producer.status(turn_id)
                # An expired stream yields a synthetic end that repeats an id already seen.
                yield frame("end", status.model_dump_json(), ev.id if fresh else None)
                return
            if not replay.accept(ev) or not fresh:
                continue
            cursor = eid
            if ev.type is EventType.chunk:
                yield frame("chunk", json.dumps({"text": ev.data, "attempt": ev.attempt}, ensure_ascii=False), ev.id)
            elif ev.tool is not None:
                tool = {"name": ev.tool.name, "call_id": ev.tool.call_id, "phase": ev.tool.phase.value,
                        "attempt": ev.attempt}  # fmt: skip
                yield frame("tool", json.dumps(tool, ensure_ascii=False), ev.id)
            else:
                yield frame("reset", json.dumps({"attempt": ev.attempt}), ev.id)
    except ChatlaneError as e:
        yield frame("error", json.dumps({"code": e.code, "message": public_message(e)}))


async def with_keepalive(source: AsyncIterator[T], every_s: float) -> AsyncIterator[T | None]:
    """Items of ``source``, and ``None`` whenever ``every_s`` passes without one.

    The pending read is not cancelled on a tick (cancelling a blocking Redis read drops the
    connection); it is cancelled only when the consumer stops.
    """

    async def next_item() -> T:
        return await anext(source)

    pending: asyncio.Task[T] = asyncio.create_task(next_item())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.create_task(next_item())
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
