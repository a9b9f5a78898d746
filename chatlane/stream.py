"""Token stream entries of a turn (a Redis Stream per turn, replayable from any id).

Entries, in order:
- ``chunk``: ``a`` attempt number, ``d`` text of one or more consecutive model chunks;
- ``tool``: ``a`` attempt, ``n`` tool name, ``c`` tool call id, ``p`` phase: ``call`` when the
  model asked for the call, ``result`` when the tool's answer came back;
- ``reset``: attempt ``a`` starts over (a retry): discard the chunks received so far;
  chunks of an older attempt that arrive later (from a worker that lost its lease and has
  not noticed yet) are to be ignored: see ``Replay``;
- ``end``: ``s`` terminal state; written by the same script that commits the turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    chunk = "chunk"
    tool = "tool"
    reset = "reset"
    end = "end"


@dataclass(frozen=True)
class StreamEvent:
    id: str
    type: EventType
    attempt: int = 0
    data: str = ""
    state: str = ""
    tool: ToolEvent | None = None

    @classmethod
    def parse(cls, entry_id: str, fields: dict[str, str]) -> StreamEvent:
        kind = EventType(fields["t"])
        return cls(
            id=entry_id,
            type=kind,
            attempt=int(fields.get("a", 0)),
            data=fields.get("d", ""),
            state=fields.get("s", ""),
            tool=ToolEvent(fields["n"], fields["c"], ToolPhase(fields["p"])) if kind is EventType.tool else None,
        )


class ToolPhase(StrEnum):
    call = "call"
    result = "result"


@dataclass(frozen=True)
class ToolEvent:
    name: str
    call_id: str
    phase: ToolPhase

    def fields(self, attempt: int) -> dict[str, str | int]:
        return {"t": EventType.tool.value, "a": attempt, "n": self.name, "c": self.call_id, "p": self.phase.value}


def chunk_fields(attempt: int, text: str) -> dict[str, str | int]:
    return {"t": EventType.chunk.value, "a": attempt, "d": text}


class Replay:
    """Follows a stream the way a reader should: only the latest attempt's chunks count."""

    def __init__(self) -> None:
        self.attempt = 0
        self.parts: list[str] = []

    def accept(self, ev: StreamEvent) -> bool:
        """Apply one entry; False if it is a stale chunk or tool event the reader must skip."""
        if ev.type is EventType.reset:
            self.attempt, self.parts = ev.attempt, []
        elif ev.type in (EventType.chunk, EventType.tool):
            if ev.attempt < self.attempt:
                return False
            self.attempt = ev.attempt
            if ev.type is EventType.chunk:
                self.parts.append(ev.data)
        return True

    @property
    def text(self) -> str:
        return "".join(self.parts)


def partial_reply(events: list[StreamEvent]) -> str:
    """Text generated so far by the latest attempt."""
    replay = Replay()
    for ev in events:
        replay.accept(ev)
    return replay.text
