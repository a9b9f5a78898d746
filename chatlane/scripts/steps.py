"""What begin_head.lua answers (through claim.lua and advance.lua): the turn it began, or why none."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chatlane.errors import LeaseLost
from chatlane.turns import more_texts


@dataclass(frozen=True)
class Begun:
    """The session's head turn is now running; ``attempt`` counts this try."""

    turn_id: str
    text: str
    attempt: int
    started_ms: int
    metadata: dict[str, Any] = field(default_factory=dict)  # given at enqueue ({} if none)
    paused_ms: int = 0  # what is left of the model's provider pause (429), 0 if none
    created_ms: int = 0  # when it was enqueued (0: unknown)
    more: tuple[str, ...] = ()  # the texts that joined the turn after ``text`` (on_busy=coalesce)
    trace: str = ""  # the W3C traceparent its enqueue stored ("" without tracing; chatlane/tracing.py)

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text, *self.more)


@dataclass(frozen=True)
class StopRequested:
    """The head turn has a client's stop request that its holder has not committed: commit it
    (``Finish(stopped=True)``) without generating. ``attempt`` is its latest attempt, not a new one."""

    turn_id: str
    text: str
    attempt: int
    metadata: dict[str, Any] = field(default_factory=dict)
    more: tuple[str, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text, *self.more)


@dataclass(frozen=True)
class Deferred:
    """The head turn waits for more texts (debounce): nothing begun, the lease still held; hand
    the session back with its drain job due in ``ms``."""

    ms: int


@dataclass(frozen=True)
class Released:
    """The inbox was empty: the lease is deleted and the session left the pending set."""


@dataclass(frozen=True)
class Stopped:
    """The turn was finished and nothing begun; the lease is still held (to hand back)."""


Step = Begun | Released | Stopped | StopRequested | Deferred


def parse_step(res: list[Any], lease_key: str) -> Step:
    kind = res[0]
    if kind == "turn":
        return Begun(
            str(res[1]), str(res[2]), int(res[3]), int(res[4]), _metadata(res),
            paused_ms=int(res[7]) if len(res) > 7 else 0, created_ms=int(res[6]), more=_more(res),
            trace=str(res[9]) if len(res) > 9 else "",
        )  # fmt: skip
    if kind == "stopping":
        return StopRequested(str(res[1]), str(res[2]), int(res[3]), _metadata(res), _more(res))
    if kind == "defer":
        return Deferred(int(res[1]))
    if kind == "released":
        return Released()
    if kind == "stopped":
        return Stopped()
    if kind == "lost":
        raise LeaseLost(lease_key)
    raise ValueError(f"unexpected answer from a chatlane script: {res!r}")


# A begin step is {kind, id, text, attempts, started_ms, metadata, created_ms, paused_ms, more, trace}
# (begin_head.lua).


def _metadata(res: list[Any]) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(res[5]) if len(res) > 5 and res[5] else {}
    return meta


def _more(res: list[Any]) -> tuple[str, ...]:
    return tuple(more_texts(str(res[8]))) if len(res) > 8 and res[8] else ()
