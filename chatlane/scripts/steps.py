"""What begin_head.lua answers (through claim.lua and advance.lua): the turn it began, or why none."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chatlane.errors import LeaseLost


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


@dataclass(frozen=True)
class Released:
    """The inbox was empty: the lease is deleted and the session left the pending set."""


@dataclass(frozen=True)
class Stopped:
    """The turn was finished and nothing begun; the lease is still held (to hand back)."""


Step = Begun | Released | Stopped


def parse_step(res: list[Any], lease_key: str) -> Step:
    kind = res[0]
    if kind == "turn":
        return Begun(
            str(res[1]), str(res[2]), int(res[3]), int(res[4]), json.loads(res[5]) if res[5] else {},
            paused_ms=int(res[7]) if len(res) > 7 else 0, created_ms=int(res[6]),
        )  # fmt: skip
    if kind == "released":
        return Released()
    if kind == "stopped":
        return Stopped()
    if kind == "lost":
        raise LeaseLost(lease_key)
    raise ValueError(f"unexpected answer from a chatlane script: {res!r}")
