"""Typed caller of ``advance.lua``: the fenced commit of a turn plus the begin of the next."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from chatlane.errors import CommitNotReplicated
from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.scripts.replication import Replication
from chatlane.scripts.steps import Step, parse_step
from chatlane.settings import Settings


@dataclass(frozen=True)
class Finish:
    """How the head turn ends: completed with its history entries, failed with an error, or
    ``stopped`` at a client's request (its stop request decides: interrupted with the partial reply
    in ``text`` and ``entries``, or cancelled with nothing in history)."""

    turn_id: str
    completed: bool
    text: str  # the reply, the error, or the partial reply
    # encoded history entries to append (completed, or stopped): the user message(s), then every
    # message the turn added (or, stopped, its partial reply)
    entries: tuple[str, ...] = ()
    stopped: bool = False


@dataclass(frozen=True)
class AttemptEnd:
    """When a generation attempt stopped (evidence for G1: see record_attempt.lua)."""

    turn_id: str
    attempt: int
    ended_ms: int  # upper bound, in Redis time


class Next(StrEnum):
    begin = "begin"  # begin the next head turn (or release the lease if none waits)
    yield_ = "yield"  # as begin, unless another session's drain job waits for a slot
    stop = "stop"  # begin nothing; the caller hands the session back


class Advance:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._script = register(redis, "advance")
        self._keys = keys
        self._settings = settings
        self._replication = Replication.of(settings, keys)

    async def __call__(
        self, *, session_id: str, token: str, finish: Finish | None, ended: AttemptEnd | None, next: Next
    ) -> Step:
        """Raises LeaseLost, having written nothing, when ``token`` no longer holds the lease;
        CommitNotReplicated when ``finish`` was committed (and the step taken) on the primary but
        too few replicas confirmed it. Only a commit waits for replicas; a bare begin does not."""
        k, s, sk = self._keys, self._settings, self._keys.session(session_id)
        turn_id, state, text = "", "", ""
        entries: tuple[str, ...] = ()
        if finish is not None:
            turn_id, text = finish.turn_id, finish.text
            state = "stopped" if finish.stopped else "completed" if finish.completed else "failed"
            if finish.completed or finish.stopped:
                entries = finish.entries
        ended_args: list[str | int] = ["", "", ""] if ended is None else [ended.turn_id, ended.attempt, ended.ended_ms]
        res, acked = await self._replication.run(
            self._script,
            keys=[sk.lease, sk.inbox, sk.history, k.stats, k.pending, k.queue, k.budget(s.model).pause,
                  k.webhooks_due, sk.turns, sk.trimmed, sk.fence, sk.summary],
            args=[token, s.lease_ttl_ms, k.turn_prefix, k.stream_suffix, turn_id, state, text,
                  s.turn_ttl_ms, s.stream_ttl_ms, next.value, s.max_attempts, session_id, *ended_args,
                  s.yield_grace_ms, s.history_max_messages, s.session_idle_ttl_ms, *entries],
            wait=finish is not None,
        )  # fmt: skip
        step = parse_step(res, sk.lease)
        if finish is not None and self._replication.short(acked):
            r = self._replication
            raise CommitNotReplicated(finish.turn_id, step, acked, r.replicas, r.timeout_ms)
        return step
